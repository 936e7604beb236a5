"""What the notebooks in ``notebooks/`` share: the repository root, where their runs and figures live, training
the runs a notebook reads when its source holds none (only when asked to), and the baseline rows of its result
tables (``delving.studies.baselines``).

Each notebook's first code cell holds its parameters (tagged ``parameters``, so papermill can set them):
``SOURCE`` (a runs folder, relative to the repository, or ``"wandb:ENTITY/PROJECT"``), ``OUT`` (where figures and
tables go; default: a ``notebook`` folder inside ``SOURCE``, never the repository's tracked files),
``TRAIN_IF_MISSING`` and ``FAST`` (the test suite's few short epochs of a narrow net).
"""

from __future__ import annotations

import contextlib
import shlex
from pathlib import Path

from delving.errors import DelvingError
from delving.studies import baselines as baseline
from delving.experiment.rundir.run_dir import RunDir
from delving.experiment.sweeps.grid import Sweep, load_sweep
from delving.experiment.sweeps.local import run_local

# The repository: delving/studies/notebook.py -> the checkout that holds delving/, sweeps/ and experiments/. Found from
# the package, so a notebook runs the same from any working directory.
ROOT = Path(__file__).resolve().parents[2]
# FAST: a narrow net, 4 training and 2 validation batches an epoch, one thread, no W&B files
TINY = {"trainer.limit_train_batches": 4, "trainer.limit_val_batches": 2, "model.kwargs.widths": [4, 8, 8],
        "model.kwargs.fc_width": 16, "threads": 1, "tracking.wandb": "disabled"}


def is_wandb(source: str | Path) -> bool:
    return str(source).startswith("wandb:")


def resolve(source: str | Path) -> str | Path:
    """``source`` as the loader takes it: a W&B project as is, a relative folder against the repository root."""
    if is_wandb(source):
        return str(source)
    path = Path(source).expanduser()
    return path if path.is_absolute() else ROOT / path


def label(source: str | Path) -> str:
    """``source`` as a figure title names it: relative to the repository, never an absolute path."""
    return str(source) if is_wandb(source) else str(_relative(Path(resolve(source))))


def figures_dir(source: str | Path, out: str | Path | None = None) -> Path:
    """Where a notebook writes its figures and tables: ``out``, or ``SOURCE/notebook`` (W&B: ``runs/notebook``)."""
    if out is not None:
        folder = Path(resolve(out))
    elif is_wandb(source):
        folder = ROOT / "runs" / "notebook"
    else:
        folder = Path(resolve(source)) / "notebook"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def has_runs(source: str | Path) -> bool:
    """Whether ``source`` is a W&B project or a folder holding at least one run with a result."""
    return is_wandb(source) or any(Path(resolve(source)).glob(f"*/{RunDir.RESULT}"))


def sweep_command(sweep: Sweep, out_root: Path) -> str:
    """The shell command that makes ``sweep``'s runs under ``out_root``: ``delving sweep`` for a sweep file as it is,
    otherwise one ``delving fit`` per cell."""
    rel = _relative(out_root)
    if sweep.raw and sweep.name == sweep.raw.get("name") and sweep.grid == _file_grid(sweep):
        return f"delving sweep {_relative(sweep.path)} --out {rel}"
    lines = []
    for cell in sweep.cells():
        params = {**sweep.fixed, **cell}
        config = params.pop("config", None)
        args = [f"--config {shlex.quote(str(_relative(Path(config))))}"] if config else []
        args += [f"--{k}={shlex.quote(str(v).replace(' ', ''))}" for k, v in params.items()]
        name = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in cell.items())
        lines.append(f"delving fit {' '.join(args)} --out_dir={rel}/{sweep.name} --name={shlex.quote(name)}")
    return "\n".join(lines)


def ensure_runs(source: str | Path, sweep: Sweep, train_if_missing: bool, fast: bool = False) -> None:
    """Make sure ``source`` holds runs: train ``sweep`` into it when asked to, otherwise fail with the command.

    Raises:
        DelvingError: ``source`` holds no finished run and ``train_if_missing`` is false; the message gives the
            command that makes them (training starts only when asked: a default sweep is minutes of CPU time).
    """
    if has_runs(source):
        return
    folder = Path(resolve(source))
    sweep.name = folder.name
    if not train_if_missing:
        raise DelvingError(f"{_relative(folder)} holds no finished runs. Make them with:\n"
                           f"{sweep_command(sweep, folder.parent)}\n"
                           f"(in the repository root), or set TRAIN_IF_MISSING = True in the notebook's parameters cell")
    # From the repository root with a relative output folder, so what the sweep prints (and a notebook saves) holds
    # no absolute path. FAST: the tiny runs train in this process; worker processes would spend longer importing torch.
    with contextlib.chdir(ROOT):
        _, failed = run_local(sweep, _relative(folder.parent), jobs=1 if fast else None)
    if failed:
        raise DelvingError(f"{failed} runs of {folder} failed; run the notebook again to retry them")


def repo_sweep(name: str) -> Sweep:
    """``sweeps/NAME.yaml`` with its experiment config made absolute (the notebook's working directory varies)."""
    sweep = load_sweep(ROOT / "sweeps" / f"{name}.yaml")
    if "config" in sweep.fixed:
        sweep.fixed["config"] = str(ROOT / sweep.fixed["config"])
    return sweep


def _file_grid(sweep: Sweep) -> dict:
    return {k: v["values"] for k, v in sweep.raw["parameters"].items() if isinstance(v, dict) and "values" in v}


def _relative(path: Path) -> Path:
    """``path`` relative to the repository when inside it (commands and outputs carry no absolute paths)."""
    path = Path(path)
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return path


def baselines(runs, source: str | Path, out: str | Path | None = None, train: bool = False) -> list:
    """The baselines of the split ``runs`` (a ``load_runs`` result) were trained on: cached beside a local
    ``source``'s runs (the ones its summary reads), in the notebook's output folder for W&B; ``train`` (the
    notebook's ``TRAIN_IF_MISSING``) also trains the shallow CNN if it has not finished."""
    from delving.studies.runs import DONE

    done = runs.table.run[runs.table.status.isin(DONE)]
    configs = [runs.configs[run] for run in done if runs.configs.get(run)]
    home = _relative(baseline.home(resolve(source), figures_dir(source, out)))
    with contextlib.chdir(ROOT):  # a relative folder, as ensure_runs trains: the rows' commands hold no absolute path
        return baseline.for_runs(configs, home, train=train)


def with_baselines(table, rows: list, columns: dict[str, str], label: str = "activation"):
    """``table`` (a DataFrame of results) with one row per baseline below it, for display: ``label`` names the column
    that gets ``baseline: <name>``, ``columns`` maps the table's columns to a baseline's fields (``val_err``,
    ``train_err``, ``best_val_err``); ``depth``, ``init`` and ``seeds`` are filled where the table has them."""
    import pandas as pd

    fields = {**{c: c for c in ("depth", "init", "seeds") if c in table.columns}, **columns}
    several = baseline.several_splits(rows)
    extra = [{label: baseline.label(row, several), **{c: getattr(row, f) for c, f in fields.items()}} for row in rows]
    out = pd.concat([table, pd.DataFrame(extra, columns=table.columns)], ignore_index=True)
    whole = [c for c in table.columns if pd.api.types.is_integer_dtype(table[c])]
    return out.astype({c: "Int64" for c in whole})  # depth 11, not 11.0, beside a baseline without one


def baselines_note(rows: list) -> str:
    """The Markdown under a table with baselines: what they are, where they are kept, and any that are missing."""
    return baseline.note(rows)
