"""Notebooks run top to bottom (on a tiny budget) so they cannot rot; a raising cell fails the test. Their committed
outputs exist (a reader on GitHub sees the figures) and hold no absolute paths or progress-bar debris."""

from __future__ import annotations

import json
import os
import re

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from conftest import ROOT
from delving.errors import DelvingError
from delving.studies import notebook as nb_helpers

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(home|root|tmp|work|Users|usr|opt|var|private)/|[A-Z]:\\\\")


def execute(name: str, tmp_path, **parameters) -> None:
    """Run a notebook as papermill does: the given parameters in a cell right after the one tagged `parameters`
    (FAST runs, their runs and figures under ``tmp_path``); nothing goes through the environment."""
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    values = {"SOURCE": str(tmp_path / "runs" / parameters.pop("folder")), "OUT": str(tmp_path / "figures"),
              "TRAIN_IF_MISSING": True, "FAST": True, **parameters}
    # papermill replaces a committed run's injected cell rather than stacking another before it
    notebook.cells = [c for c in notebook.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    index = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items())))
    environment = dict(os.environ)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                   ).execute()
    assert dict(os.environ) == environment  # later tests see the environment they would have seen


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_has_outputs_and_no_absolute_paths(path):
    notebook = nbformat.read(path, as_version=4)
    params = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "SOURCE =" in params[0].source and "OUT =" in params[0].source
    trains = any("ensure_runs" in c.source for c in notebook.cells)  # a notebook that can train what it reads
    assert trains == ("TRAIN_IF_MISSING =" in params[0].source), f"{path.name}: TRAIN_IF_MISSING"
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{path.name}: a code cell was not executed"
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name}: no figure in the saved outputs"
    text = json.dumps([c.outputs for c in code])
    assert not ABSOLUTE_PATH.search(text), f"{path.name}: {ABSOLUTE_PATH.search(text).group(0)!r} in the outputs"
    assert "\\r" not in text and "it/s" not in text and "run/s" not in text, f"{path.name}: progress bar output"
    assert not any(o.output_type == "error" for c in code for o in c.outputs), f"{path.name}: a cell raised"


def test_the_absolute_path_check_catches_paths():
    for text in ('"/work/wt/runs/x"', "'/home/me/runs'", "/tmp/pytest-1/figures", '"C:\\\\Users\\\\me"'):
        assert ABSOLUTE_PATH.search(text), text
    assert not ABSOLUTE_PATH.search("runs/init_depth/notebook/relu_vs_prelu.png and 1/sqrt(2)")


def test_a_source_without_runs_is_an_error_that_prints_the_command(tmp_path):
    sweep = nb_helpers.repo_sweep("init_depth")
    with pytest.raises(DelvingError, match=r"(?s)holds no finished runs.*delving sweep sweeps/init_depth.yaml --out"):
        nb_helpers.ensure_runs(tmp_path / "init_depth", sweep, train_if_missing=False)
    assert not any(tmp_path.iterdir())  # nothing trained


def test_notebook_paths_are_found_from_the_package_and_figures_stay_out_of_the_repo(tmp_path):
    assert (nb_helpers.ROOT / "sweeps" / "init_depth.yaml").is_file()
    assert nb_helpers.resolve("runs/init_depth") == nb_helpers.ROOT / "runs" / "init_depth"
    assert nb_helpers.figures_dir(tmp_path / "x") == tmp_path / "x" / "notebook"
    assert nb_helpers.figures_dir("runs/x", out=tmp_path / "f") == tmp_path / "f"
    assert nb_helpers.label(nb_helpers.ROOT / "runs" / "x") == "runs/x"


