"""W&B identity and hygiene: the run id lives in the run folder (survives a move and a resume, a cleaned folder gets
a new one), the config is logged once, ``job_type=train``, min/last summaries for errors and losses,
``tracking.log_model`` offline, agent runs in the local layout, and ``wandb:`` checkpoint references.

Offline runs are read back from their ``.wandb`` transaction log with W&B's own reader (``wandb leet inspect
--json``; wandb 0.31 ships no Python reader of that log)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY, wandb_logs
from delving.cli import main
from delving.errors import DelvingError
from delving.experiment.sweeps.agent import agent_layout
from delving.experiment.training.config import load_config, to_dict
from delving.experiment.evaluation.evaluate import resolve_checkpoint
from delving.experiment.sweeps.grid import cell_config, load_sweep
from delving.experiment.training.train import fit, run_dir
from delving.experiment.training.loggers import MIN_SUMMARY_KEYS, log_model_setting, run_id

WANDB = str(Path(sys.executable).with_name("wandb"))


def records(run_folder: Path) -> list[dict]:
    """Every record of the newest offline W&B run in ``run_folder``, as W&B's reader prints them."""
    logs = wandb_logs(run_folder)
    out = subprocess.run([WANDB, "leet", "inspect", "--json", str(logs[-1])], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def offline_ids(run_folder: Path) -> set[str]:
    return {p.name.rsplit("-", 1)[-1] for p in (run_folder / "wandb").glob("offline-run-*")}


# ------------------------------------------------------------------------------------------- the id file


def test_run_id_is_created_once_and_read_back(tmp_path):
    path = tmp_path / "wandb_id"
    first = run_id(path)
    assert path.read_text().strip() == first and len(first) >= 8 and first.isalnum()
    assert run_id(path) == first  # read back, not regenerated
    moved = tmp_path / "elsewhere" / "wandb_id"
    moved.parent.mkdir()
    path.rename(moved)
    assert run_id(moved) == first  # the id travels with the folder
    moved.unlink()
    assert run_id(moved) != first  # a cleaned folder: a new id
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.slow
def test_offline_run_keeps_its_id_when_moved_and_resumed_and_logs_its_config_once(tmp_path):
    settings = [*TINY, "tracking.wandb=offline", "name=run", "model.activation=prelu"]
    cfg = load_config(None, [*settings, f"out_dir={tmp_path / 'a'}"])
    fit(cfg, progress=False)
    folder = run_dir(cfg)
    first = (folder / "wandb_id").read_text().strip()
    assert offline_ids(folder) == {first}

    records_ = records(folder)
    run = next(r["run"] for r in records_ if r["type"] == "run")
    assert run["run_id"] == first and run["job_type"] == "train" and run["display_name"] == "run"
    updates = [r["run"].get("config", {}).get("update", {}) for r in records_ if r["type"] == "run"]
    updates += [r["config"].get("update", {}) for r in records_ if r["type"] == "config"]
    logged = [key for update in updates for key in update if not key.startswith("_wandb")]  # W&B's own keys
    assert sorted(logged) == sorted([*to_dict(cfg), "provenance"])  # each key once; no nested "config" copy
    assert next(u["model"] for u in updates if "model" in u)["activation"] == "prelu"
    defined = {r["metric"].get("name"): r["metric"] for r in records_ if r["type"] == "metric"}  # globs: no name
    for key in MIN_SUMMARY_KEYS:
        assert defined[key]["summary"] == {"min": True, "last": True}, key
    summary = {}
    for r in records_:
        if r["type"] == "summary":
            summary.update(r["summary"].get("update", {}))
    assert set(summary["val/err1"]) == {"min", "last"}

    # Moved to another folder and resumed there: the same W&B run.
    moved = tmp_path / "b"
    shutil.move(str(tmp_path / "a"), str(moved))
    longer = load_config(None, [*settings, f"out_dir={moved}", "trainer.max_epochs=2"])
    assert fit(longer, progress=False)["epochs"] == 2
    assert offline_ids(run_dir(longer)) == {first}
    assert next(r["run"] for r in records(run_dir(longer)) if r["type"] == "run")["run_id"] == first

    # The folder cleaned and the run trained again: a new W&B run.
    shutil.rmtree(run_dir(longer))
    fit(longer, progress=False)
    second = (run_dir(longer) / "wandb_id").read_text().strip()
    assert second != first and offline_ids(run_dir(longer)) == {second}


# ------------------------------------------------------------------------------------------- log_model


def test_log_model_maps_to_wandb_logger_and_is_off_offline(capsys):
    assert log_model_setting(False, "online") is False
    assert log_model_setting("last", "online") is True  # WandbLogger: checkpoints logged when training ends
    assert log_model_setting("all", "online") == "all"
    assert log_model_setting("last", "offline") is False  # WandbLogger(offline=True, log_model=...) raises
    assert "tracking.log_model=last applies to online runs only" in capsys.readouterr().err
    assert load_config(None, ["tracking.log_model=all"]).tracking.log_model == "all"
    with pytest.raises(DelvingError, match="unknown tracking.log_model 'sometimes'; valid: 'all', 'false', 'last'"):
        load_config(None, ["tracking.log_model=sometimes"])


# ------------------------------------------------------------------------------------------- agent runs


class CommError(Exception):
    """Stands for wandb.errors.CommError, what the API raises for a missing sweep or artifact."""


class StubSweep:
    def __init__(self, config):
        self.config = config


class StubArtifact:
    def __init__(self, folder: Path):
        self.folder = folder

    def download(self, root=None) -> str:
        return str(self.folder)


class StubApi:
    """``wandb.Api()`` without a server: a sweep's config, an artifact, or an error for either."""

    def __init__(self, sweep_config=None, artifact_folder=None, error=None):
        self.sweep_config, self.artifact_folder, self.error, self.calls = sweep_config, artifact_folder, error, []

    def sweep(self, path):
        self.calls.append(("sweep", path))
        if self.error:
            raise self.error
        return StubSweep(self.sweep_config)

    def artifact(self, ref, type=None):  # noqa: A002 - wandb's own keyword
        self.calls.append(("artifact", ref, type))
        if self.error:
            raise self.error
        return StubArtifact(self.artifact_folder)


def test_agent_run_lands_in_the_local_sweeps_layout(tmp_path, monkeypatch):
    sweep = load_sweep(Path(__file__).resolve().parent.parent / "sweeps" / "init_depth.yaml")
    cell = {"model.activation": "prelu", "init.scheme": "he", "model.depth": 22, "seed": 1}
    local = cell_config(sweep, cell, tmp_path / sweep.name)
    # What `wandb agent` runs: `delving fit --config=... --model.activation=prelu ...` with the sweep in its env.
    params = tmp_path / "config-run1.yaml"
    params.write_text("wandb_version: 1\n\n" + "".join(
        f"{k}:\n  value: {v}\n" for k, v in {"config": "experiments/init_depth.yaml", **cell}.items()))
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(params))
    monkeypatch.setenv("WANDB_ENTITY", "me")
    monkeypatch.setenv("WANDB_PROJECT", "delving-init-depth")
    agent_cfg = load_config(sweep.fixed["config"], [f"{k}={v}" for k, v in cell.items()] + [f"out_dir={tmp_path}"])
    api = StubApi(sweep_config=sweep.raw)
    placed = agent_layout(agent_cfg, api=api)
    assert api.calls == [("sweep", "me/delving-init-depth/abc123")]
    assert run_dir(placed) == run_dir(local) == tmp_path / "init_depth" / "activation=prelu,scheme=he,depth=22,seed=1"
    assert placed.tracking.group == local.tracking.group == "init_depth"
    assert to_dict(placed) == to_dict(local)  # same config, hence the same name, tags and W&B config
    monkeypatch.delenv("WANDB_SWEEP_ID")
    assert agent_layout(agent_cfg, api=api) is agent_cfg  # a plain `delving fit` keeps its own layout


