"""A builder's refusal in one line. ``build_model`` (:mod:`delving.experiment.training.train`) says it, so ``delving
fit``, ``delving fit --print-config`` (through ``check_model``) and a sweep's check before its first cell refuse
bad model settings alike, before anything is written.

Only the real build meets every check of a model and a scheme: a builder's own (widths, kernel sizes), Eq. 15's
PReLU slopes, TAT's slope search, delta-orthogonal kernels. A builder refuses bad ``model.kwargs`` in its own words:
delving's builders with a one-line :class:`~delving.errors.DelvingError`, timm's with a TypeError for an argument
they do not take, any builder with whatever its code trips on (an IndexError, a ValueError). Each becomes one line
naming the model, the ``model.*`` values it was given and what is valid.
"""

from __future__ import annotations

import inspect

import timm

from delving.errors import DelvingError
from delving.experiment.training.config import ModelConfig
from delving.models import build
from delving.models.factory import is_delving_model

# Builder arguments delving passes from its own keys (model.depth, model.drop_rate, model.activation, the data's
# channels and classes) or never lets a config set: not listed as valid model.kwargs.
SET_BY_DELVING = {"pretrained", "depth", "drop_rate", "activation", "act_layer", "in_chans", "num_classes", "device",
                  "dtype", "table"}


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
