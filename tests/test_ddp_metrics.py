"""Epoch metrics under DDP are reduced over all ranks, not rank 0's alone: each rank trains on its own shard, so
unreduced training means differ between ranks; reduced ones are the same number on both."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, TINY

WORKER = str(ROOT / "tests" / "ddp_metrics_worker.py")


@pytest.mark.slow
def test_two_process_epoch_metrics_are_reduced_over_both_ranks(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, WORKER, str(tmp_path), *TINY, "trainer.max_epochs=2",
                           "model.drop_rate=0.5"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [[json.loads(line) for line in (tmp_path / f"metrics-rank{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)]
    assert [row["epoch"] for row in ranks[0]] == [row["epoch"] for row in ranks[1]] == [0, 1]
    for row0, row1 in zip(*ranks):
        assert set(row0["metrics"]) == {"train/err1", "train/loss_epoch", "val/err1", "val/err5", "val/loss"}
        assert row0["metrics"] == row1["metrics"]  # one value for the whole epoch, over both shards
    history = json.loads((tmp_path / "ddp" / "result.json").read_text())["history"]
    assert [h["train/loss"] for h in history] == [row["metrics"]["train/loss_epoch"] for row in ranks[0]]
