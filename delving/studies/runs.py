"""One loader of runs: local run folders (offline) or a W&B project (online), read into the same tables.

``load_runs("runs/init_depth")`` (a sweep folder, one run folder or a list of them) and
``load_runs("wandb:ENTITY/PROJECT")`` both give a :class:`Runs` with

- ``table``: one row per run (:data:`TABLE_COLUMNS`), finished, diverged, pruned (stopped early by a sweep's
  hyperband: ``delving.experiment.sweeps.pruning``) or unfinished ("running"/"incomplete"); :func:`results` keeps
  the finished and diverged ones, so a pruned run's shorter curve is never averaged with whole runs;
- ``history``: one row per run and epoch: the epoch's training error and loss (dropout on, as trained), the
  validation errors and loss, and the learning rate of each SGD group (``lr-SGD/decay``, ``lr-SGD/no_decay``);
- ``slopes``: the PReLU slopes by layer and epoch (Table 1's columns), from ``slopes.csv`` or W&B's ``prelu/*``;
- ``variance``: ``variance_profile`` at init and after epoch 1 (Sec. 2.2), from ``variance.csv``;
- ``configs``: each run's config as nested dicts (for keys the table does not carry, e.g. ``optim.weight_decay``).

Both sources go through the same code from the rows the run logged (``csv/metrics.csv`` holds exactly what
Lightning logged to W&B), so the two tables agree. What W&B does not hold: per-channel slopes (W&B has the
channel mean per layer, ``prelu/<layer>``; its rows have ``channel`` NaN) and ``variance.csv`` (logged as a chart
only), so online ``variance`` is empty.
"""

from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from delving.errors import DelvingError
from delving.experiment.rundir.run_dir import DONE, RunDir, identity

TABLE_COLUMNS = ["run", "activation", "init", "depth", "seed", "status", "epochs", "final_val_err1",
                 "best_val_err1", "final_train_err1", "final_val_err5", "group", "path"]
# logged key -> history column (Lightning logs the epoch mean of an on_step+on_epoch metric as <key>_epoch)
METRICS = {"train/err1": "train/err1", "train/loss_epoch": "train/loss", "val/err1": "val/err1",
           "val/err5": "val/err5", "val/loss": "val/loss"}
LR_PREFIX = "lr-"  # LearningRateMonitor: lr-SGD/decay, lr-SGD/no_decay
SLOPE_PREFIX = "prelu/"  # SlopeLogger: prelu/<layer> = the layer's channel-mean slope
SLOPE_COLUMNS = ["run", *RunDir.SLOPE_COLUMNS]
VARIANCE_COLUMNS = ["run", *RunDir.VARIANCE_COLUMNS]
WANDB_PREFIX = "wandb:"
# A run folder without result.json counts as "running" when its logs changed this recently, else "incomplete"
# (an interrupted run that the sweep will resume). A heuristic: a process cannot be seen from its folder.
RUNNING_SECONDS = 600
# W&B run state -> status; any other (crashed, failed, killed: the process is gone without a result) is incomplete
_WANDB_STATES = {"finished": "finished", "running": "running", "pending": "running"}


@dataclass
class Runs:
    """The runs of one source as tables (see the module docstring)."""

    table: pd.DataFrame
    history: pd.DataFrame
    slopes: pd.DataFrame
    variance: pd.DataFrame
    configs: dict[str, dict] = field(default_factory=dict, repr=False)

    def config(self, run: str, key: str):
        """A dotted config key of one run (``optim.weight_decay``), or None when the run does not set it."""
        return _select(self.configs.get(run, {}), key)

    def select(self, **values) -> "Runs":
        """The runs whose table columns take the given values (a value or a list of them), every table filtered:
        ``runs.select(activation=["relu", "prelu"], init="he")``."""
        keep = pd.Series(True, index=self.table.index)
        for column, wanted in values.items():
            keep &= self.table[column].isin(wanted if isinstance(wanted, (list, tuple, set)) else [wanted])
        names = set(self.table.run[keep])
        return Runs(self.table[keep].reset_index(drop=True),
                    *(frame[frame.run.isin(names)].reset_index(drop=True)
                      for frame in (self.history, self.slopes, self.variance)),
                    configs={name: config for name, config in self.configs.items() if name in names})

    def curves(self, metric: str, by: Iterable[str] = ("activation", "init", "depth")) -> pd.DataFrame:
        """``metric`` by epoch per group of runs: mean, std, min, max over the group's runs (seeds) and their count."""
        by = list(by)
        data = self.history[["run", "epoch", metric]].merge(self.table[["run", *by]], on="run").dropna(subset=[metric])
        grouped = data.groupby([*by, "epoch"], dropna=False)[metric]
        return grouped.agg(["mean", "std", "min", "max", "count"]).reset_index()


