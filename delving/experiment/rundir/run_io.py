"""The Lightning pieces that write into a run folder (:class:`~delving.experiment.rundir.run_dir.RunDir` names the
files).

- :class:`AppendingCSVLogger`: Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts (with a
  warning); this one keeps it and appends, so the history of a run survives every resume as one file
  (``RunDir.resume_point`` first cuts off the rows logged after the checkpoint, so none is duplicated).
- :class:`FlushLogsAtCheckpoint`: every metrics row logged before a checkpoint is on disk when the checkpoint is:
  Lightning's ``LearningRateMonitor`` logs without flushing, so a kill inside an epoch would lose its lr row.
- :func:`restore_epoch_train_rows`: Lightning logs an epoch's training means (``train/err1``,
  ``train/loss_epoch``) after that epoch's checkpoint; killed in between, the resumed run starts past the epoch and
  never logs them. The checkpoint's :class:`~delving.experiment.rundir.history.History` has them: they are written back.
- :class:`AtomicCheckpointIO`: a checkpoint is written to a temporary file in the same folder, fsync'd, then
  renamed over the old one; a kill or a full disk leaves the old checkpoint or the new one, never half of one. The
  best epoch's checkpoint and ``last.ckpt``, when written at the same step, are one file under two names.
"""

from __future__ import annotations

import copy
import csv
import os
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.plugins.io import TorchCheckpointIO

from delving.experiment.rundir.history import History
from delving.experiment.rundir.run_dir import RunDir, filesystem_error, replacing


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, minus the deletion: an existing file's columns are kept and rows appended."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if path.is_file():
            with path.open(newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        """A new column: the file is rewritten with the wider header, atomically (the base class truncates it)."""
        path = Path(self.metrics_file_path)
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        with replacing(path) as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


assert issubclass(_AppendingWriter, _ExperimentWriter)  # the hooks overridden above are the Fabric writer's


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``RUN/csv/metrics.csv`` and appending to it across resumes."""

    def __init__(self, run: RunDir):
        super().__init__(save_dir=str(run.path), name="", version=RunDir.CSV)

    @property
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class FlushLogsAtCheckpoint(L.Callback):
    """Writes out the loggers' buffered rows whenever a checkpoint is made (before it is saved)."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            logger.save()


def restore_epoch_train_rows(run: RunDir, checkpoint: Path) -> int:
    """Append to ``metrics.csv`` the training-mean rows of the epochs done by ``checkpoint`` (its ``History``
    rows) that the file lacks. Returns how many rows were written.

    Called after :meth:`RunDir.resume_point` cut the file back to the checkpoint, so a missing row can only be the
    last epoch's, and appending puts it where the uninterrupted run has it. The row is the one Lightning writes: at
    the epoch's last logging step (``global_step - 1``), with the values History read from the same metrics."""
    path = run.metrics_path
    if not path.is_file():
        return 0
    state = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=False)  # no tensor data is read
    history_rows = state.get("callbacks", {}).get(History.__qualname__, {}).get("rows", [])
    with path.open(newline="") as f:
        logged = {row.get("epoch") for row in csv.DictReader(f) if any(row.get(k) for k in History.TRAIN_KEYS)}
    writer, written = _AppendingWriter(log_dir=str(path.parent)), 0
    for row in history_rows:
        values = {key: row[name] for key, name in History.TRAIN_KEYS.items() if name in row}
        if values and str(row["epoch"]) not in logged:
            writer.log_metrics({"epoch": row["epoch"], **values}, step=row["step"] - 1)
            written += 1
    writer.save()
    return written


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``<name>.partial`` in the checkpoint's folder, fsync, rename: atomic on POSIX.

    Any error while writing (ENOSPC, EROFS, ...) removes the partial file and becomes one line naming the path.

    A checkpoint of the training state the previous one in the same folder holds (the best epoch's and
    ``last.ckpt``, saved one after the other when ``val/err1`` improves) is that file's hard link, renamed into
    place as atomically: ~14 ms less per improving epoch on the CPU (serializing, writing and fsyncing 2.4 MB for
    the main job's net), the same bytes. The one difference from writing it again is the callbacks' own records in
    it: ``last.ckpt``'s ModelCheckpoint state for itself is the one it had after the previous epoch, which holds
    nothing a resume reads (the path it writes to, always ``last.ckpt``). Where the filesystem has no hard links,
    the checkpoint is written."""

    def __init__(self) -> None:
        super().__init__()
        self._written: tuple[dict, Path] | None = None  # the last checkpoint written: its training state, its path

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        state = training_state(checkpoint)
        if self._link_same_state(state, path):
            return
        self._write(checkpoint, path)
        self._written = (state, path) if state is not None else None

    def _link_same_state(self, state: dict | None, path: Path) -> bool:
        """Put the previous checkpoint under ``path`` too if it holds ``state``; False where it cannot."""
        if state is None or self._written is None:
            return False
        previous_state, previous = self._written
        if previous == path or previous.parent != path.parent or previous_state != state or not previous.is_file():
            return False
        tmp = path.with_name(path.name + RunDir.PARTIAL)
        try:
            tmp.unlink(missing_ok=True)
            os.link(previous, tmp)
            tmp.replace(path)
            _fsync_dir(path.parent)
        except OSError:  # no hard links here (some network and FAT filesystems): write it instead
            tmp.unlink(missing_ok=True)
            return False
        return True

    def _write(self, checkpoint: dict, path: Path) -> None:
        tmp = path.with_name(path.name + RunDir.PARTIAL)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as f:
                sink = _Sink(f)
                try:
                    torch.save(checkpoint, sink)
                except RuntimeError:  # torch's zip writer reports a failed write as a RuntimeError: say why
                    raise sink.error or RuntimeError from None
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(path)
            _fsync_dir(path.parent)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise filesystem_error(err, path) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def training_state(checkpoint: dict) -> dict | None:
    """What tells two Lightning checkpoints of one run apart: epoch, optimizer steps, the loops' progress counters
    and the LR schedule. Equal between two saves, no optimizer step and no schedule step came between them, so the
    weights, the optimizer's buffers and every counter a resume reads are the same (the callbacks' states aside).
    None for a dict that is not a Lightning checkpoint. A copy: Lightning's state dicts share lists with live
    objects."""
    if "global_step" not in checkpoint or "loops" not in checkpoint:
        return None
    groups = [{k: v for k, v in group.items() if k != "params"}
              for optimizer in checkpoint.get("optimizer_states", []) for group in optimizer.get("param_groups", [])]
    return copy.deepcopy({"epoch": checkpoint.get("epoch"), "global_step": checkpoint["global_step"],
                          "loops": checkpoint["loops"], "lr_schedulers": checkpoint.get("lr_schedulers"),
                          "param_groups": groups})


class _Sink:
    """The file torch.save writes to, keeping the OSError (e.g. ENOSPC) its zip writer would hide."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (the directory entry), where the OS allows opening a directory."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
