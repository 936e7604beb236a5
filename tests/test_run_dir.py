"""The run folder (delving/experiment/rundir/run_dir.py): identity = config, nothing lost over resumes, atomic
checkpoints, a corrupt last.ckpt falls back to the newest valid one, one writer at a time."""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from delving.errors import DelvingError
from delving.experiment.training.config import load_config
from delving.experiment.rundir.run_dir import (FilesystemError, RunDir, RunLocked, checkpoint_position, differing_keys,
                                        fingerprint)
from delving.experiment.rundir.run_io import AtomicCheckpointIO
from delving.experiment.training.train import fit, run_dir


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_duplicates(folder: Path) -> pd.DataFrame:
    metrics = pd.read_csv(RunDir(folder).metrics_path)
    assert not metrics.duplicated().any()
    slopes = pd.read_csv(RunDir(folder).slopes_path)
    assert not slopes.duplicated(["epoch", "layer", "channel"]).any()
    return metrics


def test_a_changed_config_under_the_same_name_is_a_one_line_error_with_nothing_written(tiny):
    cfg = load_config(None, [*tiny, "name=same", "optim.lr=0.02"])
    fit(cfg, progress=False)
    folder = run_dir(cfg)
    before = _snapshot(folder)
    changed = load_config(None, [*tiny, "name=same", "optim.lr=0.5", "model.depth=11"])
    with pytest.raises(DelvingError, match=r"holds another config \(model.depth: 9 -> 11; optim.lr: 0.02 -> 0.5\)"):
        fit(changed, progress=False)
    assert _snapshot(folder) == before  # config.yaml, result.json, metrics.csv untouched


def test_a_default_name_with_another_config_is_refused_too(tiny):
    fit(load_config(None, tiny), progress=False)
    with pytest.raises(DelvingError, match="optim.lr: 0.01 -> 0.5"):
        fit(load_config(None, [*tiny, "optim.lr=0.5"]), progress=False)


def test_a_finished_run_is_returned_not_trained_or_rewritten(tiny, capsys):
    cfg = load_config(None, [*tiny, "name=done"])
    first = fit(cfg, progress=False)
    before = _snapshot(run_dir(cfg))
    again = fit(load_config(None, [*tiny, "name=done", "trainer.enable_progress_bar=true"]), progress=False)
    assert again["final_val_err1"] == first["final_val_err1"]
    assert _snapshot(run_dir(cfg)) == before
    assert "already finished" in capsys.readouterr().err


def test_identity_leaves_out_what_may_change_on_resume():
    base = {"seed": 0, "name": "a", "out_dir": "runs", "optim": {"lr": 0.1},
            "trainer": {"max_epochs": 2, "devices": 1, "enable_progress_bar": True},
            "data": {"num_workers": 0, "batch_size": 64}, "tracking": {"wandb": "offline", "group": "g"}}
    moved = {**base, "name": "b", "out_dir": "elsewhere", "trainer": {"max_epochs": 9, "devices": 2,
             "enable_progress_bar": False}, "data": {"num_workers": 4, "batch_size": 64},
             "tracking": {"wandb": "disabled", "group": None}}
    assert fingerprint(base) == fingerprint(moved) and differing_keys(base, moved) == []
    other = {**base, "data": {"num_workers": 0, "batch_size": 32}}
    assert fingerprint(base) != fingerprint(other)
    assert differing_keys(base, other) == ["data.batch_size: 64 -> 32"]


