"""The same sweep file through a W&B server: ``wandb.sweep`` + ``wandb agent`` (each agent runs the YAML's
``command``, ``delving fit``), and the ``wandb sync`` line that uploads a local sweep's offline runs."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from delving.errors import DelvingError
from delving.experiment.sweeps.grid import CONFIG_KEY, Sweep
from delving.experiment.training.config import load_config
from delving.experiment.training.loggers import wandb_mode


def sync_command(folder: Path) -> str | None:
    """The ``wandb sync`` line that uploads the sweep's offline runs, or None if there are none."""
    if not any(folder.glob("*/wandb/offline-run-*")):
        return None
    return f"wandb sync {shlex.quote(str(folder))}/*/wandb/offline-run-*"


def run_wandb(sweep: Sweep, project: str | None = None, count: int | None = None) -> str:
    """Create the sweep on W&B and run one agent here; print the command other machines use to join."""
    if wandb_mode("auto") != "online":
        raise DelvingError("--wandb needs a W&B server and a login (run `wandb login`, or unset WANDB_MODE); "
                           f"without one, run the same file locally: delving sweep {sweep.path}")
    import wandb

    project = project or load_config(sweep.fixed.get(CONFIG_KEY)).tracking.project
    sweep_id = wandb.sweep(sweep.raw, project=project)
    path = f"{wandb.Api().default_entity}/{project}/{sweep_id}"
    print(f"created W&B sweep {path}\njoin from other machines (one agent per GPU): wandb agent {path}")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = ["wandb", "agent", *(["--count", str(count)] if count else []), path]
    subprocess.run(cmd, env=env, check=False)
    return path
