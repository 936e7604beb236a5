"""The depth-limit sweep's plumbing: its grid over recipe YAMLs, the summary's correlation column and checks, and
the notebook that sets measured correlation beside the theory."""

import json
import math

import pandas as pd
import pytest
import yaml

from conftest import ROOT
from delving.experiment.sweeps.grid import configs, load_sweep
from delving.experiment.rundir.run_dir import RunDir
from delving.studies.summary import depth_limit_checks, finished_runs, table


def test_the_sweep_reaches_every_recipe_through_its_config():
    sweep = load_sweep(ROOT / "sweeps" / "init_depth_limit.yaml")
    cells = configs(sweep, ROOT / "runs" / sweep.name)
    assert len(cells) == 24
    recipes = {(c.model.activation, c.init.scheme, c.init.weights) for c in cells}
    assert recipes == {("relu", "he", "gaussian"), ("prelu", "he", "gaussian"), ("prelu", "tat", "gaussian"),
                       ("prelu", "tat", "delta_orthogonal")}
    assert {c.model.depth for c in cells} == {30, 100, 200} and {c.seed for c in cells} == {0, 1}
    names = {c.name for c in cells}
    assert "config=prelu_tat_delta,depth=100,seed=1" in names  # the file's stem, no slashes in a folder name
    assert all(c.model.kwargs["widths"] == [16, 32, 32] for c in cells)
    # TAT's eta per recipe: 0.8 with Gaussian weights, TAT's default 0.9 with delta-orthogonal ones
    assert {(c.init.weights, c.init.tat_eta) for c in cells if c.init.scheme == "tat"} == {
        ("gaussian", 0.8), ("delta_orthogonal", 0.9)}


def _fake_run(folder, name, init, weights, depth, seed, err, last_conv_corr):
    run = folder / name
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({
        "status": "finished", "name": name, "activation": "prelu" if init == "tat" else "relu", "init": init,
        "depth": depth, "seed": seed, "final_val_err1": err, "final_train_err1": err, "best_val_err1": err,
        "history": [{"val/err1": err, "train/err1": err}]}))
    (run / "config.yaml").write_text(yaml.safe_dump({
        "name": name, "seed": seed, "model": {"activation": "prelu" if init == "tat" else "relu", "depth": depth},
        "init": {"scheme": init, "weights": weights}}))
    metrics = RunDir(run).metrics_path
    metrics.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"epoch": [0], "step": [1], "val/err1": [err], "train/err1": [err]}).to_csv(metrics, index=False)
    pd.DataFrame({"stage": ["init", "init", "init", "epoch1"], "index": [1, 2, 3, 2],
                  "layer": ["conv1", "conv21", "fc1", "conv21"], "measured": [0.0, last_conv_corr, 0.5, 0.1],
                  "theory": [0.0, 0.9, 0.9, 0.9], "anchored": [0, 0, 1, 0]}).to_csv(run / "correlation.csv",
                                                                                      index=False)


def test_summary_reads_the_last_convs_correlation_and_tells_delta_orthogonal_apart(tmp_path):
    _fake_run(tmp_path, "a", "tat", "delta_orthogonal", 100, 0, 0.05, 0.8)
    _fake_run(tmp_path, "b", "tat", "delta_orthogonal", 100, 1, 0.07, 0.9)
    _fake_run(tmp_path, "c", "tat", "gaussian", 100, 0, 0.04, 0.7)
    _fake_run(tmp_path, "d", "he", "gaussian", 100, 0, 0.90, 0.99)
    results = finished_runs(tmp_path)
    summary = table(results).set_index("init")
    assert summary.loc["tat+delta_orthogonal", "corr_init"] == pytest.approx(0.85)  # mean over seeds, last conv
    assert summary.loc["tat", "corr_init"] == pytest.approx(0.7)
    checks = dict(depth_limit_checks(results))
    assert checks["100-layer prelu + tat+delta_orthogonal: final val error <= 6% on every seed"] is False  # 0.07
    assert checks["100-layer prelu + tat: final val error <= 6% on every seed"] is True
    assert checks["100-layer relu + he: stays >= 80% on every seed"] is True
    (tmp_path / "d" / "correlation.csv").unlink()  # a run from before the correlation log: no value, no error
    assert math.isnan(finished_runs(tmp_path).set_index("run").loc["d", "corr_init"])


@pytest.mark.slow
def test_deep_correlation_notebook_runs_and_writes_its_figure(tmp_path):
    from test_notebooks import execute

    execute("deep_correlation.ipynb", tmp_path, folder="init_depth_limit", TRAIN_IF_MISSING=False)
    assert (tmp_path / "figures" / "deep_correlation.png").stat().st_size > 20000
