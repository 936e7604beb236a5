"""Exact resume: what a checkpoint must hold, beyond Lightning's own state, for a resumed run to end bit for bit
where the uninterrupted run ends (on CPU, same world size, torch data modules). See docs/resume.md.

Lightning restores the weights, the optimizer, the LR schedulers, the loops' counters and (for a
:class:`~delving.data.order.ResumableLoader`) the position inside the epoch. :class:`ExactResume` adds:

- the random number generators (torch CPU and CUDA, numpy, Python), captured when the checkpoint is written and
  put back just before the first training batch after the resume, so everything the resumed process drew while it
  was being built (model init, LSUV, Lightning's set-up) is forgotten. What draws between a checkpoint and the next
  batch in the uninterrupted run must draw from generators of its own (the data order and the loaders' worker
  seeds do: :mod:`delving.data.order`);
- no step checkpoint on an epoch's last batch (``trainer.checkpoint_every_n_steps`` dividing the epoch): Lightning
  would resume from it as from the epoch's end, without that epoch's validation (a missing history row), and the
  end-of-epoch checkpoint follows a moment later anyway;
- one line at resume where the resumed run cannot be exact: another number of processes, or a training loader
  that cannot resume inside an epoch (FFCV);
- a non-zero exit status after SIGTERM: Lightning stops at the next step with ``SIGTERMException``, a
  ``SystemExit`` without a code, which would end the process with status 0, as if the run had succeeded.
"""

from __future__ import annotations

import random
import signal
import sys

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.types import _Stateful
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from delving.data.order import ResumableLoader


def rng_states() -> dict:
    """Every generator a training step may draw from: torch's CPU (and CUDA, once initialized), numpy's and
    Python's global ones, as tensors and plain values (Lightning loads checkpoints with ``weights_only=True``,
    which refuses numpy arrays)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                        "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ExactResume(L.Callback):
    """Saves the RNG states and the world size in each checkpoint; on resume, says where the resume is not exact and
    restores the RNG states before the first batch.

    Under DDP every rank restores rank 0's RNG states: ``fit`` seeds every rank alike, so their streams were
    equal before the kill too."""

    def __init__(self):
        self._trainer: L.Trainer | None = None
        self._loaded: dict | None = None
        self._pending_rng: dict | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict:
        return {"rng": rng_states(), "world_size": self._trainer.world_size if self._trainer else None}

    def load_state_dict(self, state_dict: dict) -> None:
        self._loaded = state_dict
        self._pending_rng = state_dict.get("rng")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._loaded is None:
            return
        loader = trainer.fit_loop._combined_loader
        for dl in loader.flattened if loader is not None else ():
            if isinstance(dl, ResumableLoader):
                dl.drop_resume_point_at(trainer.num_training_batches)
        self._warn_inexact(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Runs before the checkpoint callbacks (Lightning calls those last): mark this step as saved for the
        # step-interval ones when it ends the epoch. ModelCheckpoint skips a step whose number it last saved at.
        if batch_idx + 1 < trainer.num_training_batches:
            return
        for callback in trainer.checkpoint_callbacks:
            if getattr(callback, "_every_n_train_steps", 0) and hasattr(callback, "_last_global_step_saved"):
                callback._last_global_step_saved = trainer.global_step

    @rank_zero_only
    def _warn_inexact(self, trainer: L.Trainer) -> None:
        reasons = []
        saved = self._loaded.get("world_size")
        if saved is not None and saved != trainer.world_size:
            reasons.append(f"it ran on {saved} process(es), now on {trainer.world_size}: the shards and the rest "
                           f"of the interrupted epoch differ")
        loader = trainer.fit_loop._combined_loader
        mid_epoch = trainer.fit_loop.restarting and trainer.fit_loop.epoch_loop.batch_progress.current.ready > 0
        if mid_epoch and loader is not None and not all(isinstance(dl, _Stateful) for dl in loader.flattened):
            reasons.append("its training loader cannot resume inside an epoch (FFCV): the interrupted epoch "
                           "starts its order again")
        if reasons:
            print(f"resume not exact: {'; '.join(reasons)} (docs/resume.md)", file=sys.stderr)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and not exception.code:
            exception.code = 128 + signal.SIGTERM  # the shell's status for a process ended by SIGTERM

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._pending_rng is not None:
            set_rng_states(self._pending_rng)
            self._pending_rng = None
