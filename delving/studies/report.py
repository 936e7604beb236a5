"""`delving report FOLDER`: a Markdown reproduction report that sets a run set's numbers beside the paper's.

Reads the runs through ``delving.studies.runs.load_runs`` (a sweep folder, a run folder or ``wandb:ENTITY/PROJECT``) and
writes ``report.md`` with PNG figures into ``--out`` (default ``FOLDER/report``):

1. Fig. 2/3 (Sec. 2.2): per depth × init × activation, the final val error mean [min, max] over seeds, how many seeds
   stalled, the epochs each seed took to reach 50% and 10% error, beside what the paper's figures show, and the
   baselines on the same split (``delving.studies.baselines``; read, never trained here);
2. Table 1: the shape of the learned slope profile (conv1's slope, correlation of slope with depth, the fc slopes),
   ours per condition beside the paper's channel-wise column;
3. Table 2: PReLU's gain over ReLU on runs matched by depth, init and seed, beside the paper's 33.82 → 32.64;
4. where the small default differs from the paper's ImageNet setting, read from the runs' own configs.

The statistics and figures are those of ``delving.studies.summary`` and ``delving.studies.slopes``; this module only joins them.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from delving import paper_values as paper
from delving.studies import baselines as baseline
from delving.studies import slopes as slope_stats
from delving.studies import summary
from delving.errors import DelvingError
from delving.experiment.rundir.run_dir import RunDir
from delving.studies.runs import DONE, first_epoch_below  # noqa: F401  (first_epoch_below: part of this API)

THRESHOLDS = (summary.HALF_ERROR, summary.TRAINED_ERROR)  # "epochs to reach X": 50% and 10% top-1 val error
CELL = ["depth", "init", "activation"]
SLOPES_FORMED = 0.05  # a layer's mean slope must move this far from 0.25 before a "profile" is read into it


def write_report(source: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.md`` and its figures for the runs at ``source``; return the path of ``report.md``."""
    from delving.studies.runs import load_runs
    from delving.studies.runs import results as run_results

    if out is None and str(source).startswith("wandb:"):
        raise DelvingError("a W&B source needs --out DIR (there is no local folder to write into)")
    runs = load_runs(str(source))
    done = runs.table[runs.table.status.isin(DONE)]
    if done.empty:
        statuses = ", ".join(sorted(runs.table.status.unique()))
        raise DelvingError(f"no finished runs under {source} (statuses: {statuses}); run the sweep first, e.g. "
                           "make sweep-init-depth")
    out = Path(out) if out else Path(source) / "report"
    out.mkdir(parents=True, exist_ok=True)
    results = run_results(runs, THRESHOLDS)
    results["epoch_below_half"] = results[f"epoch_below_{summary.HALF_ERROR:g}"]  # the name summary.checks reads
    configs = [runs.configs[run] for run in done.run if runs.configs.get(run)]
    baselines = baseline.for_runs(configs, baseline.home(source, out))
    parts = [f"# Reproduction report: {source}\n", _header(runs.table),
             section_convergence(results, out, baselines), section_slopes(done, runs.slopes, out, source),
             section_gain(results, out), section_departures(runs)]
    path = out / "report.md"
    path.write_text("\n".join(parts))
    return path


def _header(table: pd.DataFrame) -> str:
    status = ", ".join(f"{n} {s}" for s, n in table.status.value_counts().items())
    left_out = "" if table.status.isin(DONE).all() else " Only finished and diverged runs enter the tables."
    if table.duplicated(["activation", "init", "depth", "seed"]).any():  # e.g. a weight-decay sweep
        left_out += (" **Some runs share activation, init, depth and seed: they differ in another setting and are "
                     "pooled in the cells below.**")
    return (f"{len(table)} runs ({status}); activations {', '.join(sorted(table.activation.unique()))}, inits "
            f"{', '.join(sorted(table.init.unique()))}, depths {', '.join(map(str, sorted(table.depth.unique())))}, "
            f"seeds {', '.join(map(str, sorted(table.seed.unique())))}. Errors are top-1 validation error.{left_out}\n")


def _epochs(values) -> str:
    return ", ".join("never" if math.isinf(v) else str(int(v)) for v in values)


