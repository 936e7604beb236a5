"""W&B's own sweep engine, run here: the proposals of ``method: random`` and ``bayes`` and hyperband's stopping rule.

The engine is the ``sweeps`` package (PyPI ``sweeps`` 0.3.0), the open-source code W&B's local controller runs (and
the code behind ``wandb sweep --controller``): ``sweeps.next_run`` samples every distribution of W&B's sweep schema
and fits bayes' Gaussian process, ``sweeps.stop_runs`` is hyperband (Li et al. 2018, "Hyperband: A Novel
Bandit-Based Approach to Hyperparameter Optimization"). Using it, a local search means what the same file means on
a W&B server: the same distributions, the same bands, the same thresholds. Optuna (TPE, its Hyperband pruner) was
the other well-kept choice; its samplers and its brackets are its own, so a file would search differently offline
and online. This is the only module that imports ``sweeps``.

``sweeps`` 0.3.0 declares ``numpy<2`` but runs with numpy 2 (checked with numpy 2.4: every distribution, bayes and
hyperband); ``make venv`` installs it with ``pip install --no-deps sweeps==0.3.0 jsonref``, since pip would
otherwise downgrade numpy, which opencv-python (FFCV's) cannot use. Its other needs (scipy, scikit-learn,
jsonschema, pydantic, PyYAML) are delving's own dependencies.

Seeding: the engine draws from Python's ``random`` (random search) and numpy's global generator (bayes). Each
proposal is drawn with both seeded from (the search's seed, the proposal's index), and the generators' states put
back afterwards, so proposal k of a file is the same on every machine and after any resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import sys
import warnings
from dataclasses import dataclass, field

from delving.errors import DelvingError

METHODS = ("grid", "random", "bayes")  # W&B's own; "custom" needs a W&B launch scheduler
INSTALL = "pip install --no-deps sweeps==0.3.0 jsonref"
FINISHED, RUNNING = "finished", "running"  # the engine's run states a local run maps to


@dataclass
class Trial:
    """One run of a search as the engine sees it: its searched values, state and metric by iteration (epoch)."""

    name: str
    values: dict
    state: str = FINISHED
    history: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    """Hyperband's verdict on a run at its latest band: the band (iterations), the run's value that the rule
    compared, and the threshold it had to beat (in the metric's own sign)."""

    band: int
    value: float
    threshold: float


def _engine():
    """The ``sweeps`` package, imported quietly (its pydantic model uses a v1 config key: a UserWarning on import)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            import sweeps
    except ImportError as err:
        raise DelvingError(f"W&B's sweep engine is not installed ({err}); run `make venv`, or: {INSTALL}") from None
    return sweeps


def version() -> str:
    return getattr(_engine(), "__version__", "?")


def check(raw: dict, path) -> None:
    """Refuse what W&B's own engine refuses (its JSON schema: distributions, their bounds, probabilities, metric,
    early_terminate), as one line. Deprecated distributions (``log_uniform``, ``q_log_uniform``,
    ``inv_log_uniform``: bounds as exponents) run with a note, as a W&B server runs them with a warning."""
    sweeps = _engine()
    from sweeps.params import PARAM_DEPRECATION_MAP, HyperParameter

    deprecated = []
    for key, spec in raw.get("parameters", {}).items():
        try:
            kind = HyperParameter(key, spec).type
        except Exception:  # noqa: BLE001 - malformed: the schema check below names it
            continue
        if kind in PARAM_DEPRECATION_MAP:
            deprecated.append(f"{key} {PARAM_DEPRECATION_MAP[kind]}")
    try:
        violations = [v for v in sweeps.schema_violations_from_proposed_config(raw) if v not in deprecated]
    except ValueError as err:
        violations = [str(err)]
    if violations:
        first = violations[0].splitlines()[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise DelvingError(f"sweep {path}: {first}{more}; valid: W&B's sweep schema (docs/sweeps.md)")
    for note in deprecated:
        print(f"delving: note: sweep {path}: {note.splitlines()[0]} (W&B runs it too, with a warning)",
              file=sys.stderr)


def proposal_seed(seed: int, index: int) -> int:
    """The 32-bit seed of proposal ``index`` of a search seeded ``seed`` (a hash: neighbouring seeds and indices
    give unrelated streams)."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


