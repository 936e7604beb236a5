import math

import pytest
import timm
import torch
from torch import nn

import delving  # noqa: F401
from delving.errors import DelvingError
from delving.nn.init import PAPER_FC_STD, initialize, weight_layers

# Big layers so the sample std of the weights is within ~1% of the formula.
C_IN, C_OUT, K = 64, 128, 3


def one_layer(activation: nn.Module | None) -> nn.Sequential:
    layers = [nn.Conv2d(C_IN, C_OUT, K)]
    if activation is not None:
        layers.append(activation)
    return nn.Sequential(*layers)


def weight_std(model: nn.Module) -> float:
    return float(model[0].weight.detach().std())


FAN = {"fan_in": K * K * C_IN, "fan_out": K * K * C_OUT}  # n_l = k^2 c, n^_l = k^2 d (Sec. 2.2)


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_he_relu_matches_eq10_and_eq14(mode):
    model = initialize(one_layer(nn.ReLU()), "he", mode, generator=torch.Generator().manual_seed(0))
    assert weight_std(model) == pytest.approx(math.sqrt(2 / FAN[mode]), rel=0.02)
    assert torch.all(model[0].bias == 0)


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_he_prelu_uses_eq15_factor_with_the_following_slope(mode):
    model = one_layer(nn.PReLU(C_OUT, init=0.25))
    initialize(model, "he", mode, generator=torch.Generator().manual_seed(0))
    assert weight_std(model) == pytest.approx(math.sqrt(2 / ((1 + 0.25**2) * FAN[mode])), rel=0.02)
    initialize(model, "he", mode, prelu_factor=False, generator=torch.Generator().manual_seed(0))
    assert weight_std(model) == pytest.approx(math.sqrt(2 / FAN[mode]), rel=0.02)


def test_he_reads_the_current_slope_and_leaky_slope():
    model = one_layer(nn.PReLU(1, init=1.0))  # a = 1 is the linear case: Eq. 15 gives the paper's Xavier
    initialize(model, "he", generator=torch.Generator().manual_seed(0))
    assert weight_std(model) == pytest.approx(math.sqrt(1 / FAN["fan_in"]), rel=0.02)
    model = initialize(one_layer(nn.LeakyReLU(0.01)), "he", generator=torch.Generator().manual_seed(0))
    assert weight_std(model) == pytest.approx(math.sqrt(2 / (1.0001 * FAN["fan_in"])), rel=0.02)


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_paper_xavier_is_sqrt_one_over_n(mode):
    model = initialize(one_layer(nn.ReLU()), "xavier", mode, generator=torch.Generator().manual_seed(0))
    assert weight_std(model) == pytest.approx(math.sqrt(1 / FAN[mode]), rel=0.02)


def test_glorot_is_torch_xavier_normal():
    model = initialize(one_layer(nn.ReLU()), "glorot", generator=torch.Generator().manual_seed(0))
    assert weight_std(model) == pytest.approx(math.sqrt(2 / (FAN["fan_in"] + FAN["fan_out"])), rel=0.02)


