"""One loader of runs (delving/studies/runs.py): a real tiny run read from its folder, and the same run served by a fake
W&B Api (the rows Lightning logged, as W&B keeps them), must give the same tables."""

from __future__ import annotations

import json
import math
import os
import shutil
import time

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import TINY
from delving.studies import slopes
from delving.experiment.training.config import load_config
from delving.errors import DelvingError
from delving.studies.runs import SLOPE_COLUMNS, TABLE_COLUMNS, VARIANCE_COLUMNS, load_runs, network_order
from delving.experiment.training.train import fit

EPOCHS = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 2-epoch PReLU run (depth 9, tiny widths) in its own folder, trained once for the module."""
    out = tmp_path_factory.mktemp("runs")
    overrides = [o for o in TINY if not o.startswith("trainer.max_epochs")]
    cfg = load_config(None, [*overrides, f"trainer.max_epochs={EPOCHS}", "trainer.limit_train_batches=2",
                             "model.activation=prelu", "tracking.group=tiny", f"out_dir={out}", "name=prelu-s0"])
    fit(cfg, progress=False)
    return out / "prelu-s0"


class FakeRun:
    """What ``wandb.Api().runs(...)`` yields for a run that logged like ``delving fit`` does, built from a local run
    folder: config (nested, plus provenance), summary (last value of every key), history rows in logged order."""

    def __init__(self, folder, state="finished", summary=None):
        self.name = folder.name
        self.config = {**OmegaConf.to_container(OmegaConf.load(folder / "config.yaml")),
                       "provenance": json.loads((folder / "provenance.json").read_text())}
        self.group, self.state = self.config["tracking"]["group"], state
        self._rows = self._history(folder)
        self.summary = {k: v for row in self._rows for k, v in row.items()} | (summary or {})

    @staticmethod
    def _history(folder):
        """metrics.csv's rows (what Lightning sent to every logger) with W&B's own keys, plus the rows delving's
        callbacks log to W&B directly: a variance chart at the start, a slope histogram per epoch, and the
        slope-by-layer chart at the end (these must be ignored or read as W&B shows them)."""
        logged = pd.read_csv(folder / "csv" / "metrics.csv")
        rows = [{"variance/init_table": {"_type": "table-file", "path": "media/table.json"}}]
        for _, row in logged.iterrows():
            record = {k: v for k, v in row.items() if not pd.isna(v)}
            record["trainer/global_step"] = record.pop("step")
            rows.append(record)
            if any(k.startswith("prelu/") for k in record):  # SlopeLogger logs the histograms after prelu/*
                rows.append({"prelu_hist/conv1": {"_type": "histogram", "values": [1], "bins": [0.2, 0.3]},
                             "epoch": record["epoch"]})
        rows.append({"prelu/slope_by_layer_table": {"_type": "table-file", "path": "media/t.json"}})
        return [{**row, "_step": step, "_runtime": 0.1 * step} for step, row in enumerate(rows)]

    def scan_history(self):
        return iter(self._rows)


class FakeApi:
    default_entity = "me"

    def __init__(self, *runs):
        self._runs, self.calls = list(runs), []

    def runs(self, path, filters=None):
        self.calls.append((path, filters))
        return self._runs


def test_a_local_run_gives_its_result_history_slopes_and_variance(run):
    runs = load_runs(run)
    result = json.loads((run / "result.json").read_text())
    assert list(runs.table.columns) == TABLE_COLUMNS and len(runs.table) == 1
    row = runs.table.iloc[0]
    assert (row.run, row.activation, row.init, row.depth, row.seed, row.status, row.group, row.path) == (
        "prelu-s0", "prelu", "he", 9, 0, "finished", "tiny", str(run))
    assert row.epochs == EPOCHS == result["epochs"]
    for key in ("final_val_err1", "best_val_err1", "final_train_err1", "final_val_err5"):
        assert row[key] == pytest.approx(result[key]), key
    history = runs.history
    assert list(history.epoch) == list(range(EPOCHS))
    assert list(history["val/err1"]) == pytest.approx([h["val/err1"] for h in result["history"]])
    assert list(history["train/loss"]) == pytest.approx([h["train/loss"] for h in result["history"]])
    assert list(history["lr-SGD/decay"]) == pytest.approx([h["lr"] for h in result["history"]])
    logged = pd.read_csv(run / "slopes.csv")
    assert runs.slopes.drop(columns="run").equals(logged[SLOPE_COLUMNS[1:]])
    assert list(runs.variance.columns) == VARIANCE_COLUMNS and set(runs.variance.stage) == {"init", "epoch1"}
    assert runs.config("prelu-s0", "optim.weight_decay") == 5e-4 and runs.config("prelu-s0", "no.such") is None


def test_a_wandb_project_gives_the_same_tables_as_the_folders(run):
    api = FakeApi(FakeRun(run))
    online, local = load_runs("wandb:delving-tiny", api=api, filters={"group": "tiny"}), load_runs(run)
    assert api.calls == [("me/delving-tiny", {"group": "tiny"})]
    assert online.table.drop(columns="path").equals(local.table.drop(columns="path"))
    assert online.table.path.isna().all()
    pd.testing.assert_frame_equal(online.history, local.history)
    # W&B holds each layer's channel mean (prelu/<layer>), in network order
    means = local.slopes.groupby(["run", "epoch", "depth", "layer"], as_index=False).slope.mean()
    assert list(online.slopes.columns) == SLOPE_COLUMNS and online.slopes.channel.isna().all()
    assert online.slopes[["epoch", "depth", "layer"]].equals(means[["epoch", "depth", "layer"]])
    assert np.allclose(online.slopes.slope, means.slope, atol=1e-5)  # slopes.csv keeps 6 significant digits
    assert online.variance.empty and list(online.variance.columns) == VARIANCE_COLUMNS
    assert load_runs("wandb:team/p", api=api).table.run.tolist() == ["prelu-s0"] and api.calls[-1][0] == "team/p"


def test_slopes_come_in_network_order_and_load_slopes_reads_through_the_loader(run):
    runs = load_runs("wandb:p", api=FakeApi(FakeRun(run)))
    final = runs.slopes[runs.slopes.epoch == EPOCHS - 1]
    assert final.layer.tolist() == ["conv1", "conv21", "conv22", "conv23", "conv24", "conv3", "fc1", "fc2"]
    assert slopes.load_slopes(run.parent, "optim.weight_decay").condition.eq(5e-4).all()


def test_unfinished_and_diverged_runs_are_kept_with_their_status(run, tmp_path):
    copy = tmp_path / "prelu-s0"
    shutil.copytree(run, copy)
    (copy / "result.json").unlink()
    assert load_runs(copy).table.status.tolist() == ["running"]  # its logs were just written
    hour_ago = time.time() - 3600
    for path in copy.rglob("*"):
        os.utime(path, (hour_ago, hour_ago))
    table = load_runs(copy).table
    assert table.status.tolist() == ["incomplete"] and table.epochs.tolist() == [EPOCHS]  # its epochs still count
    api = FakeApi(FakeRun(run, state="crashed"), FakeRun(run, summary={"train/diverged": 1.0}),
                  FakeRun(run, state="running"))
    assert load_runs("wandb:p", api=api).table.status.tolist() == ["incomplete", "diverged", "running"]


def test_a_sweep_folder_and_a_list_of_folders(run, tmp_path):
    for name, shift in (("b", 0.0), ("c", 0.1)):
        shutil.copytree(run, tmp_path / "sweep" / name)
        metrics = pd.read_csv(run / "csv" / "metrics.csv")
        metrics["val/err1"] += shift
        metrics.to_csv(tmp_path / "sweep" / name / "csv" / "metrics.csv", index=False)
    runs = load_runs(tmp_path / "sweep")
    assert runs.table.run.tolist() == ["b", "c"]
    assert load_runs([tmp_path / "sweep" / "c", run]).table.run.tolist() == ["c", "prelu-s0"]
    only_c = runs.select(run="c", activation=["prelu", "relu"])
    assert only_c.table.run.tolist() == ["c"] and set(only_c.history.run) == set(only_c.slopes.run) == {"c"}
    assert list(only_c.configs) == ["c"] and runs.select(activation="relu").table.empty
    curves = runs.curves("val/err1", by=["activation", "depth"])
    base = runs.history[runs.history.run == "b"]["val/err1"].to_numpy()
    assert curves.epoch.tolist() == list(range(EPOCHS)) and (curves["count"] == 2).all()
    assert np.allclose(curves["mean"], base + 0.05) and np.allclose(curves["max"] - curves["min"], 0.1)


def test_bad_sources_are_one_line_errors(tmp_path):
    with pytest.raises(DelvingError, match="runs folder not found: .*nowhere"):
        load_runs(tmp_path / "nowhere")
    with pytest.raises(DelvingError, match="no runs under"):
        load_runs(tmp_path)
    with pytest.raises(DelvingError, match="no runs in W&B project me/empty matching"):
        load_runs("wandb:empty", api=FakeApi(), filters={"state": "finished"})
    with pytest.raises(DelvingError, match="filters apply to a W&B source"):
        load_runs(tmp_path, filters={"group": "x"})


DAMAGE = {
    "config.yaml": lambda folder: (folder / "config.yaml").write_bytes(bytes(range(256)) * 4),  # binary
    "result.json": lambda folder: (folder / "result.json").write_text('{"status": "fini'),  # cut short
    "metrics.csv": lambda folder: (folder / "csv" / "metrics.csv").write_text('a,b\n1,2,3,4\n"x\n'),  # broken
}


def test_damaged_run_folders_are_named_and_left_out(run, tmp_path, capsys):
    from delving.studies.report import write_report
    from delving.studies.summary import summarize

    sweep = tmp_path / "sweep"
    shutil.copytree(run, sweep / "good")
    for name, damage in DAMAGE.items():
        shutil.copytree(run, sweep / f"bad-{name}")
        damage(sweep / f"bad-{name}")
    assert load_runs(sweep).table.run.tolist() == ["good"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("delving: skipped run bad-") for line in err)
    for name in DAMAGE:
        assert any(f"bad-{name}/{name}" in line or f"bad-{name}/csv/{name}" in line for line in err), (name, err)
    assert "| 9 | prelu | he | 1 |" in summarize(sweep)
    assert write_report(sweep).is_file()


def test_nothing_readable_left_is_one_line(run, tmp_path):
    for name, damage in DAMAGE.items():
        shutil.copytree(run, tmp_path / name)
        damage(tmp_path / name)
    with pytest.raises(DelvingError, match=r"no readable runs under .* \(first problem: unreadable "):
        load_runs(tmp_path)


def test_layers_sort_in_network_order():
    for names in (["conv1", "conv21", "conv24", "conv3", "fc1", "fc2"],  # depth 9: one stage-3 conv
                  ["conv1", "conv2_1", "conv2_4", "conv3_2", "conv3_10", "conv3_14", "fc1", "fc2"],
                  ["conv1", "conv26", "conv31", "conv46", "fc1", "fc2"]):  # model C's names
        assert sorted(reversed(names), key=network_order) == names
        assert sorted(sorted(names), key=network_order) == names


def test_checkpoint_slopes_are_the_logged_slopes_of_its_epoch(run):
    from_ckpt = slopes.checkpoint_slopes(run / "checkpoints" / "last.ckpt")
    logged = pd.read_csv(run / "slopes.csv")
    assert from_ckpt.epoch.nunique() == 1 and from_ckpt.epoch.iloc[0] in set(logged.epoch)
    same_epoch = logged[logged.epoch == from_ckpt.epoch.iloc[0]].reset_index(drop=True)
    assert from_ckpt[["epoch", "depth", "layer", "channel"]].equals(same_epoch[["epoch", "depth", "layer", "channel"]])
    assert np.allclose(from_ckpt.slope, same_epoch.slope, rtol=1e-5)  # slopes.csv keeps 6 significant digits
    assert not np.allclose(from_ckpt.slope, 0.25)  # trained: not the initial slopes
    with pytest.raises(DelvingError, match="checkpoint not found"):
        slopes.checkpoint_slopes(run / "missing.ckpt")


def test_table1_slopes_and_the_figures(run, tmp_path):
    table1 = slopes.TABLE1_SLOPES.set_index("layer")
    assert len(table1) == 13 and table1.loc["conv1"].tolist()[:2] == [0.681, 0.596]
    assert table1.relative_depth.iloc[0] == 0 and table1.relative_depth.iloc[-1] == 1
    layers = slopes.by_layer(load_runs(run).slopes)
    assert layers.relative_depth.tolist() == pytest.approx([i / 7 for i in range(8)])
    assert (layers.channel_std > 0).all()  # channel-wise PReLU: the channels differ after training
    matrix = slopes.layer_by_epoch(load_runs(run).slopes)
    assert matrix.shape == (8, EPOCHS) and matrix.index[0] == "conv1" and not math.isnan(matrix.iloc[-1, -1])
    assert slopes.plot_vs_table1(layers, tmp_path / "t.png").stat().st_size > 5000
    assert slopes.plot_heatmap({"prelu": matrix}, tmp_path / "h.png").stat().st_size > 5000