@dataclass
class _Run:
    """One run as read from either source, before it becomes table rows."""

    name: str
    config: dict
    status: str
    logged: pd.DataFrame          # the rows the run logged, in order (metrics.csv / W&B history)
    slopes: pd.DataFrame          # epoch, depth, layer, channel, slope
    variance: pd.DataFrame        # stage, index, layer, forward_std, backward_std
    group: str | None
    path: str | None


def load_runs(source: str | Path | Iterable[str | Path], *, filters: dict | None = None, api=None) -> Runs:
    """Runs of a sweep folder, a run folder, a list of folders, or ``"wandb:[ENTITY/]PROJECT"``.

    ``filters``: W&B's run filters (MongoDB syntax, e.g. ``{"group": "init_depth"}``), online only.
    ``api``: a ``wandb.Api``-like object (``runs(path, filters=...)``, ``default_entity``); default ``wandb.Api()``.
    A local run folder with a damaged file (config, result, a CSV) is named on stderr and left out; when none is
    left, a one-line error.
    """
    if isinstance(source, str) and source.startswith(WANDB_PREFIX):
        return _assemble(_wandb_runs(source[len(WANDB_PREFIX):], filters, api))
    if filters is not None:
        raise DelvingError("load_runs: filters apply to a W&B source ('wandb:ENTITY/PROJECT') only")
    folders = [source] if isinstance(source, (str, Path)) else list(source)
    runs, skipped = [], []
    for path in (path for folder in folders for path in run_folders(folder)):
        try:
            runs.append(_local_run(path))
        except DelvingError as err:
            skipped.append(str(err))
            print(f"delving: skipped run {path.name}: {err}", file=sys.stderr)
    if not runs:
        raise DelvingError(f"no readable runs under {', '.join(map(str, folders))} (first problem: {skipped[0]})")
    return _assemble(runs)


def run_folders(folder: str | Path) -> list[Path]:
    """``folder`` itself if it is a run (has a config), else its sub-folders that are runs, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DelvingError(f"runs folder not found: {folder}")
    if RunDir(folder).is_run():
        return [folder]
    runs = sorted(path for path in folder.iterdir() if RunDir(path).is_run())
    if not runs:
        raise DelvingError(f"no runs under {folder}: valid: a run folder (with {RunDir.CONFIG}) or a folder of them")
    return runs


def first_epoch_below(curve: list[float], threshold: float) -> float:
    """1-based epoch at which the error first drops below ``threshold`` (inf: never)."""
    return next((i + 1 for i, e in enumerate(curve) if e < threshold), math.inf)


def results(runs: Runs, thresholds: Iterable[float] = ()) -> pd.DataFrame:
    """The finished and diverged runs, one row each: the table's columns; the identity config keys that vary among
    them (dotted names, e.g. ``optim.lr``: :func:`varying_keys`, listed in ``attrs["varying"]``); the val and train
    error curves in epoch order; and, per threshold ``t``, ``epoch_below_<t>`` (:func:`first_epoch_below`). What
    summaries, reports and notebooks compute from."""
    done = runs.table[runs.table.status.isin(DONE)].reset_index(drop=True)
    curves = {run: rows.sort_values("epoch") for run, rows in runs.history.groupby("run")}
    empty = pd.DataFrame(columns=["val/err1", "train/err1"])
    out = done.copy()
    out["curve"] = [_column(curves.get(run, empty), "val/err1") for run in out.run]
    out["train_curve"] = [_column(curves.get(run, empty), "train/err1") for run in out.run]
    for threshold in thresholds:
        out[f"epoch_below_{threshold:g}"] = [first_epoch_below(c, threshold) for c in out.curve]
    keys = varying_keys(runs, done.run)
    for key in keys:
        out[key] = [_hashable(_select(runs.configs.get(run, {}), key)) for run in out.run]
    out.attrs["varying"] = keys
    return out


# keys the table already carries (the seed is what a group of runs is pooled over)
_TABLE_KEYS = ("seed", "model.activation", "init.scheme", "model.depth")


def varying_keys(runs: Runs, names: Iterable[str] | None = None) -> list[str]:
    """Identity config keys (``delving.experiment.rundir.run_dir.identity``) whose value differs between the runs, other
    than seed, activation, init and depth: e.g. ``optim.lr`` for a grid over learning rates."""
    names = list(runs.table.run if names is None else names)
    flat = [identity(runs.configs.get(name, {})) for name in names]
    keys = sorted({k for f in flat for k in f} - set(_TABLE_KEYS))
    return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]


def _hashable(value):
    """A config value usable as a group key: lists as tuples, mappings as sorted item tuples."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _column(rows: pd.DataFrame, key: str) -> list[float]:
    return rows[key].astype(float).tolist() if key in rows else [math.nan] * len(rows)


