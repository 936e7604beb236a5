"""`delving dashboard`: the W&B report layout, built and validated without network."""

import json

import pandas as pd
import pytest

from delving.studies import dashboard as dash
from delving.cli import main
from delving.experiment.training.config import load_config
from delving.errors import DelvingError
from delving.experiment.training.loggers import run_tags


@pytest.fixture(scope="module")
def layout():
    return dash.build("delving-init-depth", "me", depth=30)


def _keys(panels):
    return [key for panel in panels for key in getattr(panel, "y", [])]


def test_three_sections_with_the_papers_groupings(layout):
    assert list(layout.sections) == ["ReLU vs PReLU", "Slopes", "Init × depth"]
    (by_act,), panels = layout.sections["ReLU vs PReLU"]
    assert by_act.groupby == ["config.model.activation"] and by_act.filters == ""
    assert _keys(panels) == ["val/err1", "train/err1"] and {p.x for p in panels} == {"epoch"}
    assert {(p.groupby_aggfunc, p.groupby_rangefunc) for p in panels} == {("mean", "minmax")}
    runsets, panels = layout.sections["Init × depth"]
    assert [r.groupby for r in runsets] == [["config.init.scheme", "config.model.depth"]] * 2
    assert ["activation=relu" in r.filters for r in runsets] == [True, False]
    assert ["activation=prelu" in r.filters for r in runsets] == [False, True]
    assert _keys(panels) == ["val/err1", "train/err1"]
    coords = next(p for p in panels if hasattr(p, "columns"))
    assert [c.metric.name for c in coords.columns] == ["model.activation", "init.scheme", "model.depth", "val/err1"]


def test_slope_section_has_one_panel_per_prelu_layer_of_the_fig3_net(layout):
    (prelu,), panels = layout.sections["Slopes"]
    assert "activation=prelu" in prelu.filters
    keys = _keys(panels)
    # Fig. 3's 30-layer net: 27 convs + fc1, fc2 carry a PReLU (fc3 feeds the softmax)
    assert len(keys) == 29 and keys[0] == "prelu/conv1" and keys[-2:] == ["prelu/fc1", "prelu/fc2"]
    assert sum(k.startswith("prelu/conv") for k in keys) == 27
    assert layout.n_panels == 2 + 29 + 1 + 4


def test_filters_use_the_tags_runs_carry():
    cfg = load_config(None, ["model.activation=prelu"])
    assert dash.activation_tag("prelu") in run_tags(cfg)


def test_validation_rejects_keys_that_runs_do_not_log(layout):
    data = dash.validate(layout, 30)
    assert data["blocks"][1]["text"] == "ReLU vs PReLU" and data["entity"] == "me"
    json.dumps(data)  # the whole tree is plain JSON
    bad = dash.build("p", "me", depth=30)
    bad.sections["ReLU vs PReLU"][1][0].y = ["val/err9"]
    with pytest.raises(DelvingError, match="'val/err9'"):
        dash.validate(bad, 30)
    # slope panels of a 30-layer net reference layers a 22-layer net does not have
    with pytest.raises(DelvingError, match="prelu/conv3_15"):
        dash.validate(layout, 22)


def test_validation_rejects_an_unknown_config_key():
    bad = dash.build("p", "me", depth=9)
    bad.sections["ReLU vs PReLU"][0][0].groupby = ["config.model.activaton"]
    with pytest.raises(DelvingError, match="model.activaton"):
        dash.validate(bad, 9)


def test_offline_writes_the_layout_and_says_it_needs_a_login(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    line = dash.dashboard("proj", depth=9, out=tmp_path / "d.json")
    # depth 9: 6 convs + fc1, fc2 -> 8 slope panels, + the slope-by-layer chart, + 2 + 4
    assert line == f"built 15 panels in 3 sections; needs `wandb login` to publish (layout: {tmp_path / 'd.json'})"
    data = json.loads((tmp_path / "d.json").read_text())
    assert [b["text"] for b in data["blocks"] if "text" in b][1:] == ["ReLU vs PReLU", "Slopes", "Init × depth"]


def test_logged_in_it_saves_the_report_and_prints_its_url(tmp_path, monkeypatch):
    import wandb_workspaces.reports.v2 as wr

    saved = []
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(wr.Report, "save", lambda self: saved.append(self) or self)
    monkeypatch.setattr(wr.Report, "url", property(lambda self: f"https://wandb.ai/{self.entity}/{self.project}/r"))
    line = dash.dashboard("proj", entity="me", depth=9, out=tmp_path / "d.json")
    assert len(saved) == 1 and "; published: https://wandb.ai/me/proj/r" in line
    assert "needs `wandb login`" in dash.dashboard("proj", entity="me", depth=9, out=tmp_path / "d.json", dry_run=True)
    assert len(saved) == 1


def test_cli_dashboard_and_its_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["dashboard", "--project", "p", "--depth", "22", "--out", str(tmp_path / "p.json")]) == 0
    # 19 convs + fc1, fc2 -> 21 slope panels
    assert capsys.readouterr().out.startswith("built 28 panels in 3 sections; needs `wandb login` to publish")
    assert (tmp_path / "p.json").is_file()
    assert main(["dashboard", "--project", "p", "--depth", "4", "--out", str(tmp_path / "q.json")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "delving: error: --depth 4: the plain net needs depth >= 9 (the Fig. 3 net is 30)"]
    assert not (tmp_path / "q.json").exists()


def test_every_metric_the_layout_references_is_in_a_real_runs_log(tiny):
    from delving.experiment.training.train import fit, run_dir

    cfg = load_config(None, [*tiny, "model.activation=prelu", "name=logged"])
    fit(cfg, progress=False)
    logged = set(pd.read_csv(run_dir(cfg) / "csv" / "metrics.csv").columns)  # what Lightning also sent to W&B
    referenced, _ = dash.referenced_keys(dash.build("p", "me", depth=9))
    assert referenced <= logged and "prelu/conv1" in referenced
    assert dash.logged_metric_keys(9) <= logged
