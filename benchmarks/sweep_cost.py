"""Where the default init × depth sweep's wall time goes: training steps versus everything else.

Runs the sweep from an empty folder (``sweep_time.run_sweep``; cells in one worker process per core) and splits
its lane time (wall × worker processes) using what each run records in ``result.json`` (``delving.experiment.training.train.fit``):

- training steps: forward, backward, optimizer step (``step_seconds``, ``delving.experiment.training.speed.StepTimer``);
- in ``trainer.fit`` outside steps: validation, data loading, logging, checkpoints, W&B's lazy run start;
- run set-up: data, model build + init, provenance, W&B logger, Trainer (``setup_seconds``);
- after ``trainer.fit``: W&B's finish and the result files;
- outside runs: worker start-up and imports (measured alone, in a fresh process), config checks, the summary and
  idle lanes while the last cells finish.

    .venv/bin/python benchmarks/sweep_cost.py [--jobs N] [--keep DIR] [--out benchmarks/results]
    .venv/bin/python benchmarks/sweep_cost.py --plot-only     # redraw the PNG from the saved sweep_cost.md
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_time import DEFAULT_SWEEP, ROOT, print_table, run_sweep  # noqa: E402

MAX_OUTSIDE = 0.20  # the target: at most 20% of the sweep's wall time outside training steps


def import_seconds() -> float:
    """Wall time of a fresh interpreter importing what a sweep worker imports."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import delving.experiment.training.train, delving.experiment.sweeps.local, wandb"], cwd=ROOT, check=True)
    return time.perf_counter() - start


def breakdown(results: list[dict], wall: float, lanes: int) -> list[tuple[str, float]]:
    """(part, seconds) summed over runs, the parts adding up to ``wall × lanes``."""
    total = wall * lanes
    steps = sum(r["step_seconds"] for r in results)
    fit = sum(r["fit_seconds"] for r in results)
    setup = sum(r["setup_seconds"] for r in results)
    run = sum(r["run_seconds"] for r in results)
    return [("training steps", steps), ("in trainer.fit, outside steps", fit - steps),
            ("run set-up (data, model, W&B logger, Trainer)", setup), ("after trainer.fit (W&B finish, results)",
                                                                      run - setup - fit),
            ("outside runs (imports, workers, summary, idle lanes)", total - run)]


def markdown(parts: list[tuple[str, float]], total: float) -> str:
    lines = ["| part | seconds (summed over lanes) | share of wall × lanes |", "|---|---|---|"]
    lines += [f"| {name} | {seconds:.1f} | {100 * seconds / total:.1f}% |" for name, seconds in parts]
    return "\n".join(lines)


def plot(parts: list[tuple[str, float]], total: float, path: Path, title: str = "") -> None:
    """One stacked bar of the lane time by part; the legend beside it, so it covers neither bar nor axis label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 2.6))
    left = 0.0
    for (name, seconds), color in zip(parts, plt.cm.tab10.colors):
        share = 100 * seconds / total
        ax.barh([0], [share], left=left, color=color, label=f"{name} ({share:.1f}%)")
        left += share
    ax.axvline(100 * (1 - MAX_OUTSIDE), color="k", ls="--", lw=0.8,
               label=f"target: at least {100 * (1 - MAX_OUTSIDE):.0f}% in training steps")
    ax.set_xlim(0, 100)
    ax.set_yticks([])
    ax.set_xlabel("% of the sweep's wall time × worker processes")
    ax.set_title(title or "Where the default sweep's time goes", fontsize=9)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def from_markdown(text: str) -> tuple[list[tuple[str, float]], float, str]:
    """The parts, lane-seconds and a title back from a saved ``sweep_cost.md`` (for ``--plot-only``)."""
    parts = [(m.group(1), float(m.group(2))) for m in re.finditer(r"^\| ([^|]+?) \| ([\d.]+) \| [\d.]+% \|$", text, re.M)]
    total = float(re.search(r"so ([\d.]+) lane-seconds", text).group(1))
    head = re.search(r"Sweep `([^`]+)`: (\d+) runs, (\d+) worker processes, wall ([\d.]+) s", text)
    title = (f"Where the time of sweep {head.group(1)} goes: {head.group(2)} runs on {head.group(3)} worker processes, "
             f"wall {head.group(4)} s (benchmarks/sweep_cost.py)")
    return parts, total, title


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", default=str(DEFAULT_SWEEP))
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: one per core)")
    parser.add_argument("--keep", default=None, help="sweep output folder to keep (default: a temporary one)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for .md and .png")
    parser.add_argument("--plot-only", action="store_true", help="redraw OUT/sweep_cost.png from OUT/sweep_cost.md")
    args = parser.parse_args()
    if args.plot_only:
        folder = Path(args.out)
        parts, total, title = from_markdown((folder / "sweep_cost.md").read_text())
        plot(parts, total, folder / "sweep_cost.png", title)
        return 0
    from delving.cpus import available_cpus

    imports = import_seconds()
    out = Path(args.keep or tempfile.mkdtemp(prefix="delving-sweep-"))
    wall, results, proc = run_sweep(args.sweep, out, args.jobs)
    if proc.returncode != 0 or not results:
        print(proc.stderr[-2000:], file=sys.stderr)
        return proc.returncode or 1
    lanes = min(args.jobs or available_cpus(), len(results))
    total = wall * lanes
    parts = breakdown(results, wall, lanes)
    outside = 1 - parts[0][1] / total
    print_table([("runs", f"{len(results)}"), ("worker processes (lanes)", f"{lanes}"),
                 ("sweep wall time (s)", f"{wall:.1f}"), ("imports of one fresh process (s)", f"{imports:.1f}"),
                 ("share outside training steps", f"{100 * outside:.1f}% (target <= {100 * MAX_OUTSIDE:.0f}%)")])
    text = (f"Sweep `{Path(args.sweep).name}`: {len(results)} runs, {lanes} worker processes, wall {wall:.1f} s, "
            f"so {total:.1f} lane-seconds; a fresh process imports torch + Lightning + W&B + delving in "
            f"{imports:.1f} s. Outside training steps: **{100 * outside:.1f}%** (target: at most "
            f"{100 * MAX_OUTSIDE:.0f}%).\n\n{markdown(parts, total)}\n")
    print(f"\n{text}")
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep_cost.md").write_text(text)
    plot(parts, total, folder / "sweep_cost.png", from_markdown(text)[2])
    print(f"wrote {folder / 'sweep_cost.md'} and .png; sweep output: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
