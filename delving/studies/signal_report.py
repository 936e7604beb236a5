"""The Sec. 2.2 analysis at initialization, beside a sweep's training results: ``variance_profile`` of the deepest
ReLU net with each init scheme of the sweep, on a batch of its own training data, against the paper's prediction.

The prediction for the paper's "Xavier" (n Var[w] = 1) with ReLU is that Var[y] halves at every layer, so the std
falls as 2^(-l/2) (Sec. 2.2, "1/sqrt(2^L)"); for He (Eq. 10) it is constant.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch

from delving.nn.probes import variance_profile
from delving.experiment.training.config import load_config
from delving.experiment.rundir.run_dir import RunDir

BATCH = 256


def measure(run_folder: Path) -> pd.DataFrame:
    """Forward/backward std per weight layer at init, for the config saved in ``run_folder``."""
    from delving.experiment.training.train import build_datamodule, build_model

    cfg = load_config(RunDir(run_folder).config_path, ["tracking.wandb=disabled"])
    torch.manual_seed(cfg.seed)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    x = datamodule.train_set.tensors[0][:BATCH]
    model = build_model(cfg, datamodule)
    rows = [vars(s) for s in variance_profile(model, x)]
    return pd.DataFrame(rows).assign(init=cfg.init.scheme, depth=cfg.model.depth)


def profiles(results: pd.DataFrame, folder: Path | None = None) -> pd.DataFrame:
    """One profile per init scheme, for the deepest ReLU cell (first seed) of the sweep (``results``: rows of
    ``delving.studies.runs.results``, whose ``path`` is each run's folder)."""
    saved = results.path.map(lambda path: path is not None and RunDir(path).is_run())
    relu = results[(results.activation == "relu") & saved]
    if relu.empty:
        return pd.DataFrame()
    deepest = relu[relu.depth == relu.depth.max()].sort_values("seed").groupby("init").head(1)
    return pd.concat([measure(Path(path)) for path in deepest.path], ignore_index=True)


def conv_ratio(profile: pd.DataFrame) -> tuple[float, float, int]:
    """(measured, predicted-for-Xavier) ratio of the last conv's forward std to the first conv's, and #convs."""
    convs = profile[profile.layer.str.startswith("conv")]
    hops = len(convs) - 1
    return convs.forward_std.iloc[-1] / convs.forward_std.iloc[0], 2 ** (-hops / 2), len(convs)


def markdown(data: pd.DataFrame) -> str:
    if data.empty:
        return ""
    lines = ["", "Signal at initialization (Sec. 2.2), deepest ReLU net, a batch of training digits:", "",
             "| init | conv layers | forward std, last conv / first conv | Xavier prediction 2^-(L-1)/2 |",
             "|---|---|---|---|"]
    for init, profile in data.groupby("init"):
        measured, predicted, convs = conv_ratio(profile)
        lines.append(f"| {init} | {convs} | {measured:.2e} | {predicted:.2e} |")
    return "\n".join(lines) + "\n"


def plot(data: pd.DataFrame, path: Path) -> Path | None:
    """Forward and backward std by layer, log scale, with the Xavier prediction as a dotted line."""
    if data.empty:
        return None
    from delving.plots import plt, save_figure

    colors = {"he": "tab:red", "xavier": "tab:blue", "glorot": "tab:green"}
    fig, (fwd, bwd) = plt.subplots(1, 2, figsize=(10, 3.8))
    for init, profile in data.groupby("init"):
        fwd.semilogy(profile["index"], profile.forward_std, marker=".", color=colors.get(init), label=init)
        bwd.semilogy(profile["index"], profile.backward_std, marker=".", color=colors.get(init), label=init)
        if init == "xavier":
            first = profile.forward_std.iloc[0]
            fwd.semilogy(profile["index"], [first * 2 ** (-(i - 1) / 2) for i in profile["index"]], ":",
                         color="grey", label="2^(-l/2) (Sec. 2.2)")
    depth = int(data.depth.iloc[0]) if not math.isnan(data.depth.iloc[0]) else "?"
    fwd.set_title(f"forward: std of y_l ({depth}-layer ReLU net, at init)")
    bwd.set_title("backward: std of dE/dy_l")
    for ax in (fwd, bwd):
        ax.set_xlabel("weight layer l")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return save_figure(fig, path)
