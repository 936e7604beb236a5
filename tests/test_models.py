import re

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


@pytest.mark.parametrize("side, kernel, stride, maps", [
    (28, 7, 2, [14, 7, 3]),    # the docstring's 28x28 digits with Table 1's 7x7/2 conv1: conv1, stage 2, stage 3
    (16, 3, 1, [16, 8, 4]),    # the defaults
    (31, 7, 2, [16, 8, 4]),    # the smallest side whose stage-3 map reaches SPP's level 4
    (28, 5, 1, [28, 14, 7]),
])
def test_stem_kernel_and_stride_give_the_documented_map_sizes(side, kernel, stride, maps):
    model = timm.create_model("delving_plain", depth=10, stem_kernel=kernel, stem_stride=stride, features_only=True,
                              widths=(4, 8, 8), in_chans=1)
    conv1 = model.features_conv1.conv
    assert (conv1.kernel_size, conv1.stride, conv1.padding) == ((kernel,) * 2, (stride,) * 2, (kernel // 2,) * 2)
    assert [m.shape[-1] for m in model(torch.randn(1, 1, side, side))] == maps
    assert model.feature_info.reduction() == [stride, 2 * stride, 4 * stride]


def test_a_stride_2_conv1_moves_the_cfg_sizes_with_it():
    """timm's cfg describes the net built: min_input_size is the smallest side that reaches SPP's level, and
    pool_size the map forward_features returns at input_size."""
    model = timm.create_model("delving_plain", depth=10, stem_kernel=7, stem_stride=2)
    cfg = model.pretrained_cfg
    assert cfg["min_input_size"] == cfg["input_size"] == (3, 31, 31) and cfg["pool_size"] == (4, 4)
    assert model.forward_features(torch.randn(1, 3, 31, 31)).shape[-1] == 4
    assert model.forward_features(torch.randn(1, 3, 30, 30)).shape[-1] == 3
    default = timm.create_model("delving_plain", depth=10).pretrained_cfg
    assert default["input_size"] == default["min_input_size"] == (3, 16, 16) and default["pool_size"] == (4, 4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(widths=[16, 32]), "model.kwargs.widths=[16, 32] is out of range; valid: 3 positive integers (conv1, stage 2, "
                            "stage 3)"),
    (dict(widths=(16, 0, 32)), "model.kwargs.widths=[16, 0, 32] is out of range; valid: 3 positive integers"),
    (dict(widths=16), "model.kwargs.widths=16 is out of range; valid: 3 positive integers"),
    (dict(widths=[16, 32, 32.5]), "model.kwargs.widths=[16, 32, 32.5] is out of range"),
    (dict(spp_levels=[]), "model.kwargs.spp_levels=[] is out of range; valid: one or more positive integers"),
    (dict(fc_width=0), "model.kwargs.fc_width=0 is out of range; valid: a positive integer"),
    (dict(stem_kernel=4), "model.kwargs.stem_kernel=4 is out of range; valid: an odd positive integer"),
    (dict(stem_kernel=0), "model.kwargs.stem_kernel=0 is out of range; valid: an odd positive integer"),
    (dict(stem_kernel=3, stem_stride=4), "model.kwargs.stem_stride=4 is out of range; valid: an integer in [1, "
                                         "stem_kernel=3]"),
    (dict(stem_stride=True), "model.kwargs.stem_stride=True is out of range"),
    (dict(shortcut="yes"), "model.kwargs.shortcut='yes' is not valid; valid: true or false"),
])
def test_bad_kwargs_are_one_line_errors(kwargs, message):
    with pytest.raises(DelvingError, match=re.escape(message)) as err:
        timm.create_model("delving_plain", depth=10, **kwargs)
    assert "\n" not in str(err.value)
