"""``trainer.extra``: any other argument of ``lightning.Trainer``, judged by Lightning before anything starts.

Lightning takes most arguments as they come and trips on a bad one only once training is under way
(``accumulate_grad_batches='abc'`` fails after the first batch, with W&B and the run folder already started). So
each key and value is checked when the config is loaded, in three steps, each a one-line
:class:`~delving.errors.DelvingError` naming ``trainer.extra.<key>``, the value and what is valid:

1. the key is an argument of ``lightning.Trainer``, and not one delving sets from its own keys;
2. the value has the type the Trainer's signature declares (``accumulate_grad_batches: int``), checked by pydantic's
   strict validation of that annotation (no coercion: ``'2'`` is not an int, nor ``true``);
3. a throwaway CPU Trainer built from the values runs Lightning's own value checks (``val_check_interval=-1``) and
   writes nothing.

Cost on a 2-core CPU, Lightning already imported (``fit`` imports it anyway): ~14 ms for two keys, of which 0.1 ms
the types and 10 ms the throwaway Trainer (``benchmarks/start_checks.py``); an empty ``trainer.extra`` costs nothing,
not even Lightning's import.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import typing
import warnings

from delving.errors import DelvingError

# The Trainer arguments delving sets from its own keys (or owns, like the loggers): trainer.extra may not repeat them,
# each with the key that sets it.
TRAINER_OWNED = {"max_epochs": "trainer.max_epochs", "accelerator": "trainer.accelerator",
                 "devices": "trainer.devices", "num_nodes": "trainer.num_nodes", "strategy": "trainer.strategy",
                 "precision": "trainer.precision", "num_sanity_val_steps": "trainer.num_sanity_val_steps",
                 "log_every_n_steps": "trainer.log_every_n_steps", "enable_progress_bar": "trainer.enable_progress_bar",
                 "enable_model_summary": "trainer.enable_progress_bar", "fast_dev_run": "trainer.fast_dev_run",
                 "deterministic": "trainer.deterministic", "gradient_clip_val": "optim.gradient_clip_norm",
                 "gradient_clip_algorithm": "optim.gradient_clip_norm", "default_root_dir": "out_dir",
                 "logger": "tracking.*", "callbacks": "tracking.*",
                 "limit_train_batches": "trainer.limit_train_batches", "limit_val_batches": "trainer.limit_val_batches"}
# What the throwaway Trainer of step 3 always gets: the CPU, and nothing that logs or prints. All are owned keys, so
# trainer.extra cannot name them twice.
PROBE = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)


def trainer_parameters() -> dict[str, object]:
    """``lightning.Trainer``'s keyword arguments and their annotations (Lightning is imported here only: seconds)."""
    import lightning as L

    return {name: annotation for name, annotation in typing.get_type_hints(L.Trainer.__init__).items()
            if name not in ("self", "return")}


def check_trainer_extra(extra: dict) -> None:
    """Refuse an unknown or owned key, a value of the wrong type, or a value Lightning refuses (module docstring).

    Raises:
        DelvingError: one line naming ``trainer.extra.<key>``, the value and what is valid.
    """
    if not extra:
        return
    parameters = trainer_parameters()
    for key, value in extra.items():
        _check_key(key, parameters)
        _check_type(key, value, parameters[key])
    _try_trainer(extra)


def _check_key(key: str, parameters: dict) -> None:
    if key in TRAINER_OWNED:
        raise DelvingError(f"trainer.extra.{key} is set by delving itself; use {TRAINER_OWNED[key]} instead")
    if key not in parameters:
        close = difflib.get_close_matches(key, list(parameters), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DelvingError(f"unknown trainer.extra key {key!r}{hint}; valid: the arguments of lightning.Trainer")


def _check_type(key: str, value, annotation) -> None:
    """``value`` against the Trainer's annotation of ``key``; classes such as ``Profiler`` by isinstance."""
    from pydantic import ConfigDict, TypeAdapter, ValidationError

    adapter = TypeAdapter(annotation, config=ConfigDict(strict=True, arbitrary_types_allowed=True))
    try:
        adapter.validate_python(value)
    except ValidationError:
        raise DelvingError(f"trainer.extra.{key}={value!r} has the wrong type; valid: {type_text(annotation)} "
                           f"(lightning.Trainer's annotation)") from None


def type_text(annotation) -> str:
    """An annotation as a reader writes it: ``int | float | str | timedelta | dict[str, int] | None``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:
        return " | ".join(type_text(arg) for arg in args)
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in args)
    if annotation is type(None):
        return "None"
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(type_text(arg) for arg in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def _try_trainer(extra: dict) -> None:
    """Let Lightning judge the values on a throwaway CPU Trainer; a refusal names the first key refused on its own
    (Lightning's own message says what is valid), or all of them when only their combination is refused."""
    refusal = _refusal(extra)
    if refusal is None:
        return
    culprit = next((key for key in extra if _refusal({key: extra[key]}) is not None), None)
    where = f"trainer.extra.{culprit}={extra[culprit]!r}" if culprit else f"trainer.extra={extra!r}"
    raise DelvingError(f"{where} is refused by lightning.Trainer: {refusal}")


def _refusal(extra: dict) -> str | None:
    """Lightning's first line refusing these arguments, or None. Its start-up lines (devices found, tips) are
    silenced: ``fit --print-config`` prints YAML alone."""
    import lightning as L

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
            L.Trainer(**{"enable_checkpointing": False, **extra, **PROBE})
    except Exception as err:  # noqa: BLE001 - Lightning's MisconfigurationException derives from Exception alone
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    finally:
        logging.disable(logging.NOTSET)
    return None
