"""The run folder's one owner: every file of ``<out_dir>/<name>/`` is named, read and written here.

A run folder holds::

    config.yaml         the resolved config (what the run is)
    fingerprint         hash of the config's identity (config.yaml minus the keys that may change on resume)
    provenance.json     git commit, versions, hardware
    lock                advisory lock: PID and host of the process writing the folder
    wandb_id            the run's W&B id
    checkpoints/        last.ckpt (resume point) and epochNNN.ckpt (best epoch by val/err1)
    csv/metrics.csv     every row Lightning logged, one continuous history over all resumes
    slopes.csv          PReLU slopes per epoch, layer and channel
    slopes_by_layer.png the slope profile at the end
    variance.csv        variance_profile at init and after epoch 1
    correlation.csv     correlation_profile (mean cosine between inputs per layer: measured, kernel, C-map) likewise
    eval/               ``delving evaluate`` records
    result.json         written when the run ends: finished or diverged

Identity is the config. A folder whose config differs from the one asked for (outside :data:`VOLATILE` keys) is
never reused nor rewritten: :meth:`RunDir.check_identity` raises a one-line error naming the differing keys before
anything is written. Same identity: the run resumes (or is skipped when it has finished).

This module needs no torch or Lightning; the Lightning pieces that write into a folder (the appending CSV logger,
the atomic checkpoint writer) are in :mod:`delving.experiment.rundir.run_io`.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import os
import socket
import sys
from pathlib import Path

from delving.errors import DelvingError

# Keys that may change between a run and its resume without making it another run: how long it trains, where and
# on how many devices, and what is logged. Everything else (data, model, init, optimizer, seed, limits) is identity.
VOLATILE = (
    "name", "out_dir", "threads", "trainer.max_epochs", "trainer.devices", "trainer.num_nodes",
    "trainer.accelerator", "trainer.strategy", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps", "data.num_workers", "data.os_cache", "tracking",
)
DONE = ("finished", "diverged")
CHECKPOINT_KEYS = ("state_dict", "epoch", "global_step", "loops")  # what a Lightning checkpoint always has
# errno values that mean "this path cannot be written": reported as one line instead of a traceback
FILESYSTEM_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST,
                     errno.EISDIR, errno.EDQUOT}


class RunLocked(DelvingError):
    """Another live process holds the run folder's lock."""


class FilesystemError(DelvingError):
    """The run folder cannot be written (disk full, read-only, permissions, a file where a folder should be)."""


def filesystem_error(err: OSError, path: Path | str | None = None) -> FilesystemError:
    """One line naming the path and what the errno means, e.g. ``cannot write runs/x: No space left on device``."""
    where = err.filename or path
    name = errno.errorcode.get(err.errno, "?")
    return FilesystemError(f"cannot write {where}: {os.strerror(err.errno) if err.errno else err} ({name})")


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a killed process leaves the old file or the new one, never half of one."""
    write_text(path, json.dumps(data, indent=2, default=str))


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`replacing`)."""
    with replacing(path) as f:
        f.write(text)


