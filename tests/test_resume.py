"""Exact resume: a run killed at any moment (SIGKILL, SIGTERM, SIGINT) and run again ends bit for bit where the
uninterrupted run ends: the same per-epoch history, result and weights (CPU, seeded, one process).

The kills come from tests/resume_worker.py (``delving fit`` that signals itself at a chosen step or right after a
checkpoint is written); the re-run is a plain ``delving fit``. The runs use dropout and PReLU, a step LR schedule
that drops inside the run, and step checkpoints that fall inside epochs, so the RNG states, the data order, the
position inside an epoch, the epoch's running train means and the scheduler all have to be restored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY, terminal_sigint

WORKER = str(ROOT / "tests" / "resume_worker.py")
# 5 batches an epoch, a step checkpoint every 4 steps (epoch 0 batch 3, epoch 1 batch 2, epoch 2 batch 1), the LR
# divided by 10 after epoch 1, dropout 0.5 before the fc layers.
SETTINGS = [*TINY, "trainer.limit_train_batches=5", "trainer.max_epochs=3", "trainer.checkpoint_every_n_steps=4",
            "model.drop_rate=0.5", "optim.schedule=step", "optim.milestones=[2]", "optim.lr=0.02"]


def _fit_args(out: Path, name: str, activation: str, seed: int, *extra: str) -> list[str]:
    settings = [*SETTINGS, f"out_dir={out}", f"name={name}", f"model.activation={activation}", f"seed={seed}",
                *extra]
    return ["fit", *(f"--{s}" for s in settings)]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=terminal_sigint)


def _outcome(folder: Path) -> tuple[dict, dict]:
    """The result without its timings, and the final weights."""
    result = json.loads((folder / "result.json").read_text())
    for key in ("fit_seconds", "step_seconds", "setup_seconds", "run_seconds"):
        result.pop(key, None)
    weights = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    return result, weights


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference outcome of each (activation, seed), trained once without interruption."""
    out, cache = tmp_path_factory.mktemp("uninterrupted"), {}

    def get(activation: str, seed: int):
        if (activation, seed) not in cache:
            folder = out / f"{activation}-s{seed}"
            proc = _run(["-m", "delving", *_fit_args(folder, "run", activation, seed)])  # the step checkpoints
            # (every 4 steps) change nothing in training: one reference serves every checkpoint interval
            assert proc.returncode == 0, proc.stderr[-2000:]
            cache[activation, seed] = _outcome(folder / "run")
        return cache[activation, seed]

    return get


# (kill moment, signal, activation, seed): every moment with every signal; the two activations and seeds spread over
# them. step:1 is after the first batch (no checkpoint yet); epoch-ckpt:0 right after epoch 0's last.ckpt (before
# the scheduler steps); step:8 right after the mid-epoch checkpoint of step 8; step:6 two steps after the one of step
# 4, which the resumed run trains again.
CASES = [
    ("step:1", "KILL", "relu", 0), ("step:1", "TERM", "prelu", 1), ("step:1", "INT", "prelu", 0),
    ("epoch-ckpt:0", "KILL", "prelu", 0), ("epoch-ckpt:0", "TERM", "relu", 1), ("epoch-ckpt:0", "INT", "prelu", 1),
    ("step:8", "KILL", "prelu", 1), ("step:8", "TERM", "prelu", 0), ("step:8", "INT", "relu", 0),
    ("step:6", "KILL", "relu", 1), ("step:6", "TERM", "prelu", 0), ("step:6", "INT", "prelu", 1),
]


@pytest.mark.slow
@pytest.mark.parametrize("moment,sig,activation,seed", CASES, ids=["-".join(map(str, c)).replace(":", "") for c in CASES])
def test_killed_run_resumes_bit_identical(moment, sig, activation, seed, uninterrupted, tmp_path):
    args = _fit_args(tmp_path, "run", activation, seed)
    killed = _run([WORKER, "--kill-at", moment, "--signal", sig, *args])
    assert killed.returncode != 0, killed.stdout[-1000:] + killed.stderr[-2000:]
    assert not (tmp_path / "run" / "result.json").exists()
    resumed = _run(["-m", "delving", *args])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resume not exact" not in resumed.stderr
    result, weights = _outcome(tmp_path / "run")
    expected, expected_weights = uninterrupted(activation, seed)
    assert [row["epoch"] for row in result["history"]] == [0, 1, 2]  # the complete history
    assert result == expected  # every epoch's val/train errors and losses, lr and step, bit for bit
    assert weights.keys() == expected_weights.keys()
    assert all(torch.equal(weights[k], expected_weights[k]) for k in weights)


@pytest.mark.slow
def test_killed_after_the_checkpoint_ending_an_epoch_when_the_step_interval_divides_it(uninterrupted, tmp_path):
    # 5 steps an epoch, a step checkpoint every 5: the first last.ckpt at step 5 must be the end-of-epoch one (after
    # validation). A step checkpoint there would resume as if the epoch had ended, without its validation row, and
    # with the loader's resume point past the epoch's end.
    args = _fit_args(tmp_path, "run", "prelu", 0, "trainer.checkpoint_every_n_steps=5")
    killed = _run([WORKER, "--kill-at", "ckpt-step:5", "--signal", "KILL", *args])
    assert killed.returncode == -9 or killed.returncode == 137, killed.stderr[-2000:]
    resumed = _run(["-m", "delving", *args])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result, weights = _outcome(tmp_path / "run")
    expected, expected_weights = uninterrupted("prelu", 0)
    assert result == expected and all(torch.equal(weights[k], expected_weights[k]) for k in weights)