# ---------------------------------------------------------------------------------------------------- local

def _local_run(path: Path) -> _Run:
    run = RunDir(path)
    config = run.read_config()
    result = run.read_result()
    if run.metrics_path.is_file():
        logged = _read_csv(run.metrics_path, [])
    else:  # no CSV log (an older run, or one copied without it): result.json's per-epoch history
        logged = pd.DataFrame((result or {}).get("history", [])).rename(columns={"train/loss": "train/loss_epoch"})
    return _Run(name=path.name, config=config, status=_local_status(run, result), logged=logged,
                slopes=_read_csv(run.slopes_path, SLOPE_COLUMNS[1:]),
                variance=_read_csv(run.variance_path, VARIANCE_COLUMNS[1:]),
                group=_select(config, "tracking.group"), path=str(path))


def read_result(run: str | Path) -> dict | None:
    """A run folder's result (written when it finished or diverged), or None while it has none."""
    return RunDir(run).read_result()


def _local_status(run: RunDir, result: dict | None) -> str:
    if result is not None:
        return result.get("status", "finished")
    logs = [run.metrics_path, run.last_checkpoint, run.slopes_path]
    newest = max((p.stat().st_mtime for p in logs if p.is_file()), default=-math.inf)
    return "running" if time.time() - newest < RUNNING_SECONDS else "incomplete"


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=columns)
    try:
        return pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:  # EmptyDataError is a ValueError
        raise DelvingError(f"unreadable {path} ({type(err).__name__}: {str(err).splitlines()[0]})") from None


# ---------------------------------------------------------------------------------------------------- W&B

def _wandb_runs(project: str, filters: dict | None, api) -> list[_Run]:
    if api is None:
        import wandb

        try:
            api = wandb.Api()
        except Exception as err:  # noqa: BLE001 - no login / no network: say so in one line
            raise DelvingError(f"cannot reach W&B for {WANDB_PREFIX}{project} ({type(err).__name__}: {err}); "
                               f"run `wandb login`, or read the local run folders instead") from None
    path = project if "/" in project else f"{api.default_entity}/{project}"
    runs = [_wandb_run(run) for run in api.runs(path, filters=filters)]
    if not runs:
        raise DelvingError(f"no runs in W&B project {path}" + (f" matching filters {filters}" if filters else ""))
    return runs


def _wandb_run(run) -> _Run:
    config = dict(run.config)
    logged = pd.DataFrame(list(run.scan_history()) if hasattr(run, "scan_history") else run.history(samples=10**6))
    summary = dict(run.summary)
    if summary.get("train/diverged"):
        status = "diverged"
    else:
        status = _WANDB_STATES.get(getattr(run, "state", "finished"), "incomplete")  # crashed, failed, killed
    return _Run(name=run.name, config=config, status=status, logged=logged, slopes=_logged_slopes(logged),
                variance=pd.DataFrame(columns=VARIANCE_COLUMNS[1:]), group=getattr(run, "group", None), path=None)


