"""`delving dashboard`: a W&B report of a project's runs, built as data through W&B's own API (``wandb-workspaces``).

Three sections, the panels the paper's figures ask for:

- **ReLU vs PReLU** (Table 2): ``val/err1`` and ``train/err1`` against epoch, grouped by ``model.activation``;
- **Slopes** (Table 1): one panel per PReLU layer (``prelu/<layer>``, ``SlopeLogger``) and the end-of-run
  slope-by-layer chart, PReLU runs only, grouped by init and depth;
- **Init × depth** (Sec. 2.2, Fig. 2/3): error curves grouped by ``init.scheme`` × ``model.depth`` (one run set per
  activation), a parallel-coordinates plot of config → final error, and the forward std by layer at init.

A report rather than a workspace: each section needs its own run set (its own filter and grouping), which a report's
panel grids have and a workspace (one run set for every section) does not. Every metric and config key the layout
references is checked against what ``delving.experiment.training.callbacks`` logs and ``delving.experiment.training.config`` defines, so a renamed key fails
here and not as an empty panel on W&B. Building, validating and serializing need no network; ``save`` needs a login.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from delving.experiment.training.config import RunConfig
from delving.errors import DelvingError
from delving.studies.runs import METRICS, SLOPE_PREFIX

X_AXIS = "epoch"           # Lightning logs it with every metric; SlopeLogger plots prelu/* against it
ACTIVATION, INIT, DEPTH = "model.activation", "init.scheme", "model.depth"  # config keys the runs are grouped by
# W&B tables behind tracking's end-of-run line plots (wandb.plot.line under key K stores its table as K_table)
SLOPE_TABLE, VARIANCE_TABLE = "prelu/slope_by_layer_table", "variance/init_table"
SECTIONS = ("ReLU vs PReLU", "Slopes", "Init × depth")


@dataclass
class Layout:
    """The report, and per section its run sets and panels (kept apart so tests and validation can read them)."""

    report: object                           # wandb_workspaces.reports.v2.Report
    sections: dict[str, tuple[list, list]]   # section name -> (run sets, panels)

    @property
    def n_panels(self) -> int:
        return sum(len(panels) for _, panels in self.sections.values())


def logged_metric_keys(depth: int) -> set[str]:
    """The per-epoch metrics a run logs to W&B (and csv/metrics.csv), for a PReLU plain net of ``depth`` layers.

    Validation and training keys are those ``delving.studies.runs`` reads back (the logged names, e.g. ``train/loss_epoch``);
    the slope keys use the layer names ``slope_profile`` gives the real model, as ``SlopeLogger`` does.
    """
    return {X_AXIS, *METRICS} | {SLOPE_PREFIX + layer for layer in slope_layers(depth)}


def slope_layers(depth: int) -> list[str]:
    """PReLU layer names of the ``delving_plain`` net of ``depth`` layers (network order), e.g. conv1 ... fc2."""
    import timm  # delving_plain is registered in timm by importing the delving package, as this module does

    from delving.nn.probes import slope_profile

    # names do not depend on the widths: build the smallest net (a 30-layer one in ~10 ms)
    model = timm.create_model("delving_plain", depth=depth, activation="prelu", num_classes=10, widths=[1, 1, 1])
    return [record.layer for record in slope_profile(model)]


def activation_tag(name: str) -> str:
    """The tag ``tracking.run_tags`` gives a run (filters use tags: they need no knowledge of W&B's config nesting)."""
    return f"activation={name}"


def build(project: str, entity: str, depth: int = 30) -> Layout:
    """The report for ``entity/project``; slope panels for the layers of a ``depth``-layer PReLU net."""
    import wandb_workspaces.reports.v2 as wr

    runset = _runset_factory(wr, entity, project)
    sections = {
        SECTIONS[0]: ([runset("by activation", [ACTIVATION])],
                      [_curve(wr, "val/err1", "Validation top-1 error, ReLU vs PReLU"),
                       _curve(wr, "train/err1", "Training top-1 error, ReLU vs PReLU")]),
        SECTIONS[1]: ([runset("PReLU runs", [INIT, DEPTH], "prelu")],
                      [_curve(wr, SLOPE_PREFIX + layer, f"{layer}: learned slope a (channel mean)", "slope")
                       for layer in slope_layers(depth)] + [_table_chart(wr, SLOPE_TABLE, "depth", "slope_mean")]),
        SECTIONS[2]: ([runset(f"{act} by init × depth", [INIT, DEPTH], act) for act in ("relu", "prelu")],
                      [_curve(wr, "val/err1", "Validation top-1 error by init × depth"),
                       _curve(wr, "train/err1", "Training top-1 error by init × depth"),
                       wr.ParallelCoordinatesPlot(title="Config → final validation error", columns=[
                           *(wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k)) for k in (ACTIVATION, INIT, DEPTH)),
                           wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric("val/err1"))]),
                       _table_chart(wr, VARIANCE_TABLE, "index", "forward_std")]),
    }
    blocks = [wr.P("He et al. 2015, Delving Deep into Rectifiers: Table 2 (ReLU vs PReLU), Table 1 (learned slopes), "
                   "Sec. 2.2 / Fig. 2-3 (init × depth).")]
    for name, (runsets, panels) in sections.items():
        blocks += [wr.H2(name), wr.PanelGrid(runsets=runsets, panels=panels)]
    report = wr.Report(project=project, entity=entity, title=f"Delving Deep into Rectifiers: {project}",
                       description="ReLU vs PReLU, learned slopes, init × depth (made by `delving dashboard`)",
                       blocks=blocks)
    return Layout(report, sections)


