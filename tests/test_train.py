import json

import pandas as pd
import pytest
import torch

from delving.config import load_config
from delving.train import fit, run_dir


def test_real_training_run_writes_wandb_offline_csv_and_slopes(tiny):
    cfg = load_config(None, [*tiny, "tracking.wandb=offline", "model.activation=prelu", "trainer.max_epochs=2",
                             "name=prelu-run"])
    result = fit(cfg, progress=False)
    folder = run_dir(cfg)
    assert result["status"] == "finished" and result["epochs"] == 2
    assert 0.0 <= result["final_val_err1"] <= 1.0 and len(result["history"]) == 2
    # W&B offline run with its data file, resumable under a fixed id.
    offline = list((folder / "wandb").glob("offline-run-*"))
    assert offline and list(offline[0].glob("*.wandb"))
    # CSV metrics with the paper's errors and the per-layer slopes.
    metrics = pd.read_csv(folder / "csv" / "metrics.csv")
    for column in ("train/loss_epoch", "train/err1", "val/err1", "val/err5", "prelu/conv1", "prelu/fc2", "epoch"):
        assert column in metrics.columns, column
    slopes = pd.read_csv(folder / "slopes.csv")
    assert set(slopes.epoch) == {0, 1} and slopes.layer.iloc[0] == "conv1"
    assert len(slopes[slopes.epoch == 0]) == 4 + 8 * 4 + 8 * 1 + 16 + 16  # one row per channel
    assert (folder / "slopes_by_layer.png").stat().st_size > 1000
    # Provenance: resolved config, git commit, library versions.
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["versions"]["torch"] == torch.__version__.split("+")[0] or prov["versions"]["torch"]
    assert "git_commit" in prov and (folder / "config.yaml").read_text().count("activation: prelu") == 1
    assert json.loads((folder / "result.json").read_text())["status"] == "finished"


def test_variance_profile_logged_at_init_and_after_epoch_1_without_touching_training(tiny):
    runs = {}
    for log in (True, False):
        cfg = load_config(None, [*tiny, "trainer.max_epochs=2", f"tracking.log_variance={log}", f"name=v{log}"])
        runs[log] = (fit(cfg, progress=False), run_dir(cfg))
    (result, folder), (plain, plain_folder) = runs[True], runs[False]
    variance = pd.read_csv(folder / "variance.csv")
    assert list(variance.stage.unique()) == ["init", "epoch1"]
    init, after = variance[variance.stage == "init"], variance[variance.stage == "epoch1"]
    assert list(init.layer) == list(after.layer) and init.layer.iloc[0] == "conv1" and len(init) == 9
    assert (init.forward_std > 0).all() and not init.forward_std.equals(after.forward_std.reset_index(drop=True))
    assert not (plain_folder / "variance.csv").exists()
    # The measurement runs under its own RNG: the trained run is the same with and without it.
    assert [r["val/err1"] for r in result["history"]] == [r["val/err1"] for r in plain["history"]]
    assert result["final_train_err1"] == plain["final_train_err1"] is not None


def test_rerun_resumes_from_last_checkpoint(tiny):
    cfg = load_config(None, [*tiny, "name=resume"])
    fit(cfg, progress=False)
    assert (run_dir(cfg) / "checkpoints" / "last.ckpt").is_file()
    longer = load_config(None, [*tiny, "name=resume", "trainer.max_epochs=3"])
    result = fit(longer, progress=False)
    assert result["epochs"] == 3
    # epoch 0 came from the checkpoint's History state; 1 and 2 were trained now
    assert [row["epoch"] for row in result["history"]] == [0, 1, 2]
    assert result["history"][0]["step"] == 4 and result["history"][-1]["step"] == 12


def test_last_checkpoint_is_the_final_epoch_even_when_validation_stops_improving(tiny):
    # LR 1e-9: the weights barely move, so val/err1 never improves after epoch 0. Lightning 2.6's save_last writes
    # last.ckpt only on improvement; the resume point must still be the newest epoch, the best one kept apart.
    cfg = load_config(None, [*tiny, "name=flat", "trainer.max_epochs=3", "optim.lr=1e-9", "optim.momentum=0"])
    fit(cfg, progress=False)
    folder = run_dir(cfg) / "checkpoints"
    last = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 12)
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["epoch000.ckpt", "last.ckpt"]


def test_truncated_checkpoint_is_set_aside_and_the_run_starts_again(tiny):
    cfg = load_config(None, [*tiny, "name=cut"])
    fit(cfg, progress=False)
    last = run_dir(cfg) / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:100])  # as if killed while writing
    with pytest.warns(UserWarning, match="unreadable"):
        result = fit(cfg, progress=False)
    assert result["status"] == "finished" and [r["epoch"] for r in result["history"]] == [0]
    assert last.with_suffix(".ckpt.corrupt").is_file() and last.is_file()


def test_divergence_is_recorded_not_raised(tiny):
    cfg = load_config(None, [*tiny, "name=diverge", "optim.lr=1e12", "trainer.max_epochs=3"])
    result = fit(cfg, progress=False)
    assert result["status"] == "diverged"
    assert result["epochs"] < 3


@pytest.mark.slow
def test_two_process_ddp_fit_on_cpu(tmp_path):
    from conftest import TINY, run_cli

    out = tmp_path / "runs"
    proc = run_cli("fit", *[f"--{o}" for o in TINY], f"--out_dir={out}", "--name=ddp", "--trainer.strategy=ddp",
                   "--trainer.devices=2", "--trainer.accelerator=cpu", "--trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "ddp" / "result.json").read_text())
    assert result["status"] == "finished" and result["epochs"] == 2
    # 4 batches per rank per epoch with 2 ranks: the global step counts each rank's steps once
    assert result["history"][-1]["step"] == 8
