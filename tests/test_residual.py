"""The residual twin of the plain nets (ResNet's basic block, He et al. 2016, with SkipInit, De & Smith 2020): the same
layers and names as the plain net, gradients everywhere, a forward signal that stays bounded at 100 and 1,000 layers
where the plain net's collapses, the plain net's init draws, training, timm's interface, and TAT refused."""

import math

import pytest
import timm
import torch
from torch import nn

import delving  # noqa: F401
from delving.errors import DelvingError
from delving.models import Conv, Residual, SPP, FC, build, create_initialized
from delving.nn.init import initialize
from delving.nn.probes import slope_profile, variance_profile
from delving.nn.residual import SKIPINIT_GAIN, BlockEnd, BlockStart, SkipInit

SMALL = dict(widths=(4, 8, 8), fc_width=16, in_chans=1, num_classes=10)


def weight_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def blocks_of(depth: int) -> int:
    return 2 + (depth - 8) // 2  # stage 2's two blocks, stage 3's pairs


@pytest.mark.parametrize("depth", [9, 10, 30, 31])
def test_same_weight_layers_and_names_as_the_plain_net(depth):
    plain = timm.create_model("delving_plain", depth=depth, **SMALL)
    residual = timm.create_model("delving_resplain", depth=depth, **SMALL)
    assert weight_layers(residual) == weight_layers(plain) and len(weight_layers(plain)) == depth
    assert [p.shape for p in plain.parameters()] == [p.shape for p in residual.parameters() if p.dim() > 0]
    assert sum(isinstance(m, BlockEnd) for m in residual.modules()) == blocks_of(depth)
    assert sum(isinstance(m, BlockStart) for m in residual.modules()) == blocks_of(depth)
    # an odd stage 3 leaves its first conv plain (it changes the width); every other stage-3 conv is in a block
    first_stage3 = residual.features[7]  # after conv1, pool1, conv21..conv24, pool2
    assert isinstance(first_stage3, nn.Sequential) == (depth % 2 == 1)
    # shortcut=True on delving_plain is the same net
    twin = timm.create_model("delving_plain", depth=depth, shortcut=True, **SMALL)
    assert [(n, type(m)) for n, m in twin.named_modules()] == [(n, type(m)) for n, m in residual.named_modules()]


def test_slope_profile_reads_the_plain_nets_layer_names():
    plain = timm.create_model("delving_plain", depth=20, activation="prelu", **SMALL)
    residual = timm.create_model("delving_resplain", depth=20, activation="prelu", **SMALL)
    names = [r.layer for r in slope_profile(residual)]
    assert names == [r.layer for r in slope_profile(plain)]
    assert names[:3] == ["conv1", "conv21", "conv22"] and names[-3:] == ["conv3_12", "fc1", "fc2"]


@pytest.mark.parametrize("activation", ["relu", "prelu"])
def test_output_shape_and_every_parameter_gets_a_gradient(activation):
    model = create_initialized("delving_resplain", "he", activation=activation, depth=14, **SMALL)
    out = model(torch.randn(3, 1, 16, 16))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    out.square().sum().backward()
    empty = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not empty  # SkipInit's alpha is small, not 0: the branches learn from the first step


def test_skipinit_alpha_is_gain_over_sqrt_blocks_after_create_initialized():
    model = create_initialized("delving_resplain", "he", depth=30, **SMALL)  # built on meta, then materialized
    alphas = [m.weight.item() for m in model.modules() if isinstance(m, SkipInit)]
    assert len(alphas) == blocks_of(30) == 13
    assert alphas == pytest.approx([SKIPINIT_GAIN / math.sqrt(13)] * 13)
    assert initialize(model, "he").features.conv22.skipinit.weight.item() == pytest.approx(alphas[0])


def conv_forward_stds(model: nn.Module) -> torch.Tensor:
    x = torch.randn(16, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    return torch.tensor([s.forward_std for s in variance_profile(model, x) if s.layer.startswith("conv")])


@pytest.mark.parametrize("depth", [100, pytest.param(1000, marks=pytest.mark.slow)])
@pytest.mark.parametrize("activation", ["relu", "prelu"])
def test_forward_std_at_init_stays_bounded_where_the_plain_nets_collapses(depth, activation):
    """He init (Eq. 10/15) in both nets. At width 8 the plain net's signal falls by orders of magnitude over 100
    layers (measured: last/first conv 5e-6 ReLU, 3e-3 PReLU; 0 and 1e-33 at 1,000); the residual twin's stays
    within a small factor of conv1's at every conv (0.18-6.8 at 1,000 layers)."""
    def make(name):
        return create_initialized(name, "he", activation=activation, depth=depth, generator=gen(), **SMALL)

    def gen():
        return torch.Generator().manual_seed(0)

    residual = conv_forward_stds(make("delving_resplain"))
    assert len(residual) == depth - 3
    assert 0.1 < float(residual.min() / residual[0]) and float(residual.max() / residual[0]) < 10
    if depth == 100:  # the plain net's collapse is as clear at 100 layers, in a tenth of the time
        plain = conv_forward_stds(make("delving_plain"))
        assert float(plain[-1] / plain[0]) < 1e-2


def test_without_skipinit_the_signal_grows_with_the_blocks():
    """The remedy is needed: with alpha = 1 (an unnormalized ResNet) each block adds its branch's variance."""
    model = create_initialized("delving_resplain", "he", depth=100, generator=torch.Generator().manual_seed(0),
                               **SMALL)
    for module in model.modules():
        if isinstance(module, SkipInit):
            nn.init.ones_(module.weight)
    stds = conv_forward_stds(model)
    assert float(stds[-1] / stds[0]) > 1e3  # measured 5.9e5 at 100 layers (48 blocks)


@pytest.mark.parametrize("scheme, mode", [("he", "fan_in"), ("paper", "fan_out"), ("xavier", "fan_in")])
def test_init_draws_are_the_plain_nets(scheme, mode):
    """The init functions see the same layers, in the same order, with the same following activations: the same
    seed gives the residual twin exactly the plain net's weights."""
    kwargs = dict(activation="prelu", depth=21, num_classes=10, in_chans=1)
    plain = create_initialized("delving_plain", scheme, mode, generator=torch.Generator().manual_seed(0), **kwargs)
    residual = create_initialized("delving_resplain", scheme, mode, generator=torch.Generator().manual_seed(0),
                                  **kwargs)
    plain_weights = {n: p for n, p in plain.named_parameters()}
    for name, p in residual.named_parameters():
        if not name.endswith("skipinit.weight"):
            torch.testing.assert_close(p, plain_weights[name], rtol=0, atol=0)
    conv = residual.features.conv3_10.conv  # Eq. 15 with a = 0.25 (he, fan_in): 3x3 x 64 inputs
    if scheme == "he":
        assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / ((1 + 0.25 ** 2) * 9 * 64)), rel=0.05)