@contextlib.contextmanager
def replacing(path: Path):
    """A text file (``newline=""``, as csv wants) that replaces ``path`` when the block ends without an error.

    It is written beside ``path`` under a temporary name, fsync'd and renamed over it: a kill or a full disk leaves
    the old file or the new one, never half of one; on an error the temporary file is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def append_rows(path: Path, header, rows) -> None:
    """Append ``rows`` to a CSV file, writing ``header`` first when the file is new."""
    path = Path(path)
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(header)
        writer.writerows(rows)


def flatten(config: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def identity(config: dict) -> dict:
    """The flattened config without the :data:`VOLATILE` keys: what makes a run this run."""
    return {k: v for k, v in flatten(config).items()
            if not any(k == key or k.startswith(key + ".") for key in VOLATILE)}


def fingerprint(config: dict) -> str:
    """A short hash of :func:`identity` (JSON with sorted keys)."""
    text = json.dumps(identity(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differing_keys(old: dict, new: dict) -> list[str]:
    """Identity keys whose value differs, as ``key: old -> new``."""
    a, b = identity(old), identity(new)
    return [f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


class RunDir:
    """One run folder: the path of each of its files and the reads and writes of them."""

    CONFIG = "config.yaml"
    FINGERPRINT = "fingerprint"
    PROVENANCE = "provenance.json"
    RESULT = "result.json"
    LOCK = "lock"
    WANDB_ID = "wandb_id"
    CHECKPOINTS = "checkpoints"
    LAST = "last.ckpt"
    CSV = "csv"
    METRICS = "metrics.csv"
    SLOPES = "slopes.csv"
    SLOPES_PLOT = "slopes_by_layer.png"
    VARIANCE = "variance.csv"
    CORRELATION = "correlation.csv"
    EVAL = "eval"
    # The columns of the per-epoch CSVs, written by the run's callbacks and read by delving.studies.runs
    SLOPE_COLUMNS = ("epoch", "depth", "layer", "channel", "slope")
    VARIANCE_COLUMNS = ("stage", "index", "layer", "forward_std", "backward_std")
    CORRELATION_COLUMNS = ("stage", "index", "layer", "measured", "theory", "cmap", "anchored")
    PARTIAL = ".partial"  # suffix of a checkpoint being written (renamed into place once complete)
    CORRUPT = ".corrupt"  # suffix a damaged last.ckpt is moved to

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------------------------------------ paths
    config_path = property(lambda self: self.path / self.CONFIG)
    fingerprint_path = property(lambda self: self.path / self.FINGERPRINT)
    provenance_path = property(lambda self: self.path / self.PROVENANCE)
    result_path = property(lambda self: self.path / self.RESULT)
    lock_path = property(lambda self: self.path / self.LOCK)
    wandb_id_path = property(lambda self: self.path / self.WANDB_ID)
    checkpoints = property(lambda self: self.path / self.CHECKPOINTS)
    last_checkpoint = property(lambda self: self.path / self.CHECKPOINTS / self.LAST)
    csv_dir = property(lambda self: self.path / self.CSV)
    metrics_path = property(lambda self: self.path / self.CSV / self.METRICS)
    slopes_path = property(lambda self: self.path / self.SLOPES)
    slopes_plot_path = property(lambda self: self.path / self.SLOPES_PLOT)
    variance_path = property(lambda self: self.path / self.VARIANCE)
    correlation_path = property(lambda self: self.path / self.CORRELATION)
    eval_dir = property(lambda self: self.path / self.EVAL)

    @classmethod
    def of_checkpoint(cls, ckpt: str | Path) -> "RunDir":
        """The run folder a checkpoint belongs to (``RUN/checkpoints/x.ckpt`` -> ``RUN``; else its folder)."""
        ckpt = Path(ckpt)
        return cls(ckpt.parent.parent if ckpt.parent.name == cls.CHECKPOINTS else ckpt.parent)

    def is_run(self) -> bool:
        return self.config_path.is_file()

    # ------------------------------------------------------------------------------------------------ config
    def read_config(self) -> dict:
        """config.yaml as nested dicts; a damaged file is a one-line error naming it."""
        from omegaconf import OmegaConf

        try:
            config = OmegaConf.to_container(OmegaConf.load(self.config_path), resolve=True)
        except Exception as err:  # noqa: BLE001 - binary, truncated, not YAML: all mean "unreadable"
            raise DelvingError(f"unreadable {self.config_path} ({type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else ''})") from None
        if not isinstance(config, dict):
            raise DelvingError(f"unreadable {self.config_path}: not a mapping of config keys")
        return config

    def check_identity(self, config: dict) -> None:
        """Raise a one-line error when the folder holds a run of another config (nothing is written here).

        The choice: a different config under an existing name is refused, never reused nor renamed, so that a
        name always means one config; the message names the keys that differ and how to go on."""
        if not self.is_run():
            return
        if self.fingerprint_path.is_file() and self.fingerprint_path.read_text().strip() == fingerprint(config):
            return
        diff = differing_keys(self.read_config(), config)
        if diff:
            shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
            raise DelvingError(f"run folder {self.path} holds another config ({shown}); choose another --name or "
                               f"--out_dir, or delete the folder to start it again")

    def write_config(self, cfg, config: dict) -> None:
        """config.yaml and its fingerprint (atomically; only when they change)."""
        from omegaconf import OmegaConf

        text = OmegaConf.to_yaml(OmegaConf.structured(cfg))
        if not self.config_path.is_file() or self.config_path.read_text() != text:
            write_text(self.config_path, text)
        print_ = fingerprint(config)
        if not self.fingerprint_path.is_file() or self.fingerprint_path.read_text().strip() != print_:
            write_text(self.fingerprint_path, print_ + "\n")

    def write_provenance(self, data: dict) -> None:
        write_json(self.provenance_path, data)

    # ------------------------------------------------------------------------------------------------ result
    def read_result(self) -> dict | None:
        """result.json (written when the run finished or diverged), None while it has none; damaged: an error."""
        if not self.result_path.is_file():
            return None
        try:
            result = json.loads(self.result_path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise DelvingError(f"unreadable {self.result_path} ({type(err).__name__}: {err})") from None
        if not isinstance(result, dict):
            raise DelvingError(f"unreadable {self.result_path}: not a JSON object")
        return result

    def write_result(self, result: dict) -> None:
        write_json(self.result_path, result)

    def is_done(self, max_epochs: int | None = None) -> bool:
        """Finished or diverged, and (finished runs) trained at least ``max_epochs``: nothing left to train."""
        try:
            result = self.read_result()
        except DelvingError:
            return False
        if result is None or result.get("status") not in DONE:
            return False
        return result["status"] == "diverged" or max_epochs is None or (result.get("epochs") or 0) >= max_epochs

    # ------------------------------------------------------------------------------------------------ per-epoch CSVs
    def append_slopes(self, rows) -> None:
        """Rows of :data:`SLOPE_COLUMNS` appended to slopes.csv."""
        append_rows(self.slopes_path, self.SLOPE_COLUMNS, rows)

    def append_variance(self, rows) -> None:
        """Rows of :data:`VARIANCE_COLUMNS` appended to variance.csv."""
        append_rows(self.variance_path, self.VARIANCE_COLUMNS, rows)

    def append_correlation(self, rows) -> None:
        """Rows of :data:`CORRELATION_COLUMNS` appended to correlation.csv."""
        append_rows(self.correlation_path, self.CORRELATION_COLUMNS, rows)

    def variance_stages(self) -> set[str]:
        """The stages variance.csv holds (``init``, ``epoch1``)."""
        if not self.variance_path.is_file():
            return set()
        with self.variance_path.open(newline="") as f:
            return {row["stage"] for row in csv.DictReader(f)}

    def write_eval(self, label: str, record: dict) -> Path:
        self.eval_dir.mkdir(parents=True, exist_ok=True)
        path = self.eval_dir / f"{label}.json"
        write_json(path, record)
        return path

    # ------------------------------------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def lock(self, enabled: bool = True):
        """Hold the folder's advisory lock (``fcntl.flock``) while the block runs; the folder is created first.

        The lock file holds the holder's PID and host, for the message a second writer gets. The kernel releases
        a flock when its process dies, so a dead holder's lock is stale and simply taken over."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise filesystem_error(err, self.path) from None
        if not enabled:
            yield self
            return
        handle = _acquire(self.lock_path)
        try:
            yield self
        finally:
            _release(handle)

    def holder(self) -> str:
        """Who holds (or last held) the lock: ``PID N on HOST``."""
        try:
            pid, host = self.lock_path.read_text().split()[:2]
            return f"PID {pid} on {host}"
        except (OSError, ValueError):
            return "another process"

    # ------------------------------------------------------------------------------------------------ checkpoints
    def resume_point(self, write: bool = True) -> Path | None:
        """The checkpoint to resume from, with the per-epoch CSVs cut back to it; None: start from scratch.

        ``last.ckpt`` when it is a valid Lightning checkpoint. A truncated, garbage or foreign one is moved aside
        (``last.ckpt.corrupt``) and the newest valid checkpoint of the folder is used instead, with one line saying
        so. The check reads the checkpoint memory-mapped: no tensor data is loaded. ``write=False`` (the other
        ranks of a DDP run) makes the same choice and leaves the files to the first process."""
        last = self.last_checkpoint
        found = {path: checkpoint_position(path) for path in sorted(self.checkpoints.glob("*.ckpt"))}
        valid = {path: pos for path, pos in found.items() if pos is not None}
        chosen = last if last in valid else max(valid, key=lambda p: valid[p][0], default=None)
        if not write:
            return chosen
        if last in found and last not in valid:
            last.replace(last.with_name(last.name + self.CORRUPT))
            instead = f"resuming from {chosen.name} (step {valid[chosen][0]})" if chosen else "starting again"
            print(f"delving: {last} is not a readable checkpoint (moved to {last.name}{self.CORRUPT}); {instead}",
                  file=sys.stderr)
        step, done_epochs = valid[chosen] if chosen else (0, 0)
        self.cut_back(step, done_epochs)
        return chosen

    def cut_back(self, step: int, done_epochs: int) -> None:
        """Drop rows logged after the resume point, so a resumed run appends no duplicate: metrics rows at or
        after ``step`` (Lightning logs an epoch's metrics at its last step - 1), slopes of epochs not done, and the
        after-epoch-1 variance when epoch 0 is not done."""
        _filter_csv(self.metrics_path, lambda row: _number(row.get("step")) < step)
        _filter_csv(self.slopes_path, lambda row: _number(row.get("epoch")) < done_epochs)
        _filter_csv(self.variance_path, lambda row: row.get("stage") == "init" or done_epochs >= 1)
        _filter_csv(self.correlation_path, lambda row: row.get("stage") == "init" or done_epochs >= 1)


