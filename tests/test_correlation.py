"""Correlation propagation (C-map), TAT's depth-shaped slope and delta-orthogonal init, against their definitions."""

import math

import numpy as np
import pytest
import timm
import torch
from torch import nn

import delving  # noqa: F401
from delving.errors import DelvingError
from delving.experiment.training.config import load_config
from delving.nn.correlation import (cmap, leaky_cmap, leaky_iterate, monte_carlo_cmap, net_cmap, numerical_cmap,
                                    relu_cmap, tat_slope)
from delving.nn.init import delta_orthogonal_, initialize, rectifier_layers, tat_slopes_
from delving.nn.probes import correlation_profile, mean_cosine

CS = np.array([-0.9, -0.5, 0.0, 0.3, 0.5, 0.9, 0.99])


@pytest.mark.parametrize("c", [0.0, 0.5, 0.9])
def test_relu_closed_form_matches_a_million_sample_monte_carlo(c):
    assert monte_carlo_cmap(nn.ReLU(), c, samples=1_000_000) == pytest.approx(float(relu_cmap(c)), abs=0.005)


def test_relu_closed_form_values():
    # C(0) = 1/π, C(1) = 1, C(-1) = 0: the arc-cosine kernel of degree 1 (Cho & Saul 2009).
    assert relu_cmap([0.0, 1.0, -1.0]) == pytest.approx([1 / math.pi, 1.0, 0.0], abs=1e-12)


def test_prelu_at_slope_one_is_the_identity():
    assert leaky_cmap(CS, 1.0) == pytest.approx(CS, abs=1e-12)
    assert cmap(nn.PReLU(init=1.0), CS) == pytest.approx(CS, abs=1e-12)


@pytest.mark.parametrize("a", [0.0, 0.01, 0.25, 0.5686, 0.9])
def test_numerical_map_equals_the_closed_form(a):
    assert numerical_cmap(nn.LeakyReLU(a), CS) == pytest.approx(leaky_cmap(CS, a), abs=1e-9)


def test_channelwise_prelu_map_averages_the_channels_moments():
    act = nn.PReLU(2)
    with torch.no_grad():
        act.weight.copy_(torch.tensor([0.0, 0.5]))
    # per channel: E[f(u)f(v)] = (1-a)² J(c)/2π + a c and E[f²] = (1+a²)/2; the map is their ratio of means
    cross = (relu_cmap(0.3) / 2) + (0.25 * relu_cmap(0.3) / 2 + 0.5 * 0.3)
    assert cmap(act, 0.3) == pytest.approx(cross / ((1.0 + 1.25) / 2), abs=1e-12)


@pytest.mark.parametrize("act", [nn.GELU(), nn.ELU(), nn.Tanh(), nn.SiLU()], ids=lambda m: type(m).__name__)
def test_numerical_map_of_other_activations_matches_monte_carlo(act):
    for c in (0.0, 0.5, 0.9):
        assert numerical_cmap(act, c)[0] == pytest.approx(monte_carlo_cmap(act, c, samples=400_000), abs=0.005)


def test_cmap_keeps_the_shape_of_its_argument():
    assert np.shape(cmap(nn.SELU(), 0.5)) == ()
    assert float(cmap(nn.SELU(), 0.5)) == pytest.approx(numerical_cmap(nn.SELU(), 0.5)[0])
    assert cmap(nn.GELU(), CS).shape == CS.shape


def test_relu_chain_degenerates_as_stated():
    # Two orthogonal inputs through L ReLU layers (the kernel degeneracy of deep plain nets).
    assert net_cmap([nn.ReLU()] * 29, 0.0) == pytest.approx(0.970, abs=0.001)
    assert net_cmap([nn.ReLU()] * 99, 0.0) == pytest.approx(0.996, abs=0.001)
    assert net_cmap([None] * 50, 0.3) == pytest.approx(0.3)


@pytest.mark.parametrize("layers", [13, 29, 99, 999])
def test_tat_slope_solves_the_depth_equation(layers):
    a = tat_slope(layers, 0.9)
    assert 0.0 < a < 1.0
    assert leaky_iterate(0.0, a, layers) == pytest.approx(0.9, abs=1e-9)