def _runset_factory(wr, entity: str, project: str):
    """Run sets of the project, grouped by config keys, optionally only the runs of one activation (by tag)."""
    from wandb_workspaces import expr

    def runset(name: str, groupby: list[str], activation: str | None = None):
        filters = [expr.Tags().isin([activation_tag(activation)])] if activation else ""
        return wr.Runset(entity=entity, project=project, name=name, filters=filters,
                         groupby=[f"config.{key}" for key in groupby])
    return runset


def _curve(wr, key: str, title: str, y_title: str = "top-1 error"):
    """``key`` against epoch, mean over the seeds of a group with a min-max band (as the summary figure draws it)."""
    return wr.LinePlot(title=title, x=X_AXIS, y=[key], groupby_aggfunc="mean", groupby_rangefunc="minmax",
                       title_x="epoch", title_y=y_title)


def _table_chart(wr, table: str, x: str, y: str):
    """A table tracking logs at the end of a run, drawn with W&B's stock line chart (the one wandb.plot.line uses)."""
    return wr.CustomChart(query={"summaryTable": {"tableKey": table}}, chart_name="wandb/line/v0",
                          chart_fields={"x": x, "y": y}, chart_strings={})


def referenced_keys(layout: Layout) -> tuple[set[str], set[str]]:
    """The metric keys and config keys the layout's panels and run sets name."""
    metrics, configs = set(), set()
    for runsets, panels in layout.sections.values():
        for runset in runsets:
            configs |= {key.split(".", 1)[1] for key in runset.groupby if key.startswith("config.")}
        for panel in panels:
            metrics |= {key for key in (getattr(panel, "x", None), *getattr(panel, "y", ())) if key}
            for column in getattr(panel, "columns", ()):
                target = configs if type(column.metric).__name__ == "Config" else metrics
                target.add(column.metric.name)
    return metrics, configs


def validate(layout: Layout, depth: int) -> dict:
    """Check every referenced key against what runs log and what the config defines; return the layout as JSON data.

    Raises DelvingError naming the first unknown key.
    """
    from pydantic import TypeAdapter

    metrics, configs = referenced_keys(layout)
    logged = logged_metric_keys(depth)
    unknown = sorted(metrics - logged)
    if unknown:
        raise DelvingError(f"dashboard panel references {unknown[0]!r}, which runs do not log; logged: "
                           f"{', '.join(sorted(logged))}")
    schema = OmegaConf.structured(RunConfig)
    missing = object()
    for key in sorted(configs):
        if OmegaConf.select(schema, key, default=missing) is missing:
            raise DelvingError(f"dashboard groups by config key {key!r}, which delving.experiment.training.config does not define")
    # pydantic validated each object when it was built; dumping checks the whole tree serializes
    return TypeAdapter(type(layout.report)).dump_python(layout.report, mode="json")


def dashboard(project: str, entity: str | None = None, depth: int = 30, out: str | Path | None = None,
              dry_run: bool = False) -> str:
    """Build and validate the report; publish it when logged in (and not ``dry_run``), else write it as JSON.

    Returns the line to print.
    """
    from delving.experiment.training.loggers import wandb_mode

    if depth < 9:
        raise DelvingError(f"--depth {depth}: the plain net needs depth >= 9 (the Fig. 3 net is 30)")
    online = not dry_run and wandb_mode("auto") == "online"
    if online and entity is None:
        import wandb

        entity = wandb.Api().default_entity
    layout = build(project, entity or "ENTITY", depth)
    data = validate(layout, depth)
    path = Path(out) if out else Path("runs") / f"dashboard-{project}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    built = f"built {layout.n_panels} panels in {len(layout.sections)} sections"
    if not online:
        return f"{built}; needs `wandb login` to publish (layout: {path})"
    layout.report.save()
    return f"{built}; published: {layout.report.url} (layout: {path})"
