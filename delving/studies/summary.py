"""Summary of an init x depth sweep: a table (CSV + Markdown) with training beside validation error, the baselines
on the same split (``delving.studies.baselines``), the paper's checks, the signal each run logged at init and after
epoch 1, and a Fig. 2/3-style figure."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from delving.errors import DelvingError
from delving.experiment.rundir.run_dir import RunDir
from delving.experiment.sweeps.pruning import PRUNED
from delving.studies import baselines as baseline
from delving.studies.runs import first_epoch_below, load_runs
from delving.studies.runs import results as run_results
from delving.studies.signal_report import conv_ratio

STALL_ERROR = 0.80     # "stays at chance": final val error >= 80% (chance is 90% on 10 classes)
TRAINED_ERROR = 0.10   # "trains": final val error <= 10%
HALF_ERROR = 0.50      # the 22-layer check: first epoch below 50% val error
GROUP = ["depth", "activation", "init"]


def finished_runs(folder: str | Path) -> pd.DataFrame:
    """The finished and diverged runs under ``folder`` (``delving.studies.runs.results``, read by ``load_runs``),
    with their val-error curves, the first epoch below 50% and their signal ratios (:func:`signal_ratios`). The runs
    a sweep's hyperband pruned are not among them: they are in ``attrs["pruned"]`` (the table's rows)."""
    runs = load_runs(str(folder))
    results = run_results(runs, thresholds=(HALF_ERROR,))
    results.attrs["pruned"] = runs.table[runs.table.status == PRUNED].reset_index(drop=True)
    if results.empty:
        statuses = ", ".join(sorted(runs.table.status.unique()))
        raise DelvingError(f"no finished runs under {folder} (statuses: {statuses})")
    results["epoch_below_half"] = results[f"epoch_below_{HALF_ERROR:g}"]
    results["name"] = results.run
    variance = {run: rows for run, rows in runs.variance.groupby("run")}
    results["signal"] = [signal_ratios(variance.get(run)) for run in results.run]
    results["init"] = [init_label(scheme, runs.config(run, "init.weights"))
                       for run, scheme in zip(results.run, results.init)]
    results["corr_init"] = [last_conv_correlation(path) for path in results.path]
    results["dataset"] = [runs.config(run, "data.name") for run in results.run]
    return results


def init_label(scheme: str | None, weights: str | None) -> str | None:
    """The init scheme, with ``+delta_orthogonal`` when the run drew delta-orthogonal weights."""
    return f"{scheme}+{weights}" if weights not in (None, "gaussian") else scheme


def last_conv_correlation(path: str | None) -> float:
    """The measured mean cosine between inputs at the last conv at init (``correlation_profile``, logged by the
    run), or NaN where the run has none (a W&B run, or one made before it was logged)."""
    file = RunDir(path).correlation_path if isinstance(path, str) and path else None
    if file is None or not file.is_file():
        return math.nan
    data = pd.read_csv(file)
    convs = data[(data.stage == "init") & data.layer.astype(str).str.startswith("conv")]
    return float(convs.measured.iloc[-1]) if len(convs) else math.nan


def group_keys(frame: pd.DataFrame) -> list[str]:
    """What a summary row pools over seeds: depth, activation, init and every other config key the runs vary
    (``attrs["varying"]``, set by ``delving.studies.runs.results``)."""
    return [*GROUP, *frame.attrs.get("varying", [])]


def table(results: pd.DataFrame) -> pd.DataFrame:
    """Final and best val error per cell, mean ± std over seeds, and how many seeds stalled or diverged."""
    grouped = results.groupby(group_keys(results), sort=True, dropna=False)
    out = grouped.agg(seeds=("seed", "count"), final_mean=("final_val_err1", "mean"),
                      final_std=("final_val_err1", "std"), train_mean=("final_train_err1", "mean"),
                      train_std=("final_train_err1", "std"), best_mean=("best_val_err1", "mean"),
                      best_std=("best_val_err1", "std"), epoch_below_half_max=("epoch_below_half", "max"),
                      corr_init=("corr_init", "mean"))
    out["stalled"] = grouped["final_val_err1"].apply(lambda s: int((s >= STALL_ERROR).sum()))
    out["diverged"] = grouped["status"].apply(lambda s: int((s == "diverged").sum()))
    for stage in ("init", "epoch1"):  # geometric mean over seeds of last/first conv forward std
        out[f"signal_{stage}"] = grouped["signal"].apply(lambda s, k=stage: _geomean([r.get(k) for r in s]))
    out = out.reset_index()
    out.attrs["varying"] = results.attrs.get("varying", [])
    return out


def signal_ratios(variance: pd.DataFrame | None) -> dict[str, float]:
    """Last conv's forward std over the first conv's, from a run's ``variance_profile`` rows, per stage (init,
    epoch1)."""
    if variance is None or variance.empty:
        return {}
    return {stage: float(conv_ratio(profile)[0]) for stage, profile in variance.groupby("stage")}


def depth_limit_checks(results: pd.DataFrame) -> list[tuple[str, bool]]:
    """Beyond the paper: PReLU + TAT trains plain nets of 100 and 200 layers, ReLU + He does not (every seed)."""
    if not results["init"].astype(str).str.startswith("tat").any():
        return []
    final = results.set_index(["depth", "activation", "init", "seed"])["final_val_err1"]
    out = []
    for (depth, act, init), errors in final.groupby(level=[0, 1, 2]):
        if init.startswith("tat") and depth in (100, 200):
            limit = 0.06 if depth == 100 else 0.08
            out.append((f"{depth}-layer {act} + {init}: final val error <= {limit:.0%} on every seed",
                        bool((errors <= limit).all())))
        elif (act, init) == ("relu", "he") and depth == 100:
            out.append((f"{depth}-layer relu + he: stays >= {STALL_ERROR:.0%} on every seed",
                        bool((errors >= STALL_ERROR).all())))
    return out


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


def markdown(summary: pd.DataFrame, checks_: list[tuple[str, bool]], baselines=()) -> str:
    """The table (one row per cell, then the ``baselines`` rows in the same columns), its notes and the checks."""
    extra = group_keys(summary)[len(GROUP):]  # e.g. optim.lr for a grid over learning rates: one row per value
    lines = ["| depth | activation | init | " + "".join(f"{key} | " for key in extra) + "seeds | final train err "
             "| final val err | best val err | stalled | diverged | epoch < 50% (worst seed) | signal at init "
             "| after epoch 1 | corr. last conv at init |", "|---|---|---|" + "---|" * len(extra) + "---|" * 10]
    for r, values in zip(summary.itertuples(), summary[extra].itertuples(index=False)):
        half = "never" if math.isinf(r.epoch_below_half_max) else int(r.epoch_below_half_max)
        keys = "".join(f"{v} | " for v in values)
        lines.append(f"| {r.depth} | {r.activation} | {r.init} | {keys}{r.seeds} | {_pm(r.train_mean, r.train_std)} "
                     f"| {_pm(r.final_mean, r.final_std)} | {_pm(r.best_mean, r.best_std)} | {r.stalled}/{r.seeds} "
                     f"| {r.diverged}/{r.seeds} | {half} | {_g(r.signal_init)} | {_g(r.signal_epoch1)} "
                     f"| {_g(r.corr_init)} |")
    several = baseline.several_splits(list(baselines))
    lines += [_baseline_line(row, len(extra), several) for row in baselines]
    lines += ["", "Train error: the last epoch's mean training error (dropout on, as trained); signal: last conv's "
              "forward std over the first conv's on a validation batch "
              f"(`{RunDir.VARIANCE}`), geometric mean over seeds; corr.: mean cosine between the batch's responses "
              f"at the last conv at init (`{RunDir.CORRELATION}`), mean over seeds."]
    if baselines:
        lines += ["", baseline.note(list(baselines))]
    if checks_:
        lines += ["", "Paper checks (Sec. 2.2, Fig. 2 and 3):", ""]
        lines += [f"- [{'x' if ok else ' '}] {text}" for text, ok in checks_]
    return "\n".join(lines) + "\n"


def pruned_markdown(pruned: pd.DataFrame | None) -> str:
    """The runs hyperband stopped early, one line each with the rule's numbers (``result.json``'s ``pruned``): listed
    apart, since a run stopped after a few epochs is not a seed of the table's means."""
    if pruned is None or pruned.empty:
        return ""
    lines = ["", f"Stopped early by the sweep's hyperband (`early_terminate`), left out of the rows above: "
             f"{len(pruned)} run(s)", "",
             "| run | epochs trained | final val err | band | metric at band | threshold |",
             "|---|---|---|---|---|---|"]
    for row in pruned.itertuples():
        rule = (RunDir(row.path).read_result() or {}).get(PRUNED, {}) if isinstance(row.path, str) else {}
        lines.append(f"| {row.run} | {row.epochs} | {_e(row.final_val_err1)} | {rule.get('band', '–')} "
                     f"| {rule.get('metric', '')} {_e(rule.get('value'))} | {_e(rule.get('threshold'))} |")
    return "\n".join(lines) + "\n"


