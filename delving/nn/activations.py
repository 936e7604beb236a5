"""The activation factory in the paper's vocabulary (Sec. 2.1).

Activations are built by name *with the channel count* of the layer they follow, because a channel-wise PReLU
(Eq. 1, one a_i per channel i) needs it; timm's ``act_layer(inplace=True)`` convention cannot express that.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from delving.errors import DelvingError, choices
from delving.nn.prelu import PReLU

# "a_i = 0.25 is used as the initialization throughout this paper" (Sec. 2.1).
PRELU_INIT = 0.25
# Leaky ReLU's fixed small slope (Sec. 2.1, "LReLU ... a_i = 0.01").
LEAKY_SLOPE = 0.01

ACTIVATIONS: dict[str, Callable[[int], nn.Module]] = {
    "relu": lambda channels: nn.ReLU(),
    # Eq. 1 channel-wise: one learnable a_i per channel; torch's nn.PReLU(C) is exactly that.
    "prelu": lambda channels: PReLU(num_parameters=channels, init=PRELU_INIT),
    # Eq. 1 channel-shared: one a per layer ("only introduces 13 extra free parameters").
    "prelu_shared": lambda channels: PReLU(num_parameters=1, init=PRELU_INIT),
    "leaky_relu": lambda channels: nn.LeakyReLU(negative_slope=LEAKY_SLOPE),
    # Beyond the paper (torch's own modules): for the `variance_preserving` init of delving.nn.init.
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
