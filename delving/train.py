"""Run one config: build data, model (timm registry + init) and system, train with Lightning, record the result.

A run lives in ``<out_dir>/<name>/``: ``config.yaml`` and ``provenance.json`` (what produced it),
``checkpoints/last.ckpt`` (resume point, written every epoch and, with
``trainer.checkpoint_every_n_steps``, every n steps), ``csv/metrics.csv``, ``wandb/`` (offline runs),
``slopes.csv`` and, when it ends, ``result.json`` (status finished | diverged, final and best val error, history).
Running the same config again resumes from ``last.ckpt``; a run whose ``result.json`` exists is not trained again
by the sweep runner.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import OmegaConf

from delving.config import LSUV, RunConfig, per_process_batch, to_dict
from delving.data import datamodule_class
from delving.errors import DelvingError
from delving.lsuv import lsuv
from delving.models import create_initialized
from delving.speed import SpeedOptions, StepTimer, apply_speed_options
from delving.system import DelvingSystem
from delving.tracking import History, SlopeLogger, VarianceLogger, finish_wandb, make_loggers, provenance, write_json

RESULT = "result.json"
DONE = ("finished", "diverged")


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
                                   activation=m.activation, in_chans=datamodule.in_chans,
                                   num_classes=datamodule.num_classes, **kwargs)
    except TypeError as err:  # a kwarg the builder does not take
        raise DelvingError(f"model.kwargs not accepted by {m.name}: {err}") from None
    if i.scheme == LSUV:
        datamodule.setup("fit")
        lsuv(model, next(iter(datamodule.train_dataloader()))[0], scheme=scheme, mode=i.mode)
    return model


def checkpoint_callbacks(folder: Path, every_n_steps: int | None) -> list[ModelCheckpoint]:
    """The best epoch by ``val/err1`` (``epochNNN.ckpt``) and the resume point ``last.ckpt``, written at every
    epoch's end and, with ``every_n_steps``, every n optimizer steps too (mid-epoch resume points: see
    :func:`_resume_point`).

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


def build_trainer(cfg: RunConfig, directory: Path, loggers, progress: bool, extra_callbacks=()) -> L.Trainer:
    t = cfg.trainer
    callbacks = [LearningRateMonitor(logging_interval="epoch"), History(), StepTimer(), *extra_callbacks]
    if not t.fast_dev_run:  # a dry run must not write a multi-GB checkpoint of model C (Lightning still saves `last`)
        callbacks[:0] = checkpoint_callbacks(directory / "checkpoints", t.checkpoint_every_n_steps)
    if cfg.tracking.log_slopes:
        callbacks.append(SlopeLogger(directory))
    if cfg.tracking.log_variance and not t.fast_dev_run:
        callbacks.append(VarianceLogger(directory))
    limits = {k: v for k, v in (("limit_train_batches", t.limit_train_batches),
                                ("limit_val_batches", t.limit_val_batches)) if v is not None}
    return L.Trainer(
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=t.strategy, precision=t.precision, num_sanity_val_steps=t.num_sanity_val_steps,
        log_every_n_steps=t.log_every_n_steps, enable_progress_bar=progress and t.enable_progress_bar,
        enable_model_summary=progress, fast_dev_run=t.fast_dev_run, deterministic=t.deterministic,
        gradient_clip_val=cfg.optim.gradient_clip_norm, gradient_clip_algorithm="norm",
        default_root_dir=str(directory), logger=loggers, callbacks=callbacks, **limits)


def fit(cfg: RunConfig, *, progress: bool = True, callbacks=()) -> dict:
    """Train one run (resuming from its last checkpoint if there is one) and return its result record.
    ``callbacks``: Lightning callbacks added to the run's own (checkpoints, LR monitor, history, slopes)."""
    entered = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)  # bad model settings fail before any I/O
    apply_speed_options(model, SpeedOptions.from_trainer(cfg.trainer))

    directory = run_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    prov = provenance()
    OmegaConf.save(OmegaConf.structured(cfg), directory / "config.yaml")
    write_json(directory / "provenance.json", prov)
    system = DelvingSystem(model, cfg.optim, datamodule.num_classes, config=to_dict(cfg))
    loggers = make_loggers(cfg, directory, prov)
    trainer = build_trainer(cfg, directory, loggers, progress, callbacks)
    datamodule.batch_size = per_process_batch(cfg.data, trainer.world_size)
    last = _resume_point(directory / "checkpoints" / "last.ckpt")
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|exists and is not empty).*")
        trainer.fit(system, datamodule=datamodule, ckpt_path=str(last) if last else None)
    result = _result(cfg, trainer, system, time.perf_counter() - started)
    finish_wandb(loggers)
    # Where a run's time goes (benchmarks/sweep_cost.py): set-up (data, model, W&B, Trainer) before trainer.fit,
    # fit_seconds inside it (of which step_seconds in training steps), and the whole call including W&B's finish.
    result.update(setup_seconds=round(started - entered, 2), run_seconds=round(time.perf_counter() - entered, 2))
    if trainer.is_global_zero:
        write_json(directory / RESULT, result)
    return result


def _resume_point(last: Path) -> Path | None:
    """``last.ckpt`` if it loads; a checkpoint cut short by a kill is set aside (``.corrupt``), not trusted.

    Resuming a mid-epoch checkpoint (Lightning 2.6, measured by tests/test_multinode.py), on the same or another
    number of processes: the run continues at the checkpoint's epoch and global step, with the epoch's batch
    counter at the steps already taken; the epoch ends after as many steps as an epoch has at the new world size
    (the same count when ``data.batch_size_is=total``). The loaders are not stateful: the remaining steps draw
    from the start of the epoch's shuffle order (FFCV and the DDP sampler seed it with the restored epoch), so
    some samples of that one epoch are seen twice and others not at all; the next epochs are whole."""
    if not last.is_file():
        return None
    try:
        torch.load(last, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file means: start this run again
        warnings.warn(f"{last} is unreadable ({type(err).__name__}); moved to .corrupt, the run starts again")
        last.replace(last.with_suffix(".ckpt.corrupt"))
        return None
    return last


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