def _baseline_line(row: baseline.Baseline, extra: int, several: bool) -> str:
    """A baseline in the table's columns: its errors where a net has its final train and val errors; for the CNN
    also its best val error, stall and first epoch below 50%; "–" where a baseline has no such number."""
    val = _e(row.val_err)
    if row.missing:
        val = "not trained (see below)" if row.depth else "not computed (see below)"
    stalled = f"{int(row.val_err >= STALL_ERROR)}/1" if row.curve and row.val_err is not None else "–"
    half = first_epoch_below(list(row.curve), HALF_ERROR) if row.curve else None
    half = "–" if half is None else ("never" if math.isinf(half) else int(half))
    cells = [row.depth or "–", baseline.label(row, several), row.init or "–", *["–"] * extra,
             row.seeds or "–", _e(row.train_err), val, _e(row.best_val_err), stalled, "–", half,
             "–", "–", "–"]
    return "| " + " | ".join(map(str, cells)) + " |"


def _e(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _g(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2g}"


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.3f} ± {0.0 if math.isnan(std) else std:.3f}"


def plot(results: pd.DataFrame, path: Path) -> Path:
    """Error against epoch: one row per activation, one column per depth; colour = init (He red, Xavier blue,
    as in the paper's figures), solid = validation, dashed = training; line = mean over seeds, band = min-max."""
    from delving.plots import chance_line, color, integer_epochs, plt, save_figure

    depths, acts = sorted(results.depth.unique()), sorted(results.activation.unique())
    fig, axes = plt.subplots(len(acts), len(depths), figsize=(4.2 * len(depths), 3.2 * len(acts)), sharey=True,
                             squeeze=False)
    for row, act in zip(axes, acts):
        for ax, depth in zip(row, depths):
            for init, cell in results[(results.depth == depth) & (results.activation == act)].groupby("init"):
                for column, style in (("curve", "-"), ("train_curve", "--")):
                    curves = pd.DataFrame(cell[column].tolist()).T  # epochs x seeds
                    epochs = range(1, len(curves) + 1)
                    ax.plot(epochs, curves.mean(axis=1), style, color=color(init),
                            label=init if style == "-" else None)
                    ax.fill_between(epochs, curves.min(axis=1), curves.max(axis=1), color=color(init), alpha=0.1)
            ax.set_title(f"{act}, {depth} layers", fontsize=9)
            chance_line(ax)
            integer_epochs(ax)
            ax.grid(alpha=0.3)
        row[0].set_ylabel("top-1 error")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    axes[0][-1].legend(fontsize=7, title="solid val, dashed train", title_fontsize=7)
    folder = Path(path).resolve().parent  # the sweep folder, or its report/ or notebook/ folder
    runs = folder.parent.name if folder.name in ("report", "notebook") else folder.name
    data = sorted({str(name) for name in results.get("dataset", pd.Series(dtype=object)).dropna()})
    on = f" on {', '.join(data)}" if data else ""
    fig.suptitle(f"Init x depth (He et al. 2015, Fig. 2/3){on}, {len(results)} runs in {runs}; band = min-max "
                 "over seeds", fontsize=10)
    return save_figure(fig, path, dpi=110)