def test_tat_slope_grows_with_depth_and_matches_the_known_value():
    assert tat_slope(99) == pytest.approx(0.5686, abs=1e-4)
    slopes = [tat_slope(L) for L in (13, 18, 21, 99, 199, 999)]
    assert slopes == sorted(slopes)


@pytest.mark.parametrize("layers", [13, 99])
def test_tat_slope_agrees_with_dks(layers):
    pytest.importorskip("absl")
    from dks.pytorch.activation_transform import get_transformed_activations

    def chain(x, r_fn):
        for _ in range(layers):
            x = r_fn(x)
        return x

    fn = get_transformed_activations(["leaky_relu"], method="TAT", tat_params=dict(c_val_0_target=0.9),
                                     subnet_max_func=chain)["leaky_relu"]
    x = torch.tensor([-1.0, 1.0])
    y = fn(x)
    dks_slope = float(-y[0] / y[1])  # the transform is scale * leaky_relu(x, a) (+ 0 shift for TAT)
    assert tat_slope(layers, 0.9) == pytest.approx(dks_slope, abs=1e-4)


def test_tat_slope_rejects_unreachable_and_bad_targets():
    with pytest.raises(DelvingError, match="out of reach"):
        tat_slope(2, 0.9)  # two ReLU layers take 0 only to 0.46
    for eta in (0.0, 1.0, 1.5):
        with pytest.raises(DelvingError, match="tat_eta"):
            tat_slope(50, eta)


def test_tat_init_sets_every_slope_and_eq15_std():
    model = timm.create_model("delving_plain", depth=100, widths=(4, 8, 8), fc_width=16, activation="prelu",
                              in_chans=1, num_classes=10)
    initialize(model, "tat", "fan_in", generator=torch.Generator().manual_seed(0))
    a = tat_slope(99, 0.8)  # the default eta for Gaussian weights
    acts = rectifier_layers(model)
    assert len(acts) == 99
    assert all(torch.allclose(act.weight, torch.full_like(act.weight, a)) for act in acts)
    assert all(act.weight.requires_grad for act in acts)  # learnable from there
    conv = model.features.conv3_50.conv
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / ((1 + a * a) * 9 * 8)), rel=0.1)


def test_tat_with_relu_is_a_one_line_error_naming_the_valid_activations():
    model = timm.create_model("delving_plain", depth=20, widths=(4, 8, 8), fc_width=16, activation="relu",
                              in_chans=1, num_classes=10)
    with pytest.raises(DelvingError, match="valid activations: prelu, prelu_shared, leaky_relu") as err:
        initialize(model, "tat")
    assert "\n" not in str(err.value)
    with pytest.raises(DelvingError, match="ReLU"):
        tat_slopes_(model)


def test_tat_sets_a_leaky_relus_slope():
    model = timm.create_model("delving_plain", depth=30, widths=(4, 8, 8), fc_width=16, activation="leaky_relu",
                              in_chans=1, num_classes=10)
    a = tat_slopes_(model, 0.9)
    assert a == pytest.approx(tat_slope(29))
    assert {act.negative_slope for act in rectifier_layers(model)} == {a}


@pytest.mark.parametrize("out_ch, in_ch", [(32, 16), (16, 32), (24, 24)])
def test_delta_orthogonal_is_orthogonal_scaled_and_centre_only(out_ch, in_ch):
    w = torch.empty(out_ch, in_ch, 3, 3)
    delta_orthogonal_(w, gain=1.5, generator=torch.Generator().manual_seed(0))
    centre = w[:, :, 1, 1].double()
    scale = 1.5 * max(math.sqrt(out_ch / in_ch), 1.0)
    gram = centre.T @ centre if out_ch >= in_ch else centre @ centre.T
    assert gram == pytest.approx(scale ** 2 * torch.eye(min(out_ch, in_ch), dtype=torch.float64), abs=1e-5)
    mask = torch.ones(3, 3, dtype=torch.bool)
    mask[1, 1] = False
    assert torch.count_nonzero(w[:, :, mask]) == 0


