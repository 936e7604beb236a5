"""Create a registered model and initialize it in one step, without paying for torch's default init.

``timm.create_model`` followed by :func:`delving.init.initialize` draws every weight twice: once with torch's
default (``kaiming_uniform_(a=sqrt(5))``, which the paper's schemes overwrite) and once with the chosen scheme. For
model C's 330M parameters the first draw costs ~3 s. Here the model is built on the meta device (no memory, no
draws), materialized uninitialized, and initialized once; modules other than Conv2d/Linear (PReLU slopes) get
their own ``reset_parameters`` (slopes 0.25).
"""

from __future__ import annotations

from typing import Sequence

import timm
import torch
from torch import nn

from delving.errors import DelvingError
from delving.init import WEIGHT_LAYERS, initialize


def require_registered(name: str) -> None:
    """A one-line error for a model name timm's registry does not hold."""
    if name not in timm.list_models():
        raise DelvingError(f"unknown model {name!r}; valid: {', '.join(timm.list_models('delving_*'))} or any timm "
                           f"model")


def create_initialized(name: str, scheme: str = "he", mode: str = "fan_in", *, fc_std: Sequence[float] | None = None,
                       prelu_factor: bool = True, device: str | torch.device = "cpu",
                       generator: torch.Generator | None = None, **kwargs) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` initialized with ``scheme`` (see :func:`delving.init.initialize`)."""
    require_registered(name)
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    model = model.to_empty(device=device)
    for module in model.modules():
        if not isinstance(module, WEIGHT_LAYERS) and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return initialize(model, scheme, mode, fc_std=fc_std, prelu_factor=prelu_factor, generator=generator)
