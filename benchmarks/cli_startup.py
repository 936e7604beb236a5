"""Wall time of ``delving --help``: this checkout beside a reference commit whose ``import delving`` loaded torch
and timm eagerly (default 11bd44b, the last flat layout), in one run, interleaved so machine noise hits both alike.

Each side runs ``python -m delving --help`` in a fresh interpreter REPEATS times (the first call of each warms the
file cache and is dropped); the table gives the median and the fastest call, and whether ``torch`` was imported
(read from ``-X importtime``). The reference's package is extracted with ``git archive`` into a temporary folder,
so the working tree and the repository are left as they are.

    .venv/bin/python benchmarks/cli_startup.py [--ref 11bd44b] [--repeats 7]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def extract(ref: str, into: Path) -> Path:
    """The ``delving/`` package of commit ``ref``, written under ``into``."""
    archive = subprocess.run(["git", "archive", ref, "delving"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def help_call(package_root: Path) -> tuple[float, bool]:
    """Seconds for ``python -m delving --help`` with ``package_root`` first on the path, and whether it imported
    torch."""
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "delving", "--help"], cwd=package_root, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or "usage: delving" not in proc.stdout:
        raise SystemExit(f"cli_startup: error: `delving --help` failed under {package_root}: {proc.stderr[-500:]}")
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return seconds, "torch" in imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default="11bd44b", help="reference commit (default: 11bd44b, eager imports)")
    parser.add_argument("--repeats", type=int, default=7, help="calls per side, after one warm-up call each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"this checkout": ROOT, f"commit {args.ref}": extract(args.ref, Path(tmp))}
        times: dict[str, list[float]] = {name: [] for name in sides}
        torch_loaded: dict[str, bool] = {}
        for name, root in sides.items():
            help_call(root)  # warm-up: file cache, .pyc files
        for _ in range(args.repeats):
            for name, root in sides.items():
                seconds, torch_loaded[name] = help_call(root)
                times[name].append(seconds)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"`python -m delving --help`, {args.repeats} calls per side, interleaved ({os.cpu_count()} CPUs, load "
          f"average {load} at the end)\n")
    print("| version | median s | fastest s | imports torch |")
    print("|---|---:|---:|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {torch_loaded[name]} |")
    new, base = (statistics.median(v) for v in times.values())
    print(f"\nmedian speed-up: {base / new:.1f}x")


if __name__ == "__main__":
    main()
