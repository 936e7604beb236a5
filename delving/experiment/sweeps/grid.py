"""A sweep file in W&B's own YAML format, and its grid: the cells, their configs and their folder names.

The special parameter ``config`` names the experiment YAML; every other parameter is a dotted config key. A cell's
name is its folder name, which the local runner (:mod:`delving.experiment.sweeps.local`) and runs started by ``wandb
agent`` (:mod:`delving.experiment.sweeps.agent`) both use, so the same grid point lands in the same folder.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from delving.errors import DelvingError
from delving.experiment.training.config import RunConfig, load_config

CONFIG_KEY = "config"


@dataclass
class Sweep:
    """A parsed sweep file: its name, grid parameters (in file order) and fixed parameters."""

    path: Path
    name: str
    grid: dict[str, list]
    fixed: dict[str, object]
    raw: dict = field(repr=False, default_factory=dict)

    def cells(self) -> list[dict]:
        """Every grid point as ``{key: value}``, in the file's order (first parameter varies slowest)."""
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*self.grid.values())]


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a W&B sweep YAML; any problem is a one-line :class:`DelvingError`."""
    path = Path(path)
    if not path.is_file():
        raise DelvingError(f"sweep file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise DelvingError(f"malformed sweep YAML {path}{f' line {mark.line + 1}' if mark else ''}: "
                           f"{getattr(err, 'problem', err)}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("parameters"), dict) or not raw["parameters"]:
        raise DelvingError(f"malformed sweep YAML {path}: needs a 'parameters' mapping (W&B sweep format)")
    if raw.get("method", "grid") != "grid":
        raise DelvingError(f"sweep {path}: method {raw.get('method')!r} cannot run locally; valid: 'grid' "
                           f"(use --wandb for W&B's random/bayes search)")
    grid, fixed = {}, {}
    for key, spec in raw["parameters"].items():
        if isinstance(spec, dict) and isinstance(spec.get("values"), list) and spec["values"]:
            grid[key] = _unique(path, key, spec["values"])
        elif isinstance(spec, dict) and "value" in spec:
            fixed[key] = spec["value"]
        else:
            raise DelvingError(f"malformed sweep YAML {path}: parameter {key!r} needs 'value: x' or a non-empty "
                               f"'values: [...]' list")
    return Sweep(path, str(raw.get("name") or path.stem), grid, fixed, raw)


def _unique(path: Path, key: str, values: list) -> list:
    """The values in file order, each once: a repeated value would make two cells of one run folder."""
    unique = []
    for value in values:
        if value not in unique:
            unique.append(value)
    if len(unique) < len(values):
        print(f"delving: note: sweep {path}: parameter {key!r} lists a value more than once; each cell runs once "
              f"({len(values)} values -> {len(unique)})", file=sys.stderr)
    return unique


def cell_name(cell: dict) -> str:
    """A folder name from a grid point: ``activation=relu,scheme=he,depth=30,seed=0``."""
    return ",".join(f"{key.rsplit('.', 1)[-1]}={Path(str(value)).stem if key == CONFIG_KEY else value}"
                    for key, value in cell.items())  # a grid over experiment YAMLs: config=<file stem>


def cell_config(sweep: Sweep, cell: dict, out_root: Path) -> RunConfig:
    """The run config of one grid point: experiment YAML <- fixed parameters <- the point's values."""
    params = {**sweep.fixed, **cell}
    config_path = params.pop(CONFIG_KEY, None)
    overrides = [f"{key}={_yaml_value(value)}" for key, value in params.items()]
    overrides += [f"out_dir={out_root}", f"name={cell_name(cell)}", f"tracking.group={sweep.name}"]
    try:
        return load_config(config_path, overrides)
    except DelvingError as err:  # name the grid point: the sweep checks every cell before the first run
        raise DelvingError(f"sweep cell {cell_name(cell)}: {err}") from None


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def configs(sweep: Sweep, out_root: Path) -> list[RunConfig]:
    """Every cell's config, all checked before the first run starts (a bad key fails the sweep at once)."""
    return [cell_config(sweep, cell, out_root) for cell in sweep.cells()]
