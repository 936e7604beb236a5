"""``early_terminate: {type: hyperband}`` offline: W&B's rule applied inside the run at each epoch's end.

On a W&B server the sweep's controller asks hyperband (Li et al. 2018) every few minutes which running runs to stop,
and the agent kills them. Here :class:`HyperbandPruner`, a Lightning callback, asks W&B's own rule
(:func:`delving.experiment.sweeps.engine.should_stop`) at the end of every epoch, with the run's metric by epoch
and that of every other run of the sweep folder (read from their ``csv/metrics.csv``, which holds what the run
logged to W&B). An iteration is an epoch: a run logs the sweep's metric once per epoch, as W&B counts it. When the
rule says stop, the callback sets ``trainer.should_stop``: Lightning ends the run after the epoch's checkpoint, so
the folder is a valid run that could be trained on (``delving fit`` of its config resumes it). The runner then
records it as pruned: ``result.json`` with status ``pruned`` and the band, epoch, value and threshold of the
decision (:func:`record_pruned`); a sweep run again skips it, and summaries leave it out of the means.

Departure from W&B: the server checks every few minutes, so a run may train past a band before it is stopped;
here it stops at the band's own epoch. A resumed run is judged again when it starts, on the epochs it has: a run
killed between its decision and its record is stopped again without training.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import lightning as L

from delving.experiment.rundir.run_dir import RunDir
from delving.experiment.sweeps import engine

PRUNED = "pruned"  # result.json status of a run hyperband stopped


@dataclass(frozen=True)
class Hyperband:
    """What a pruner needs, small enough to send to a worker process: the file's ``metric`` and ``early_terminate``
    sections, and the sweep folder whose runs set the thresholds."""

    config: dict
    folder: str

    @classmethod
    def of(cls, raw: dict, folder: Path) -> "Hyperband | None":
        """The sweep's hyperband, or None when its file has no ``early_terminate``."""
        if "early_terminate" not in raw:
            return None
        return cls({"metric": raw["metric"], "early_terminate": raw["early_terminate"]}, str(folder))

    @property
    def metric(self) -> str:
        return self.config["metric"]["name"]

    def bands(self, max_epochs: int) -> list[int]:
        return engine.bands(self.config, max_epochs)

    def others(self, name: str) -> list[list[float]]:
        """The metric by epoch of every other run of the sweep folder that has logged it."""
        runs = (path for path in sorted(Path(self.folder).iterdir()) if path.name != name and RunDir(path).is_run())
        return [h for h in (metric_history(RunDir(path), self.metric) for path in runs) if h]


class HyperbandPruner(L.Callback):
    """Stops the run when W&B's hyperband rule says so (see the module docstring); ``decision`` then holds why."""

    def __init__(self, hyperband: Hyperband, name: str):
        self.hyperband, self.name = hyperband, name
        self.history: list[float] = []  # the run's metric, one value per epoch (kept in its checkpoints)
        self.decision: engine.Decision | None = None
        self.epochs = 0  # epochs the run had trained when it was stopped

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))

    def on_train_start(self, trainer, pl_module) -> None:
        if self.history:  # resumed: judged on the epochs it has, before training more
            self._judge(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.hyperband.metric)
        if value is not None:
            self.history = self.history[:trainer.current_epoch] + [float(value)]
        self._judge(trainer)

    def _judge(self, trainer) -> None:
        decision = engine.should_stop(self.hyperband.config, self.history, self.hyperband.others(self.name))
        # every rank of a DDP run reads the same files; one verdict for all of them all the same
        if trainer.strategy.reduce_boolean_decision(decision is not None, all=False):
            trainer.should_stop = True
            self.decision, self.epochs = decision, len(self.history)


def metric_history(run: RunDir, metric: str) -> list[float]:
    """A run's logged values of ``metric`` in order (``csv/metrics.csv``), the finite ones; [] when it has none."""
    if not run.metrics_path.is_file():
        return []
    try:
        with run.metrics_path.open(newline="") as f:
            return engine.finite(row[metric] for row in csv.DictReader(f) if row.get(metric) not in (None, ""))
    except (OSError, csv.Error, UnicodeDecodeError) as err:  # a damaged log counts as no history, with a note
        print(f"delving: note: {run.metrics_path} unreadable for hyperband ({type(err).__name__}); left out",
              file=sys.stderr)
        return []


def record_pruned(run: RunDir, result: dict, pruner: HyperbandPruner) -> dict:
    """The result of a run the pruner stopped, written as such (status ``pruned``); any other result unchanged."""
    if pruner.decision is None or result.get("already_done") or result.get("status") != "finished":
        return result
    d = pruner.decision
    result = {**result, "status": PRUNED,
              "pruned": {"epoch": pruner.epochs, "band": d.band, "metric": pruner.hyperband.metric,
                         "value": d.value, "threshold": d.threshold}}
    run.write_result(result)
    return result


def is_pruned(run: RunDir) -> bool:
    """The run's result says hyperband stopped it (a damaged result: not pruned, it is trained again)."""
    try:
        result = run.read_result()
    except Exception:  # noqa: BLE001 - DelvingError for a damaged file: the runner names it elsewhere
        return False
    return bool(result) and result.get("status") == PRUNED
