"""Summary of an init x depth sweep: a table (CSV + Markdown) with training beside validation error, the paper's
checks, the signal each run logged at init and after epoch 1, and a Fig. 2/3-style figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from delving.errors import DelvingError
from delving.signal_report import conv_ratio

STALL_ERROR = 0.80     # "stays at chance": final val error >= 80% (chance is 90% on 10 classes)
TRAINED_ERROR = 0.10   # "trains": final val error <= 10%
HALF_ERROR = 0.50      # the 22-layer check: first epoch below 50% val error
GROUP = ["depth", "activation", "init"]


def load_results(folder: str | Path) -> pd.DataFrame:
    """One row per finished/diverged run under ``folder`` (its ``*/result.json``), with its val-error curve."""
    rows = []
    for path in sorted(Path(folder).glob("*/result.json")):
        result = json.loads(path.read_text())
        history = result.get("history", [])
        curve = [h.get("val/err1", math.nan) for h in history]
        below = next((i + 1 for i, e in enumerate(curve) if e < HALF_ERROR), math.inf)
        rows.append({"final_train_err1": math.nan, **{k: v for k, v in result.items() if k != "history"},
                     "curve": curve, "train_curve": [h.get("train/err1", math.nan) for h in history],
                     "epoch_below_half": below, "signal": signal_ratios(path.parent)})
    if not rows:
        raise DelvingError(f"no finished runs (*/result.json) under {folder}")
    return pd.DataFrame(rows)


def table(results: pd.DataFrame) -> pd.DataFrame:
    """Final and best val error per cell, mean ± std over seeds, and how many seeds stalled or diverged."""
    grouped = results.groupby(GROUP, sort=True)
    out = grouped.agg(seeds=("seed", "count"), final_mean=("final_val_err1", "mean"),
                      final_std=("final_val_err1", "std"), train_mean=("final_train_err1", "mean"),
                      train_std=("final_train_err1", "std"), best_mean=("best_val_err1", "mean"),
                      best_std=("best_val_err1", "std"), epoch_below_half_max=("epoch_below_half", "max"))
    out["stalled"] = grouped["final_val_err1"].apply(lambda s: int((s >= STALL_ERROR).sum()))
    out["diverged"] = grouped["status"].apply(lambda s: int((s == "diverged").sum()))
    for stage in ("init", "epoch1"):  # geometric mean over seeds of last/first conv forward std
        out[f"signal_{stage}"] = grouped["signal"].apply(lambda s, k=stage: _geomean([r.get(k) for r in s]))
    return out.reset_index()


def signal_ratios(run: Path) -> dict[str, float]:
    """Last conv's forward std over the first conv's, from the run's ``variance.csv``, per stage (init, epoch1)."""
    path = run / "variance.csv"
    if not path.is_file():
        return {}
    return {stage: float(conv_ratio(profile)[0]) for stage, profile in pd.read_csv(path).groupby("stage")}


