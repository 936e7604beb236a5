"""Notebooks run top to bottom (on a tiny budget) so they cannot rot; a raising cell fails the test."""

from __future__ import annotations

import os

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from conftest import ROOT


def execute(name: str, tmp_path, **env: str) -> None:
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    os.environ.update({"DELVING_ROOT": str(ROOT), "DELVING_NOTEBOOK_FAST": "1",
                       "DELVING_NOTEBOOK_OUT": str(tmp_path / "runs"),
                       "DELVING_NOTEBOOK_FIGURES": str(tmp_path / "figures"), **env})
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                   ).execute()


@pytest.mark.slow
def test_slope_notebook_runs_the_controlled_experiment_and_writes_its_figures(tmp_path):
    execute("why_deeper_slopes_are_smaller.ipynb", tmp_path)
    figures = tmp_path / "figures"
    for png in ("slopes_by_weight_decay.png", "slopes_channels.png"):
        assert (figures / png).stat().st_size > 5000, png
    trend = pd.read_csv(figures / "slopes_trend.csv", index_col=0)
    assert sorted(trend.index) == [0.0, 0.0005, 0.005] and (trend.seeds == 3).all()
    assert trend.r_mean.between(-1, 1).all() and trend.r_std.notna().all()
    assert len(list((tmp_path / "runs" / "slopes_weight_decay").glob("*/slopes.csv"))) == 9


@pytest.mark.slow
def test_slopes_by_layer_notebook_sets_both_variants_beside_table_1(tmp_path):
    execute("slopes_by_layer.ipynb", tmp_path)
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
    execute("relu_vs_prelu.ipynb", tmp_path)
    assert (tmp_path / "figures" / "relu_vs_prelu.png").stat().st_size > 20000
    final = pd.read_csv(tmp_path / "figures" / "relu_vs_prelu.csv").set_index("activation")
    assert sorted(final.index) == ["prelu", "relu"] and (final.seeds == 3).all()
    assert final.final_val.between(0.0, 0.9).all() and (final.final_val_std > 0).all()  # seeds differ: a band
    assert len(list((tmp_path / "runs" / "init_depth").glob("*/result.json"))) == 6


@pytest.mark.slow
def test_init_depth_notebook_measures_the_signal_against_sec_2_2(tmp_path):
    execute("init_depth.ipynb", tmp_path)
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