def _mmm(values: pd.Series) -> str:
    """mean [min, max]"""
    v = values.astype(float)
    return f"{v.mean():.3f} [{v.min():.3f}, {v.max():.3f}]"


def section_convergence(results: pd.DataFrame, out: Path, baselines=()) -> str:
    """Fig. 2/3: final error, stalls and epochs-to-threshold per cell, with summary's init × depth figure; the
    ``baselines`` rows below the cells, in the same columns."""
    half, trained = (f"epoch_below_{t:g}" for t in THRESHOLDS)
    lines = ["## 1. Fig. 2/3: does the net train? (Sec. 2.2)", "",
             "![init x depth](init_depth.png)", "",
             "| depth | init | activation | seeds | final val err mean [min, max] "
             f"| stalled (≥ {summary.STALL_ERROR:.0%}) "
             f"| epochs to < {THRESHOLDS[0]:.0%} (per seed) | epochs to < {THRESHOLDS[1]:.0%} (per seed) | paper |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (depth, init, act), cell in results.sort_values("seed").groupby(CELL, sort=True):
        claim = paper.FIG_CLAIMS.get((int(depth), init), "–") if act == "relu" else "– (ReLU only)"
        stalled = int((cell.final_val_err1 >= summary.STALL_ERROR).sum())
        lines.append(f"| {depth} | {init} | {act} | {len(cell)} | {_mmm(cell.final_val_err1)} | {stalled}/{len(cell)} "
                     f"| {_epochs(cell[half])} | {_epochs(cell[trained])} | {claim} |")
    several = baseline.several_splits(list(baselines))
    lines += [_baseline_line(row, several) for row in baselines]
    if baselines:
        lines += ["", baseline.note(list(baselines))]
    lines += ["", "Paper checks, seed by seed (`delving.studies.summary.checks`):", ""]
    if results.duplicated(["activation", "init", "depth", "seed"]).any():  # checks compare one run per seed
        lines.append("- not checked: several runs share a cell and seed")
    else:
        lines += [f"- [{'x' if ok else ' '}] {text}" for text, ok in summary.checks(results)] or [
            "- not measured: needs ReLU runs with both xavier and he init"]
    summary.plot(results, out / "init_depth.png")
    return "\n".join(lines) + "\n"


def _baseline_line(row: baseline.Baseline, several: bool) -> str:
    """A baseline in section 1's columns: its final val error; for the CNN run also its stall and epochs to 50% and
    10% error; "–" where a baseline has no such number."""
    val = "–" if row.val_err is None else f"{row.val_err:.3f}"
    if row.missing:
        val = "not trained (see below)" if row.depth else "not computed (see below)"
    per_epoch = row.curve and row.val_err is not None
    stalled = f"{int(row.val_err >= summary.STALL_ERROR)}/1" if per_epoch else "–"
    reach = [_epochs([first_epoch_below(list(row.curve), t)]) if per_epoch else "–" for t in THRESHOLDS]
    return (f"| {row.depth or '–'} | {row.init or '–'} | {baseline.label(row, several)} | {row.seeds or '–'} | {val} "
            f"| {stalled} | {reach[0]} | {reach[1]} | – |")


def final_slopes(table: pd.DataFrame, slopes: pd.DataFrame) -> pd.DataFrame:
    """Each PReLU run's channel slopes at its last epoch, in ``delving.studies.slopes``' shape: the condition is the init,
    ``net_depth`` the net's depth (``depth`` stays the layer's index, as in ``slopes.csv``)."""
    last = slopes[slopes.epoch == slopes.groupby("run").epoch.transform("max")]
    runs = table[["run", "seed", "init", "depth"]].rename(columns={"depth": "net_depth"})
    final = last.merge(runs, on="run")
    final["condition"] = final.init
    return final


def profile_shape(layers: pd.Series, values: pd.Series) -> dict[str, float]:
    """Table 1's shape in numbers: conv1's slope, Pearson and Spearman correlation of slope with conv depth, the
    mean fc slope. ``layers``/``values`` in network order."""
    convs = values[layers.str.startswith("conv").to_numpy()].reset_index(drop=True)
    order = pd.Series(np.arange(1, len(convs) + 1, dtype=float))
    flat = convs.nunique() < 2  # a correlation with a constant is undefined (a stalled net's untouched slopes)
    return {"conv1": float(convs.iloc[0]), "pearson": math.nan if flat else float(order.corr(convs)),
            "spearman": math.nan if flat else float(order.corr(convs, method="spearman")),
            "fc": float(values[layers.str.startswith("fc").to_numpy()].mean())}


def section_slopes(table: pd.DataFrame, slopes: pd.DataFrame, out: Path, source) -> str:
    """Table 1: the learned slope profile's shape per condition beside the paper's channel-wise column."""
    lines = ["## 2. Table 1: the learned PReLU slope profile", ""]
    final = final_slopes(table, slopes)
    if final.empty:  # no PReLU runs, or none of them finished
        return "\n".join(lines + [f"Not measured: no finished PReLU runs with logged slopes (`{RunDir.SLOPES}`) in "
                                  f"{source}.", ""])
    ref = pd.Series(list(paper.TABLE1_SLOPES))
    rows = [("paper, 14 layers, channel-wise (Table 1)", "–",
             profile_shape(ref, pd.Series([v[1] for v in paper.TABLE1_SLOPES.values()])), math.nan)]
    figures, trends = [], []
    for net_depth, runs in final.groupby("net_depth"):  # one figure per net: layer k is a different layer per depth
        profile = slope_stats.layer_profile(runs)
        with np.errstate(invalid="ignore", divide="ignore"):  # r of a run whose slopes never moved: NaN, shown "–"
            trend = slope_stats.trend_summary(slope_stats.depth_trend(runs))
        figures.append(slope_stats.plot_profile(profile, out / f"slope_profile_{net_depth}.png", "init").name)
        for init, layers in profile.groupby("condition"):
            layers = layers.sort_values("depth")
            moved = float((layers.slope - paper.INITIAL_SLOPE).abs().max())
            rows.append((f"ours, {net_depth} layers, {init}", str(int(trend.loc[init, "seeds"])),
                         profile_shape(layers.layer, layers.slope), moved))
            trends.append(f"{net_depth}/{init}: {_signed(trend.loc[init, 'r_mean'])} ± "
                          f"{np.nan_to_num(trend.loc[init, 'r_std']):.2f}")
    figures.append(_plot_vs_table1(final, out / "slopes_vs_table1.png").name)
    lines += [*(f"![slope profile]({name})" for name in figures), "",
              "| run set | seeds | conv1 slope | Pearson r (slope, conv depth) | Spearman ρ | mean fc slope "
              "| largest move from 0.25 |", "|---|---|---|---|---|---|---|"]
    for name, seeds, shape, moved in rows:
        lines.append(f"| {name} | {seeds} | {shape['conv1']:.3f} | {_signed(shape['pearson'])} "
                     f"| {_signed(shape['spearman'])} "
                     f"| {shape['fc']:.3f} | {'–' if math.isnan(moved) else f'{moved:.3f}'} |")
    lines += ["", "Slopes are the channel mean per layer at the last epoch, averaged over seeds; the correlations use "
              "the conv layers in network order. The paper's shape: conv1 large (0.596), deeper convs smaller "
              "(negative r), fc small (≈0.075). Per run, r (depth/init) = "
              + "; ".join(trends) + " (mean ± std over seeds).", "", _slope_verdict(rows[1:]), ""]
    return "\n".join(lines)


def _plot_vs_table1(final: pd.DataFrame, path: Path) -> Path:
    """``delving.studies.slopes.plot_vs_table1`` with one line per net depth and init (seeds pooled) instead of per run."""
    label = final.net_depth.astype(str) + " layers, " + final.init
    pooled = final.assign(run=label)  # by_layer groups by run: pooling the seeds of a condition into one line
    return slope_stats.plot_vs_table1(slope_stats.by_layer(pooled), path=path)


def figures(report: Path) -> list[str]:
    """The PNG files a ``report.md`` links."""
    return re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", Path(report).read_text())


def _signed(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.2f}"


def _slope_verdict(rows) -> str:
    """One honest sentence: has a profile formed at all, and does its shape match Table 1's?"""
    moved = max(m for *_, m in rows)
    if moved < SLOPES_FORMED:
        return (f"**No profile has formed:** no layer's mean slope moved more than {moved:.3f} from its initial "
                f"{paper.INITIAL_SLOPE} (the paper's range over layers is 0.07-0.60), so the correlations above "
                "describe noise, not Table 1's shape. Table 1 took ImageNet-scale training.")
    shaped = [name for name, _, shape, _ in rows
              if shape["pearson"] < 0 and shape["conv1"] > shape["fc"]]
    return (f"Table 1's shape (slope falling with depth, conv1 above the fc slopes) holds in {len(shaped)} of "
            f"{len(rows)} run sets" + (f": {', '.join(shaped)}." if shaped else "."))


def matched_gain(results: pd.DataFrame) -> pd.DataFrame:
    """ReLU and PReLU runs matched by depth, init and seed: the gain in points and relative to ReLU's error."""
    wide = results.pivot_table(index=["depth", "init", "seed"], columns="activation", values="final_val_err1")
    if not {"relu", "prelu"} <= set(wide.columns):
        return pd.DataFrame()
    pairs = wide[["relu", "prelu"]].dropna().reset_index()
    pairs["points"] = 100 * (pairs.relu - pairs.prelu)
    pairs["relative"] = (pairs.relu - pairs.prelu) / pairs.relu
    pairs["trained"] = (pairs[["relu", "prelu"]] < summary.STALL_ERROR).all(axis=1)
    return pairs


def _pm(values: pd.Series, fmt: str) -> str:
    std = values.std() if len(values) > 1 else 0.0
    return f"{values.mean():{fmt}} ± {std:{fmt}} [{values.min():{fmt}}, {values.max():{fmt}}]"


def section_gain(results: pd.DataFrame, out: Path) -> str:
    """Table 2: relative gain of PReLU over ReLU, per matched cell and over the pairs where both trained."""
    lines = ["## 3. Table 2: PReLU's gain over ReLU", ""]
    pairs = matched_gain(results)
    if pairs.empty:
        return "\n".join(lines + ["Not measured: needs ReLU and PReLU runs with the same depth, init and seed.", ""])
    relu, prelu = paper.TABLE2_ERRORS["relu"][0], paper.TABLE2_ERRORS["prelu"][0]
    lines += ["![gain](prelu_gain.png)", "",
              "| run set | pairs | ReLU err | PReLU err | gain (points) mean ± std [min, max] | relative gain |",
              "|---|---|---|---|---|---|",
              f"| paper, 14 layers, ImageNet 10-view | – | {relu / 100:.4f} | {prelu / 100:.4f} | {relu - prelu:.2f} "
              f"| {(relu - prelu) / relu:.1%} |"]
    groups = [(f"{d} layers, {i}", cell) for (d, i), cell in pairs.groupby(["depth", "init"])]
    groups.append(("all pairs where both trained", pairs[pairs.trained]))
    for name, cell in groups:
        if cell.empty:
            lines.append(f"| {name} | 0 | – | – | – | – |")
            continue
        lines.append(f"| {name} | {len(cell)} | {cell.relu.mean():.4f} | {cell.prelu.mean():.4f} "
                     f"| {_pm(cell.points, '.2f')} | {_pm(100 * cell.relative, '.1f')}% |")
    stalled = int((~pairs.trained).sum())
    lines += ["", f"Gain = ReLU error − PReLU error of the same depth, init and seed; relative = gain / ReLU error. "
              f"{stalled} pair(s) with a run at chance (≥ {summary.STALL_ERROR:.0%}) are left out of the last row: "
              "there the gain says whether PReLU escaped a stall, not how much better it classifies.", ""]
    _plot_gain(pairs, out / "prelu_gain.png", (relu - prelu) / relu)
    return "\n".join(lines)


def _plot_gain(pairs: pd.DataFrame, path: Path, paper_relative: float) -> Path:
    """PReLU's gain in error points (ReLU error − PReLU error) of each matched pair where both trained, one dot per
    seed, per cell; the paper's Table 2 gain (1.18 points) dashed. Pairs with a run at chance are left out, as in
    the table (their gain says whether PReLU escaped a stall); each cell's label counts them. Points rather than
    relative gain: on errors of 2-5% a relative gain magnifies a one-image difference. ``paper_relative`` is kept
    for the caller; the line is drawn from ``delving.paper_values`` in points."""
    from delving.plots import ACTIVATION_COLORS, plt, save_figure

    cells = list(pairs.groupby(["depth", "init"]))
    fig, ax = plt.subplots(figsize=(max(5, 1.5 * len(cells)), 3.8))
    labels = []
    for x, ((depth, init), cell) in enumerate(cells):
        trained = cell[cell.trained]
        ax.scatter([x] * len(trained), trained.points, color=ACTIVATION_COLORS["prelu"], s=18, zorder=3,
                   label="one seed (ReLU − PReLU error)" if x == 0 else None)
        if len(trained):
            ax.hlines(trained.points.mean(), x - 0.3, x + 0.3, color="black", label="mean over seeds" if x == 0 else None)
        left_out = len(cell) - len(trained)
        labels.append(f"{depth} layers\n{init}" + (f"\n({left_out} stalled, left out)" if left_out else ""))
    relu, prelu = paper.TABLE2_ERRORS["relu"][0], paper.TABLE2_ERRORS["prelu"][0]
    ax.axhline(relu - prelu, color="black", ls="--", lw=1, label=f"paper, Table 2: {relu - prelu:.2f} points "
                                                                 "(14 layers, ImageNet)")
    ax.axhline(0, color="grey", lw=0.7)
    ax.set_xticks(range(len(cells)), labels, fontsize=8)
    ax.set_xlim(-0.6, len(cells) - 0.4)
    ax.set_ylabel("PReLU's gain (error points)")
    ax.set_title(f"PReLU's gain over ReLU, pairs matched by depth, init and seed, runs in "
                 f"{Path(path).resolve().parent.parent.name}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=110)


def section_departures(runs) -> str:
    """Where the runs' setting (their logged config) differs from the paper's ImageNet setting."""
    lines = ["## 4. Where this differs from ImageNet", ""]
    run = next((r for r in runs.table.run if runs.configs.get(r)), None)
    if run is None:
        return "\n".join(lines + ["Not recorded: the runs carry no config (see README, Departures).", ""])
    get = lambda key: runs.config(run, key)  # noqa: E731
    digits = " (scikit-learn's 1,797 handwritten 8×8 digits, upscaled; 10 classes)" \
        if get("data.name") == "digits" else ""
    clip = get("optim.gradient_clip_norm")
    ours = {
        "data": f"{get('data.name')}{digits}",
        "input": f"{get('data.image_size')}×{get('data.image_size')}",
        "widths": " / ".join(map(str, get("model.kwargs.widths") or [])) or "the model's default",
        "clipping": f"gradient norm clipped at {clip} (not in the paper)" if clip else "none",
        "lr": f"{get('optim.lr')}, schedule {get('optim.schedule')} (milestones {list(get('optim.milestones') or [])})",
        "epochs": f"{get('trainer.max_epochs')} (runs logged {', '.join(map(str, sorted(set(runs.table.epochs))))})",
        "weight_decay": f"{get('optim.weight_decay')}",
        "batch": f"{get('data.batch_size')}",
    }
    lines += [f"The config of run `{run}`; the other departures (3×3 convs, circular padding, SPP {{4}}, fc 128) "
              "are in README, \"Departures from the paper\".", "",
              "| setting | these runs | paper (ImageNet) |", "|---|---|---|"]
    lines += [f"| {key} | {ours[key]} | {paper.IMAGENET_SETTING[key]} |" for key in paper.IMAGENET_SETTING]
    lines += ["", "What this means for the comparison: the init effect of Fig. 3 (a stall set by depth, not by the "
              "data) shows on the digits, while the slope profile and PReLU's gain, which the paper measured after 75 "
              "ImageNet epochs on 1000 classes, are far less developed in a few epochs on 10 classes: sections 2 and 3 "
              "compare shapes and signs, and their magnitudes are not expected to match.", ""]
    return "\n".join(lines)
