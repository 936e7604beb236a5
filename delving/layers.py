"""Layers in the paper's vocabulary: the activation factory (Sec. 2.1) and spatial pyramid pooling (Sec. 2.3).

Activations are built by name *with the channel count* of the layer they follow, because a channel-wise PReLU
(Eq. 1, one a_i per channel i) needs it; timm's ``act_layer(inplace=True)`` convention cannot express that.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from delving.errors import DelvingError, choices

# "a_i = 0.25 is used as the initialization throughout this paper" (Sec. 2.1).
PRELU_INIT = 0.25
# Leaky ReLU's fixed small slope (Sec. 2.1, "LReLU ... a_i = 0.01").
LEAKY_SLOPE = 0.01

ACTIVATIONS: dict[str, Callable[[int], nn.Module]] = {
    "relu": lambda channels: nn.ReLU(),
    # Eq. 1 channel-wise: one learnable a_i per channel; torch's nn.PReLU(C) is exactly that.
    "prelu": lambda channels: nn.PReLU(num_parameters=channels, init=PRELU_INIT),
    # Eq. 1 channel-shared: one a per layer ("only introduces 13 extra free parameters").
    "prelu_shared": lambda channels: nn.PReLU(num_parameters=1, init=PRELU_INIT),
    "leaky_relu": lambda channels: nn.LeakyReLU(negative_slope=LEAKY_SLOPE),
    # Beyond the paper (torch's own modules): for the `variance_preserving` init of delving.init.
    "elu": lambda channels: nn.ELU(),
    "selu": lambda channels: nn.SELU(),
    "gelu": lambda channels: nn.GELU(),
    "silu": lambda channels: nn.SiLU(),
    "tanh": lambda channels: nn.Tanh(),
    "softplus": lambda channels: nn.Softplus(),
}


def make_activation(name: str, channels: int) -> nn.Module:
    """Build the activation ``name`` for a layer with ``channels`` output channels.

    Raises:
        DelvingError: for an unknown name, listing the valid ones.
    """
    if name not in ACTIVATIONS:
        raise DelvingError(f"unknown activation {name!r}; valid: {choices(ACTIVATIONS)}")
    return ACTIVATIONS[name](channels)


class SpatialPyramidPool(nn.Module):
    """Spatial pyramid pooling (SPP-net, used before fc1 in Sec. 2.3): max-pool the map into n×n bins per level.

    Output length is ``channels * sum(n * n for n in levels)`` whatever the input's spatial size, so the fc layers
    accept any image size. torch's adaptive max pool computes the bins; where a level divides the map exactly it
    equals an ordinary max pool.
    """

    def __init__(self, levels: tuple[int, ...]):
        super().__init__()
        self.levels = tuple(levels)
        self.pools = nn.ModuleList(nn.AdaptiveMaxPool2d(n) for n in self.levels)

    @property
    def bins(self) -> int:
        return sum(n * n for n in self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, C * bins)
        return torch.cat([pool(x).flatten(1) for pool in self.pools], dim=1)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"
