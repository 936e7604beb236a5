"""Slope statistics over trained runs (delving/studies/slopes.py), on run folders with known slopes."""

from __future__ import annotations

import pandas as pd
import pytest
from omegaconf import OmegaConf

from delving.studies import slopes
from delving.errors import DelvingError

LAYERS = ["conv1", "conv21", "conv22", "conv3", "fc1"]


def fake_run(folder, name, seed, wd, per_layer):
    """A run folder with config.yaml and slopes.csv: conv slope 0.6 + per_layer·(depth-1) ± 0.1 over 2 channels;
    an earlier epoch with other values that must be ignored."""
    run = folder / name
    run.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"seed": seed, "optim": {"weight_decay": wd}}), run / "config.yaml")
    rows = []
    for depth, layer in enumerate(LAYERS, start=1):
        centre = 0.6 + per_layer * (depth - 1) + 0.01 * seed
        for channel, offset in enumerate((-0.1, 0.1)):
            rows += [{"epoch": 0, "depth": depth, "layer": layer, "channel": channel, "slope": 0.25},
                     {"epoch": 3, "depth": depth, "layer": layer, "channel": channel, "slope": centre + offset}]
    pd.DataFrame(rows).to_csv(run / "slopes.csv", index=False)


@pytest.fixture
def runs(tmp_path):
    for seed in range(3):
        fake_run(tmp_path, f"wd0-s{seed}", seed, 0.0, -0.05)
        fake_run(tmp_path, f"wd5-s{seed}", seed, 0.0005, +0.02)
    return tmp_path


def test_profile_and_trend_recover_the_known_slopes(runs):
    data = slopes.load_slopes(runs, "optim.weight_decay")
    assert set(data.epoch) == {3} and len(data) == 2 * 3 * len(LAYERS) * 2
    profile = slopes.layer_profile(data).set_index(["condition", "layer"])
    assert profile.loc[(0.0, "conv1"), "slope"] == pytest.approx(0.61)  # mean over seeds of 0.6 + 0.01·seed
    assert profile.loc[(0.0, "conv1"), "seed_std"] == pytest.approx(0.01)
    assert profile.loc[(0.0, "conv3"), "channel_std"] == pytest.approx(0.1 * 2 ** 0.5)
    summary = slopes.trend_summary(slopes.depth_trend(data))
    assert summary.loc[0.0, "r_mean"] == pytest.approx(-1.0) and summary.loc[0.0005, "r_mean"] == pytest.approx(1.0)
    assert summary.loc[0.0, "per_layer_mean"] == pytest.approx(-0.05)  # fc layers are left out of the trend
    assert (summary.seeds == 3).all()


def test_figures_are_written(runs, tmp_path):
    data = slopes.load_slopes(runs, "optim.weight_decay")
    assert slopes.plot_profile(slopes.layer_profile(data), tmp_path / "p.png", "wd").stat().st_size > 5000
    assert slopes.plot_channels(data, tmp_path / "c.png").stat().st_size > 5000


def test_a_folder_without_prelu_runs_is_a_one_line_error(tmp_path):
    with pytest.raises(DelvingError, match="no PReLU runs"):
        slopes.load_slopes(tmp_path, "optim.weight_decay")
