"""Layers in the paper's vocabulary: the activation factory (Sec. 2.1) and spatial pyramid pooling (Sec. 2.3).

Activations are built by name *with the channel count* of the layer they follow, because a channel-wise PReLU
(Eq. 1, one a_i per channel i) needs it; timm's ``act_layer(inplace=True)`` convention cannot express that.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from delving.errors import DelvingError, choices

# "a_i = 0.25 is used as the initialization throughout this paper" (Sec. 2.1).
PRELU_INIT = 0.25
# Leaky ReLU's fixed small slope (Sec. 2.1, "LReLU ... a_i = 0.01").
LEAKY_SLOPE = 0.01

# Elements per chunk of the composed-ops backward (4 MiB of fp32): the chunk's temporary is reused from the heap
# instead of freshly mapped pages, and there are few chunks, so few multi-threaded regions.
_CHUNK = 1 << 20


def prelu_backward_ops(grad: torch.Tensor, saved: torch.Tensor,
                       weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3's df/dy and Eq. 2's sum, from torch ops: dE/dy = g where s > 0 else a*g, and per slope the sum of g*s
    over s <= 0, ``s`` being PReLU's input (or its output, see ``_PReLUFunction``).

    For what the fused kernel (``delving.prelu_cpu``) does not take: bf16 under autocast, channels_last. Still
    ~2x faster than torch's own CPU backward: chunks of the batch through vectorized ops (ReLU's own
    ``threshold_backward``, a per-channel reduction, ``lerp_``) and one full-size allocation, the input gradient.
    """
    channels = saved.shape[1]
    slope = weight.to(grad.dtype).reshape(1, -1, *([1] * (saved.dim() - 2)))
    grad_x = torch.empty_like(grad)
    grad_w = torch.zeros(channels, dtype=torch.float32, device=saved.device)
    reduce_dims = [0, *range(2, saved.dim())]
    step = max(1, _CHUNK // max(1, saved[0].numel()))
    for start in range(0, saved.shape[0], step):
        g, s, out = grad[start:start + step], saved[start:start + step], grad_x[start:start + step]
        torch.ops.aten.threshold_backward.grad_input(g, s, 0, grad_input=out)  # g where s > 0, else 0 (ReLU's)
        grad_w += torch.sub(g, out).mul_(s).sum(reduce_dims, dtype=torch.float32)  # Eq. 2: g*s where s <= 0
        out.lerp_(g, slope)  # out + a*(g - out): g where s > 0, a*g elsewhere (Eq. 3's df/dy)
    if weight.numel() == 1:  # channel-shared (Eq. 3's sum over all channels)
        grad_w = grad_w.sum().reshape(weight.shape)
    return grad_x, grad_w.to(weight.dtype)


def _prelu_cpu():
    """``delving.prelu_cpu``, imported when the first PReLU is built (numba costs ~0.3 s to import): before FFCV's
    loaders launch numba's threads, so that its choice of threading layer holds."""
    from delving import prelu_cpu
    return prelu_cpu


class _PReLUFunction(torch.autograd.Function):
    """Eq. 1 with a CPU backward that keeps ReLU's memory: where every slope is positive, the output is saved
    instead of the input (y > 0 exactly where x > 0, and x = y / a_i elsewhere), so the next layer's saved input
    is the same tensor and the conv output it came from is freed, as with ReLU."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        y = F.prelu(x, weight)  # torch's forward kernel is vectorized: as fast as ReLU's
        ctx.from_output = bool(weight.detach().numpy().min() > 0)
        ctx.save_for_backward(y if ctx.from_output else x, weight)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        saved, weight = ctx.saved_tensors
        kernel = _prelu_cpu()
        if kernel.supports(grad, saved, weight):
            return kernel.prelu_backward(grad, saved, weight, ctx.from_output)
        grad_x, grad_w = prelu_backward_ops(grad, saved, weight)
        # From the output, the sum of g*y over y <= 0 is a_i times Eq. 2's sum of g*x.
        return grad_x, grad_w / weight if ctx.from_output else grad_w


class PReLU(nn.PReLU):
    """``torch.nn.PReLU`` (Eq. 1) with a faster backward on CPU (``delving.prelu_cpu``, one pass over memory like
    ReLU's) that keeps ReLU's memory where every slope is positive; the same parameters, outputs and gradients
    (``tests/test_prelu_cpu.py``).

    A subclass, so anything that finds slopes by type (``delving.system.NO_DECAY_MODULES``, ``delving.slopes``)
    still finds them. On other devices (CUDA's kernel is fused) and for 0-d/1-d inputs it is ``nn.PReLU`` as is.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _prelu_cpu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dim() < 2 or not torch.is_grad_enabled()
                or torch.compiler.is_compiling()):  # inductor fuses nn.PReLU's backward itself
            return super().forward(x)
        return _PReLUFunction.apply(x, self.weight)


ACTIVATIONS: dict[str, Callable[[int], nn.Module]] = {
    "relu": lambda channels: nn.ReLU(),
    # Eq. 1 channel-wise: one learnable a_i per channel; torch's nn.PReLU(C) is exactly that.
    "prelu": lambda channels: PReLU(num_parameters=channels, init=PRELU_INIT),
    # Eq. 1 channel-shared: one a per layer ("only introduces 13 extra free parameters").
    "prelu_shared": lambda channels: PReLU(num_parameters=1, init=PRELU_INIT),
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
