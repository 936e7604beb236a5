"""Runs started by ``wandb agent`` laid out as ``delving sweep`` lays out the same grid point.

A local sweep runs cell ``{model.activation: relu, seed: 0, ...}`` of sweep ``init_depth`` in
``<out_dir>/init_depth/activation=relu,...,seed=0/`` with W&B group ``init_depth``
(:mod:`delving.experiment.sweeps.grid` names the cell). ``delving fit`` applies :func:`agent_layout` before training.
An agent only passes the cell's values as ``--key=value`` arguments; the sweep's name and which of its parameters
form the grid come from the sweep itself, which the agent's process reads from the W&B server it already talks to
(``WANDB_SWEEP_ID``), and the cell's values from the file the agent writes them to (``WANDB_SWEEP_PARAM_PATH``).
The run then gets the local name, folder, group and tags, so ``load_runs(..., filters={"group": ...})``,
``delving summarize`` and a local re-run of the same grid point find it. A run of ``method: random`` or ``bayes``
is named as a local search names its proposals, with the W&B run id in place of the index (``run-<id>,lr=...``:
:func:`delving.experiment.sweeps.search.run_name`), so no two runs share a folder.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from delving.errors import DelvingError
from delving.experiment.training.config import RunConfig
from delving.experiment.sweeps.grid import GRID, cell_name
from delving.experiment.sweeps.search import run_name


def in_agent() -> bool:
    return bool(os.environ.get("WANDB_SWEEP_ID"))


def agent_layout(cfg: RunConfig, api=None) -> RunConfig:
    """``cfg`` with the out_dir, name and group of its grid point's local run, when ``wandb agent`` started it;
    otherwise ``cfg`` unchanged. ``api``: a ``wandb.Api()`` (default: a new one)."""
    if not in_agent():
        return cfg
    sweep = _sweep_config(cfg, os.environ["WANDB_SWEEP_ID"], api)
    name = str(sweep.get("name") or os.environ["WANDB_SWEEP_ID"])
    parameters = sweep.get("parameters") or {}
    values = _agent_values()
    if sweep.get("method", GRID) == GRID:
        grid = [key for key, spec in parameters.items()
                if isinstance(spec, dict) and isinstance(spec.get("values"), list)]
        run = cell_name({key: values[key] if key in values else _select(cfg, key) for key in grid})
    else:  # every searched (not fixed) parameter, and the run's id: a search may propose close values twice
        searched = [key for key, spec in parameters.items() if isinstance(spec, dict) and "value" not in spec]
        run = run_name(os.environ.get("WANDB_RUN_ID") or "agent",
                       {key: values[key] if key in values else _select(cfg, key) for key in searched})
    return replace(cfg, out_dir=str(Path(cfg.out_dir) / name), name=run, tracking=replace(cfg.tracking, group=name))


def _sweep_config(cfg: RunConfig, sweep_id: str, api) -> dict:
    entity = os.environ.get("WANDB_ENTITY") or cfg.tracking.entity
    project = os.environ.get("WANDB_PROJECT") or cfg.tracking.project
    path = "/".join(p for p in (entity, project, sweep_id) if p)
    try:
        if api is None:
            import wandb

            api = wandb.Api()
        config = api.sweep(path).config
    except Exception as err:  # noqa: BLE001 - no network / no such sweep: one line
        raise DelvingError(f"cannot read W&B sweep {path} (WANDB_SWEEP_ID is set, so this run belongs to it): "
                           f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    return yaml.safe_load(config) if isinstance(config, str) else dict(config)


def _agent_values() -> dict:
    """The grid point the agent wrote for this run: ``{key: value}`` (its file holds ``key: {value: v}``)."""
    path = os.environ.get("WANDB_SWEEP_PARAM_PATH")
    if not path or not Path(path).is_file():
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    return {key: spec["value"] for key, spec in data.items() if isinstance(spec, dict) and "value" in spec}


def _select(cfg: RunConfig, key: str):
    return OmegaConf.select(OmegaConf.structured(cfg), key)
