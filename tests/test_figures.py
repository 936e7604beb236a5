"""Figure conventions: one palette, integer epoch ticks, a labelled chance line, slope profiles on a scale that does
not turn noise into a profile, and PReLU's gain drawn only for the pairs the report's table counts."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from delving import plots
from delving.nn.probes import SlopeRecord
from delving.studies import report, slopes


def test_every_scheme_and_activation_has_its_own_colour_everywhere():
    schemes = list(plots.SCHEME_COLORS.values())
    assert len(set(schemes)) == len(schemes)  # variance_preserving and xavier no longer share blue
    assert plots.color("he") == "#d62728" and plots.color("xavier") == "#1f77b4"
    assert plots.color("channel-wise") == plots.color("prelu") != plots.color("relu")
    assert plots.color("something-new") == plots.color("something-new")  # stable for unknown names


def test_epoch_axes_have_integer_ticks_and_the_chance_line_a_label():
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [0.9, 0.5, 0.2])
    plots.integer_epochs(ax)
    plots.chance_line(ax, num_classes=10)
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
    assert ticks == [1, 2, 3]
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["chance (90% error, 10 classes)"] and ax.lines[-1].get_ydata()[0] == 0.9
    plt.close(fig)


def _saved_axes(monkeypatch):
    """Capture the figure a plot function saves, instead of closing it."""
    captured = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, dpi=120: captured.setdefault("fig", fig) and path)
    return captured


def test_slope_profile_does_not_zoom_into_noise(monkeypatch, tmp_path):
    captured = _saved_axes(monkeypatch)
    profile = [SlopeRecord(f"conv{i}", f"features.{i}", torch.tensor([0.25 + 0.003 * (-1) ** i, 0.251]))
               for i in range(1, 8)]
    plots.plot_slope_profile(profile, tmp_path / "run" / "slopes_by_layer.png")
    ax = captured["fig"].axes[0]
    low, high = ax.get_ylim()
    assert low <= 0.0 and high >= 0.5  # ±0.003 around 0.25 stays flat
    assert ax.get_title() and "std over the layer's channels" in " ".join(ax.get_legend_handles_labels()[1])


def test_per_condition_slope_profile_has_a_title_a_fixed_span_and_explained_bars(monkeypatch, tmp_path):
    captured = _saved_axes(monkeypatch)
    profile = pd.DataFrame({"condition": ["he"] * 3, "depth": [1, 2, 3], "layer": ["conv1", "conv2", "fc1"],
                            "slope": [0.251, 0.249, 0.250], "seed_std": [0.001, 0.002, 0.001], "seeds": [3] * 3})
    slopes.plot_profile(profile, tmp_path / "init_depth" / "report" / "slope_profile_22.png", "init")
    ax = captured["fig"].axes[0]
    low, high = ax.get_ylim()
    assert low <= 0.15 and high >= 0.35
    assert "init_depth" in ax.get_title() and "±1 std over seeds" in ax.get_title()


def test_prelu_gain_is_drawn_in_points_without_stalled_pairs(monkeypatch, tmp_path):
    captured = _saved_axes(monkeypatch)
    results = pd.DataFrame({"depth": [30] * 6, "init": ["he"] * 3 + ["xavier"] * 3, "seed": [0, 1, 2] * 2,
                            "activation": ["relu"] * 6, "final_val_err1": [0.05, 0.04, 0.06, 0.9, 0.9, 0.9]})
    prelu = results.assign(activation="prelu", final_val_err1=[0.03, 0.04, 0.05, 0.9, 0.2, 0.9])
    pairs = report.matched_gain(pd.concat([results, prelu]))
    report._plot_gain(pairs, tmp_path / "init_depth" / "report" / "prelu_gain.png", 0.035)
    ax = captured["fig"].axes[0]
    dots = np.concatenate([c.get_offsets() for c in ax.collections if hasattr(c, "get_sizes") and len(c.get_offsets())])
    # the three He pairs, in points (2, 0, 1); the Xavier pairs have a run at chance and are left out
    assert sorted(np.round(dots[:, 1], 6)) == [0.0, 1.0, 2.0] and set(dots[:, 0]) == {0.0}
    assert "3 stalled, left out" in ax.get_xticklabels()[1].get_text()
    assert "points" in ax.get_ylabel() and "init_depth" in ax.get_title()
