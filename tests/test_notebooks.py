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
