"""Speed options compute the same thing: each switch of delving.experiment.training.speed (channels_last, in-place activations, bf16
autocast, torch.compile) against the plain model after a few SGD steps, and the fused SGD against torch's default
one (delving.nn.prelu.PReLU against torch.nn.PReLU: tests/test_prelu_cpu.py). No timings here: benchmarks/train_throughput.py measures speed."""

from __future__ import annotations

import gc
import importlib.util
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import ROOT
from delving.experiment.training.config import load_config
from delving.errors import DelvingError
from delving.nn.activations import make_activation
from delving.models import create_initialized
from delving.experiment.training.speed import SpeedOptions, apply_speed_options, frozen_heap
from delving.experiment.training.system import sgd
from delving.experiment.training.system import param_groups

STEPS = 3
FP32_TOL = 1e-4   # relative: the same math in another order (NHWC kernels, fused reductions)
BF16_TOL = 5e-2   # relative: bf16 keeps 8 bits of mantissa, ~0.4% per rounding, over 9 layers and 3 steps


def test_prelu_is_still_an_nn_prelu_for_slopes_and_weight_decay_groups():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), make_activation("prelu", 4), nn.Conv2d(4, 4, 3),
                          make_activation("prelu_shared", 4))
    assert all(isinstance(model[i], nn.PReLU) for i in (1, 3))
    groups = {g["name"]: g["params"] for g in param_groups(model, 5e-4)}
    assert {id(p) for p in groups["no_decay"]} == {id(model[1].weight), id(model[3].weight)}


def _tiny(activation: str) -> nn.Module:
    return create_initialized("delving_plain", "he", activation=activation, depth=9, widths=(4, 8, 8), fc_width=16,
                              in_chans=1, num_classes=10, generator=torch.Generator().manual_seed(0))


