import pytest
import torch
from torch import nn

from delving.errors import DelvingError
from delving.nn.activations import ACTIVATIONS, PRELU_INIT, make_activation
from delving.nn.pooling import SpatialPyramidPool


def prelu_eq1(y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Eq. 1 written out: f(y_i) = max(0, y_i) + a_i min(0, y_i), a_i per channel (dim 1)."""
    a = a.view(1, -1, *([1] * (y.dim() - 2)))
    return y.clamp(min=0) + a * y.clamp(max=0)


def test_prelu_channelwise_has_one_slope_per_channel_and_matches_eq1():
    act = make_activation("prelu", 6)
    assert isinstance(act, nn.PReLU) and act.weight.numel() == 6
    assert torch.all(act.weight == PRELU_INIT)
    with torch.no_grad():
        act.weight.copy_(torch.linspace(-0.5, 1.5, 6))
    y = torch.randn(3, 6, 5, 5)
    torch.testing.assert_close(act(y), prelu_eq1(y, act.weight))


def test_prelu_shared_has_one_slope_and_matches_eq1():
    act = make_activation("prelu_shared", 6)
    assert act.weight.numel() == 1 and float(act.weight) == PRELU_INIT
    y = torch.randn(3, 6, 5, 5)
    torch.testing.assert_close(act(y), prelu_eq1(y, act.weight.expand(6)))


def test_prelu_slope_gradient_is_eq2_and_eq3():
    """dE/da_i = sum over all positions (and the batch) of dE/df * y where y <= 0, else 0."""
    act = make_activation("prelu", 4)
    y = torch.randn(2, 4, 3, 3)
    upstream = torch.randn_like(y)
    act(y).backward(upstream)
    expected = (upstream * y.clamp(max=0)).sum(dim=(0, 2, 3))
    torch.testing.assert_close(act.weight.grad, expected)


def test_relu_and_leaky_relu_slopes():
    y = torch.randn(100)
    assert torch.equal(make_activation("relu", 3)(y), y.clamp(min=0))
    torch.testing.assert_close(make_activation("leaky_relu", 3)(y), prelu_eq1(y.view(1, 100), torch.tensor([0.01]))
                               .view(100))


def test_unknown_activation_names_the_valid_ones():
    with pytest.raises(DelvingError, match=r"unknown activation 'swish'.*'prelu'"):
        make_activation("swish", 4)
    assert set(ACTIVATIONS) >= {"relu", "prelu", "prelu_shared", "leaky_relu"}


@pytest.mark.parametrize("size", [4, 7, 16])
def test_spp_output_length_is_independent_of_input_size(size):
    spp = SpatialPyramidPool((4, 2, 1))
    assert spp.bins == 21
    assert spp(torch.randn(2, 3, size, size)).shape == (2, 3 * 21)


def test_spp_single_level_equals_max_pool_when_it_divides():
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(SpatialPyramidPool((4,))(x), nn.functional.max_pool2d(x, 2).flatten(1))