@pytest.mark.parametrize("out_ch, in_ch", [(64, 16), (16, 64), (32, 32)])
def test_delta_orthogonal_keeps_each_units_second_moment(out_ch, in_ch):
    # Forward q-map: with isotropic inputs, E[y_i²] = gain² E[x²] for every output unit on average.
    w = torch.empty(out_ch, in_ch, 3, 3)
    delta_orthogonal_(w, gain=1.0, generator=torch.Generator().manual_seed(1))
    x = torch.randn(256, in_ch, 8, 8, generator=torch.Generator().manual_seed(2))
    y = nn.functional.conv2d(x, w, padding=1)
    assert float(y.pow(2).mean()) == pytest.approx(float(x.pow(2).mean()), rel=0.05)


def test_delta_orthogonal_agrees_with_dks_scaled_uniform_orthogonal():
    pytest.importorskip("absl")
    from dks.pytorch.parameter_sampling_functions import scaled_uniform_orthogonal_

    out_ch, in_ch = 32, 16
    torch.manual_seed(0)
    # dks reads a filter bank as [in, out, k, k] (the JAX/TF layout): draw it there, then move to torch's layout.
    theirs = scaled_uniform_orthogonal_(torch.empty(in_ch, out_ch, 3, 3), gain=1.0, delta=True).transpose(0, 1)
    ours = delta_orthogonal_(torch.empty(out_ch, in_ch, 3, 3), gain=1.0, generator=torch.Generator().manual_seed(0))
    for w in (theirs, ours):
        centre = w[:, :, 1, 1].double()
        assert centre.T @ centre == pytest.approx(2.0 * torch.eye(in_ch, dtype=torch.float64), abs=1e-5)
        off_centre = w.clone()
        off_centre[:, :, 1, 1] = 0
        assert torch.count_nonzero(off_centre) == 0
    linear_theirs = scaled_uniform_orthogonal_(torch.empty(in_ch, out_ch), gain=1.0).T  # dks: [in, out] too
    linear_ours = delta_orthogonal_(torch.empty(out_ch, in_ch), gain=1.0)
    assert linear_theirs.T @ linear_theirs == pytest.approx(linear_ours.T @ linear_ours, abs=1e-5)


def test_delta_orthogonal_rejects_even_kernels():
    with pytest.raises(DelvingError, match="odd conv kernels"):
        delta_orthogonal_(torch.empty(8, 8, 2, 2))


def test_delta_orthogonal_combines_with_the_schemes_gain():
    model = nn.Sequential(nn.Conv2d(16, 16, 3), nn.PReLU(16, init=0.25), nn.Linear(16, 8))
    initialize(model, "he", "fan_in", weights="delta_orthogonal", generator=torch.Generator().manual_seed(0))
    centre = model[0].weight.detach()[:, :, 1, 1].double()
    gain2 = 2 / (1 + 0.25 ** 2)  # Eq. 15's gain, std x sqrt(fan)
    assert centre.T @ centre == pytest.approx(gain2 * torch.eye(16, dtype=torch.float64), abs=1e-5)
    fc = model[2].weight.detach().double()
    assert fc @ fc.T == pytest.approx(2.0 * torch.eye(8, dtype=torch.float64), abs=1e-5)  # a=0 after fc: He gain
    with pytest.raises(DelvingError, match="init weights"):
        initialize(model, "he", weights="uniform")


def test_correlation_profile_follows_the_theory_in_a_wide_dense_chain():
    # Input pairs with a set correlation through 20 wide ReLU layers: measured vs the C-map iterate.
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(1, 2048, generator=gen)
    x = 0.6 ** 0.5 * base + 0.4 ** 0.5 * torch.randn(48, 2048, generator=gen)  # mean cosine ~0.6
    layers = []
    for _ in range(20):
        layers += [nn.Linear(2048, 2048, bias=False), nn.ReLU()]
    model = initialize(nn.Sequential(*layers), "he", generator=gen)
    profile = correlation_profile(model, x)
    assert profile[0].theory == pytest.approx(mean_cosine(x))
    assert len(profile) == 20 and not any(p.anchored for p in profile)
    assert max(abs(p.measured - p.theory) for p in profile) < 0.03
    assert profile[-1].theory > 0.95  # and the theory does degenerate