def _sgd_losses(model: nn.Module, bf16: bool = False) -> list[float]:
    """Loss at each of STEPS SGD steps on one fixed batch (dropout off: it draws differently per layout)."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 1, 16, 16, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.eval()
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("activation", ["relu", "prelu"])
@pytest.mark.parametrize("option, tol", [("channels_last", FP32_TOL), ("inplace_activations", FP32_TOL)])
def test_option_gives_the_same_losses(activation, option, tol):
    plain = _sgd_losses(_tiny(activation))
    fast = _sgd_losses(apply_speed_options(_tiny(activation), SpeedOptions(**{option: True})))
    assert plain[-1] < plain[0]  # the steps really train
    torch.testing.assert_close(fast, plain, rtol=tol, atol=0)


@pytest.mark.parametrize("activation", ["relu", "prelu"])
def test_bf16_autocast_gives_the_same_losses_within_bf16_tolerance(activation):
    plain = _sgd_losses(_tiny(activation))
    torch.testing.assert_close(_sgd_losses(_tiny(activation), bf16=True), plain, rtol=BF16_TOL, atol=0)


@pytest.mark.slow
def test_compile_gives_the_same_losses():
    plain = _sgd_losses(_tiny("prelu"))
    compiled = apply_speed_options(_tiny("prelu"), SpeedOptions(compile=True))
    torch.testing.assert_close(_sgd_losses(compiled), plain, rtol=FP32_TOL, atol=0)
    assert set(compiled.state_dict()) == set(_tiny("prelu").state_dict())  # checkpoints keep their keys


def test_channels_last_really_changes_the_memory_format():
    model = apply_speed_options(_tiny("relu"), SpeedOptions(channels_last=True))
    outputs = []
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)  # 1 channel: both
    conv.register_forward_hook(lambda m, i, out: outputs.append(out))
    model(torch.randn(2, 1, 16, 16))  # an ordinary NCHW batch: the weights' layout decides the output's
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert outputs[0].is_contiguous(memory_format=torch.channels_last) and not outputs[0].is_contiguous()


def test_inplace_switches_relus_and_leaves_prelu_alone():
    plain = [m.inplace for m in _tiny("relu").modules() if isinstance(m, nn.ReLU)]
    relu_model = apply_speed_options(_tiny("relu"), SpeedOptions(inplace_activations=True))
    switched = [m.inplace for m in relu_model.modules() if isinstance(m, nn.ReLU)]
    # the tiny net has one ReLU per conv and hidden fc layer (9 weight layers, the classifier has none)
    assert len(plain) == len(switched) == 8 and not any(plain) and all(switched)
    # PReLU keeps its input or output for its backward: the switch must not touch it, nor give it an inplace flag
    before = _tiny("prelu")
    prelu_model = apply_speed_options(_tiny("prelu"), SpeedOptions(inplace_activations=True))
    kinds = [type(m) for m in prelu_model.modules()]
    assert kinds == [type(m) for m in before.modules()] and kinds.count(type(make_activation("prelu", 4))) == 8
    assert not any(getattr(m, "inplace", False) for m in prelu_model.modules())
    x = torch.randn(2, 1, 16, 16)
    prelu_model.eval(), before.eval()
    torch.testing.assert_close(prelu_model(x.clone()), before(x.clone()), rtol=0, atol=0)


def test_config_switches_are_typed_and_checked():
    cfg = load_config(None, ["trainer.channels_last=true", "trainer.compile=false"])
    assert SpeedOptions.from_trainer(cfg.trainer) == SpeedOptions(channels_last=True)
    with pytest.raises(DelvingError, match="trainer.channels_last"):
        load_config(None, ["trainer.channels_last=sometimes"])
    with pytest.raises(DelvingError, match="log_variance=false"):
        load_config(None, ["trainer.inplace_activations=true"])


def test_fit_with_the_switches_on_trains(tiny):
    from delving.experiment.training.train import fit

    cfg = load_config(None, [*tiny, "model.activation=prelu", "trainer.channels_last=true",
                             "trainer.inplace_activations=true", "tracking.log_variance=false"])
    result = fit(cfg, progress=False)
    assert result["status"] == "finished" and result["final_val_err1"] is not None


def test_fused_sgd_makes_the_same_update_up_to_rounding():
    """optim.fused (on by default): torch's fused SGD kernel against its per-tensor SGD, with Sec. 3's momentum and
    weight decay on the decay group only (PReLU slopes in the other). Often bit-identical, but not always (one
    measured case: 2.3e-10 apart after 5 steps), hence a tolerance at float rounding."""
    models = [_tiny("prelu") for _ in range(2)]
    start = [p.detach().clone() for p in models[0].parameters()]
    optimizers = [sgd(m, lr=0.05, momentum=0.9, weight_decay=5e-4, fused=f) for m, f in zip(models, (False, True))]
    assert [o.defaults["fused"] for o in optimizers] == [None, True]
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 1, 16, 16, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    for model, optimizer in zip(models, optimizers):
        model.eval()  # dropout off: both see the same function
        for _ in range(STEPS):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    for p0, p_plain, p_fused in zip(start, models[0].parameters(), models[1].parameters()):
        assert not torch.equal(p_plain, p0)
        torch.testing.assert_close(p_fused, p_plain, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("precision, clip, fused", [("32-true", None, True), ("32-true", 1.0, True),
                                                    ("bf16-mixed", None, True), ("bf16-mixed", 1.0, None)])
def test_the_system_uses_fused_sgd_unless_lightning_must_clip_mixed_precision_gradients(precision, clip, fused):
    from types import SimpleNamespace

    from delving.experiment.training.config import OptimConfig
    from delving.experiment.training.system import DelvingSystem

    system = DelvingSystem(_tiny("prelu"), OptimConfig(gradient_clip_norm=clip, schedule="none"), num_classes=10)
    system._trainer = SimpleNamespace(precision=precision)
    assert system.configure_optimizers().defaults["fused"] == fused


def test_fit_clips_gradients_under_bf16_autocast(tiny):
    """Lightning raises for a fused optimizer when it must clip mixed-precision gradients: the system falls back."""
    from delving.experiment.training.train import fit

    cfg = load_config(None, [*tiny, "trainer.precision=bf16-mixed", "optim.gradient_clip_norm=1.0",
                             "tracking.log_variance=false"])
    assert fit(cfg, progress=False)["status"] == "finished"


def _benchmark():
    spec = importlib.util.spec_from_file_location("train_throughput", ROOT / "benchmarks" / "train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_benchmark_mac_accounting_and_groups():
    bench = _benchmark()
    assert bench.step_macs(2.0e9, 8) == 3 * 2.0e9 * 8  # forward + two backward products per weight layer
    groups = bench.default_groups()
    keys = ("model", "activation", "precision", "options", "torch_prelu", "fused")
    for name, variants in groups.items():
        for k, variant in enumerate(variants[1:], start=1):  # each differs from an earlier one in one respect only
            assert any(sum(getattr(variant, key) != getattr(earlier, key) for key in keys) == 1
                       for earlier in variants[:k]), (name, variant.label)
    assert {v.activation for v in groups["a"]} >= {"relu", "prelu", "prelu_shared"}
    assert groups["b-bf16"][1].label == "model_b prelu +bf16-mixed"


def test_the_heap_is_frozen_while_training_and_handed_back_after():
    assert gc.get_freeze_count() == 0
    before = [None]  # alive when training starts: left out of collections until it ends
    with frozen_heap():
        assert gc.get_freeze_count() > 0
        assert all(obj is not before for obj in gc.get_objects())
    assert gc.get_freeze_count() == 0
    assert any(obj is before for obj in gc.get_objects(generation=2))  # back in the oldest generation


def test_a_heap_the_caller_froze_is_left_frozen():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with frozen_heap():
            pass
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
