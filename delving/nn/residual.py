"""ResNet's basic block without normalization (He, Zhang, Ren & Sun 2016, "Deep Residual Learning", Fig. 2), for the
residual twin of the plain nets.

The block is ``out = f(x + α · conv_b(f(conv_a(x))))``: two convs, an identity shortcut around them, the activation f
after the sum (Eq. 1 of He et al. 2016 and their Fig. 2). It is split at its inner activation into two units, so that
each conv keeps the plain net's layer name (conv21, conv22 ...) and :func:`delving.nn.probes.slope_profile` reads a
residual net as it reads a plain one:

- :class:`BlockStart` (conv_a, f): ``x -> (x, f(conv_a(x)))``, the block's input carried along for the shortcut;
- :class:`BlockEnd` (conv_b, α, f): ``(x, h) -> f(x + α · conv_b(h))``.

The pair travels through an ``nn.Sequential`` as a tuple, so timm's feature extraction (which runs the Sequential's
children in order) computes what the model computes.

Where the block widens the map (a stage's first block), the shortcut adds zero channels: He et al. 2016's option A,
the parameter-free identity of their CIFAR-10 nets (Sec. 3.3 and 4.2).

Without normalization, each block adds its branch's variance to the signal's: with He init inside the branch
(Eq. 10/15 of He et al. 2015 on conv_a and conv_b), E[out²] <= (1 + 2α²) E[x²] per block, so with α = 1 the forward
variance can grow as 3^B over B blocks. The remedy is SkipInit (De & Smith, NeurIPS 2020, "Batch Normalization Biases
Residual Blocks Towards the Identity Function in Deep Networks"): a learnable scalar α at the end of each residual
branch, initialized at zero or at a small value below 1/sqrt(B). :data:`SKIPINIT_GAIN` / sqrt(B) is used here: the
variance then grows by at most (1 + 0.5 / B)^B < e^0.5 over the whole net, and, unlike α = 0, every weight gets a
gradient from the first step.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from delving.errors import DelvingError

# α = SKIPINIT_GAIN / sqrt(B): below De & Smith's bound 1/sqrt(B), so the B blocks together raise the forward
# variance by at most exp(2 SKIPINIT_GAIN²) = e^0.5 (see the module docstring).
SKIPINIT_GAIN = 0.5


def skipinit_alpha(blocks: int) -> float:
    """SkipInit's initial branch scale for a net of ``blocks`` residual blocks: :data:`SKIPINIT_GAIN` / sqrt(blocks)."""
    return SKIPINIT_GAIN / math.sqrt(max(blocks, 1))


class SkipInit(nn.Module):
    """A learnable scalar on a residual branch (De & Smith 2020), reset to ``alpha`` by ``reset_parameters``."""

    def __init__(self, alpha: float = 0.0):
        super().__init__()
        self.alpha = float(alpha)
        self.weight = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.weight, self.alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:.4g}"


class BlockStart(nn.Module):
    """The first conv of a basic block and its activation; passes the block's input on for the shortcut."""

    def __init__(self, conv: nn.Module, act: nn.Module):
        super().__init__()
        self.conv = conv
        self.act = act

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, self.act(self.conv(x))


class BlockEnd(nn.Module):
    """The second conv of a basic block, scaled by SkipInit's α, added to the shortcut, then the activation.

    ``in_channels`` is the block's input width (its first conv's): where the conv is wider, the shortcut adds zero
    channels (He et al. 2016, option A), a width fixed at construction so that tracing (torch.fx) sees no branch.
    """

    def __init__(self, conv: nn.Conv2d, act: nn.Module, alpha: float, in_channels: int):
        super().__init__()
        if conv.out_channels < in_channels:
            raise DelvingError(f"an identity shortcut cannot narrow {in_channels} channels to {conv.out_channels}; "
                               f"valid: a block whose second conv is at least as wide as its input")
        self.conv = conv  # registered before the activation: delving.nn.init pairs each conv with the act after it
        self.skipinit = SkipInit(alpha)
        self.act = act
        self.extra_channels = conv.out_channels - in_channels

    def forward(self, pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, h = pair[0], pair[1]  # indexed, not unpacked: torch.fx traces indexing (timm's feature extraction by fx)
        if self.extra_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return self.act(x + self.skipinit(self.conv(h)))


def has_shortcuts(model: nn.Module) -> bool:
    """Whether ``model`` holds residual blocks of this module (its branches carry a :class:`SkipInit`)."""
    return any(isinstance(m, SkipInit) for m in model.modules())
