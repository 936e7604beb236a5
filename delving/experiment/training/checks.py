"""Can this config's run start? The check ``delving fit``, ``delving fit --print-config`` and a sweep (before its
first cell) make after :func:`~delving.experiment.training.config.load_config` has validated the values: the data
module and the model are built, and the model initialized, as :func:`~delving.experiment.training.train.fit` builds
them, on the CPU, writing nothing.

Only the real build meets every check of a model and a scheme: a builder's own (widths, kernel sizes), Eq. 15's
PReLU slopes, TAT's slope search, delta-orthogonal kernels. A builder refuses bad ``model.kwargs`` in its own words:
delving's builders with a one-line :class:`~delving.errors.DelvingError`, timm's with a TypeError for an argument
they do not take, any builder with whatever its code trips on (an IndexError, a ValueError). Each becomes one line
naming the model, the ``model.*`` values it was given and what is valid.
"""

from __future__ import annotations

import copy
import inspect

import timm
import torch

from delving.errors import DelvingError
from delving.experiment.training.config import LSUV, ModelConfig, RunConfig
from delving.experiment.training.train import build_datamodule, build_model
from delving.models import build
from delving.models.factory import is_delving_model

# Builder arguments delving passes from its own keys (model.depth, model.drop_rate, model.activation, the data's
# channels and classes) or never lets a config set: not listed as valid model.kwargs.
SET_BY_DELVING = {"pretrained", "depth", "drop_rate", "activation", "act_layer", "in_chans", "num_classes", "device",
                  "dtype", "table"}


def check_model(cfg: RunConfig) -> None:
    """Build ``cfg``'s data module and model as ``fit`` does, initialize the model, and throw both away.

    ``lsuv`` is checked through its data-independent first step (variance_preserving): its second step reads a
    training batch, which this check does not load. The draws come from a forked RNG, so the check leaves torch's
    global random state as it found it.

    Raises:
        DelvingError: the data module's own one-line errors (a missing data folder), or one line naming the model,
            the ``model.*`` values and what is valid.
    """
    probe = copy.deepcopy(cfg)
    if probe.init.scheme == LSUV:
        probe.init.scheme = "variance_preserving"
    datamodule = build_datamodule(probe)  # loads no image: folder lists its classes, FFCV reads the .beton's labels
    with torch.random.fork_rng(devices=[]):
        try:
            build_model(probe, datamodule)
        except Exception as err:  # noqa: BLE001 - whatever a builder raises for bad arguments, said in one line
            raise DelvingError(refusal_line(cfg.model, err)) from None


def refusal_line(model: ModelConfig, err: Exception) -> str:
    """One line for a builder's refusal: delving's own messages (they name the key, the value and what is valid)
    prefixed with the model, anything else with the values given and the arguments the builder takes."""
    said = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if isinstance(err, DelvingError) and "valid:" in said:
        return said if model.name in said else f"model {model.name}: {said}"
    if not isinstance(err, DelvingError):
        said = f"{type(err).__name__}: {said}" if said else type(err).__name__
    return f"model {model.name} cannot be built with {_given(model)} ({said}); valid: {_takes(model.name)}"


def _given(model: ModelConfig) -> str:
    given = [f"model.{key}={getattr(model, key)!r}" for key in ("depth", "drop_rate")
             if getattr(model, key) is not None]
    return ", ".join([*given, f"model.kwargs={model.kwargs!r}"])


def _takes(name: str) -> str:
    """The model.kwargs a builder names in its signature (its entrypoint's, and for delving's models the table
    builder's); a builder that takes everything as ``**kwargs`` is named as such."""
    signatures = [inspect.signature(timm.models.model_entrypoint(name))]
    if is_delving_model(name):
        signatures.append(inspect.signature(build))
    named = [p.name for s in signatures for p in s.parameters.values()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in SET_BY_DELVING]
    if not named:
        return f"model.kwargs that {name}'s model class takes"
    return f"model.kwargs among {', '.join(dict.fromkeys(named))}"
