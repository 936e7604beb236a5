"""A sweep file in W&B's own YAML format, and its grid: the cells, their configs and their folder names.

The special parameter ``config`` names the experiment YAML; every other parameter is a dotted config key. A cell's
name is its folder name, which the local runner (:mod:`delving.experiment.sweeps.local`) and runs started by ``wandb
agent`` (:mod:`delving.experiment.sweeps.agent`) both use, so the same grid point lands in the same folder.

``method: random`` and ``bayes`` (a search: :mod:`delving.experiment.sweeps.search`) keep their distributions in
``Sweep.space`` for W&B's engine (:mod:`delving.experiment.sweeps.engine`), which checks such a file, and any file
with ``early_terminate``, against W&B's own sweep schema.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from delving.errors import DelvingError
from delving.experiment.rundir.history import History
from delving.experiment.sweeps import engine
from delving.experiment.training.config import RunConfig, load_config

CONFIG_KEY = "config"
GRID = "grid"
# What a run logs once per epoch, under the names W&B sees: the metrics bayes and hyperband can read by iteration
EPOCH_METRICS = (*History.KEYS, *History.TRAIN_KEYS)


@dataclass
class Sweep:
    """A parsed sweep file: its name, grid parameters (in file order), fixed parameters and, for a search (``method:
    random`` or ``bayes``), the searched parameters' W&B specs (``space``; ``grid`` is then empty)."""

    path: Path
    name: str
    grid: dict[str, list]
    fixed: dict[str, object]
    raw: dict = field(repr=False, default_factory=dict)
    method: str = GRID
    space: dict[str, dict] = field(default_factory=dict)

    @property
    def is_search(self) -> bool:
        return self.method != GRID

    @property
    def early_terminate(self) -> dict | None:
        return self.raw.get("early_terminate")

    def cells(self) -> list[dict]:
        """Every grid point as ``{key: value}``, in the file's order (first parameter varies slowest)."""
        if self.is_search:
            raise DelvingError(f"sweep {self.name}: method {self.method} proposes its runs as it goes and has no grid "
                               f"cells to number (--list and --cell are for method grid)")
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
    method = raw.get("method", GRID)
    if method not in engine.METHODS:
        raise DelvingError(f"sweep {path}: unknown method {method!r}; valid: {', '.join(engine.METHODS)} (W&B's own)")
    if method != GRID or "early_terminate" in raw:  # W&B's engine runs these: its schema decides what is valid
        engine.check(raw, path)
        _check_metric(path, raw, method)
    grid, fixed, space = {}, {}, {}
    for key, spec in raw["parameters"].items():
        if isinstance(spec, dict) and "value" in spec:
            fixed[key] = spec["value"]
        elif method != GRID and isinstance(spec, dict) and "parameters" not in spec:
            space[key] = spec
        elif isinstance(spec, dict) and isinstance(spec.get("values"), list) and spec["values"]:
            grid[key] = _unique(path, key, spec["values"])
        else:
            raise DelvingError(f"malformed sweep YAML {path}: parameter {key!r} needs 'value: x' or a non-empty "
                               f"'values: [...]' list" + ("" if method == GRID else " or a distribution (nested "
                                                          "'parameters:' are not config keys: write model.depth)"))
    if method != GRID and not space:
        raise DelvingError(f"sweep {path}: method {method} searches nothing: every parameter is a fixed 'value'")
    return Sweep(path, str(raw.get("name") or path.stem), grid, fixed, raw, method, space)


def _check_metric(path: Path, raw: dict, method: str) -> None:
    """bayes and hyperband read the file's metric once per epoch: it must be one a run logs per epoch."""
    if method != "bayes" and "early_terminate" not in raw:
        return
    metric = (raw.get("metric") or {}).get("name")
    if metric not in EPOCH_METRICS:
        what = "bayes" if method == "bayes" else "early_terminate"
        raise DelvingError(f"sweep {path}: {what} needs metric.name, one a run logs every epoch; got {metric!r}; "
                           f"valid: {', '.join(EPOCH_METRICS)}")
    if method == "bayes" and any("probabilities" in spec for spec in raw["parameters"].values()):
        raise DelvingError(f"sweep {path}: method bayes with 'probabilities' fails inside W&B's engine (sweeps "
                           f"{engine.version()}); valid: probabilities with method random, plain 'values' with bayes")


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


def cell_config(sweep: Sweep, cell: dict, out_root: Path, name: str | None = None) -> RunConfig:
    """The run config of one grid point (or search proposal): experiment YAML <- fixed parameters <- the point's
    values; its folder ``name`` defaults to :func:`cell_name`."""
    name = name or cell_name(cell)
    params = {**sweep.fixed, **cell}
    config_path = params.pop(CONFIG_KEY, None)
    overrides = [f"{key}={_yaml_value(value)}" for key, value in params.items()]
    overrides += [f"out_dir={out_root}", f"name={name}", f"tracking.group={sweep.name}"]
    try:
        return load_config(config_path, overrides)
    except DelvingError as err:  # name the grid point: the sweep checks every cell before the first run
        raise DelvingError(f"sweep cell {name}: {err}") from None


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def configs(sweep: Sweep, out_root: Path) -> list[RunConfig]:
    """Every cell's config, all checked before the first run starts (a bad key fails the sweep at once)."""
    return [cell_config(sweep, cell, out_root) for cell in sweep.cells()]
