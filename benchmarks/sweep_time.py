"""Wall time of a sweep (every cell and seed; default: the init x depth study) from an empty output folder.

Prints the sweep's wall time against its budget (5 minutes for the default, 20 for the deep sweep), the time inside ``trainer.fit`` summed over runs, and
how many cells ran, as a table. The one-time install is excluded (run ``make venv`` first).
``benchmarks/sweep_cost.py`` breaks the same measurement down by where the time goes.

    .venv/bin/python benchmarks/sweep_time.py [--jobs N] [--keep DIR]
    .venv/bin/python benchmarks/sweep_time.py --sweep sweeps/init_depth_deep.yaml --budget 1200
    .venv/bin/python benchmarks/sweep_time.py --against ../other-checkout   # side by side with another version

``--against DIR`` runs the same sweep file with the package of another checkout (its ``delving/``, this
environment's libraries) right before this one, into an empty folder of its own, and prints both columns and their
ratio: a change's cost measured in one run, on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SWEEP = ROOT / "sweeps" / "init_depth.yaml"


def run_sweep(sweep: str, out: Path, jobs: int | None = None,
              code: Path = ROOT) -> tuple[float, list[dict], subprocess.CompletedProcess]:
    """Run ``delving sweep`` (offline W&B unless WANDB_MODE says otherwise) into ``out`` with the package in
    ``code``; return its wall time, the runs' ``result.json`` records and the finished process."""
    cmd = [sys.executable, "-m", "delving", "sweep", str(Path(sweep).resolve()), "--out", str(out)]
    if jobs:
        cmd += ["--jobs", str(jobs)]
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), "PYTHONPATH": str(code)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    return wall, [json.loads(p.read_text()) for p in out.glob("*/*/result.json")], proc


def print_table(rows: list[tuple], header: tuple = ("value",)) -> None:
    width = max(len(row[0]) for row in rows)
    print(f"| {'measure'.ljust(width)} | {' | '.join(header)} |\n|{'-' * (width + 2)}|{'---|' * len(header)}")
    for key, *values in rows:
        print(f"| {key.ljust(width)} | {' | '.join(values)} |")


def measures(wall: float, results: list[dict], proc: subprocess.CompletedProcess, out: Path, budget: float) -> dict:
    fit_total = sum(r["fit_seconds"] for r in results)
    return {
        "cells finished": (len(results), f"{len(results)}"),
        "exit code": (proc.returncode, f"{proc.returncode}"),
        "sweep wall time (s)": (wall, f"{wall:.1f}"),
        "budget (s)": (budget, f"{budget:.0f}"),
        "wall / budget": (wall / budget, f"{wall / budget:.2f}"),
        "sum of per-run trainer.fit time (s)": (fit_total, f"{fit_total:.1f}"),
        "mean trainer.fit time per run (s)": (fit_total / max(len(results), 1),
                                              f"{fit_total / max(len(results), 1):.1f}"),
        "summary figure written": (None, f"{any(out.glob('*/init_depth.png'))}"),
        "summary table written": (None, f"{any(out.glob('*/summary.md'))}"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", default=str(DEFAULT_SWEEP))
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--keep", default=None, help="output folder to keep (default: a temporary one)")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds the sweep should fit in")
    parser.add_argument("--against", default=None, help="another checkout to time first, side by side")
    args = parser.parse_args()
    out = Path(args.keep or tempfile.mkdtemp(prefix="delving-sweep-"))
    against = None
    if args.against:
        other = Path(tempfile.mkdtemp(prefix="delving-sweep-against-"))
        against = measures(*run_sweep(args.sweep, other, args.jobs, Path(args.against).resolve()), other, args.budget)
    wall, results, proc = run_sweep(args.sweep, out, args.jobs)
    this = measures(wall, results, proc, out, args.budget)
    if against is None:
        print_table([(key, text) for key, (_, text) in this.items()])
    else:
        rows = []
        for key, (value, text) in this.items():
            base, base_text = against[key]
            ratio = f"{value / base:.3f}" if isinstance(value, float) and base else ""
            rows.append((key, text, base_text, ratio))
        print_table(rows, header=("this checkout", Path(args.against).name, "ratio"))
    print(f"\noutput: {out}")
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
