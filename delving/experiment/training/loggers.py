"""W&B for a run: its mode (offline unless logged in), tags, id, and the loggers (W&B beside a local CSV).

Everything W&B-specific lives here and in the callbacks' W&B branches, so a run with ``tracking.wandb=disabled``
never touches it.

Identity: a run's W&B id is generated once (W&B's own ``generate_id``) and kept in its run folder
(``RunDir.wandb_id_path``), so a resumed run continues its W&B run (``resume="allow"``) wherever the folder has
been moved, and a run trained again in a cleaned folder starts a new W&B run. Under ``wandb agent`` the agent's run
id is used instead (the sweep's server created that run) and is not written to the folder.

Hygiene: ``job_type="train"``; the config logged once (by the logger; the LightningModule keeps its copy out of the
loggers); errors and losses summarized by their minimum and their last value; checkpoints logged as artifacts as
``tracking.log_model`` says (``false`` | ``last``: at the end of training | ``all``: each time one is written),
online only: W&B cannot log artifacts offline, so an offline run keeps them in its folder and says so in one line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import Logger, WandbLogger

from delving.errors import DelvingError, choices
from delving.experiment.training.config import RunConfig, to_dict
from delving.experiment.rundir.run_dir import RunDir, write_text
from delving.experiment.rundir.run_io import AppendingCSVLogger

# Errors and losses: W&B's run summary keeps their minimum (the best epoch) and their last value.
MIN_SUMMARY_KEYS = ("val/err1", "val/err5", "val/loss", "train/err1", "train/loss_epoch", "train/loss_step")
LOG_MODEL = {"false": False, "last": True, "all": "all"}  # tracking.log_model -> WandbLogger(log_model=...)


def wandb_mode(requested: str) -> str:
    """``auto`` -> online when the user is logged in (and WANDB_MODE does not say otherwise), else offline."""
    if requested != "auto":
        return requested
    env = os.environ.get("WANDB_MODE")
    if env in ("offline", "disabled", "online"):
        return env
    netrc = Path.home() / ".netrc"
    logged_in = bool(os.environ.get("WANDB_API_KEY")) or (netrc.is_file() and "api.wandb.ai" in netrc.read_text())
    return "online" if logged_in else "offline"


def run_tags(cfg: RunConfig) -> list[str]:
    """Tags W&B can filter and group on: activation, init, depth, seed, plus the config's own."""
    depth = cfg.model.depth if cfg.model.depth is not None else "na"
    return [f"activation={cfg.model.activation}", f"init={cfg.init.scheme}", f"depth={depth}",
            f"seed={cfg.seed}", *cfg.tracking.tags]


def run_id(path: Path) -> str:
    """The W&B run id stored at ``path``; a new one, made by W&B's own id generator (``wandb.util.generate_id`` in
    older releases, ``wandb.sdk.lib.runid.generate_id`` in 0.31), is written there first if there is none. Written
    atomically: two readers never see half an id."""
    if path.is_file():
        stored = path.read_text().strip()
        if stored:
            return stored
    new = _generate_id()
    write_text(path, new + "\n")
    return new


def _generate_id() -> str:
    import wandb

    if hasattr(wandb.util, "generate_id"):
        return wandb.util.generate_id()
    from wandb.sdk.lib.runid import generate_id

    return generate_id()


def log_model_setting(value, mode: str) -> bool | str:
    """``tracking.log_model`` as ``WandbLogger(log_model=...)`` takes it; offline, False and one line saying so."""
    key = str(value).lower()
    if key not in LOG_MODEL:
        raise DelvingError(f"unknown tracking.log_model {value!r}; valid: {choices(LOG_MODEL)}")
    if LOG_MODEL[key] and mode == "offline":
        print(f"tracking.log_model={key} applies to online runs only (W&B logs no artifacts offline); the "
              f"checkpoints stay in the run folder", file=sys.stderr)
        return False
    return LOG_MODEL[key]


class TrainLogger(WandbLogger):
    """Lightning's WandbLogger that, once its W&B run exists, gives errors and losses a min and last summary."""

    @property
    def experiment(self):
        new = self._experiment is None
        run = super().experiment
        if new and hasattr(run, "define_metric"):  # not the stand-in Lightning returns on ranks other than 0
            for key in MIN_SUMMARY_KEYS:
                run.define_metric(key, step_metric="trainer/global_step", summary="min,last")
        return run


# The W&B Launch module through which a program stages job inputs (wandb.launch.manage_config_file and
# manage_wandb_config); every run applies the inputs staged there when it starts.
STAGED_INPUTS_MODULE = "wandb.sdk.launch.inputs.internal"


def skip_unstaged_launch_inputs() -> bool:
    """Let ``wandb.init`` import W&B Launch only where a program has staged Launch inputs. Returns True if the
    patch is in place.

    ``wandb.init`` (0.31) ends by applying the Launch inputs staged in :data:`STAGED_INPUTS_MODULE`, which it imports
    to look: W&B's Launch agent, its public API and artifacts, 1.3-1.6 s of CPU in a process that has torch and
    Lightning loaded (benchmarks/fit_overhead.py), in every process that starts a run. Inputs can only be staged by
    calling that module, i.e. after it was imported, so where it is not in ``sys.modules`` there is nothing to
    apply and the call is skipped; where it is (a program run by W&B Launch), W&B's own method runs as before."""
    from wandb.sdk.wandb_run import Run

    original = getattr(Run, "_detect_and_apply_job_inputs", None)
    if original is None or getattr(original, "skips_unstaged", False):
        return original is not None

    def apply_staged_inputs(run) -> None:
        if STAGED_INPUTS_MODULE in sys.modules:
            original(run)

    apply_staged_inputs.skips_unstaged = True
    Run._detect_and_apply_job_inputs = apply_staged_inputs
    return True


def make_loggers(cfg: RunConfig, run: RunDir, provenance: dict) -> list[Logger]:
    loggers: list[Logger] = [AppendingCSVLogger(run)]
    mode = wandb_mode(cfg.tracking.wandb)
    if mode == "disabled":
        return loggers
    skip_unstaged_launch_inputs()
    in_agent = "WANDB_SWEEP_ID" in os.environ  # the agent's run id (WANDB_RUN_ID): the sweep's server made that run
    ids = {} if in_agent else {"id": run_id(run.wandb_id_path), "resume": "allow"}
    loggers.append(TrainLogger(
        project=cfg.tracking.project, entity=cfg.tracking.entity, name=run.path.name, save_dir=str(run.path),
        offline=(mode == "offline"), group=cfg.tracking.group, tags=run_tags(cfg), job_type="train",
        log_model=log_model_setting(cfg.tracking.log_model, mode),
        config={**to_dict(cfg), "provenance": provenance}, reinit="finish_previous", **ids))
    return loggers


def finish_wandb(loggers: list[Logger]) -> None:
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
