import pytest
import timm
import torch
from torch import nn

import delving  # noqa: F401
from delving.experiment.training.config import OptimConfig
from delving.experiment.training.system import DelvingSystem, param_groups


def test_weight_decay_groups_by_module_type():
    model = timm.create_model("delving_plain", depth=9, activation="prelu", in_chans=1, num_classes=10)
    decay, no_decay = param_groups(model, 5e-4)
    slopes = {id(m.weight) for m in model.modules() if isinstance(m, nn.PReLU)}
    assert {id(p) for p in no_decay["params"]} == slopes and no_decay["weight_decay"] == 0.0
    assert decay["weight_decay"] == 5e-4
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert not slopes & {id(p) for p in decay["params"]}


def test_sgd_step_decays_weights_but_not_slopes():
    """With a zero loss gradient only weight decay moves parameters (the paper's footnote 2 diagnosis)."""
    model = timm.create_model("delving_plain", depth=9, activation="prelu", in_chans=1, num_classes=10)
    system = DelvingSystem(model, OptimConfig(lr=1.0, weight_decay=0.1, schedule="none"), num_classes=10)
    optimizer = system.configure_optimizers()
    slope_before = model.features.conv1.act.weight.detach().clone()
    weight_before = model.features.conv1.conv.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    torch.testing.assert_close(model.features.conv1.act.weight, slope_before)
    torch.testing.assert_close(model.features.conv1.conv.weight, weight_before * 0.9)


@pytest.mark.parametrize("schedule, kind", [("plateau", "ReduceLROnPlateau"), ("step", "MultiStepLR")])
def test_lr_schedules(schedule, kind):
    model = timm.create_model("delving_plain", depth=9, in_chans=1, num_classes=10)
    cfg = OptimConfig(schedule=schedule, milestones=[3])
    conf = DelvingSystem(model, cfg, num_classes=10).configure_optimizers()
    assert type(conf["lr_scheduler"]["scheduler"]).__name__ == kind
    assert conf["optimizer"].defaults["momentum"] == 0.9
    if schedule == "plateau":
        assert conf["lr_scheduler"]["monitor"] == "val/err1"
