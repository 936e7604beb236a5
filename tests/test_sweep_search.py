"""W&B's search methods offline: random and bayes proposals from W&B's own engine (``sweeps``), run_cap and --count,
the proposals file and its resume, and hyperband's early termination inside a run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from conftest import ROOT
from delving.errors import DelvingError
from delving.experiment.rundir.run_dir import RunDir, checkpoint_position
from delving.experiment.sweeps import engine
from delving.experiment.sweeps.grid import load_sweep
from delving.experiment.sweeps.pruning import PRUNED, Hyperband, HyperbandPruner
from delving.experiment.sweeps.search import FILE, Search, default_seed, run_name

N = 400  # proposals drawn for the distribution checks (no training)
DISTRIBUTIONS = {
    "p.categorical": {"values": ["relu", "prelu", "elu"]},
    "p.probabilities": {"values": [1, 2, 3], "probabilities": [0.1, 0.2, 0.7]},
    "p.int_uniform": {"distribution": "int_uniform", "min": 9, "max": 13},
    "p.uniform": {"distribution": "uniform", "min": 0.5, "max": 0.99},
    "p.q_uniform": {"distribution": "q_uniform", "min": 0, "max": 10, "q": 2},
    "p.log_uniform_values": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
    "p.log_uniform": {"distribution": "log_uniform", "min": -3, "max": 0},  # bounds are exponents (deprecated)
    "p.inv_log_uniform_values": {"distribution": "inv_log_uniform_values", "min": 0.1, "max": 10},
    "p.q_log_uniform_values": {"distribution": "q_log_uniform_values", "min": 1, "max": 100, "q": 1},
    "p.normal": {"distribution": "normal", "mu": 1.0, "sigma": 2.0},
    "p.q_normal": {"distribution": "q_normal", "mu": 0.0, "sigma": 2.0, "q": 0.5},
    "p.log_normal": {"distribution": "log_normal", "mu": 0.0, "sigma": 0.5},
    "p.beta": {"distribution": "beta", "a": 2.0, "b": 5.0},
    "p.q_beta": {"distribution": "q_beta", "a": 2.0, "b": 5.0, "q": 0.1},
    "p.fixed": {"value": 7},
}
TINY_EXPERIMENT = ["model:", "  depth: 9", "  kwargs: {widths: [4, 8, 8], fc_width: 16}", "data: {batch_size: 32}",
                   "tracking: {wandb: disabled}", "threads: 1",
                   "trainer: {max_epochs: 2, limit_train_batches: 4, limit_val_batches: 2, enable_progress_bar: false}"]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tiny_search(tmp_path: Path, head: str, parameters: str) -> Path:
    """A sweep file over the tiny experiment: ``head`` (method, run_cap, metric, ...) and extra parameters."""
    exp = write(tmp_path / "tiny.yaml", "\n".join(TINY_EXPERIMENT) + "\n")
    return write(tmp_path / "sweep.yaml", f"name: tiny\n{head}parameters:\n  config: {{value: {exp}}}\n{parameters}")


def draws(raw: dict, n: int = N, seed: int = 0) -> dict[str, list]:
    proposals = [engine.propose(raw, [], seed, k) for k in range(n)]
    return {key: [p[key] for p in proposals] for key in proposals[0]}


def test_random_search_draws_every_distribution_of_the_schema_in_range_and_of_its_type(tmp_path):
    path = write(tmp_path / "s.yaml", json.dumps({"name": "d", "method": "random", "parameters": DISTRIBUTIONS}))
    sweep = load_sweep(path)
    assert sweep.fixed == {"p.fixed": 7} and set(sweep.space) == set(DISTRIBUTIONS) - {"p.fixed"}
    got = draws(sweep.raw)
    assert set(got) == set(sweep.space)  # a fixed value is not proposed: it comes from sweep.fixed
    assert set(got["p.categorical"]) == {"relu", "prelu", "elu"}
    counts = np.bincount(got["p.probabilities"], minlength=4)[1:] / N
    assert np.allclose(counts, [0.1, 0.2, 0.7], atol=0.06), counts
    assert set(got["p.int_uniform"]) == set(range(9, 14)) and all(type(v) is int for v in got["p.int_uniform"])
    assert all(type(v) is int and v % 2 == 0 and 0 <= v <= 10 for v in got["p.q_uniform"])  # int q: ints
    assert all(type(v) is int and 1 <= v <= 100 for v in got["p.q_log_uniform_values"])
    assert all(type(v) is float and 0.5 <= v <= 0.99 for v in got["p.uniform"])
    assert stats.kstest(got["p.uniform"], stats.uniform(0.5, 0.49).cdf).pvalue > 1e-3
    # log-uniform: the logs are uniform between the logs of the bounds (the bounds themselves for log_uniform)
    for key, (low, high) in {"p.log_uniform_values": (math.log(1e-4), math.log(1e-1)), "p.log_uniform": (-3, 0),
                             "p.inv_log_uniform_values": (math.log(0.1), math.log(10))}.items():
        logs = np.log(got[key])
        assert logs.min() >= low - 1e-9 and logs.max() <= high + 1e-9, key
        assert stats.kstest(logs, stats.uniform(low, high - low).cdf).pvalue > 1e-3, key
    normal = np.array(got["p.normal"])
    assert abs(normal.mean() - 1.0) < 0.3 and abs(normal.std() - 2.0) < 0.3
    assert all(abs(v / 0.5 - round(v / 0.5)) < 1e-9 for v in got["p.q_normal"])
    assert abs(np.log(got["p.log_normal"]).std() - 0.5) < 0.08 and min(got["p.log_normal"]) > 0
    assert 0 <= min(got["p.beta"]) and max(got["p.beta"]) <= 1 and abs(np.mean(got["p.beta"]) - 2 / 7) < 0.03
    assert all(abs(v * 10 - round(v * 10)) < 1e-9 for v in got["p.q_beta"])


def test_seeded_proposals_are_pinned_and_depend_on_the_seed_and_index_only():
    """W&B's engine with delving's seeding: the first proposals of seed 0, pinned. A new engine version (or seeding)
    that draws other values fails here."""
    raw = {"method": "random", "parameters": {
        "optim.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 0.1},
        "optim.momentum": {"distribution": "uniform", "min": 0.5, "max": 0.99},
        "model.depth": {"distribution": "int_uniform", "min": 9, "max": 30},
        "init.scheme": {"values": ["he", "xavier"]}}}
    pinned = [
        {"init.scheme": "he", "model.depth": 30, "optim.lr": 0.0005128065945615873,
         "optim.momentum": 0.8280535341716803},
        {"init.scheme": "xavier", "model.depth": 9, "optim.lr": 0.08628362330587146,
         "optim.momentum": 0.9005909758632271},
        {"init.scheme": "he", "model.depth": 26, "optim.lr": 0.0032040747277607847,
         "optim.momentum": 0.9561828034726843},
    ]
    got = [engine.propose(raw, [], 0, k) for k in range(3)]
    assert got[0].keys() == pinned[0].keys()
    for proposal, expected in zip(got, pinned):
        assert {k: v for k, v in proposal.items() if isinstance(v, str)} == {k: v for k, v in expected.items()
                                                                             if isinstance(v, str)}
        assert {k: v for k, v in proposal.items() if not isinstance(v, str)} == pytest.approx(
            {k: v for k, v in expected.items() if not isinstance(v, str)}, rel=1e-12)
    assert engine.propose(raw, [], 0, 2) == got[2]  # proposal 2 alone, without 0 and 1 first: the same
    assert engine.propose(raw, [], 1, 0) != got[0]
    assert default_seed("tiny") == 2303765501  # the seed of a search started without --seed: from its name


def test_bayes_proposes_near_the_best_runs_once_they_report_the_metric():
    raw = {"method": "bayes", "metric": {"name": "val/err1", "goal": "minimize"},
           "parameters": {"optim.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1.0}}}
    first = engine.propose(raw, [], 0, 0)["optim.lr"]
    assert 1e-4 <= first <= 1.0  # no run has ended yet: still a proposal (a random point, numpy's generator)
    state = np.random.get_state()[1].copy()
    assert engine.propose(raw, [], 0, 0)["optim.lr"] == first != engine.propose(raw, [], 1, 0)["optim.lr"]
    assert (np.random.get_state()[1] == state).all()  # the caller's generator is left as it was
    lrs = [1e-4, 1e-3, 3e-2, 0.3, 1.0, 3e-4, 0.1]

    def trials(metric):  # finished runs, each with its metric by epoch; the GP reads the best epoch
        return [engine.Trial(f"r{i}", {"optim.lr": lr}, engine.FINISHED, [0.95, metric(lr)]) for i, lr in
                enumerate(lrs)]

    best_at_0_01 = trials(lambda lr: abs(math.log10(lr) + 2) / 4)
    proposals = [engine.propose(raw, best_at_0_01, seed, len(lrs))["optim.lr"] for seed in range(3)]
    assert all(abs(math.log10(lr) + 2) < 0.3 for lr in proposals), proposals  # within 2x of the best lr
    assert engine.propose(raw, best_at_0_01, 0, 7) == engine.propose(raw, best_at_0_01, 0, 7)  # seeded
    best_at_1 = trials(lambda lr: -math.log10(lr) / 4)
    assert engine.propose(raw, best_at_1, 0, len(lrs))["optim.lr"] > 0.1


def test_hyperband_bands_are_w_and_bs_brackets():
    def bands(early_terminate, horizon=100):
        return engine.bands({"metric": {"name": "val/err1"}, "early_terminate": {"type": "hyperband",
                                                                                  **early_terminate}}, horizon)

    assert bands({"min_iter": 1, "eta": 3}) == [1, 3, 9, 27, 81]  # min_iter * eta^k
    assert bands({"min_iter": 2, "eta": 2}, 14) == [2, 4, 8]
    assert bands({"max_iter": 27, "eta": 3, "s": 2}) == [3, 9]  # max_iter / eta^k, k = 1..s
    assert bands({"max_iter": 81, "eta": 3, "s": 3}) == [3, 9, 27]


def test_hyperband_rule_stops_a_run_worse_than_the_top_third_at_its_band():
    config = {"metric": {"name": "val/err1", "goal": "minimize"},
              "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 3}}
    others = [[0.5, 0.3, 0.2], [0.6, 0.4, 0.3]]
    # band 1: values [0.5, 0.6, own]; threshold = sorted(values)[int(3 / 3)]: a run must be in the best 1/eta
    assert engine.should_stop(config, [0.7], others) == engine.Decision(band=1, value=0.7, threshold=0.6)
    assert engine.should_stop(config, [0.55], others) is None
    assert engine.should_stop(config, [0.55, 0.5], others) is None  # band 1 passed; band 3 not reached yet
    assert engine.should_stop(config, [0.55, 0.5, 0.45], others).band == 3
    maximize = {**config, "metric": {"name": "val/acc", "goal": "maximize"}}
    assert engine.should_stop(maximize, [0.7], others) is None
    assert engine.should_stop(maximize, [0.4], others) == engine.Decision(band=1, value=0.4, threshold=0.5)
    assert engine.should_stop(config, [float("nan")], others) is None  # no finite value yet: nothing to judge


def _fake_run(folder: Path, name: str, values: list[float], status: str | None = "finished") -> RunDir:
    """A run folder with a config, its val/err1 by epoch in csv/metrics.csv and (unless None) a result."""
    run = RunDir(folder / name)
    run.csv_dir.mkdir(parents=True)
    run.config_path.write_text(json.dumps({"seed": 0, "model": {"activation": "relu", "depth": 9},
                                           "init": {"scheme": "he"}}))
    rows = "".join(f"{epoch},{3 * epoch + 3},{value}\n" for epoch, value in enumerate(values))
    run.metrics_path.write_text("epoch,step,val/err1\n" + rows)
    if status:
        history = [{"epoch": e, "val/err1": v, "train/err1": v} for e, v in enumerate(values)]
        run.write_result({"status": status, "name": name, "activation": "relu", "init": "he", "depth": 9, "seed": 0,
                          "epochs": len(values), "final_val_err1": values[-1], "best_val_err1": min(values),
                          "final_train_err1": values[-1], "history": history})
    return run


class _Trainer(SimpleNamespace):
    """What the pruner reads of a Lightning Trainer."""

    def __init__(self, epoch: int, metrics: dict):
        super().__init__(current_epoch=epoch, callback_metrics=metrics, should_stop=False,
                         strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision))


def test_pruner_stops_at_the_band_where_the_run_is_worse_than_the_sweeps_runs(tmp_path):
    _fake_run(tmp_path, "a", [0.2, 0.1, 0.1])
    _fake_run(tmp_path, "b", [0.3, 0.2, 0.1], status=None)  # still running: its history counts too, as on W&B
    hyperband = Hyperband({"metric": {"name": "val/err1", "goal": "minimize"},
                           "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 3}}, str(tmp_path))
    good, bad = HyperbandPruner(hyperband, "good"), HyperbandPruner(hyperband, "bad")
    trainer = _Trainer(0, {"val/err1": 0.25})
    good.on_train_epoch_end(trainer, None)
    assert not trainer.should_stop and good.history == [0.25] and good.decision is None
    trainer = _Trainer(0, {"val/err1": 0.5})
    bad.on_train_epoch_end(trainer, None)
    assert trainer.should_stop and bad.epochs == 1 and bad.decision.band == 1 and bad.decision.threshold == 0.3
    resumed = HyperbandPruner(hyperband, "bad")  # killed after its decision, before its record: judged at start
    resumed.load_state_dict(bad.state_dict())
    trainer = _Trainer(1, {})
    resumed.on_train_start(trainer, None)
    assert trainer.should_stop and resumed.decision == bad.decision


def test_pruned_runs_are_listed_apart_in_the_summary_not_averaged(tmp_path):
    from delving.studies.summary import finished_runs, summarize

    for seed, curve in enumerate([[0.5, 0.2], [0.6, 0.3]]):
        _fake_run(tmp_path, f"he-{seed}", curve)
    pruned = _fake_run(tmp_path, "he-2", [0.9], status=PRUNED)
    result = pruned.read_result()
    pruned.write_result({**result, PRUNED: {"epoch": 1, "band": 1, "metric": "val/err1", "value": 0.9,
                                            "threshold": 0.6}})
    results = finished_runs(tmp_path)
    assert sorted(results.run) == ["he-0", "he-1"] and list(results.attrs["pruned"].run) == ["he-2"]
    text = summarize(tmp_path)
    assert "| 9 | relu | he | 2 |" in text and "0.250 ± 0.071" in text  # the two whole runs' final val errors
    assert "1 run(s)" in text and "| he-2 | 1 | 0.900 | 1 | val/err1 0.900 | 0.600 |" in text


def test_the_proposals_file_resumes_the_same_search_and_refuses_another(tmp_path):
    path = tiny_search(tmp_path, "method: random\nrun_cap: 4\n", "  optim.lr: {distribution: log_uniform_values, "
                                                                "min: 0.001, max: 0.1}\n  seed: {values: [0, 1]}\n")
    sweep, folder = load_sweep(path), tmp_path / "runs" / "tiny"
    search = Search.open(sweep, folder)
    assert search.seed == default_seed("tiny") and not search.path.exists()  # nothing written before a proposal
    first = [search.propose([]) for _ in range(2)]
    assert [p.index for p in first] == [0, 1] and first[0].name == run_name("000", first[0].values)
    assert first[0].name.startswith("run-000,lr=") and first[0].name.endswith(f",seed={first[0].values['seed']}")
    again = Search.open(sweep, folder)
    assert again.proposals == first and again.propose([]).index == 2  # continues; never index 0 or 1 again
    assert Search.open(sweep, folder, seed=search.seed).proposals[:2] == first
    other = Search.open(sweep, folder)  # a second process on the same folder, opened before the next proposal
    mine = again.propose([])
    assert other.propose([]).index == mine.index + 1  # it re-reads the file under the lock: no index twice
    assert [p.index for p in Search.open(sweep, folder).proposals] == [0, 1, 2, 3, 4]
    with pytest.raises(DelvingError, match=r"--seed 5 is not this folder's search \(started with seed \d+"):
        Search.open(sweep, folder, seed=5)
    changed = load_sweep(write(path, path.read_text().replace("max: 0.1", "max: 0.5")))
    with pytest.raises(DelvingError, match=f"holds a search of another file .*delete .*{FILE}"):
        Search.open(changed, folder)
    (folder / FILE).write_text("{not json")
    with pytest.raises(DelvingError, match=f"unreadable .*{FILE}"):
        Search.open(sweep, folder)


@pytest.mark.parametrize("head, parameters, message", [
    ("method: random\nseed: 3\n", "  optim.lr: {min: 0.001, max: 0.1}\n", "'seed' was unexpected"),
    ("method: random\n", "  optim.lr: {distribution: uniform, min: 0.5, max: 0.1}\n", "min 0.5 is not less than max"),
    ("method: bayes\nmetric: {name: val/acc}\n", "  optim.lr: {min: 0.001, max: 0.1}\n",
     "bayes needs metric.name, one a run logs every epoch; got 'val/acc'; valid: val/err1"),
    ("method: grid\nmetric: {name: loss}\nearly_terminate: {type: hyperband, min_iter: 1}\n",
     "  seed: {values: [0]}\n", "early_terminate needs metric.name"),
    ("method: random\nearly_terminate: {type: hyperband, eta: 3}\n", "  seed: {values: [0]}\n", "is not valid under"),
    ("method: bayes\nmetric: {name: val/err1}\n", "  seed: {values: [0, 1], probabilities: [0.5, 0.5]}\n",
     "bayes with 'probabilities' fails inside W&B's engine"),
    ("method: random\n", "  model: {parameters: {depth: {values: [9]}}}\n", "write model.depth"),
])
def test_files_w_and_b_would_refuse_are_one_line_errors(tmp_path, head, parameters, message):
    with pytest.raises(DelvingError, match=message) as err:
        load_sweep(tiny_search(tmp_path, head, parameters))
    assert "\n" not in str(err.value)


def test_search_needs_an_end_and_the_grid_options_refuse_it(tmp_path, capsys):
    from delving.cli import main
    from delving.experiment.sweeps.local_search import run_search

    path = tiny_search(tmp_path, "method: random\n", "  optim.lr: {min: 0.001, max: 0.1}\n")
    with pytest.raises(DelvingError, match="needs an end here: run_cap in the file or --count N"):
        run_search(load_sweep(path), tmp_path / "runs")
    assert main(["sweep", str(path), "--out", str(tmp_path / "runs"), "--list"]) == 2
    assert "proposes its runs as it goes and has no grid cells" in capsys.readouterr().err
    grid = tiny_search(tmp_path, "method: grid\n", "  seed: {values: [0]}\n")
    assert main(["sweep", str(grid), "--out", str(tmp_path / "runs"), "--seed", "3"]) == 2
    assert "--seed 3 seeds a local random/bayes search" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "sweeps" / "examples").glob("*.yaml")))
def test_every_example_search_validates_and_its_first_proposals_build(name, tmp_path):
    from delving.experiment.sweeps.grid import cell_config
    from delving.experiment.sweeps.local import check_cells

    sweep = load_sweep(ROOT / "sweeps" / "examples" / name)
    assert sweep.is_search and sweep.raw["run_cap"] >= 1 and sweep.raw["command"][-1] == "${args}"
    search = Search(sweep, tmp_path, default_seed(sweep.name), [])
    proposals = [search.propose([]) for _ in range(3)]
    check_cells([cell_config(sweep, p.values, tmp_path, name=p.name) for p in proposals])


def test_wandb_mode_sends_a_random_file_unchanged_and_agent_runs_get_distinct_folders(tmp_path, monkeypatch):
    import wandb

    import delving.experiment.sweeps.online as online
    from delving.experiment.sweeps.agent import agent_layout
    from delving.experiment.training.config import load_config

    sweep = load_sweep(ROOT / "sweeps" / "examples" / "random_lr.yaml")
    calls = {}
    monkeypatch.setattr(online, "wandb_mode", lambda requested: "online")
    monkeypatch.setattr(wandb, "sweep", lambda config, project: calls.update(config=config) or "s1")
    monkeypatch.setattr(wandb, "Api", lambda: SimpleNamespace(default_entity="me"))
    monkeypatch.setattr(online.subprocess, "run", lambda cmd, **kw: None)
    online.run_wandb(sweep)
    assert calls["config"] == sweep.raw and calls["config"]["method"] == "random"
    # under `wandb agent`: the run's folder names its searched values and its W&B run id
    params = write(tmp_path / "params.yaml", "optim.lr: {value: 0.012345}\noptim.momentum: {value: 0.9}\n"
                                             "seed: {value: 1}\n")
    monkeypatch.setenv("WANDB_SWEEP_ID", "s1")
    monkeypatch.setenv("WANDB_RUN_ID", "abc123")
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(params))
    api = SimpleNamespace(sweep=lambda path: SimpleNamespace(config=sweep.raw))
    cfg = agent_layout(load_config(None, ["optim.lr=0.012345", "optim.momentum=0.9", "seed=1"]), api=api)
    assert cfg.name == "run-abc123,lr=0.0123,momentum=0.9,seed=1" and cfg.tracking.group == "random_lr"


def test_random_search_respects_run_cap_and_count_and_never_trains_a_run_twice(tmp_path):
    from delving.experiment.sweeps.local_search import run_search

    path = tiny_search(tmp_path, "method: random\nrun_cap: 3\n",
                       "  optim.lr: {distribution: log_uniform_values, min: 0.001, max: 0.1}\n")
    sweep, out = load_sweep(path), tmp_path / "runs"
    folder, failed = run_search(sweep, out, jobs=1, count=2)
    assert failed == 0 and len(Search.open(sweep, folder).proposals) == 2
    results = sorted(folder.glob(f"run-*/{RunDir.RESULT}"))
    stamps = [p.stat().st_mtime_ns for p in results]
    run_search(sweep, out, jobs=1)  # up to run_cap: one more
    proposals = Search.open(sweep, folder).proposals
    assert [p.index for p in proposals] == [0, 1, 2] and [p.stat().st_mtime_ns for p in results] == stamps
    assert sorted(p.parent.name for p in folder.glob(f"run-*/{RunDir.RESULT}")) == [p.name for p in proposals]
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob(f"run-*/{RunDir.RESULT}")}
    run_search(sweep, out, jobs=1)  # the cap is reached: nothing proposed, nothing trained
    assert len(Search.open(sweep, folder).proposals) == 3 and {p: p.stat().st_mtime_ns for p in stamps} == stamps
    lrs = [RunDir(folder / p.name).read_config()["optim"]["lr"] for p in proposals]
    assert lrs == [p.values["optim.lr"] for p in proposals] and all(0.001 <= lr <= 0.1 for lr in lrs)


def test_hyperband_prunes_a_real_run_at_its_band_and_a_rerun_does_not_train_it(tmp_path, capsys):
    """One real tiny run beside a finished fake one whose val error is far lower: pruned after epoch 1 (its band),
    its folder a valid run (last.ckpt of epoch 1), recorded as pruned; the sweep run again leaves it alone."""
    from delving.experiment.sweeps.local import run_local

    path = tiny_search(tmp_path, "method: grid\nmetric: {name: val/err1, goal: minimize}\n"
                                 "early_terminate: {type: hyperband, min_iter: 1, eta: 3}\n",
                       "  trainer.max_epochs: {value: 3}\n  seed: {values: [0]}\n")
    folder = tmp_path / "runs" / "tiny"
    _fake_run(folder, "strong", [0.01, 0.01, 0.01])
    run_local(load_sweep(path), tmp_path / "runs", jobs=1)
    run = RunDir(folder / "seed=0")
    result = run.read_result()
    assert result["status"] == PRUNED and result["epochs"] == 1 and [r["epoch"] for r in result["history"]] == [0]
    assert result[PRUNED]["band"] == 1 and result[PRUNED]["threshold"] == 0.01 and result[PRUNED]["value"] > 0.01
    assert checkpoint_position(run.last_checkpoint) == (4, 1)  # 4 steps, 1 epoch: a resumable run folder
    assert "seed=0: pruned after epoch 1 (hyperband band 1" in capsys.readouterr().out
    stamp = run.result_path.stat().st_mtime_ns
    run_local(load_sweep(path), tmp_path / "runs", jobs=1)
    assert run.result_path.stat().st_mtime_ns == stamp and "1 already done, 0 to run" in capsys.readouterr().out


TIMINGS = ("fit_seconds", "step_seconds", "setup_seconds", "run_seconds")


def _search_outcome(folder: Path) -> dict:
    """The proposals file, and per run its result without timings and its metrics rows."""
    runs = {}
    for path in sorted(p for p in folder.iterdir() if p.name.startswith("run-")):
        run = RunDir(path)
        result = {k: v for k, v in run.read_result().items() if k not in TIMINGS}
        runs[path.name] = {"result": result, "metrics": run.metrics_path.read_text()}
    return {"search": json.loads((folder / FILE).read_text()), "runs": runs}


@pytest.mark.slow
def test_a_killed_bayes_search_resumes_the_same_proposals_and_ends_where_an_uninterrupted_one_ends(tmp_path):
    """SIGKILL inside the second run (a step past a mid-epoch checkpoint), then the same command again: the finished
    run is not trained again, the killed one resumes from its checkpoint, and bayes' third proposal, fitted to the
    first two runs' metrics, is the one the uninterrupted search made (CPU, seeded, --jobs 1)."""
    import os
    import subprocess
    import sys

    from conftest import terminal_sigint

    exp = write(tmp_path / "tiny.yaml", "\n".join([
        "model:", "  depth: 9", "  kwargs: {widths: [4, 8, 8], fc_width: 16}", "  drop_rate: 0.5",
        "data: {batch_size: 32}", "tracking: {wandb: disabled}", "threads: 1",
        "trainer: {max_epochs: 2, limit_train_batches: 4, limit_val_batches: 2, checkpoint_every_n_steps: 2}"]) + "\n")
    path = write(tmp_path / "sweep.yaml", f"name: tiny\nmethod: bayes\nrun_cap: 3\nmetric: {{name: val/err1}}\n"
                                          f"parameters:\n  config: {{value: {exp}}}\n"
                                          "  optim.lr: {distribution: log_uniform_values, min: 0.001, max: 0.1}\n")

    def sweep(out: Path, *worker: str) -> subprocess.CompletedProcess:
        script = [str(ROOT / "tests" / "sweep_kill_worker.py"), *worker] if worker else ["-m", "delving"]
        env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
        return subprocess.run([sys.executable, *script, "sweep", str(path), "--out", str(out), "--jobs", "1"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                              preexec_fn=terminal_sigint)

    proc = sweep(tmp_path / "whole")
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = _search_outcome(tmp_path / "whole" / "tiny")
    killed = sweep(tmp_path / "cut", "--kill-at", "step:7", "--signal", "KILL", "--cell", "1")
    assert killed.returncode != 0, killed.stdout[-1000:] + killed.stderr[-2000:]
    folder = tmp_path / "cut" / "tiny"
    names = [p["name"] for p in expected["search"]["proposals"]]
    assert [p["name"] for p in json.loads((folder / FILE).read_text())["proposals"]] == names[:2]
    assert RunDir(folder / names[0]).result_path.is_file() and not RunDir(folder / names[1]).result_path.exists()
    stamp = RunDir(folder / names[0]).result_path.stat().st_mtime_ns

    resumed = sweep(tmp_path / "cut")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "run_cap 3: 2 proposed, 1 ended" in resumed.stdout and "resume not exact" not in resumed.stderr
    assert RunDir(folder / names[0]).result_path.stat().st_mtime_ns == stamp  # not trained again
    outcome = _search_outcome(folder)
    assert outcome["search"] == expected["search"]  # the same three proposals, the bayes one included
    assert outcome["runs"] == expected["runs"]  # every run's result and metrics rows, bit for bit
