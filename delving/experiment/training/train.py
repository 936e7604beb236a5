"""Run one config: build data, model (timm registry + init) and system, train with Lightning, record the result.

A run lives in ``<out_dir>/<name>/``, a folder whose files :class:`~delving.experiment.rundir.run_dir.RunDir` names
(config, fingerprint, checkpoints, the metrics CSV, slopes, variance, the result, the lock). Running the same
config again resumes from the last valid checkpoint, or does nothing when the run has finished; another config
under the same name is a one-line error (docs/runs.md). One process writes a folder at a time (its lock).
"""

from __future__ import annotations

import copy
import os
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, TQDMProgressBar

from delving.data import datamodule_class
from delving.errors import DelvingError
from delving.experiment.rundir.history import History
from delving.experiment.rundir.resume import ExactResume
from delving.experiment.rundir.run_dir import FilesystemError, RunDir, checkpoint_position, filesystem_error
from delving.experiment.rundir.run_io import AtomicCheckpointIO, FlushLogsAtCheckpoint, restore_epoch_train_rows
from delving.experiment.training.callbacks import SlopeLogger, VarianceLogger
from delving.experiment.training.checks import refusal_line
from delving.experiment.training.config import LSUV, RunConfig, per_process_batch, to_dict
from delving.experiment.training.loggers import finish_wandb, make_loggers
from delving.experiment.training.provenance import provenance
from delving.experiment.training.speed import SpeedOptions, StepTimer, apply_speed_options, frozen_heap
from delving.experiment.training.system import DelvingSystem
from delving.models import create_initialized
from delving.nn.lsuv import lsuv


def default_name(cfg: RunConfig) -> str:
    depth = f"-d{cfg.model.depth}" if cfg.model.depth is not None else ""
    return f"{cfg.model.name}-{cfg.model.activation}-{cfg.init.scheme}{depth}-s{cfg.seed}"


def run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.out_dir) / (cfg.name or default_name(cfg))


def build_datamodule(cfg: RunConfig) -> L.LightningDataModule:
    return datamodule_class(cfg.data.name).from_config(cfg.data, seed=cfg.seed)


def build_model(cfg: RunConfig, datamodule: L.LightningDataModule) -> torch.nn.Module:
    """The registered model with the config's activation, initialized with its scheme (Sec. 2.2); ``lsuv`` also
    reads one training batch."""
    m, i = cfg.model, cfg.init
    kwargs = dict(m.kwargs)
    kwargs.update({k: v for k, v in (("depth", m.depth), ("drop_rate", m.drop_rate)) if v is not None})
    scheme = "variance_preserving" if i.scheme == LSUV else i.scheme
    try:
        model = create_initialized(m.name, scheme, i.mode, fc_std=i.fc_std, prelu_factor=i.prelu_factor,
                                   tat_eta=i.tat_eta, weights=i.weights,
                                   activation=m.activation, in_chans=datamodule.in_chans,
                                   num_classes=datamodule.num_classes, **kwargs)
    except Exception as err:  # noqa: BLE001 - whatever a builder raises for bad arguments, said in one line
        raise DelvingError(refusal_line(m, err)) from None
    if i.scheme == LSUV:
        datamodule.setup("fit")
        lsuv(model, next(iter(datamodule.train_dataloader()))[0], scheme=scheme, mode=i.mode)
    return model


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
        build_model(probe, datamodule)


def checkpoint_callbacks(folder: Path, every_n_steps: int | None) -> list[ModelCheckpoint]:
    """The best epoch by ``val/err1`` (``epochNNN.ckpt``) and the resume point ``last.ckpt``, written at every
    epoch's end and, with ``every_n_steps``, every n optimizer steps too (mid-epoch resume points: see
    :meth:`RunDir.resume_point`).

    ``last.ckpt`` is written by callbacks of its own because Lightning 2.6's ``save_last=True`` writes it only when
    a top-k checkpoint is written, i.e. when ``val/err1`` improves: a resumed run would go back to its best epoch.
    ``monitor=None, save_top_k=1`` keeps only the newest file; no version counter, so all writers share one name."""
    best = ModelCheckpoint(dirpath=folder, filename="epoch{epoch:03d}", auto_insert_metric_name=False,
                           save_top_k=1, monitor="val/err1", mode="min")
    latest = [ModelCheckpoint(dirpath=folder, filename=ModelCheckpoint.CHECKPOINT_NAME_LAST, every_n_epochs=1,
                              enable_version_counter=False)]
    if every_n_steps:
        latest.append(ModelCheckpoint(dirpath=folder, filename=ModelCheckpoint.CHECKPOINT_NAME_LAST,
                                      every_n_train_steps=every_n_steps, enable_version_counter=False))
    return [best, *latest]


