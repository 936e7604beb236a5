import math

import numpy as np
import pytest
import timm
import torch

import delving  # noqa: F401
from delving.nn.probes import slope_profile, variance_profile
from delving.nn.init import initialize

DEPTH = 30


def profile(scheme: str, activation: str = "relu", mode: str = "fan_in"):
    model = timm.create_model("delving_plain", depth=DEPTH, activation=activation, in_chans=1, num_classes=10)
    initialize(model, scheme, mode, generator=torch.Generator().manual_seed(0))
    x = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    return model, variance_profile(model, x)


def conv_forward_stds(signals) -> np.ndarray:
    return np.array([s.forward_std for s in signals if s.layer.startswith("conv")])


def test_xavier_forward_std_falls_as_one_over_sqrt_2_per_layer():
    """Sec. 2.2: with n Var[w] = 1 and ReLU, Var[y] halves per layer, so the std falls by 1/sqrt(2^L)."""
    _, signals = profile("xavier")
    stds = conv_forward_stds(signals)
    assert len(signals) == DEPTH and len(stds) == DEPTH - 3
    assert stds[-1] / stds[0] < 1e-3  # orders of magnitude across depth
    # Fit log2(std) against depth: the slope is the per-layer factor, predicted -1/2 (a factor 1/sqrt(2)).
    slope = np.polyfit(np.arange(len(stds)), np.log2(stds), 1)[0]
    assert slope == pytest.approx(-0.5, abs=0.08)


def test_he_forward_std_stays_within_a_small_factor():
    _, signals = profile("he")
    stds = conv_forward_stds(signals)
    assert 0.25 < stds.min() / stds[0] and stds.max() / stds[0] < 4
    slope = np.polyfit(np.arange(len(stds)), np.log2(stds), 1)[0]
    assert abs(slope) < 0.05


def conv_backward_stds(signals) -> np.ndarray:
    return np.array([s.backward_std for s in signals if s.layer.startswith("conv")])


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_backward_std_vanishes_with_xavier_not_with_he(mode):
    """Sec. 2.2, Eq. 14: the gradient reaching conv1 is 2^-L/2 of the top one with Xavier; He keeps its order."""
    xavier = conv_backward_stds(profile("xavier", mode=mode)[1])
    he = conv_backward_stds(profile("he", mode=mode)[1])
    assert xavier[0] / xavier[-1] < 1e-3
    # fan_out (Eq. 14) preserves it; fan_in leaves the product c_2/d_L of Sec. 2.2, not exponential in depth.
    assert he[0] / he[-1] > (0.25 if mode == "fan_out" else 0.05)


def test_variance_profile_leaves_parameter_grads_and_mode_alone():
    model, signals = profile("he", "prelu")
    assert all(p.grad is None for p in model.parameters())
    assert model.training
    assert [s.index for s in signals] == list(range(1, DEPTH + 1))
    assert signals[0].layer == "conv1" and signals[-1].layer == "fc3"
    assert all(math.isfinite(s.backward_std) for s in signals)


def test_slope_profile_in_network_order_with_names():
    model = timm.create_model("delving_plain", depth=10, activation="prelu", in_chans=1, num_classes=10)
    records = slope_profile(model)
    assert [r.layer for r in records] == ["conv1", "conv21", "conv22", "conv23", "conv24", "conv31", "conv32",
                                          "fc1", "fc2"]
    assert records[0].values.shape == (16,) and not records[0].shared
    assert all(r.mean == pytest.approx(0.25) for r in records)
    with torch.no_grad():
        model.features.conv1.act.weight.copy_(torch.arange(16.0))
    assert slope_profile(model)[0].mean == pytest.approx(7.5)


def test_slope_profile_shared_and_relu():
    shared = slope_profile(timm.create_model("delving_plain", depth=9, activation="prelu_shared"))
    assert len(shared) == 8 and all(r.shared and r.std == 0.0 for r in shared)
    assert slope_profile(timm.create_model("delving_plain", depth=9, activation="relu")) == []