@pytest.mark.parametrize("weights", ["gaussian", "delta_orthogonal"])
def test_correlation_profile_follows_the_kernel_recursion_in_a_wide_conv_chain(weights):
    # Inputs that share a centre patch: the correlation varies by position, where the scalar C-map (the mean
    # mapped) and the per-position recursion (each position mapped, then mixed by the taps) part.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, 8, 8, generator=gen)
    x[:, :, 2:6, 2:6] += 2 * torch.randn(1, 4, 4, 4, generator=gen)
    layers, channels = [], 4
    for _ in range(12):
        layers += [nn.Conv2d(channels, 256, 3, padding=1, bias=False), nn.LeakyReLU(0.2)]
        channels = 256
    profile = correlation_profile(initialize(nn.Sequential(*layers), "he", weights=weights, generator=gen), x)
    kernel_gap = max(abs(p.measured - p.theory) for p in profile)
    cmap_gap = max(abs(p.measured - p.cmap_iterate) for p in profile)
    assert kernel_gap < 0.03 and kernel_gap < cmap_gap
    if weights == "gaussian":  # measured 0.023 against 0.063
        assert cmap_gap > 2 * kernel_gap


def test_layer_gram_is_the_expected_gram_of_a_wide_layer():
    from delving.nn.conv_kernel import layer_gram, response_gram

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 7, 7, generator=gen)
    conv = nn.Conv2d(3, 4096, 3, stride=2, padding=1)
    nn.init.normal_(conv.weight, std=0.2, generator=gen)
    nn.init.normal_(conv.bias, std=0.1, generator=gen)
    expected = layer_gram(conv, response_gram(x))
    measured = response_gram(conv(x))
    assert expected.shape == measured.shape == (4, 4, 6, 6)
    assert torch.allclose(measured, expected, atol=0.05 * expected.abs().max().item())
    fc = nn.Linear(3 * 7 * 7, 1, bias=False)
    assert layer_gram(fc, response_gram(x)).shape == (1, 1, 6, 6)


def test_the_kernel_recursion_takes_rectifiers_only_and_the_profile_falls_back_to_the_cmap():
    from delving.nn.conv_kernel import dual_gram

    gram = torch.eye(3, dtype=torch.float64)[None, None]
    with pytest.raises(ValueError, match="covers rectifiers .* not Tanh"):
        dual_gram(gram, nn.Tanh())
    # ReLU on orthogonal unit inputs: E[relu(u) relu(v)] = 1/(2π) off the diagonal, 1/2 on it
    expected = torch.full((3, 3), 1 / (2 * math.pi), dtype=torch.float64).fill_diagonal_(0.5)
    assert torch.allclose(dual_gram(gram, nn.ReLU())[0, 0], expected)
    model = nn.Sequential(nn.Conv2d(2, 32, 3, padding=1), nn.ELU(), nn.Conv2d(32, 32, 3, padding=1), nn.ELU())
    profile = correlation_profile(model, torch.randn(6, 2, 8, 8))
    assert all(p.theory == p.cmap_iterate for p in profile)


def test_correlation_profile_restarts_after_pooling():
    model = timm.create_model("delving_plain", depth=10, widths=(4, 8, 8), fc_width=16, activation="relu",
                              in_chans=1, num_classes=10)
    profile = correlation_profile(initialize(model, "he"), torch.randn(8, 1, 16, 16))
    anchored = {p.layer for p in profile if p.anchored}
    assert anchored == {"conv21", "conv31", "fc1"}  # after pool1, pool2, spp
    assert all(p.theory == p.measured for p in profile if p.anchored)


def test_config_takes_the_new_options_and_rejects_bad_values():
    cfg = load_config(None, ["model.activation=prelu", "init.scheme=tat", "init.tat_eta=0.8",
                             "init.weights=delta_orthogonal"])
    assert (cfg.init.scheme, cfg.init.tat_eta, cfg.init.weights) == ("tat", 0.8, "delta_orthogonal")
    for overrides, match in ((["init.scheme=tat"], "model.activation=relu has none"),
                             (["init.weights=uniform"], "init.weights"),
                             (["model.activation=prelu", "init.tat_eta=1.0"], "init.tat_eta")):
        with pytest.raises(DelvingError, match=match) as err:
            load_config(None, overrides)
        assert "\n" not in str(err.value)
