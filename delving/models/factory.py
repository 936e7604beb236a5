"""Create a registered model (delving's or any timm model) with an activation by name, and initialize it in one step.

The activation: delving's models take ``activation`` (a name of :data:`delving.nn.activations.ACTIVATIONS`,
channel-wise where the name says so). Other timm models take ``act_layer``, a class timm instantiates as
``act_layer(inplace=...)`` without the channel count, so ``prelu`` there is channel-shared (one slope per
activation module, Eq. 1's shared form): :class:`TimmPReLU`. A model that takes no ``act_layer`` is a one-line
error.

The init: ``timm.create_model`` followed by :func:`delving.nn.init.initialize` draws every weight twice: once with
torch's default (``kaiming_uniform_(a=sqrt(5))``, which the paper's schemes overwrite) and once with the chosen
scheme. For model C's 330M parameters the first draw costs ~3 s. delving's models are therefore built on the meta
device (no memory, no draws), materialized uninitialized, and initialized once; modules other than Conv2d/Linear
(PReLU slopes) get their own ``reset_parameters`` (slopes 0.25). Other timm models are built as timm builds them
(their own init covers parameters outside any module's ``reset_parameters``: position embeddings, class tokens),
then their Conv2d/Linear layers are re-drawn with the scheme.
"""

from __future__ import annotations

from typing import Sequence

import timm
import timm.layers
import torch
from torch import nn

from delving.errors import DelvingError, choices
from delving.nn.activations import ACTIVATIONS, PRELU_INIT
from delving.nn.init import WEIGHT_LAYERS, initialize
from delving.nn.prelu import PReLU


class TimmPReLU(PReLU):
    """delving's PReLU in timm's ``act_layer`` form: ``act_layer(inplace=True)`` with no channel count, so one
    slope for the whole activation module (Eq. 1 channel-shared), initialized to 0.25 (Sec. 2.1)."""

    def __init__(self, inplace: bool = False):
        super().__init__(num_parameters=1, init=PRELU_INIT)


def _timm_act_layer(activation: str) -> type[nn.Module]:
    """The ``act_layer`` for an activation name; delving's PReLU (channel-shared) for ``prelu``/``prelu_shared``."""
    if activation in ("prelu", "prelu_shared"):
        return TimmPReLU
    try:
        return timm.layers.get_act_layer(activation)
    except KeyError:
        valid = [a for a in ACTIVATIONS if a.startswith("prelu") or _known_to_timm(a)]
        raise DelvingError(f"model.activation={activation!r} has no timm act_layer; valid for timm models: "
                           f"{choices(valid)}") from None


def _known_to_timm(activation: str) -> bool:
    try:
        timm.layers.get_act_layer(activation)
        return True
    except KeyError:
        return False


def is_delving_model(name: str) -> bool:
    """Whether ``name`` is one of delving's registered models (they take ``activation`` by name)."""
    return timm.models.model_entrypoint(name).__module__.startswith("delving.")


def require_registered(name: str) -> None:
    """A one-line error for a model name timm's registry does not hold."""
    if name not in timm.list_models():
        raise DelvingError(f"unknown model {name!r}; valid: {', '.join(timm.list_models('delving_*'))} or any timm "
                           f"model")


def create_model(name: str, activation: str | None = None, **kwargs) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` with the activation passed the way the model takes it (see the module
    docstring); ``activation=None`` leaves the model's own.

    Raises:
        DelvingError: for an unregistered name, or a timm model that takes no ``act_layer``.
    """
    require_registered(name)
    if activation is not None:
        kwargs["activation" if is_delving_model(name) else "act_layer"] = (
            activation if is_delving_model(name) else _timm_act_layer(activation))
    try:
        return timm.create_model(name, **kwargs)
    except TypeError as err:
        if "act_layer" in kwargs and "act_layer" in str(err):
            raise DelvingError(f"model {name!r} takes no act_layer, so model.activation={activation!r} cannot be "
                               f"applied; valid: delving_* models, or timm models with act_layer (resnet18 ...)") from None
        raise


def create_initialized(name: str, scheme: str = "he", mode: str = "fan_in", *, fc_std: Sequence[float] | None = None,
                       prelu_factor: bool = True, device: str | torch.device = "cpu",
                       generator: torch.Generator | None = None, activation: str | None = None,
                       tat_eta: float | None = None, weights: str = "gaussian", **kwargs) -> nn.Module:
    """:func:`create_model` initialized with ``scheme`` (see :func:`delving.nn.init.initialize`); ``tat_eta`` None
    is TAT's target for the ``weights`` kind (:data:`delving.nn.init.TAT_ETA`: 0.8 gaussian, 0.9 delta_orthogonal)."""
    require_registered(name)
    if not is_delving_model(name):
        model = create_model(name, activation, **kwargs).to(device)
    else:
        with torch.device("meta"):
            model = create_model(name, activation, **kwargs)
        model = model.to_empty(device=device)
        for module in model.modules():
            if not isinstance(module, WEIGHT_LAYERS) and hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return initialize(model, scheme, mode, fc_std=fc_std, prelu_factor=prelu_factor, generator=generator,
                      tat_eta=tat_eta, weights=weights)
