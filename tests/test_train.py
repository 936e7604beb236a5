import json

import lightning as L
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from delving.experiment.training.callbacks import VARIANCE_IMAGES
from delving.experiment.training.config import load_config
from delving.experiment.training.train import build_datamodule, build_model, build_trainer, fit, run_dir
from delving.nn.probes import variance_profile


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
    # the installed distribution's version: torch.__version__ without a local build tag such as "+cpu"
    assert prov["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert "git_commit" in prov and (folder / "config.yaml").read_text().count("activation: prelu") == 1
    assert json.loads((folder / "result.json").read_text())["status"] == "finished"


def test_variance_profile_logged_at_init_and_after_epoch_1_without_touching_training(tiny):
    runs = {}
    for log in (True, False):
        cfg = load_config(None, [*tiny, "trainer.max_epochs=2", f"tracking.log_variance={log}", f"name=v{log}"])
        runs[log] = (fit(cfg, progress=False), run_dir(cfg), cfg)
    (result, folder, cfg), (plain, plain_folder, _) = runs[True], runs[False]
    variance = pd.read_csv(folder / "variance.csv")
    assert list(variance.stage.unique()) == ["init", "epoch1"]
    init, after = variance[variance.stage == "init"], variance[variance.stage == "epoch1"]
    assert list(init.layer) == list(after.layer) and init.layer.iloc[0] == "conv1" and len(init) == 9
    assert (init.forward_std > 0).all() and not init.forward_std.equals(after.forward_std.reset_index(drop=True))
    # The init rows are variance_profile of the initial model on the first validation images, column by column.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    datamodule.setup("fit")
    profile = variance_profile(model, next(iter(datamodule.val_dataloader()))[0][:VARIANCE_IMAGES])
    assert init.forward_std.tolist() == pytest.approx([s.forward_std for s in profile], rel=1e-5)
    assert init.backward_std.tolist() == pytest.approx([s.backward_std for s in profile], rel=1e-5)
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


@pytest.mark.slow
def test_ctrl_c_in_fit_says_what_is_saved_exits_130_and_the_rerun_continues_the_history(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import pandas as pd

    from conftest import ROOT, TINY, terminal_sigint

    out = tmp_path / "runs"
    args = [*[f"--{o}" for o in TINY if not o.startswith("trainer.max_epochs")], f"--out_dir={out}", "--name=stop",
            "--trainer.max_epochs=30"]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "delving", "fit", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=terminal_sigint)
    last = out / "stop" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err and line.startswith("delving: interrupted: stop keeps ") and str(last) in line
    assert line.endswith("run the same command again to resume")
    done = int(line.split(" epoch(s) done")[0].rsplit(", ", 1)[1])
    epochs = done + 2
    rerun = subprocess.run([sys.executable, "-m", "delving", "fit", *args[:-1], f"--trainer.max_epochs={epochs}"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    metrics = pd.read_csv(out / "stop" / "csv" / "metrics.csv")
    assert not metrics.duplicated().any()
    assert sorted(metrics.dropna(subset=["val/err1"]).epoch.astype(int)) == list(range(epochs))


def test_a_ddp_fit_ends_its_process_group(tiny, monkeypatch):
    # A gloo group left open aborts the interpreter's exit now and then (exit code -6 after a finished run).
    for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)  # Lightning sets some of them; they must not reach later tests
    monkeypatch.setenv("MASTER_PORT", "0")
    cfg = load_config(None, [*tiny, "trainer.strategy=ddp", "trainer.devices=1", "trainer.accelerator=cpu",
                             "name=ddp1"])
    assert fit(cfg, progress=False)["status"] == "finished"
    assert not torch.distributed.is_initialized()


def test_the_progress_bar_redraws_every_logging_interval_and_a_bar_passed_in_is_kept(tiny, tmp_path):
    """Lightning's default bar redraws at every step; the run's redraws every trainer.log_every_n_steps steps."""
    cfg = load_config(None, [*tiny, "trainer.enable_progress_bar=true", "trainer.log_every_n_steps=7"])
    bar = build_trainer(cfg, tmp_path / "run", False, progress=True).progress_bar_callback
    assert isinstance(bar, TQDMProgressBar) and bar.refresh_rate == 7
    own = TQDMProgressBar(refresh_rate=1)
    assert build_trainer(cfg, tmp_path / "run", False, True, [own]).progress_bar_callback is own
    assert build_trainer(cfg, tmp_path / "run", False, progress=False).progress_bar_callback is None
