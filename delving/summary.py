"""Summary of an init x depth sweep: a table (CSV + Markdown), the paper's checks, and a Fig. 2/3-style figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from delving.errors import DelvingError

STALL_ERROR = 0.80     # "stays at chance": final val error >= 80% (chance is 90% on 10 classes)
TRAINED_ERROR = 0.10   # "trains": final val error <= 10%
HALF_ERROR = 0.50      # the 22-layer check: first epoch below 50% val error
GROUP = ["depth", "activation", "init"]


def load_results(folder: str | Path) -> pd.DataFrame:
    """One row per finished/diverged run under ``folder`` (its ``*/result.json``), with its val-error curve."""
    rows = []
    for path in sorted(Path(folder).glob("*/result.json")):
        result = json.loads(path.read_text())
        curve = [h.get("val/err1", math.nan) for h in result.get("history", [])]
        below = next((i + 1 for i, e in enumerate(curve) if e < HALF_ERROR), math.inf)
        rows.append({**{k: v for k, v in result.items() if k != "history"}, "curve": curve,
                     "epoch_below_half": below})
    if not rows:
        raise DelvingError(f"no finished runs (*/result.json) under {folder}")
    return pd.DataFrame(rows)


def table(results: pd.DataFrame) -> pd.DataFrame:
    """Final and best val error per cell, mean ± std over seeds, and how many seeds stalled or diverged."""
    grouped = results.groupby(GROUP, sort=True)
    out = grouped.agg(seeds=("seed", "count"), final_mean=("final_val_err1", "mean"),
                      final_std=("final_val_err1", "std"), best_mean=("best_val_err1", "mean"),
                      best_std=("best_val_err1", "std"), epoch_below_half_max=("epoch_below_half", "max"))
    out["stalled"] = grouped["final_val_err1"].apply(lambda s: int((s >= STALL_ERROR).sum()))
    out["diverged"] = grouped["status"].apply(lambda s: int((s == "diverged").sum()))
    return out.reset_index()


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
    lines = ["| depth | activation | init | seeds | final val err | best val err | stalled | diverged "
             "| epoch < 50% (worst seed) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        half = "never" if math.isinf(r.epoch_below_half_max) else int(r.epoch_below_half_max)
        lines.append(f"| {r.depth} | {r.activation} | {r.init} | {r.seeds} | {_pm(r.final_mean, r.final_std)} "
                     f"| {_pm(r.best_mean, r.best_std)} | {r.stalled}/{r.seeds} | {r.diverged}/{r.seeds} | {half} |")
    if checks_:
        lines += ["", "Paper checks (Sec. 2.2, Fig. 2 and 3):", ""]
        lines += [f"- [{'x' if ok else ' '}] {text}" for text, ok in checks_]
    return "\n".join(lines) + "\n"


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {0.0 if math.isnan(std) else std:.3f}"


def plot(results: pd.DataFrame, path: Path) -> Path:
    """Validation error against epoch, one panel per depth, He (red) vs Xavier (blue) as in the paper's figures;
    solid ReLU, dashed PReLU; the line is the mean over seeds and the band their min-max."""
    from delving.plots import plt

    depths = sorted(results.depth.unique())
    fig, axes = plt.subplots(1, len(depths), figsize=(5 * len(depths), 3.8), sharey=True, squeeze=False)
    colors = {"he": "tab:red", "xavier": "tab:blue", "glorot": "tab:green"}
    styles = {"relu": "-", "prelu": "--", "prelu_shared": ":", "leaky_relu": "-."}
    for ax, depth in zip(axes[0], depths):
        for (act, init), cell in results[results.depth == depth].groupby(["activation", "init"]):
            curves = pd.DataFrame(cell.curve.tolist()).T  # epochs x seeds
            epochs = range(1, len(curves) + 1)
            ax.plot(epochs, curves.mean(axis=1), styles.get(act, "-"), color=colors.get(init), label=f"{act}, {init}")
            ax.fill_between(epochs, curves.min(axis=1), curves.max(axis=1), color=colors.get(init), alpha=0.12)
        ax.set_title(f"{depth}-layer plain net")
        ax.set_xlabel("epoch")
        ax.axhline(0.9, color="grey", lw=0.7, ls=":")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation top-1 error")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("Init x depth (He et al. 2015, Fig. 2/3) on digits; band = min-max over seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
