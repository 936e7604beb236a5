"""A local sweep killed at any moment (SIGKILL, SIGTERM, SIGINT) and run again ends bit for bit where the
uninterrupted sweep ends: every cell's per-epoch history, result, metrics rows and weights, and the summary table
(CPU, seeded, ``--jobs 1``).

The kills come from tests/sweep_kill_worker.py (``delving sweep`` that signals itself inside a chosen cell at a
chosen step or right after a checkpoint, or while it summarizes); the re-run is the same plain ``delving sweep``.
Two cells of 2 epochs of 4 batches with a step checkpoint every 2 steps, so a kill can fall before any checkpoint,
right after an epoch's checkpoint, or inside an epoch a step past a mid-epoch checkpoint; dropout before the fc
layers, so the RNG states have to be restored too.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, terminal_sigint
from delving.experiment.rundir.run_dir import RunDir

WORKER = str(ROOT / "tests" / "sweep_kill_worker.py")
CELLS = ["seed=0", "seed=1"]  # the order the sweep trains them in (equal cost: the file's order)
TIMINGS = ("fit_seconds", "step_seconds", "setup_seconds", "run_seconds")


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sweep_file")
    exp = folder / "tiny.yaml"
    exp.write_text("\n".join([
        "model:", "  depth: 9", "  kwargs: {widths: [4, 8, 8], fc_width: 16}", "  drop_rate: 0.5",
        "data: {batch_size: 32}", "tracking: {wandb: disabled}", "threads: 1",
        "trainer: {max_epochs: 2, limit_train_batches: 4, limit_val_batches: 2, checkpoint_every_n_steps: 2}"]) + "\n")
    path = folder / "sweep.yaml"
    path.write_text(f"name: tiny\nmethod: grid\nparameters:\n  config: {{value: {exp}}}\n  seed: {{values: [0, 1]}}\n")
    return path


def _sweep(sweep_file: Path, out: Path, *worker_args: str) -> subprocess.CompletedProcess:
    script = [WORKER, *worker_args] if worker_args else ["-m", "delving"]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *script, "sweep", str(sweep_file), "--out", str(out), "--jobs", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=terminal_sigint)


def _metrics_rows(run: RunDir) -> list[dict]:
    with run.metrics_path.open(newline="") as f:
        return list(csv.DictReader(f))


def _outcome(folder: Path) -> dict:
    """Per cell: the result without its timings, the metrics rows and the final weights; and summary.csv's text."""
    cells = {}
    for name in CELLS:
        run = RunDir(folder / name)
        result = json.loads(run.result_path.read_text())
        for key in TIMINGS:
            result.pop(key, None)
        weights = torch.load(run.last_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        cells[name] = {"result": result, "metrics": _metrics_rows(run), "weights": weights}
    return {"cells": cells, "summary": (folder / "summary.csv").read_text()}


@pytest.fixture(scope="module")
def uninterrupted(sweep_file, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = _sweep(sweep_file, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _outcome(out / "tiny")


# (moment, signal, cell): step:1 is after the first batch of the first cell (no checkpoint yet); epoch-ckpt:0 right
# after epoch 0's last.ckpt; ckpt-step:4 right after the first last.ckpt at step 4, where the step interval meets the
# epoch's end (it must be the end-of-epoch one, after validation); step:7 inside the second cell's last epoch, a step
# past its step-6 checkpoint, the first cell finished; summary while summarize runs (all cells finished,
# summary.csv written, summary.md not yet).
# The two SIGKILL cases are the ones a buffered CSV logger loses rows in: right after an end-of-epoch checkpoint
# (Lightning logs the epoch's train/err1 and train/loss_epoch after it) and inside an epoch (LearningRateMonitor's
# epoch-start lr row is not flushed by Lightning).
CASES = [("step:1", "KILL", 0), ("epoch-ckpt:0", "TERM", 0), ("ckpt-step:4", "TERM", 1), ("step:7", "INT", 1),
         ("epoch-ckpt:0", "KILL", 1), ("step:7", "KILL", 1),
         ("summary", "KILL", 0), ("summary", "TERM", 0), ("summary", "INT", 0)]
IDS = [f"{m.replace(':', '')}-{s}-cell{c}" for m, s, c in CASES]


@pytest.mark.slow
@pytest.mark.parametrize("moment,sig,cell", CASES, ids=IDS)
def test_killed_sweep_resumes_bit_identical(moment, sig, cell, sweep_file, uninterrupted, tmp_path):
    folder = tmp_path / "tiny"
    killed = _sweep(sweep_file, tmp_path, "--kill-at", moment, "--signal", sig, "--cell", str(cell))
    assert killed.returncode != 0, killed.stdout[-1000:] + killed.stderr[-2000:]
    if moment == "summary":  # killed at the chosen moment: every cell finished, the summary half written
        assert all(RunDir(folder / name).result_path.is_file() for name in CELLS)
        assert (folder / "summary.csv").is_file() and not (folder / "summary.md").exists()
    else:
        assert not RunDir(folder / CELLS[cell]).result_path.exists()
        assert not (folder / "summary.csv").exists()

    resumed = _sweep(sweep_file, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resume not exact" not in resumed.stderr
    if moment == "summary":  # nothing is trained again
        assert "2 already done, 0 to run" in resumed.stdout
    assert (folder / "summary.md").is_file()

    outcome, expected = _outcome(folder), uninterrupted
    for name in CELLS:
        got, want = outcome["cells"][name], expected["cells"][name]
        assert [row["epoch"] for row in got["result"]["history"]] == [0, 1]  # the complete history
        assert got["result"] == want["result"]  # every epoch's val/train errors and losses, lr and step, bit for bit
        keys = [(row["epoch"], row["step"], tuple(k for k, v in row.items() if v)) for row in got["metrics"]]
        assert len(keys) == len(set(keys)), f"{name}: duplicated metrics rows {keys}"
        assert got["metrics"] == want["metrics"]
        assert got["weights"].keys() == want["weights"].keys()
        assert all(torch.equal(got["weights"][k], want["weights"][k]) for k in want["weights"]), name
    assert outcome["summary"] == expected["summary"]