@pytest.mark.slow
def test_slope_notebook_runs_the_controlled_experiment_and_writes_its_figures(tmp_path):
    execute("why_deeper_slopes_are_smaller.ipynb", tmp_path, folder="slopes_weight_decay")
    figures = tmp_path / "figures"
    for png in ("slopes_by_weight_decay.png", "slopes_channels.png"):
        assert (figures / png).stat().st_size > 5000, png
    trend = pd.read_csv(figures / "slopes_trend.csv", index_col=0)
    assert sorted(trend.index) == [0.0, 0.0005, 0.005] and (trend.seeds == 3).all()
    assert trend.r_mean.between(-1, 1).all() and trend.r_std.notna().all()
    assert len(list((tmp_path / "runs" / "slopes_weight_decay").glob("*/slopes.csv"))) == 9


@pytest.mark.slow
def test_slopes_by_layer_notebook_sets_both_variants_beside_table_1(tmp_path):
    execute("slopes_by_layer.ipynb", tmp_path, folder="slopes_by_layer")
    figures = tmp_path / "figures"
    for png in ("slopes_vs_table1.png", "slopes_heatmap.png"):
        assert (figures / png).stat().st_size > 10000, png
    profile = pd.read_csv(figures / "slopes_by_layer.csv")
    assert sorted(profile.variant.unique()) == ["channel-shared", "channel-wise"]
    for variant, rows in profile.groupby("variant"):  # the 14-layer net has Table 1's 13 PReLU layers, its names
        assert rows.layer.tolist() == ["conv1", "conv21", "conv22", "conv23", "conv24", *[f"conv3{i}" for i in
                                       range(1, 7)], "fc1", "fc2"], variant
    wise = profile[profile.variant == "channel-wise"].set_index("layer")
    assert wise.loc["conv1", "table1"] == 0.596 and wise.loc["fc2", "table1"] == 0.075
    assert (wise.channel_std > 0).all() and (profile[profile.variant == "channel-shared"].channel_std == 0).all()
    assert profile.slope.between(0.0, 0.5).all() and not (profile.slope == 0.25).all()  # trained, from 0.25
    assert len(list((tmp_path / "runs" / "slopes_by_layer").glob("*/checkpoints/last.ckpt"))) == 2


@pytest.mark.slow
def test_relu_vs_prelu_notebook_plots_both_activations_over_seeds(tmp_path):
    execute("relu_vs_prelu.ipynb", tmp_path, folder="init_depth")
    assert (tmp_path / "figures" / "relu_vs_prelu.png").stat().st_size > 20000
    final = pd.read_csv(tmp_path / "figures" / "relu_vs_prelu.csv").set_index("activation")
    assert sorted(final.index) == ["prelu", "relu"] and (final.seeds == 3).all()
    assert final.final_val.between(0.0, 0.9).all() and (final.final_val_std > 0).all()  # seeds differ: a band
    assert len(list((tmp_path / "runs" / "init_depth").glob("*/result.json"))) == 6


@pytest.mark.slow
def test_init_depth_notebook_measures_the_signal_against_sec_2_2(tmp_path):
    execute("init_depth.ipynb", tmp_path, folder="init_depth")
    figures = tmp_path / "figures"
    for png in ("init_depth.png", "variance_profile.png"):
        assert (figures / png).stat().st_size > 20000, png
    cells = pd.read_csv(figures / "init_depth.csv").set_index(["depth", "init"])
    assert len(cells) == 4 and (cells.seeds == 2).all()
    assert cells.loc[(30, "xavier"), "stalled"] == 2  # Fig. 3: the 30-layer ReLU net with Xavier stays at chance
    assert cells.loc[(14, "he"), "final_val"] < cells.loc[(14, "xavier"), "final_val"] - 0.2  # He trains sooner
    ratios = pd.read_csv(figures / "variance_at_init.csv").set_index("init")
    assert (ratios.conv_layers == 27).all()  # the 30-layer net: 27 convs + 3 fc
    # Sec. 2.2: with Xavier the forward std shrinks by 1/sqrt(2) per ReLU layer; with He it stays flat
    assert ratios.loc["xavier", "per_layer_factor"] == pytest.approx(2 ** -0.5, rel=0.05)
    assert ratios.loc["he", "per_layer_factor"] == pytest.approx(1.0, rel=0.05)