def test_paper_fc_stds_on_the_last_three_fc_layers_and_zero_biases():
    model = timm.create_model("delving_plain", depth=9, fc_width=512, in_chans=1, num_classes=1000)
    for p in model.parameters():
        nn.init.constant_(p, 1.0)
    initialize(model, "he", "fan_out", fc_std=PAPER_FC_STD, generator=torch.Generator().manual_seed(0))
    fcs = [model.head.fc1.fc, model.head.fc2.fc, model.head.fc3.fc]
    for fc, std in zip(fcs, PAPER_FC_STD):
        assert float(fc.weight.detach().std()) == pytest.approx(std, rel=0.03)
    conv = model.features.conv3.conv
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / (9 * conv.out_channels)), rel=0.1)
    assert all(torch.all(m.bias == 0) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_weight_layers_pair_each_layer_with_the_activation_after_it():
    model = timm.create_model("delving_plain", depth=9, activation="prelu", in_chans=1, num_classes=10)
    pairs = list(weight_layers(model))
    assert len(pairs) == 9
    assert all(isinstance(act, nn.PReLU) for _, _, act in pairs[:-1])
    assert pairs[-1][0] == "head.fc3.fc" and pairs[-1][2] is None
    assert pairs[0][2].weight.numel() == pairs[0][1].out_channels  # channel-wise slope of the same layer


def test_bad_scheme_mode_and_fc_std_are_errors():
    model = one_layer(nn.ReLU())
    with pytest.raises(DelvingError, match="unknown init scheme 'kaiming'"):
        initialize(model, "kaiming")
    with pytest.raises(DelvingError, match="unknown init mode 'fan_avg'"):
        initialize(model, "he", "fan_avg")
    with pytest.raises(DelvingError, match="fc_std has 3 values but the model has 0 fc layers"):
        initialize(model, "he", fc_std=PAPER_FC_STD)
    with pytest.raises(DelvingError, match="needs a rectifier"):
        initialize(one_layer(nn.Tanh()), "he")


def test_he_treats_rectifier_like_activations_as_relu():
    for act in (nn.GELU(), nn.ELU(), nn.SiLU()):
        model = one_layer(act)
        initialize(model, "he", generator=torch.Generator().manual_seed(0))
        conv = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        n = conv.weight[0].numel()
        assert abs(float(conv.weight.detach().std()) / math.sqrt(2 / n) - 1) < 0.05  # Eq. 10 with a = 0


@pytest.mark.parametrize("weights, eta", [("gaussian", 0.8), ("delta_orthogonal", 0.9)])
def test_tat_eta_defaults_by_the_weights_kind_and_reaches_the_slopes(weights, eta):
    """init.tat_eta null: TAT's target is 0.8 with Gaussian weights, 0.9 with delta-orthogonal ones; the slope set
    on every PReLU is tat_slope(L, eta) for the L = depth - 1 rectifier layers."""
    from delving.models import create_initialized
    from delving.nn.correlation import tat_slope
    from delving.nn.init import TAT_ETA, rectifier_layers, tat_eta_for

    assert TAT_ETA == {"gaussian": 0.8, "delta_orthogonal": 0.9} and tat_eta_for(weights) == eta
    kwargs = dict(activation="prelu", depth=60, widths=(4, 8, 8), fc_width=16, in_chans=1, num_classes=10)
    model = create_initialized("delving_plain", "tat", weights=weights, **kwargs)
    slopes = torch.cat([act.weight.detach() for act in rectifier_layers(model)])
    assert len(rectifier_layers(model)) == 59
    torch.testing.assert_close(slopes, torch.full_like(slopes, tat_slope(59, eta)), rtol=0, atol=1e-6)
    direct = initialize(timm.create_model("delving_plain", **kwargs), "tat", weights=weights)
    assert float(rectifier_layers(direct)[0].weight.detach()[0]) == pytest.approx(tat_slope(59, eta), abs=1e-6)


def test_an_explicit_tat_eta_wins_over_the_default():
    from delving.models import create_initialized
    from delving.nn.correlation import tat_slope
    from delving.nn.init import rectifier_layers, tat_eta_for

    assert tat_eta_for("gaussian", 0.9) == 0.9 and tat_eta_for("delta_orthogonal", 0.7) == 0.7
    kwargs = dict(activation="prelu", depth=60, widths=(4, 8, 8), fc_width=16, in_chans=1, num_classes=10)
    model = create_initialized("delving_plain", "tat", tat_eta=0.9, **kwargs)  # Gaussian weights
    assert float(rectifier_layers(model)[-1].weight.detach()[0]) == pytest.approx(tat_slope(59, 0.9), abs=1e-6)
    assert tat_slope(59, 0.9) != pytest.approx(tat_slope(59, 0.8), abs=1e-3)  # the two defaults are told apart


def test_the_config_leaves_tat_eta_to_the_weights_kind_and_checks_an_explicit_one():
    from delving.errors import DelvingError as Error
    from delving.experiment.training.config import load_config

    tat = ["model.activation=prelu", "init.scheme=tat"]
    assert load_config(None, tat).init.tat_eta is None
    assert load_config(None, [*tat, "init.tat_eta=0.85"]).init.tat_eta == 0.85
    for bad in ("0.0", "1.0", "nan"):
        with pytest.raises(Error, match=f"init.tat_eta={bad} must be between 0 and 1 .*valid: null or a number"):
            load_config(None, [*tat, f"init.tat_eta={bad}"])