def test_agent_run_without_its_sweep_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("WANDB_SWEEP_ID", "gone")
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    with pytest.raises(DelvingError) as err:
        agent_layout(load_config(None, []), api=StubApi(error=CommError("sweep not found\nmore detail")))
    assert str(err.value) == ("cannot read W&B sweep delving/gone (WANDB_SWEEP_ID is set, so this run belongs to "
                              "it): CommError: sweep not found")


# ------------------------------------------------------------------------------------------- wandb: checkpoints


@pytest.mark.parametrize("ref", ["wandb:model-1:latest", "wandb:me/proj/model-1", "wandb:me/proj/a/b:latest"])
def test_malformed_artifact_reference_is_a_one_line_error(ref, capsys):
    assert main(["evaluate", "--ckpt", ref, "--protocol", "center", "--no-wandb"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "valid: wandb:ENTITY/PROJECT/ARTIFACT:ALIAS" in err and ref in err


def test_unknown_artifact_is_a_one_line_error(monkeypatch, capsys):
    import wandb

    error = CommError("artifact 'model-zz:latest' not found in 'me/proj'\ntraceback...")
    monkeypatch.setattr(wandb, "Api", lambda *a, **k: StubApi(error=error))
    assert main(["evaluate", "--ckpt", "wandb:me/proj/model-zz:latest", "--protocol", "center", "--no-wandb"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("delving: error: cannot fetch W&B artifact 'me/proj/model-zz:latest' (CommError: artifact")


def test_artifact_reference_downloads_and_finds_the_checkpoint(tmp_path):
    folder = tmp_path / "artifacts" / "model-1a:v0"
    folder.mkdir(parents=True)
    (folder / "model.ckpt").write_bytes(b"weights")
    api = StubApi(artifact_folder=folder)
    assert resolve_checkpoint("wandb:me/proj/model-1a:latest", api=api) == folder / "model.ckpt"
    assert api.calls == [("artifact", "me/proj/model-1a:latest", "model")]
    assert resolve_checkpoint(tmp_path / "x.ckpt") == tmp_path / "x.ckpt"  # a local path is left alone
    (folder / "model.ckpt").unlink()
    with pytest.raises(DelvingError, match="has no .ckpt file"):
        resolve_checkpoint("wandb:me/proj/model-1a:latest", api=api)