def _geomean(values) -> float:
    values = [v for v in values if v is not None and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else math.nan


def checks(results: pd.DataFrame) -> list[tuple[str, bool]]:
    """The paper's Fig. 2/3 claims on the deepest and shallowest ReLU nets of the sweep, seed by seed."""
    relu = results[results.activation == "relu"]
    if relu.empty or not {"xavier", "he"} <= set(relu["init"]):
        return []
    deep, shallow = relu.depth.max(), relu.depth.min()
    final = relu.set_index(["depth", "init", "seed"])["final_val_err1"]
    half = relu.set_index(["depth", "init", "seed"])["epoch_below_half"]
    seeds = sorted(relu.seed.unique())
    out = [
        (f"{deep}-layer ReLU, Xavier: stalls (final val error >= {STALL_ERROR:.0%}) on every seed",
         all(final.get((deep, "xavier", s), 0) >= STALL_ERROR for s in seeds)),
        (f"{deep}-layer ReLU, He: trains (final val error <= {TRAINED_ERROR:.0%}) on every seed",
         all(final.get((deep, "he", s), 1) <= TRAINED_ERROR for s in seeds)),
    ]
    if shallow != deep:
        out.append((f"{shallow}-layer ReLU: He gets below {HALF_ERROR:.0%} val error no later than Xavier, every seed",
                    all(half.get((shallow, "he", s), math.inf) <= half.get((shallow, "xavier", s), math.inf)
                        for s in seeds)))
    return out


def markdown(summary: pd.DataFrame, checks_: list[tuple[str, bool]]) -> str:
    lines = ["| depth | activation | init | seeds | final train err | final val err | best val err | stalled "
             "| diverged | epoch < 50% (worst seed) | signal at init | after epoch 1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        half = "never" if math.isinf(r.epoch_below_half_max) else int(r.epoch_below_half_max)
        lines.append(f"| {r.depth} | {r.activation} | {r.init} | {r.seeds} | {_pm(r.train_mean, r.train_std)} "
                     f"| {_pm(r.final_mean, r.final_std)} | {_pm(r.best_mean, r.best_std)} | {r.stalled}/{r.seeds} "
                     f"| {r.diverged}/{r.seeds} | {half} | {_g(r.signal_init)} | {_g(r.signal_epoch1)} |")
    lines += ["", "Train error: the last epoch's mean training error (dropout on, as trained); signal: last conv's "
              "forward std over the first conv's on a validation batch (`variance.csv`), geometric mean over seeds."]
    if checks_:
        lines += ["", "Paper checks (Sec. 2.2, Fig. 2 and 3):", ""]
        lines += [f"- [{'x' if ok else ' '}] {text}" for text, ok in checks_]
    return "\n".join(lines) + "\n"


def _g(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2g}"


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.3f} ± {0.0 if math.isnan(std) else std:.3f}"


def plot(results: pd.DataFrame, path: Path) -> Path:
    """Error against epoch: one row per activation, one column per depth; colour = init (He red, Xavier blue,
    as in the paper's figures), solid = validation, dashed = training; line = mean over seeds, band = min-max."""
    from delving.plots import plt, save_figure

    depths, acts = sorted(results.depth.unique()), sorted(results.activation.unique())
    fig, axes = plt.subplots(len(acts), len(depths), figsize=(4.2 * len(depths), 3.2 * len(acts)), sharey=True,
                             squeeze=False)
    colors = {"he": "tab:red", "xavier": "tab:blue", "glorot": "tab:green", "variance_preserving": "tab:purple",
              "lsuv": "tab:orange"}
    for row, act in zip(axes, acts):
        for ax, depth in zip(row, depths):
            for init, cell in results[(results.depth == depth) & (results.activation == act)].groupby("init"):
                for column, style in (("curve", "-"), ("train_curve", "--")):
                    curves = pd.DataFrame(cell[column].tolist()).T  # epochs x seeds
                    epochs = range(1, len(curves) + 1)
                    ax.plot(epochs, curves.mean(axis=1), style, color=colors.get(init),
                            label=init if style == "-" else None)
                    ax.fill_between(epochs, curves.min(axis=1), curves.max(axis=1), color=colors.get(init), alpha=0.1)
            ax.set_title(f"{act}, {depth} layers", fontsize=9)
            ax.axhline(0.9, color="grey", lw=0.7, ls=":")
            ax.grid(alpha=0.3)
        row[0].set_ylabel("top-1 error")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    axes[0][-1].legend(fontsize=7, title="solid val, dashed train", title_fontsize=7)
    fig.suptitle("Init x depth (He et al. 2015, Fig. 2/3) on digits; band = min-max over seeds", fontsize=10)
    return save_figure(fig, path, dpi=110)


def summarize(folder: str | Path) -> str:
    """Write summary.csv, summary.md, init_depth.png and variance_profile.png into ``folder``; return the Markdown."""
    from delving import signal_report

    folder = Path(folder)
    results = load_results(folder)
    summary = table(results)
    summary.to_csv(folder / "summary.csv", index=False)
    signal = signal_report.profiles(results, folder)
    text = markdown(summary, checks(results)) + signal_report.markdown(signal)
    figures = "![init x depth](init_depth.png)\n\n"
    if len(signal):
        figures += "![signal at init](variance_profile.png)\n\n"
    (folder / "summary.md").write_text(f"# Sweep {folder.name}\n\n{figures}{text}")
    plot(results, folder / "init_depth.png")
    signal_report.plot(signal, folder / "variance_profile.png")
    return text
