"""Sec. 2.2's variance rule for any activation: the second moments against the paper's values and Monte Carlo."""

import math

import pytest
import torch
from torch import nn

from delving.experiment.training.config import load_config
from delving.nn.init import initialize
from delving.nn.activations import make_activation
from delving.nn.moments import monte_carlo, second_moments

NEW = ["elu", "selu", "gelu", "silu", "tanh", "softplus"]


def test_relu_and_prelu_give_the_papers_gains_within_0_1_percent():
    forward, backward = second_moments(nn.ReLU())
    assert 1 / forward == pytest.approx(2.0, rel=1e-3) and 1 / backward == pytest.approx(2.0, rel=1e-3)  # Eq. 10/14
    for a in (0.25, 0.6, 1.0):
        forward, backward = second_moments(nn.PReLU(8, init=a))
        assert 1 / forward == pytest.approx(2 / (1 + a * a), rel=1e-3)  # Eq. 15; a = 1 is the linear case
        assert 1 / backward == pytest.approx(2 / (1 + a * a), rel=1e-3)
    assert second_moments(None) == (1.0, 1.0)


@pytest.mark.parametrize("name", NEW)
def test_new_activations_match_a_million_sample_monte_carlo_within_1_percent(name):
    act = make_activation(name, 4)
    quad, mc = second_moments(act), monte_carlo(act, samples=1_000_000, seed=3)
    assert quad[0] == pytest.approx(mc[0], rel=0.01) and quad[1] == pytest.approx(mc[1], rel=0.01)


def test_selu_is_self_normalizing_under_the_rule():
    assert second_moments(nn.SELU())[0] == pytest.approx(1.0, abs=1e-4)  # SELU's design: E[f(y)^2] = 1


@pytest.mark.parametrize("mode, which", [("fan_in", 0), ("fan_out", 1)])
@pytest.mark.parametrize("name", ["relu", "tanh", "gelu"])
def test_variance_preserving_std_per_layer(name, mode, which):
    model = nn.Sequential(nn.Conv2d(64, 128, 3), make_activation(name, 128))
    initialize(model, "variance_preserving", mode, generator=torch.Generator().manual_seed(0))
    fan = 9 * (64 if mode == "fan_in" else 128)
    expected = math.sqrt(1 / (fan * second_moments(model[1])[which]))
    assert float(model[0].weight.detach().std()) == pytest.approx(expected, rel=0.02)


def test_new_names_are_reachable_from_configs_and_wrong_ones_are_errors():
    cfg = load_config(None, ["model.activation=selu", "init.scheme=variance_preserving"])
    assert (cfg.model.activation, cfg.init.scheme) == ("selu", "variance_preserving")
    from delving.errors import DelvingError

    with pytest.raises(DelvingError, match="unknown model.activation 'swishy'"):
        load_config(None, ["model.activation=swishy"])
    with pytest.raises(DelvingError, match="unknown init.scheme 'variance'"):
        load_config(None, ["init.scheme=variance"])