def test_trains_a_few_steps_on_random_data():
    torch.manual_seed(0)
    model = create_initialized("delving_resplain", "he", activation="prelu", depth=16, **SMALL)
    x, y = torch.randn(32, 1, 16, 16), torch.randint(0, 10, (32,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]  # it fits the 32 random labels
    assert model.features.conv22.skipinit.weight.item() != pytest.approx(SKIPINIT_GAIN / math.sqrt(6), abs=1e-6)


def test_a_widening_block_adds_zero_channels_on_the_shortcut():
    """He et al. 2016's option A: with the branch silenced, the block is the activation of the padded input."""
    start, end = BlockStart(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU()), BlockEnd(nn.Conv2d(5, 5, 3, padding=1),
                                                                              nn.ReLU(), 0.0, in_channels=3)
    x = torch.randn(2, 3, 4, 4)
    out = end(start(x))
    torch.testing.assert_close(out[:, :3], x.relu())
    assert torch.equal(out[:, 3:], torch.zeros(2, 2, 4, 4))
    with pytest.raises(DelvingError, match="cannot narrow 5 channels to 3"):
        BlockEnd(nn.Conv2d(5, 3, 3, padding=1), nn.ReLU(), 0.0, in_channels=5)


def test_a_block_that_changes_the_map_size_is_an_error():
    for bad in (Conv(3, 8, stride=2), Conv(2, 8), Conv(3, 8, padding=0)):
        with pytest.raises(DelvingError, match="a residual block needs stride-1 convs that keep the map's size"):
            build([Conv(3, 8), Residual(Conv(3, 8), bad), SPP((1,)), FC(4), FC(None)], num_classes=2)


def test_tat_is_refused_with_one_line():
    model = timm.create_model("delving_resplain", depth=40, activation="prelu", **SMALL)
    with pytest.raises(DelvingError, match="init.scheme=tat shapes the slopes of a plain chain .* residual blocks; "
                                           "valid: a plain net") as err:
        initialize(model, "tat")
    assert "\n" not in str(err.value)
    with pytest.raises(DelvingError, match="residual blocks"):
        create_initialized("delving_plain", "tat", activation="prelu", depth=40, shortcut=True, **SMALL)


def test_features_only_maps_equal_the_models_own_layers():
    """timm's FeatureListNet runs the flattened Sequential in order: the (input, branch) pair passes between the two
    halves of a block just as in the model."""
    torch.manual_seed(0)
    kwargs = dict(depth=13, widths=(4, 8, 8), activation="prelu")
    net = timm.create_model("delving_resplain", features_only=True, **kwargs)
    model = create_initialized("delving_resplain", "he", **kwargs)
    weights = {k.replace("features.", "features_", 1): v for k, v in model.state_dict().items()}
    net.load_state_dict({k: weights[k] for k in net.state_dict()})
    assert net.feature_info.channels() == [4, 8, 8] and net.feature_info.reduction() == [1, 2, 4]
    x = torch.randn(2, 3, 16, 16)
    maps = net(x)
    stage2 = model.features[:6](x)  # conv1, pool1, two blocks (four halves): a tensor at the stage's end
    torch.testing.assert_close(maps[1], stage2)
    torch.testing.assert_close(maps[-1], model.forward_features(x))


def test_reset_classifier_and_forward_head():
    model = timm.create_model("delving_resplain", depth=11, **SMALL).eval()
    x = torch.randn(2, 1, 16, 16)
    pre = model.forward_head(model.forward_features(x), pre_logits=True)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    torch.testing.assert_close(model(x), pre)


def test_one_config_key_turns_the_plain_net_into_its_twin():
    from types import SimpleNamespace

    from delving.experiment.training.config import load_config
    from delving.experiment.training.train import build_model
    from delving.nn.residual import has_shortcuts

    data = SimpleNamespace(in_chans=1, num_classes=10)
    base = ["model.depth=12", "model.kwargs.widths=[4,8,8]", "model.kwargs.fc_width=16"]
    plain = build_model(load_config(None, base), data)
    twin = build_model(load_config(None, [*base, "model.kwargs.shortcut=true"]), data)
    named = build_model(load_config(None, [*base, "model.name=delving_resplain"]), data)
    assert not has_shortcuts(plain) and has_shortcuts(twin) and has_shortcuts(named)
    assert weight_layers(plain) == weight_layers(twin) == weight_layers(named)