def test_metrics_history_survives_every_resume_without_duplicates(tiny):
    one = load_config(None, [*tiny, "name=grow", "model.activation=prelu"])
    fit(one, progress=False)
    three = load_config(None, [*tiny, "name=grow", "model.activation=prelu", "trainer.max_epochs=3"])
    result = fit(three, progress=False)
    metrics = _no_duplicates(run_dir(three))
    assert sorted(metrics.dropna(subset=["val/err1"]).epoch.astype(int)) == [0, 1, 2]  # epoch 0 kept
    assert sorted(metrics.dropna(subset=["train/err1"]).epoch.astype(int)) == [0, 1, 2]
    assert metrics["lr-SGD/decay"].notna().sum() == 3  # one LR row per epoch start
    assert list(metrics.dropna(subset=["val/err1"])["val/err1"]) == [r["val/err1"] for r in result["history"]]
    assert set(pd.read_csv(RunDir(run_dir(three)).slopes_path).epoch) == {0, 1, 2}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A 2-epoch run whose best checkpoint is epoch 0 (lr 1e-9: val error never improves), 'killed' before its
    result was written: epoch000.ckpt (step 4) and last.ckpt (step 8) are both there."""
    from conftest import TINY

    out = tmp_path_factory.mktemp("runs")
    overrides = [o for o in TINY if not o.startswith("trainer.max_epochs")]
    cfg = load_config(None, [*overrides, f"out_dir={out}", "name=cut", "trainer.max_epochs=2", "optim.lr=1e-9",
                             "optim.momentum=0", "model.activation=prelu"])
    uninterrupted = fit(cfg, progress=False)
    RunDir(run_dir(cfg)).result_path.unlink()
    return cfg, run_dir(cfg), uninterrupted


def _foreign(path: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, path)  # a pickle, but not a Lightning checkpoint


@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(p.read_bytes()[:1000]),          # truncated (killed while writing)
    lambda p: p.write_bytes(b"\x00garbage" * 100),           # garbage
    _foreign,                                                # foreign
], ids=["truncated", "garbage", "foreign"])
def test_a_damaged_last_checkpoint_falls_back_to_the_newest_valid_one(interrupted, tmp_path, capsys, damage):
    cfg, folder, uninterrupted = interrupted
    copy = tmp_path / "runs"
    shutil.copytree(folder.parent, copy)
    cfg = load_config(None, [f"{k}={v}" for k, v in _overrides(cfg, copy).items()])
    run = RunDir(run_dir(cfg))
    damage(run.last_checkpoint)
    result = fit(cfg, progress=False)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "last.ckpt" in line]
    assert len(lines) == 1 and "resuming from epoch000.ckpt (step 4)" in lines[0], err
    assert run.last_checkpoint.with_name("last.ckpt.corrupt").is_file()
    assert [r["epoch"] for r in result["history"]] == [0, 1] and result["history"][-1]["step"] == 8
    assert result["status"] == "finished" and result["epochs"] == 2
    metrics = _no_duplicates(run.path)  # epoch 1's rows were cut back, then logged once again
    assert sorted(metrics.dropna(subset=["val/err1"]).epoch.astype(int)) == [0, 1]
    assert set(pd.read_csv(run.slopes_path).epoch) == {0, 1}
    assert checkpoint_position(run.last_checkpoint) == (8, 2)


def _overrides(cfg, out: Path) -> dict:
    from conftest import TINY

    values = dict(o.split("=", 1) for o in TINY if not o.startswith("trainer.max_epochs"))
    values.update({"out_dir": str(out), "name": cfg.name, "trainer.max_epochs": "2", "optim.lr": "1e-9",
                   "optim.momentum": "0", "model.activation": "prelu"})
    return values


def test_checkpoint_check_reads_no_tensor_data(tmp_path):
    path = tmp_path / "big.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(4096, 4096)}, "epoch": 3, "global_step": 40,
                "loops": {"fit_loop": {"epoch_loop.batch_progress": {"is_last_batch": True}}}}, path)
    assert checkpoint_position(path) == (40, 4)
    assert checkpoint_position(tmp_path / "missing.ckpt") is None


def test_cut_back_keeps_only_rows_before_the_resume_point(tmp_path):
    run = RunDir(tmp_path)
    run.csv_dir.mkdir()
    run.metrics_path.write_text("epoch,lr,step,val/err1\n,0.1,0,\n0,,3,0.5\n,0.1,4,\n1,,7,0.4\n")
    run.slopes_path.write_text("epoch,depth,layer,channel,slope\n0,1,conv1,0,0.25\n1,1,conv1,0,0.26\n")
    assert run.variance_stages() == set()
    run.append_variance([["init", 1, "conv1", 1, 1], ["epoch1", 1, "conv1", 1, 1]])
    assert run.variance_path.read_text() == ("stage,index,layer,forward_std,backward_std\ninit,1,conv1,1,1\n"
                                             "epoch1,1,conv1,1,1\n")
    assert run.variance_stages() == {"init", "epoch1"}
    run.cut_back(step=4, done_epochs=1)
    assert run.metrics_path.read_text() == "epoch,lr,step,val/err1\n,0.1,0,\n0,,3,0.5\n"
    assert pd.read_csv(run.slopes_path).epoch.tolist() == [0]
    run.cut_back(step=0, done_epochs=0)
    assert pd.read_csv(run.variance_path).stage.tolist() == ["init"] and run.variance_stages() == {"init"}


@pytest.fixture
def full_disk(tmp_path):
    """A 512 KiB tmpfs (root may mount one), else None: the write is then patched to fail with ENOSPC."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    ok = _mount_tmpfs(mount, "size=512k")
    yield mount if ok else None
    if ok:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_checkpoint_write_on_a_full_disk_leaves_no_partial_file(tmp_path, full_disk, monkeypatch):
    folder = (full_disk or tmp_path) / "checkpoints"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"w": torch.ones(10)}, folder / "last.ckpt")
    big = {"w": torch.ones(1 << 20)}  # 4 MB: more than the tmpfs holds
    if full_disk is None:
        def full(obj, f, *args, **kwargs):
            f.write(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(torch, "save", full)
    with pytest.raises(FilesystemError, match=r"cannot write .*last.ckpt.*No space left on device \(ENOSPC\)"):
        io.save_checkpoint(big, folder / "last.ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    assert torch.load(folder / "last.ckpt")["w"].shape == (10,)  # the old checkpoint is whole


def _lightning_checkpoint(step: int, weight: float, lr: float = 0.1) -> dict:
    return {"epoch": step // 10, "global_step": step, "loops": {"fit_loop": {"epoch_progress": {"total": step}}},
            "lr_schedulers": [{"last_epoch": step // 10}],
            "optimizer_states": [{"param_groups": [{"lr": lr, "params": [0]}]}],
            "state_dict": {"w": torch.full((4,), weight)}, "callbacks": {"ModelCheckpoint": {"step": step}}}


def test_two_checkpoints_of_one_training_state_are_one_file(tmp_path):
    folder = tmp_path / "checkpoints"
    io = AtomicCheckpointIO()
    io.save_checkpoint(_lightning_checkpoint(10, 1.0), folder / "epoch000.ckpt")
    io.save_checkpoint(_lightning_checkpoint(10, 1.0), folder / "last.ckpt")  # the same step: linked
    assert (folder / "last.ckpt").stat().st_ino == (folder / "epoch000.ckpt").stat().st_ino
    io.save_checkpoint(_lightning_checkpoint(20, 2.0), folder / "last.ckpt")  # the next epoch: written anew
    assert (folder / "last.ckpt").stat().st_ino != (folder / "epoch000.ckpt").stat().st_ino
    assert torch.load(folder / "epoch000.ckpt", weights_only=False)["state_dict"]["w"][0] == 1.0  # untouched
    assert torch.load(folder / "last.ckpt", weights_only=False)["state_dict"]["w"][0] == 2.0
    io.save_checkpoint(_lightning_checkpoint(20, 2.0, lr=0.01), folder / "epoch001.ckpt")  # the LR moved: written
    assert (folder / "epoch001.ckpt").stat().st_ino != (folder / "last.ckpt").stat().st_ino
    io.save_checkpoint({"w": torch.ones(2)}, folder / "a.ckpt")  # not a Lightning checkpoint: always written
    io.save_checkpoint({"w": torch.ones(2)}, folder / "b.ckpt")
    assert (folder / "a.ckpt").stat().st_ino != (folder / "b.ckpt").stat().st_ino
    assert not list(folder.glob("*.partial"))


def test_a_fit_links_best_and_last_of_one_epoch_and_resumes_from_them(tiny):
    cfg = load_config(None, [*tiny, "name=linked", "trainer.max_epochs=1"])
    fit(cfg, progress=False)
    folder = RunDir(run_dir(cfg)).checkpoints
    assert (folder / "epoch000.ckpt").stat().st_ino == (folder / "last.ckpt").stat().st_ino  # the first epoch is the best
    assert torch.load(folder / "last.ckpt", weights_only=False)["epoch"] == 0
    again = load_config(None, [*tiny, "name=linked", "trainer.max_epochs=3"])
    assert fit(again, progress=False)["epochs"] == 3  # resumed from the linked last.ckpt
    metrics = pd.read_csv(RunDir(run_dir(cfg)).metrics_path)
    assert not metrics.duplicated().any() and sorted(metrics["val/err1"].dropna().index.map(metrics["epoch"])) == [0, 1, 2]


def test_fit_on_a_full_disk_is_one_line_naming_the_path(tiny, monkeypatch):
    import delving.experiment.rundir.run_io as run_io

    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_io.torch, "save", full)
    cfg = load_config(None, [*tiny, "name=full"])
    with pytest.raises(FilesystemError, match=r"cannot write .*full/checkpoints/.*No space left on device") as info:
        fit(cfg, progress=False)
    assert "\n" not in str(info.value)
    assert not list(run_dir(cfg).rglob("*.partial"))


@pytest.mark.parametrize("make_bad", ["file", "readonly"])
def test_an_unwritable_out_dir_is_one_line(tiny, tmp_path, make_bad):
    bad = tmp_path / "bad"
    if make_bad == "file":
        bad.write_text("not a folder")
        match = r"cannot write .*bad.*(Not a directory|File exists)"
    else:
        bad.mkdir()
        if _mount_tmpfs(bad, "ro,size=64k"):  # a read-only filesystem (root may mount one)
            match = r"Read-only file system \(EROFS\)"
        else:
            bad.chmod(0o500)
            if _can_write(bad):
                pytest.skip("neither a read-only mount nor folder permissions can stop this user")
            match = r"Permission denied \(EACCES\)"
    cfg = load_config(None, [*tiny, f"out_dir={bad}", "name=x"])
    try:
        with pytest.raises(FilesystemError, match=match):
            fit(cfg, progress=False)
    finally:
        subprocess.run(["umount", str(bad)], capture_output=True, check=False)


def _mount_tmpfs(folder: Path, options: str) -> bool:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def _can_write(folder: Path) -> bool:
    try:
        (folder / "probe").write_text("")
        (folder / "probe").unlink()
        return True
    except OSError:
        return False


def test_a_second_writer_gets_a_one_line_error_and_a_dead_holder_is_taken_over(tiny):
    cfg = load_config(None, [*tiny, "name=busy"])
    run = RunDir(run_dir(cfg))
    with run.lock():  # a live holder (another open file description: flock conflicts even in one process)
        with pytest.raises(RunLocked, match=r"run folder .*busy is in use by PID \d+ on "):
            fit(cfg, progress=False)
    assert not run.result_path.exists()
    run.lock_path.write_text("999999999 some-dead-host\n")  # left by a killed process: no flock is held
    assert fit(cfg, progress=False)["status"] == "finished"