def summarize(folder: str | Path, *, train_baselines: bool = False) -> str:
    """Write summary.csv, summary.md, init_depth.png and variance_profile.png into ``folder``; return the Markdown.

    The table ends with the baselines of the runs' split (``delving.studies.baselines``: scikit-learn, cached in
    ``folder/baselines/``, and the shallow CNN run); ``train_baselines`` trains the CNN first if it has not finished
    (``delving sweep`` does, after its grid), otherwise its row says how to make it."""
    from delving.studies import signal_report

    folder = Path(folder)
    results = finished_runs(folder)
    configs = [RunDir(path).read_config() for path in results.path if isinstance(path, str) and path]
    baselines = baseline.for_runs(configs, baseline.home(folder, folder), train=train_baselines)
    summary = table(results)
    summary.to_csv(folder / "summary.csv", index=False)
    signal = signal_report.profiles(results, folder)
    text = markdown(summary, checks(results), baselines) + pruned_markdown(results.attrs.get("pruned"))
    text += signal_report.markdown(signal)
    limit = depth_limit_checks(results)
    if limit:  # beyond the paper: the depth-limit sweep
        text += "\nBeyond the paper (plain nets to the limit):\n\n" + "".join(
            f"- [{'x' if ok else ' '}] {line}\n" for line, ok in limit)
    figures = "![init x depth](init_depth.png)\n\n"
    if len(signal):
        figures += "![signal at init](variance_profile.png)\n\n"
    (folder / "summary.md").write_text(f"# Sweep {folder.name}\n\n{figures}{text}")
    plot(results, folder / "init_depth.png")
    signal_report.plot(signal, folder / "variance_profile.png")
    return text
