"""Why are deeper PReLU slopes smaller? Slope statistics over trained runs (the paper's Table 1 observation).

Reads the ``slopes.csv`` every PReLU run writes (``SlopeLogger``: one row per channel per epoch) and gives, at
the final epoch:

- ``layer_profile``: per condition and layer, the mean over seeds of the layer's channel-mean slope, its spread
  over seeds, and the mean spread over channels;
- ``depth_trend``: per run, the Pearson correlation of channel-mean slope with conv-layer depth and the fitted
  change of slope per layer; per condition, their mean ± std over seeds (a negative r is Table 1's trend);
- figures: the profile by layer with error bars per condition, and the channel-wise distribution per layer.

A "condition" is any config key that differs between runs (e.g. ``optim.weight_decay`` for the controlled
experiment of ``sweeps/slopes_weight_decay.yaml``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from delving.errors import DelvingError


def load_slopes(folder: str | Path, condition: str) -> pd.DataFrame:
    """Final-epoch channel slopes of every run under ``folder`` with its seed and ``condition`` value."""
    frames = []
    for path in sorted(Path(folder).glob("*/slopes.csv")):
        cfg = OmegaConf.load(path.parent / "config.yaml")
        slopes = pd.read_csv(path)
        final = slopes[slopes.epoch == slopes.epoch.max()].copy()
        final["run"], final["seed"] = path.parent.name, int(cfg.seed)
        final["condition"] = OmegaConf.select(cfg, condition)
        frames.append(final)
    if not frames:
        raise DelvingError(f"no PReLU runs (*/slopes.csv) under {folder}")
    return pd.concat(frames, ignore_index=True)


def layer_means(slopes: pd.DataFrame) -> pd.DataFrame:
    """One row per run and layer: the channel mean and channel std of its slopes."""
    keys = ["condition", "seed", "run", "depth", "layer"]
    return slopes.groupby(keys, sort=False).slope.agg(mean="mean", channel_std="std").reset_index()


def layer_profile(slopes: pd.DataFrame) -> pd.DataFrame:
    """Per condition and layer: mean over seeds of the channel-mean slope, its std over seeds, channel spread."""
    per_run = layer_means(slopes)
    return (per_run.groupby(["condition", "depth", "layer"], sort=True)
            .agg(slope=("mean", "mean"), seed_std=("mean", "std"), channel_std=("channel_std", "mean"),
                 seeds=("seed", "nunique")).reset_index())


def depth_trend(slopes: pd.DataFrame) -> pd.DataFrame:
    """Per run: correlation of channel-mean slope with depth over the conv layers, and the fitted change per layer."""
    rows = []
    for (condition, seed), run in layer_means(slopes).groupby(["condition", "seed"]):
        convs = run[run.layer.str.startswith("conv")]
        depth, mean = convs.depth.to_numpy(float), convs["mean"].to_numpy(float)
        rows.append({"condition": condition, "seed": seed, "r": float(np.corrcoef(depth, mean)[0, 1]),
                     "per_layer": float(np.polyfit(depth, mean, 1)[0]),
                     "first_conv": mean[0], "last_conv": mean[-1]})
    return pd.DataFrame(rows)


def trend_summary(trend: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of each run statistic, per condition."""
    return trend.groupby("condition").agg(seeds=("seed", "count"), r_mean=("r", "mean"), r_std=("r", "std"),
                                          per_layer_mean=("per_layer", "mean"), per_layer_std=("per_layer", "std"),
                                          first_conv=("first_conv", "mean"), last_conv=("last_conv", "mean"))


def plot_profile(profile: pd.DataFrame, path: Path, condition_name: str) -> Path:
    """Channel-mean slope by layer, one line per condition, error bars = std over seeds."""
    from delving.plots import plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    for condition, rows in profile.groupby("condition"):
        ax.errorbar(rows.depth, rows.slope, yerr=rows.seed_std.fillna(0), marker="o", ms=3, capsize=2,
                    label=f"{condition_name}={condition}")
    layers = profile.drop_duplicates("depth").sort_values("depth")
    ax.set_xticks(layers.depth, layers.layer, rotation=60, fontsize=7)
    ax.set_ylabel("learned PReLU slope (channel mean)")
    ax.axhline(0.25, color="grey", lw=0.7, ls=":")  # the initial slope
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_channels(slopes: pd.DataFrame, path: Path) -> Path:
    """The channel-wise slope distribution of each layer, pooled over seeds (one box per layer)."""
    from delving.plots import plt

    layers = slopes.drop_duplicates("depth").sort_values("depth")
    data = [slopes[slopes.depth == d].slope.to_numpy() for d in layers.depth]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(layers) + 1), layers.layer, rotation=60, fontsize=7)
    ax.set_ylabel("channel slopes (all seeds)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