def checkpoint_position(path: Path) -> tuple[int, int] | None:
    """(global step, epochs completed) of a valid Lightning checkpoint, None for anything else.

    Loaded with ``mmap=True``: only the pickled structure is read, the tensors stay on disk (a 2.6 GB model C
    checkpoint is checked in milliseconds)."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        if not isinstance(ckpt, dict) or not all(k in ckpt for k in CHECKPOINT_KEYS):
            return None
        batches = ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]
        return int(ckpt["global_step"]), int(ckpt["epoch"]) + int(bool(batches.get("is_last_batch")))
    except Exception:  # noqa: BLE001 - truncated, garbage, foreign pickle, old format: not a resume point
        return None


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _filter_csv(path: Path, keep) -> None:
    """Keep the rows of a CSV for which ``keep(row)`` holds (header kept; rewritten atomically, only on change)."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    kept = [row for row in body if keep(dict(zip(header, row)))]
    if len(kept) == len(body):
        return
    with replacing(path) as f:
        csv.writer(f).writerows([header, *kept])


def _acquire(path: Path):
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise filesystem_error(err, path) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        run = RunDir(path.parent)
        raise RunLocked(f"run folder {run.path} is in use by {run.holder()} (lock file {path}); wait for it to "
                        f"end, or stop it") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    return fd


def _release(fd) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
