"""Layer-sequential unit-variance init (Mishkin & Matas, "All you need is a good init", ICLR 2016).

The data-dependent remedy where Sec. 2.2's analytic rule does not hold the variance (activations with a non-zero
output mean, non-homogeneous ones): start from an analytic init, then, layer by layer in network order, rescale
each Conv2d/Linear weight so that its response on one batch of real inputs has unit std. Because the response is
linear in the layer's own weights (biases are zero) and earlier layers are already fixed, one rescale usually
suffices; a few more absorb numerical drift. The original starts from orthonormal weights; here the start is any
scheme of :func:`delving.nn.init.initialize` (``variance_preserving`` by default).
"""

from __future__ import annotations

import torch
from torch import nn

from delving.nn.init import initialize, weight_layers


class _Reached(Exception):
    """Raised by the hook to stop the forward pass once the layer being tuned has run."""


def _response_std(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> float:
    seen: list[torch.Tensor] = []

    def hook(module, inputs, output):
        seen.append(output)
        raise _Reached

    handle = layer.register_forward_hook(hook)
    try:
        model(x)
    except _Reached:
        pass
    finally:
        handle.remove()
    return float(seen[0].std())


@torch.no_grad()
def lsuv(model: nn.Module, x: torch.Tensor, *, scheme: str = "variance_preserving", mode: str = "fan_in",
         target: float = 1.0, tolerance: float = 0.02, max_iter: int = 10,
         generator: torch.Generator | None = None) -> nn.Module:
    """Initialize ``model`` with ``scheme``, then give every weight layer a response std of ``target`` on ``x``."""
    initialize(model, scheme, mode, generator=generator)
    was_training = model.training
    model.eval()  # no dropout while measuring
    try:
        for _, layer, _ in weight_layers(model):
            for _ in range(max_iter):
                std = _response_std(model, layer, x)
                if not torch.isfinite(torch.tensor(std)) or std == 0:
                    break
                if abs(std - target) <= tolerance * target:
                    break
                layer.weight.mul_(target / std)
    finally:
        model.train(was_training)
    return model
