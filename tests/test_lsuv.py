"""LSUV (Mishkin & Matas 2016): unit response std layer by layer, where the analytic rule does not hold."""

import pytest
import torch

from delving.nn.probes import variance_profile
from delving.experiment.training.config import load_config
from delving.data import DigitsDataModule
from delving.nn.lsuv import lsuv
from delving.models import create_initialized
from delving.experiment.training.train import fit


@pytest.fixture(scope="module")
def digits_batch() -> torch.Tensor:
    dm = DigitsDataModule()
    dm.setup()
    return dm.train_set.tensors[0][:256]


def conv_ratio(model, x) -> float:
    convs = [s for s in variance_profile(model, x) if s.layer.startswith("conv")]
    return convs[-1].forward_std / convs[0].forward_std


def build(activation: str, depth: int):
    return create_initialized("delving_plain", "xavier", depth=depth, activation=activation, in_chans=1,
                              num_classes=10, widths=(16, 32, 32))


def test_lsuv_gives_every_layer_unit_std_where_the_analytic_rule_drifts(digits_batch):
    model = build("silu", 20)
    lsuv(model, digits_batch, generator=torch.Generator().manual_seed(0))
    stds = [s.forward_std for s in variance_profile(model, digits_batch)]
    assert all(abs(s - 1) < 0.03 for s in stds)
    assert all(p.grad is None for p in model.parameters()) and model.training


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "prelu", "elu", "selu", "gelu", "silu", "tanh", "softplus"])
def test_lsuv_holds_the_signal_on_a_50_layer_net_every_seed(activation, digits_batch):
    for seed in range(3):
        model = build(activation, 50)
        lsuv(model, digits_batch, generator=torch.Generator().manual_seed(seed))
        assert 0.5 <= conv_ratio(model, digits_batch) <= 2.0


def test_lsuv_is_reachable_from_configs(tiny):
    cfg = load_config(None, [*tiny, "init.scheme=lsuv", "model.activation=selu", "name=lsuv"])
    result = fit(cfg, progress=False)
    assert result["status"] == "finished"
