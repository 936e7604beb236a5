import pytest
import timm
import torch
from torch import nn

import delving  # noqa: F401
from delving.errors import DelvingError
from delving.models.plain import MIN_DEPTH


def weight_layer_count(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


def test_registered_in_timm():
    assert "delving_plain" in timm.list_models("delving_*")


@pytest.mark.parametrize("depth", [MIN_DEPTH, 14, 22, 30])
def test_depth_counts_conv_and_fc_layers(depth):
    model = timm.create_model("delving_plain", depth=depth, activation="relu", in_chans=3, num_classes=10)
    assert weight_layer_count(model) == depth
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 3  # fc1, fc2, fc3


@pytest.mark.parametrize("size", [16, 24, 33])
@pytest.mark.parametrize("activation", ["relu", "prelu", "prelu_shared", "leaky_relu"])
def test_forward_any_size_and_every_parameter_gets_a_gradient(activation, size):
    model = timm.create_model("delving_plain", depth=10, activation=activation, in_chans=3, num_classes=7)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_prelu_parameter_counts_channelwise_vs_shared():
    kw = dict(depth=12, in_chans=1, num_classes=10, widths=(8, 16, 32), fc_width=64)
    relu = sum(p.numel() for p in timm.create_model("delving_plain", activation="relu", **kw).parameters())
    wise = sum(p.numel() for p in timm.create_model("delving_plain", activation="prelu", **kw).parameters())
    shared = sum(p.numel() for p in timm.create_model("delving_plain", activation="prelu_shared", **kw).parameters())
    channels = 8 + 16 * 4 + 32 * (12 - 8) + 64 + 64  # every conv's channels, fc1, fc2 (not fc3)
    assert wise - relu == channels
    assert shared - relu == 12 - 1  # one slope per activated layer


def test_features_and_head_are_separable():
    model = timm.create_model("delving_plain", depth=9, in_chans=1, num_classes=10)
    x = torch.randn(2, 1, 16, 16)
    features = model.forward_features(x)
    assert features.shape == (2, 64, 4, 4)
    torch.testing.assert_close(model.forward_head(features), model(x))


def test_too_small_depth_and_pretrained_are_errors():
    with pytest.raises(DelvingError, match=rf"model.depth=5 is too small.*>= {MIN_DEPTH}"):
        timm.create_model("delving_plain", depth=5)
    with pytest.raises(DelvingError, match="no pretrained weights"):
        timm.create_model("delving_plain", pretrained=True)
    with pytest.raises(DelvingError, match="unknown activation"):
        timm.create_model("delving_plain", activation="swish")
