"""Wall time of a sweep (every cell and seed; default: the init x depth study) from an empty output folder.

Prints the sweep's wall time against its budget (5 minutes for the default, 20 for the deep sweep), the time inside ``trainer.fit`` summed over runs, and
how many cells ran, as a table. The one-time install is excluded (run ``make venv`` first).
``benchmarks/sweep_cost.py`` breaks the same measurement down by where the time goes.

    .venv/bin/python benchmarks/sweep_time.py [--jobs N] [--keep DIR]
    .venv/bin/python benchmarks/sweep_time.py --sweep sweeps/init_depth_deep.yaml --budget 1200
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


def run_sweep(sweep: str, out: Path, jobs: int | None = None) -> tuple[float, list[dict], subprocess.CompletedProcess]:
    """Run ``delving sweep`` (offline W&B unless WANDB_MODE says otherwise) into ``out``; return its wall time,
    the runs' ``result.json`` records and the finished process."""
    cmd = [sys.executable, "-m", "delving", "sweep", sweep, "--out", str(out)]
    if jobs:
        cmd += ["--jobs", str(jobs)]
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    return wall, [json.loads(p.read_text()) for p in out.glob("*/*/result.json")], proc


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |\n|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", default=str(DEFAULT_SWEEP))
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--keep", default=None, help="output folder to keep (default: a temporary one)")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds the sweep should fit in")
    args = parser.parse_args()
    out = Path(args.keep or tempfile.mkdtemp(prefix="delving-sweep-"))
    wall, results, proc = run_sweep(args.sweep, out, args.jobs)
    fit_total = sum(r["fit_seconds"] for r in results)
    print_table([
        ("cells finished", f"{len(results)}"),
        ("exit code", f"{proc.returncode}"),
        ("sweep wall time (s)", f"{wall:.1f}"),
        ("budget (s)", f"{args.budget:.0f}"),
        ("wall / budget", f"{wall / args.budget:.2f}"),
        ("sum of per-run trainer.fit time (s)", f"{fit_total:.1f}"),
        ("mean trainer.fit time per run (s)", f"{fit_total / max(len(results), 1):.1f}"),
        ("summary figure written", f"{any(out.glob('*/init_depth.png'))}"),
        ("summary table written", f"{any(out.glob('*/summary.md'))}"),
    ])
    print(f"\noutput: {out}")
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