def _logged_slopes(logged: pd.DataFrame) -> pd.DataFrame:
    """``prelu/<layer>`` (channel means) by epoch, in network order, as slopes rows with channel NaN."""
    keys = [k for k in logged.columns if k.startswith(SLOPE_PREFIX)]
    numeric = [k for k in keys if pd.to_numeric(logged[k], errors="coerce").notna().any()]
    if not numeric:
        return pd.DataFrame(columns=SLOPE_COLUMNS[1:])
    layers = sorted((k[len(SLOPE_PREFIX):] for k in numeric), key=network_order)
    per_epoch = _by_epoch(logged, [SLOPE_PREFIX + layer for layer in layers])
    long = per_epoch.melt(id_vars="epoch", var_name="layer", value_name="slope").dropna(subset=["slope"])
    long["layer"] = long.layer.str[len(SLOPE_PREFIX):]
    long["depth"] = long.layer.map({layer: i for i, layer in enumerate(layers, start=1)})
    long["channel"] = math.nan
    return long.sort_values(["epoch", "depth"])[SLOPE_COLUMNS[1:]].reset_index(drop=True)


def network_order(layer: str) -> tuple:
    """Sort key putting delving's layer names in network order: convs by stage then index (conv1 < conv21 <
    conv2_4 < conv3 < conv31 < conv3_10; the first digit is the stage, as in the paper's conv21), then fc1, fc2.
    W&B returns keys alphabetically, which puts conv3_10 before conv3_2."""
    match = re.fullmatch(r"(conv|fc)(\d?)_?(\d*)", layer)
    if match is None:
        return (2, 0, 0, layer)
    kind, stage, index = match.groups()
    return (0 if kind == "conv" else 1, int(stage or 0), int(index or 0), layer)


# ---------------------------------------------------------------------------------------------------- tables

def _by_epoch(logged: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per epoch: each column's last logged value in that epoch.

    LearningRateMonitor logs at an epoch's start without an ``epoch`` key, so a row without one belongs to the
    epoch of the next row that has it."""
    if logged.empty or "epoch" not in logged:
        return pd.DataFrame(columns=["epoch", *columns])
    logged = logged.assign(epoch=pd.to_numeric(logged["epoch"], errors="coerce").bfill()).dropna(subset=["epoch"])
    present = [c for c in columns if c in logged]
    values = logged[["epoch", *present]].copy()
    values[present] = values[present].apply(pd.to_numeric, errors="coerce")
    out = values.groupby("epoch").last().reindex(columns=columns).dropna(how="all").reset_index()
    out["epoch"] = out["epoch"].astype(int)
    return out


def _history(run: _Run) -> pd.DataFrame:
    lrs = sorted(c for c in run.logged.columns if c.startswith(LR_PREFIX))
    per_epoch = _by_epoch(run.logged, [*METRICS, *lrs])
    metrics_only = per_epoch.dropna(subset=list(METRICS), how="all")  # an epoch under way has only its lr
    return metrics_only.rename(columns=METRICS).assign(run=run.name)


def _row(run: _Run, history: pd.DataFrame) -> dict:
    val = history["val/err1"].dropna()
    return {"run": run.name, "activation": _select(run.config, "model.activation"),
            "init": _select(run.config, "init.scheme"), "depth": _select(run.config, "model.depth"),
            "seed": _select(run.config, "seed"), "status": run.status, "epochs": len(val),
            "final_val_err1": _last(val), "best_val_err1": val.min() if len(val) else math.nan,
            "final_train_err1": _last(history["train/err1"]), "final_val_err5": _last(history["val/err5"]),
            "group": run.group, "path": run.path}


def _assemble(runs: list[_Run]) -> Runs:
    histories = [_history(run) for run in runs]
    lr_columns = sorted({c for h in histories for c in h if c.startswith(LR_PREFIX)})
    history_columns = ["run", "epoch", *METRICS.values(), *lr_columns]
    return Runs(
        table=pd.DataFrame([_row(run, h) for run, h in zip(runs, histories)], columns=TABLE_COLUMNS),
        history=_concat([h.reindex(columns=history_columns) for h in histories], history_columns),
        slopes=_concat([r.slopes.assign(run=r.name) for r in runs], SLOPE_COLUMNS),
        variance=_concat([r.variance.assign(run=r.name) for r in runs], VARIANCE_COLUMNS),
        configs={run.name: run.config for run in runs})


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f[columns] for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _last(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.iloc[-1]) if len(values) else math.nan


def _select(config: dict, key: str):
    """A dotted key from a nested config; a W&B sweep agent also stores its parameters flat (``model.depth``)."""
    if key in config:
        return config[key]
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
