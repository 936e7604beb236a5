"""Multi-node training under ``torchrun`` (two launches on this machine, one per node, gloo on CPU) over the FFCV
and folder data modules, and runs killed mid-epoch that resume on another number of processes (2 -> 1, 1 -> 2).

Each launch is ``delving fit`` through ``delving.cli.main`` with recording callbacks (tests/multinode_worker.py).
The data: 16 single-image classes (test_ffcv's fixture), so a label names a sample.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from ffcv_worker import TINY
from test_ffcv import _labels, one_image_per_class, photos  # noqa: F401 (fixtures)

SAMPLES = 16
WORKER = str(ROOT / "tests" / "multinode_worker.py")


@pytest.fixture(scope="module")
def data_root(one_image_per_class, tmp_path_factory) -> Path:  # noqa: F811
    """train/ and val/ (the same 16 images) for the folder module, train.beton and val.beton for FFCV."""
    root = tmp_path_factory.mktemp("multinode")
    for split in ("train", "val"):
        (root / split).symlink_to(one_image_per_class / "all")
        (root / f"{split}.beton").symlink_to(one_image_per_class / f"{split}.beton")
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fit_args(data: str, root: Path, out: Path, *extra: str) -> list[str]:
    settings = [*TINY, f"data.name={data}", f"data.root={root}", f"out_dir={out}", "name=run",
                "data.batch_size=8", "data.batch_size_is=total", *extra]  # the paper's total batch, split
    return ["fit", *(f"--{s}" for s in settings)]


def _env() -> dict:
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}


def two_nodes(out: Path, tag: str, fit_args: list[str], kill_at: str | None = None) -> list[int]:
    """``torchrun --nnodes 2 --node-rank {0,1} --nproc-per-node 1`` with a rendezvous on 127.0.0.1: two
    launches as on two machines. Returns both exit codes.

    One retry on a fresh port, only when the launch failed before either rank trained a batch (no labels
    recorded): the free port is picked before torchrun binds it, so another process can take it in between, and
    a rank that cannot join leaves the other waiting in the rendezvous. Once training has started, a failure
    fails the test. The failed attempt's logs are printed either way."""
    for attempt in range(2):
        codes, logs = _launch_two_nodes(out, f"{tag}-try{attempt}", tag, fit_args, kill_at)
        started = list(out.glob(f"labels-{tag}-rank*.jsonl"))
        if codes is not None and (kill_at or not any(codes)):
            return codes
        print(f"two-node launch {attempt} failed (exit codes {codes}); node logs:")
        for log in logs:
            print(log.read_text()[-3000:])
        if started:
            break
    pytest.fail(f"two-node run {tag!r} failed; see the node logs above")


def _launch_two_nodes(out: Path, log_tag: str, tag: str, fit_args: list[str], kill_at: str | None):
    """Exit codes of both nodes, or None when they hung past the deadline (then both are killed)."""
    port, kill = _free_port(), ["--kill-at", kill_at] if kill_at else []
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=1", "--trainer.num_nodes=2"]
    # Each node's output goes to a file, not a pipe: a pipe nobody reads while we wait on the other node fills up
    # and blocks its writer inside training, and the other node then waits for it in a collective for ever.
    logs = [out / f"{log_tag}-node{node}.log" for node in (0, 1)]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
         "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
         WORKER, str(out), tag, *kill, *fit_args, *ddp], cwd=ROOT, env=_env(), stdout=log.open("w"),
        stderr=subprocess.STDOUT) for node, log in zip((0, 1), logs)]
    deadline = time.monotonic() + 150  # a normal launch takes 15-40 s on 2 cores
    try:
        return [proc.wait(timeout=max(1.0, deadline - time.monotonic())) for proc in procs], logs
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
            proc.wait()
        return None, logs


