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

Runs are read through ``delving.studies.runs.load_runs`` (run folders or a W&B project). Also here: ``TABLE1_SLOPES``
(the paper's values by relative depth), ``checkpoint_slopes`` (the slopes stored in a ``last.ckpt``), and the
figures of ``notebooks/slopes_by_layer.ipynb``: final slope by relative depth beside Table 1, and a layer × epoch
heat map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from delving import paper_values
from delving.errors import DelvingError
from delving.experiment.rundir.run_dir import RunDir
from delving.studies.runs import load_runs

# Table 1's learned slopes (delving.paper_values, the one place the paper's numbers live) as a frame, in network
# order, with ``relative_depth`` (0 = first, 1 = last PReLU) to line them up with a net of another depth or other
# layer names.
TABLE1_SLOPES = pd.DataFrame([(layer, shared, wise) for layer, (shared, wise) in paper_values.TABLE1_SLOPES.items()],
                             columns=["layer", "channel_shared", "channel_wise"])
TABLE1_SLOPES["relative_depth"] = np.linspace(0.0, 1.0, len(TABLE1_SLOPES))


def load_slopes(source, condition: str) -> pd.DataFrame:
    """Final-epoch channel slopes of every run of ``source`` (anything :func:`delving.studies.runs.load_runs` reads) with
    its seed and ``condition`` value."""
    try:
        runs = load_runs(source)
    except DelvingError:
        runs = None
    if runs is None or runs.slopes.empty:
        raise DelvingError(f"no PReLU runs (*/{RunDir.SLOPES}) under {source}")
    final = final_epoch(runs.slopes).copy()
    final["seed"] = final.run.map(runs.table.set_index("run").seed).astype(int)
    final["condition"] = final.run.map(lambda run: runs.config(run, condition))
    return final.reset_index(drop=True)


def final_epoch(slopes: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last logged epoch."""
    return slopes[slopes.epoch == slopes.groupby("run").epoch.transform("max")]


def checkpoint_slopes(path: str | Path) -> pd.DataFrame:
    """The PReLU slopes stored in a Lightning checkpoint (e.g. ``checkpoints/last.ckpt``), in ``slopes.csv``'s
    columns: epoch (the checkpoint's), depth, layer, channel, slope, in network order.

    Read from the state dict (every delving model names its activation module ``act``; a PReLU's is the only one
    with a weight) rather than by rebuilding the model, whose input channels and classes come from the data."""
    from delving.nn.probes import layer_label

    path = Path(path)
    if not path.is_file():
        raise DelvingError(f"checkpoint not found: {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state, epoch = checkpoint["state_dict"], checkpoint.get("epoch")
    prelus = [key for key in state if key.endswith(".act.weight")]
    rows = [(epoch, depth, layer_label(key.removeprefix("model.").removesuffix(".weight")), channel, float(value))
            for depth, key in enumerate(prelus, start=1) for channel, value in enumerate(state[key].flatten().tolist())]
    return pd.DataFrame(rows, columns=list(RunDir.SLOPE_COLUMNS))


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


def plot_profile(profile: pd.DataFrame, path: Path, condition_name: str, title: str | None = None) -> Path:
    """Channel-mean slope by layer at the last epoch, one line per condition; error bars = ±1 std over seeds.

    The y-axis spans at least 0.15-0.35 around the initial 0.25, so that slopes which moved by a few thousandths
    are drawn flat rather than zoomed into a profile. The default title names the run set: the folder that holds
    the figure's folder (``delving report`` writes to ``RUNS/report/``, the notebooks to ``RUNS/notebook/``).
    """
    from delving.plots import color, plt, save_figure

    fig, ax = plt.subplots(figsize=(8, 4))
    for condition, rows in profile.groupby("condition"):
        seeds = int(rows.seeds.max()) if "seeds" in rows else None
        ax.errorbar(rows.depth, rows.slope, yerr=rows.seed_std.fillna(0), marker="o", ms=3, capsize=2,
                    color=color(condition), label=f"{condition_name}={condition}" + (f" ({seeds} seeds)" if seeds else ""))
    layers = profile.drop_duplicates("depth").sort_values("depth")
    ax.set_xticks(layers.depth, layers.layer, rotation=60, fontsize=7)
    ax.set_ylabel("learned PReLU slope (channel mean)")
    ax.axhline(paper_values.INITIAL_SLOPE, color="grey", lw=0.7, ls=":", label="initial slope 0.25")
    bars = profile.seed_std.fillna(0)
    low = min(0.15, float((profile.slope - bars).min()) - 0.01)
    high = max(0.35, float((profile.slope + bars).max()) + 0.01)
    ax.set_ylim(low, high)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"Learned PReLU slope by layer at the last epoch, runs in {_run_set(path)}\n"
                          f"(line: mean over seeds; error bar: ±1 std over seeds)", fontsize=9)
    return save_figure(fig, path)


def plot_channels(slopes: pd.DataFrame, path: Path) -> Path:
    """The channel-wise slope distribution of each layer, pooled over seeds (one box per layer)."""
    from delving.plots import plt, save_figure

    layers = slopes.drop_duplicates("depth").sort_values("depth")
    data = [slopes[slopes.depth == d].slope.to_numpy() for d in layers.depth]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(layers) + 1), layers.layer, rotation=60, fontsize=7)
    ax.set_ylabel("channel slopes (all seeds)")
    ax.axhline(paper_values.INITIAL_SLOPE, color="grey", lw=0.7, ls=":")
    ax.set_title(f"Channel-wise PReLU slopes per layer at the last epoch, runs in {_run_set(path)} "
                 f"(box: quartiles, whiskers: 1.5 IQR)", fontsize=9)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _run_set(path: Path) -> str:
    """The run set a figure comes from: the folder holding its folder (``RUNS/report/`` or ``RUNS/notebook/``)."""
    return Path(path).resolve().parent.parent.name


def relative_depth(depth: pd.Series) -> pd.Series:
    """Each PReLU layer's position in its net, 0 (first) to 1 (last): how :data:`TABLE1_SLOPES` lines up with a
    net whose layers are named or counted differently."""
    return (depth - 1) / max(int(depth.max()) - 1, 1)


def by_layer(slopes: pd.DataFrame) -> pd.DataFrame:
    """Per run and layer at the run's final epoch: channel mean, channel std (0 for one shared slope), position."""
    out = (final_epoch(slopes).groupby(["run", "depth", "layer"], sort=False).slope
           .agg(mean="mean", channel_std="std").reset_index().fillna({"channel_std": 0.0}))
    out["relative_depth"] = out.groupby("run").depth.transform(relative_depth)
    return out.sort_values(["run", "depth"]).reset_index(drop=True)


def layer_by_epoch(slopes: pd.DataFrame) -> pd.DataFrame:
    """Channel-mean slope with layers as rows (network order) and epochs as columns: one run's heat map."""
    means = slopes.groupby(["depth", "layer", "epoch"]).slope.mean().reset_index()
    return means.pivot(index=["depth", "layer"], columns="epoch", values="slope").droplevel("depth")


def plot_vs_table1(layers: pd.DataFrame, path: Path, by: str = "run") -> Path:
    """Final slope by relative depth, one line per value of ``by`` (channel mean, band = ±1 std over channels;
    ``by_layer``'s columns), beside Table 1's channel-wise (dashed) and channel-shared (dotted) values."""
    from delving.plots import line_style, plt, save_figure

    fig, ax = plt.subplots(figsize=(8, 4))
    for column, style in (("channel_wise", "k--"), ("channel_shared", "k:")):
        ax.plot(TABLE1_SLOPES.relative_depth, TABLE1_SLOPES[column], style, marker="x", ms=4,
                label=f"Table 1, {column.replace('_', '-')} (ImageNet)")
    seen: dict[str, str] = {}
    for label, rows in layers.groupby(by, sort=False):
        style = line_style(label, seen)
        ax.plot(rows.relative_depth, rows["mean"], marker="o", ms=3, label=f"{label} (ours)", **style)
        ax.fill_between(rows.relative_depth, rows["mean"] - rows.channel_std, rows["mean"] + rows.channel_std,
                        color=style["color"], alpha=0.2)
    ax.axhline(paper_values.INITIAL_SLOPE, color="grey", lw=0.7, ls=":")
    ax.set_xlabel("relative depth of the PReLU layer (0 = conv1, 1 = fc2)")
    ax.set_ylabel("learned slope a")
    ax.set_title(f"Final PReLU slope by relative depth beside Table 1, runs in {_run_set(path)}\n"
                 "(line: channel mean; band: ±1 std over channels)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_heatmap(matrices: dict[str, pd.DataFrame], path: Path) -> Path:
    """One layer x epoch heat map of the channel-mean slope per run (``layer_by_epoch``), on a shared colour scale."""
    from delving.plots import plt, save_figure

    low = min(float(m.min().min()) for m in matrices.values())
    high = max(float(m.max().max()) for m in matrices.values())
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.5 * len(matrices), 4), squeeze=False)
    for ax, (title, matrix) in zip(axes[0], matrices.items()):
        image = ax.imshow(matrix.to_numpy(), aspect="auto", cmap="viridis", vmin=low, vmax=high)
        ax.set_yticks(range(len(matrix)), matrix.index, fontsize=7)
        ax.set_xticks(range(matrix.shape[1]), [int(e) + 1 for e in matrix.columns], fontsize=7)
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, label="slope (channel mean)")
    fig.suptitle(f"PReLU slope by layer and epoch, runs in {_run_set(path)}", fontsize=10)
    return save_figure(fig, path)