def build_trainer(cfg: RunConfig, run: RunDir | Path, loggers, progress: bool, extra_callbacks=()) -> L.Trainer:
    """The run's Trainer; ``run``: its folder (a ``RunDir`` or a path)."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    t = cfg.trainer
    callbacks = [LearningRateMonitor(logging_interval="epoch"), History(), StepTimer(), ExactResume(),
                 FlushLogsAtCheckpoint(), *extra_callbacks]
    if not t.fast_dev_run:  # a dry run must not write a multi-GB checkpoint of model C (Lightning still saves `last`)
        callbacks[:0] = checkpoint_callbacks(run.checkpoints, t.checkpoint_every_n_steps)
    if cfg.tracking.log_slopes:
        callbacks.append(SlopeLogger(run.path))
    if cfg.tracking.log_variance and not t.fast_dev_run:
        callbacks.append(VarianceLogger(run.path))
    bar = progress and t.enable_progress_bar
    if bar and not any(isinstance(cb, ProgressBar) for cb in extra_callbacks):
        # Lightning's default bar redraws at every step, 0.85 ms of CPU each (benchmarks/README.md, "What a run
        # costs"); every log_every_n_steps steps and at each epoch's end is as often as a person reads it.
        callbacks.append(TQDMProgressBar(refresh_rate=t.log_every_n_steps))
    limits = {k: v for k, v in (("limit_train_batches", t.limit_train_batches),
                                ("limit_val_batches", t.limit_val_batches)) if v is not None}
    return L.Trainer(
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=t.strategy, precision=t.precision, num_sanity_val_steps=t.num_sanity_val_steps,
        log_every_n_steps=t.log_every_n_steps, enable_progress_bar=bar,
        enable_model_summary=progress, fast_dev_run=t.fast_dev_run, deterministic=t.deterministic,
        gradient_clip_val=cfg.optim.gradient_clip_norm, gradient_clip_algorithm="norm",
        default_root_dir=str(run.path), logger=loggers, callbacks=callbacks, plugins=[AtomicCheckpointIO()],
        **limits, **t.extra)


def fit(cfg: RunConfig, *, progress: bool = True, callbacks=()) -> dict:
    """Train one run (resuming from its last valid checkpoint if there is one) and return its result record.
    ``callbacks``: Lightning callbacks added to the run's own (checkpoints, LR monitor, history, slopes).

    A run that has finished (or diverged) and trained ``trainer.max_epochs`` is not trained nor written again: its
    stored result is returned, marked ``already_done``. A folder holding another config is a one-line error, with
    nothing written; so is a folder another live process is writing (its lock), and a folder that cannot be written
    (disk full, read-only)."""
    entered = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)  # bad model settings fail before any I/O
    apply_speed_options(model, SpeedOptions.from_trainer(cfg.trainer))
    run, config = RunDir(run_dir(cfg)), to_dict(cfg)
    run.check_identity(config)  # before anything is written
    try:
        with run.lock(enabled=_launching_process()):
            run.check_identity(config)  # again under the lock: another writer may have created it meanwhile
            if run.is_done(cfg.trainer.max_epochs):
                result = run.read_result()
                print(f"delving: {run.path} already {result['status']} ({run.RESULT}); not trained again",
                      file=sys.stderr)
                return {**result, "already_done": True}
            return _fit_locked(cfg, run, config, datamodule, model, progress, callbacks, entered)
    except FilesystemError:
        raise
    except OSError as err:
        raise filesystem_error(err, run.path) from None


def _launching_process() -> bool:
    """True in the process a user started; False in the ranks a DDP launcher (or SLURM) started beside it, which
    write nothing of their own and must not contend for the run's lock."""
    # torchrun sets RANK/GROUP_RANK (LOCAL_RANK is 0 on every node); Lightning's launcher NODE_RANK/LOCAL_RANK
    return all(os.environ.get(key, "0") == "0"
               for key in ("RANK", "GROUP_RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def _fit_locked(cfg, run: RunDir, config: dict, datamodule, model, progress: bool, callbacks, entered: float):
    prov = provenance()
    run.write_config(cfg, config)
    run.write_provenance(prov)
    system = DelvingSystem(model, cfg.optim, datamodule.num_classes, config=config)
    loggers = make_loggers(cfg, run, prov)
    trainer = build_trainer(cfg, run, loggers, progress, callbacks)
    datamodule.batch_size = per_process_batch(cfg.data, trainer.world_size)
    # Resuming a mid-epoch checkpoint (Lightning 2.6, measured by tests/test_multinode.py), on the same or another
    # number of processes: the run continues at the checkpoint's epoch and global step, with the epoch's batch
    # counter at the steps already taken; the epoch ends after as many steps as an epoch has at the new world size
    # (the same count when data.batch_size_is=total).
    last = run.resume_point(write=trainer.is_global_zero)
    if last and trainer.is_global_zero:
        restore_epoch_train_rows(run, last)
    started = time.perf_counter()
    try:
        with warnings.catch_warnings(), frozen_heap():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            trainer.fit(system, datamodule=datamodule, ckpt_path=str(last) if last else None)
    except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after saving nothing more
        if trainer.interrupted:
            raise KeyboardInterrupt(_saved_line(run)) from None
        raise
    finally:
        _close_process_group()
    result = _result(cfg, trainer, system, time.perf_counter() - started)
    finish_wandb(loggers)
    # Where a run's time goes (benchmarks/sweep_cost.py): set-up (data, model, W&B, Trainer) before trainer.fit,
    # fit_seconds inside it (of which step_seconds in training steps), and the whole call including W&B's finish.
    result.update(setup_seconds=round(started - entered, 2), run_seconds=round(time.perf_counter() - entered, 2))
    if trainer.is_global_zero:
        run.write_result(result)
    return result


def _close_process_group() -> None:
    """End DDP's process group once training is over. Lightning does so at exit for NCCL only; a gloo group left
    open (DDP on CPU) has worker threads that abort the interpreter's exit now and then (SIGABRT, "terminate called
    without an active exception"), which turns a finished run's exit code into -6."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _saved_line(run: RunDir) -> str:
    """What an interrupted run keeps: its newest checkpoint, and the command that resumes it."""
    position = checkpoint_position(run.last_checkpoint) if run.last_checkpoint.is_file() else None
    saved = (f"{run.path.name} keeps {run.last_checkpoint} (step {position[0]}, {position[1]} epoch(s) done)"
             if position else f"{run.path.name} had no checkpoint yet")
    return f"{saved}; run the same command again to resume"


def _result(cfg: RunConfig, trainer: L.Trainer, system: DelvingSystem, seconds: float) -> dict:
    history = next(cb for cb in trainer.callbacks if isinstance(cb, History)).rows
    errors = [row["val/err1"] for row in history if "val/err1" in row]
    return {
        "status": "diverged" if system.diverged else "finished",
        "name": run_dir(cfg).name,
        "activation": cfg.model.activation, "init": cfg.init.scheme, "depth": cfg.model.depth, "seed": cfg.seed,
        "epochs": trainer.current_epoch,
        "final_val_err1": errors[-1] if errors else None,
        "final_train_err1": history[-1].get("train/err1") if history else None,
        "best_val_err1": min(errors) if errors else None,
        "final_val_err5": history[-1].get("val/err5") if history else None,
        "fit_seconds": round(seconds, 2),
        "step_seconds": round(next(cb for cb in trainer.callbacks if isinstance(cb, StepTimer)).seconds, 2),
        "history": history,
    }