def one_process(out: Path, tag: str, fit_args: list[str], kill_at: str | None = None) -> int:
    kill = ["--kill-at", kill_at] if kill_at else []
    proc = subprocess.run([sys.executable, WORKER, str(out), tag, *kill, *fit_args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)
    if proc.returncode and not kill_at:
        print(proc.stderr[-3000:])
    return proc.returncode


def _states(out: Path, tag: str, rank: int = 0) -> dict[str, dict]:
    rows = [json.loads(line) for line in (out / f"state-{tag}-rank{rank}.jsonl").read_text().splitlines()]
    return {row["when"]: row for row in rows}


def _epoch_labels(out: Path, tag: str, rank: int, epoch: int) -> list[int]:
    """The labels one rank trained on in one epoch (a resumed run's first epoch starts mid-way: no batch 0)."""
    rows = [json.loads(line) for line in (out / f"labels-{tag}-rank{rank}.jsonl").read_text().splitlines()]
    return [label for row in rows if row["epoch"] == epoch for label in row["labels"]]


def _checkpoint(out: Path) -> dict:
    ckpt = torch.load(out / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return {"epoch": ckpt["epoch"], "step": ckpt["global_step"]}


@pytest.mark.slow
@pytest.mark.parametrize("data", ["ffcv", "folder"])
def test_two_torchrun_nodes_see_disjoint_shards_and_end_with_identical_weights(data, data_root, tmp_path):
    args = _fit_args(data, data_root, tmp_path, "trainer.max_epochs=1", *["data.num_workers=0"] * (data == "folder"))
    assert two_nodes(tmp_path, "n", args) == [0, 0]
    shards = [_labels(tmp_path, "n", rank)[0] for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == SAMPLES // 2 and not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(SAMPLES))  # together, the whole epoch once
    weights = [torch.load(tmp_path / f"weights-n-rank{rank}.pt") for rank in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # DDP kept the replicas equal
    for rank in (0, 1):  # one step per 8 samples (4 per node): the total batch of 8 was split over the nodes
        assert _states(tmp_path, "n", rank)["end"] == {"when": "end", "epoch": 1, "step": 2, "batch": 2,
                                                       "batches_per_epoch": 2, "world_size": 2}
    result = json.loads((tmp_path / "run" / "result.json").read_text())  # written once, by global rank 0
    assert result["status"] == "finished" and result["epochs"] == 1


@pytest.mark.slow
def test_two_process_run_killed_mid_epoch_resumes_on_one(data_root, tmp_path):
    args = _fit_args("ffcv", data_root, tmp_path, "trainer.max_epochs=3", "trainer.checkpoint_every_n_steps=1")
    codes = two_nodes(tmp_path, "two", args, kill_at="1,1")  # both ranks die before epoch 1's second step
    assert all(code != 0 for code in codes) and not (tmp_path / "run" / "result.json").exists()
    assert _checkpoint(tmp_path) == {"epoch": 1, "step": 3}  # written by rank 0 after step 3 (epoch 1, batch 0)
    assert one_process(tmp_path, "one", args) == 0
    start, end = _states(tmp_path, "one")["start"], _states(tmp_path, "one")["end"]
    assert start == {"when": "start", "epoch": 1, "step": 3, "batch": 1, "batches_per_epoch": 2, "world_size": 1}
    assert end["epoch"] == 3 and end["step"] == 6  # 2 steps per epoch at 8 samples a step, as before the kill
    assert sorted(_epoch_labels(tmp_path, "one", 0, 2)) == list(range(SAMPLES))  # the next epoch whole, on one process
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["epochs"] == 3 and [h["epoch"] for h in result["history"]] == [0, 1, 2]


@pytest.mark.slow
def test_one_process_run_killed_mid_epoch_resumes_on_two(data_root, tmp_path):
    args = _fit_args("folder", data_root, tmp_path, "trainer.max_epochs=2", "trainer.checkpoint_every_n_steps=1",
                     "data.num_workers=0")
    assert one_process(tmp_path, "one", args, kill_at="0,1") == 3
    assert _checkpoint(tmp_path) == {"epoch": 0, "step": 1}
    assert two_nodes(tmp_path, "two", args) == [0, 0]
    for rank in (0, 1):
        start, end = _states(tmp_path, "two", rank)["start"], _states(tmp_path, "two", rank)["end"]
        assert start == {"when": "start", "epoch": 0, "step": 1, "batch": 1, "batches_per_epoch": 2,
                         "world_size": 2}
        assert end["epoch"] == 2 and end["step"] == 4
    shards = [_epoch_labels(tmp_path, "two", rank, 1) for rank in (0, 1)]  # epoch 1: sharded by Lightning's sampler
    assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == list(range(SAMPLES))
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["epochs"] == 2 and [h["epoch"] for h in result["history"]] == [0, 1]


def test_checkpoint_every_n_steps_adds_a_step_checkpoint_writing_last_and_rejects_zero(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from delving.experiment.training.config import load_config
    from delving.errors import DelvingError
    from delving.experiment.training.train import build_trainer

    cfg = load_config(None, ["trainer.checkpoint_every_n_steps=3", "tracking.wandb=disabled"])
    trainer = build_trainer(cfg, tmp_path, False, progress=False)
    steps = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb._every_n_train_steps]
    assert len(steps) == 1 and steps[0]._every_n_train_steps == 3 and steps[0].filename == "last"
    assert steps[0].dirpath == str(tmp_path / "checkpoints")  # the same last.ckpt the epoch checkpoint writes
    assert not steps[0]._enable_version_counter  # else the second writer of last.ckpt would make last-v1.ckpt
    default = build_trainer(load_config(None, ["tracking.wandb=disabled"]), tmp_path, False, progress=False)
    assert not [cb for cb in default.callbacks if isinstance(cb, ModelCheckpoint) and cb._every_n_train_steps]
    with pytest.raises(DelvingError, match="trainer.checkpoint_every_n_steps=0 must be positive"):
        load_config(None, ["trainer.checkpoint_every_n_steps=0"])