@contextlib.contextmanager
def _seeded(seed: int):
    """Python's and numpy's global generators seeded for the block, their states restored after it."""
    import numpy as np

    saved_python, saved_numpy = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved_python)
        np.random.set_state(saved_numpy)


def _engine_config(raw: dict) -> dict:
    """The part of a sweep file the engine reads (method, parameters, metric, early_terminate)."""
    return {key: raw[key] for key in ("method", "parameters", "metric", "early_terminate") if key in raw}


def _runs(raw: dict, trials: list[Trial]):
    sweeps = _engine()
    metric = (raw.get("metric") or {}).get("name")
    return [sweeps.SweepRun(name=t.name, state=t.state, config={k: {"value": v} for k, v in t.values.items()},
                            history=[{metric: value} for value in t.history] if metric else [])
            for t in trials]


def propose(raw: dict, trials: list[Trial], seed: int, index: int) -> dict:
    """The searched values (``{key: value}``, plain Python types, constants left out) of proposal ``index``.

    ``trials``: the search's runs so far (bayes fits its Gaussian process to the finished ones and avoids the
    running ones; random search reads none)."""
    sweeps = _engine()
    with _seeded(proposal_seed(seed, index)), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's convergence notes on a tiny Gaussian process
        run = sweeps.next_run(_engine_config(raw), _runs(raw, trials), validate=False)
    searched = {key for key, spec in raw["parameters"].items() if "value" not in spec}
    return {key: plain(spec["value"]) for key, spec in run.config.items() if key in searched}


def plain(value):
    """numpy scalars (what the engine returns) as Python's own, for YAML, JSON and config overrides."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def should_stop(raw: dict, history: list[float], others: list[list[float]]) -> Decision | None:
    """Hyperband's rule (``sweeps.stop_runs``) on a running run with metric ``history`` (one value per epoch),
    beside the sweep's other runs: the Decision when it says stop, None when the run goes on. Values that are not
    finite numbers are left out, as the engine leaves them out of W&B's histories."""
    history = finite(history)
    this = Trial("this", {}, RUNNING, history)
    peers = [Trial(f"run{i}", {}, FINISHED, h) for i, h in enumerate(others)]
    runs = _runs(raw, [this, *peers])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stopped = _engine().stop_runs(_engine_config(raw), runs, validate=False)
    if not any(run.name == "this" for run in stopped):
        return None
    info = runs[0].early_terminate_info
    passed = [i for i, band in enumerate(info["bands"]) if band <= len(history)]
    band, threshold = info["bands"][passed[-1]], info["thresholds"][passed[-1]]
    strict = raw["early_terminate"].get("strict", True)  # the schema's default: the value at the band
    sign = -1.0 if raw["metric"].get("goal") == "maximize" else 1.0
    value = history[band - 1] if strict else sign * min(sign * v for v in history)
    return Decision(band=band, value=float(value), threshold=float(sign * threshold))


def bands(raw: dict, horizon: int) -> list[int]:
    """The iterations (epochs) at which hyperband judges runs, up to ``horizon``: W&B's brackets for the file's
    ``early_terminate`` (``max_iter``/``s``: max_iter / eta^k for k = 1..s; ``min_iter``: min_iter * eta^k)."""
    probe = Trial("this", {}, RUNNING, [0.0] * max(1, horizon))
    runs = _runs(raw, [probe])
    _engine().stop_runs(_engine_config(raw), runs, validate=False)
    return [b for b in runs[0].early_terminate_info["bands"] if b <= horizon]


def finite(values) -> list[float]:
    """The finite numbers of ``values`` as floats (what the engine keeps of a metric's history)."""
    out = []
    for value in values:
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out.append(number)
    return out
