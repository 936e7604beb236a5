import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import ROOT, run_cli, terminal_sigint
from delving.errors import DelvingError
from delving.studies.summary import checks, finished_runs, summarize
from delving.experiment.sweeps.grid import cell_name, configs, load_sweep
from delving.experiment.sweeps.local import run_local


def test_deep_sweep_is_72_valid_runs_and_every_init_applies_to_every_activation(tmp_path):
    import torch

    from delving.data import DigitsDataModule
    from delving.experiment.training.train import build_model

    cfgs = configs(load_sweep(ROOT / "sweeps" / "init_depth_deep.yaml"), tmp_path)
    assert len(cfgs) == 72 and {c.model.depth for c in cfgs} == {30, 50, 100}
    assert {c.model.activation for c in cfgs} == {"relu", "prelu", "elu", "gelu"}
    assert {c.init.scheme for c in cfgs} == {"xavier", "he", "variance_preserving"}
    assert {(c.trainer.max_epochs, c.optim.gradient_clip_norm) for c in cfgs} == {(8, 1.0)}  # extends init_depth
    datamodule = DigitsDataModule()
    for cfg in cfgs:
        if cfg.model.depth == 100 and cfg.seed == 0 and cfg.model.activation in ("gelu", "elu"):
            model = build_model(cfg, datamodule)  # He on GELU/ELU: the ReLU gain, no error
            assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)


def test_grid_from_the_repo_yaml():
    sweep = load_sweep(ROOT / "sweeps" / "init_depth.yaml")
    cells = sweep.cells()
    assert len(cells) == 2 * 2 * 2 * 3
    assert {c["model.activation"] for c in cells} == {"relu", "prelu"}
    assert {c["init.scheme"] for c in cells} == {"xavier", "he"}
    assert {c["model.depth"] for c in cells} == {22, 30}
    assert len({c["seed"] for c in cells}) >= 3
    cfgs = configs(sweep, Path("runs/init_depth"))
    assert len({cfg.name for cfg in cfgs}) == 24
    first = cfgs[0]
    assert (first.model.activation, first.init.scheme, first.model.depth, first.seed) == ("relu", "xavier", 22, 0)
    assert first.tracking.group == "init_depth" and first.trainer.max_epochs == 14  # from the experiment YAML
    assert sweep.raw["command"][-1] == "${args}"  # the same file drives `wandb agent`


def write_sweep(tmp_path: Path, parameters: str) -> Path:
    exp = tmp_path / "tiny.yaml"
    exp.write_text("\n".join(["model:", "  depth: 9", "  kwargs: {widths: [4, 8, 8], fc_width: 16}",
                              "data: {batch_size: 32}", "tracking: {wandb: disabled}",
                              "trainer: {max_epochs: 2, limit_train_batches: 4, limit_val_batches: 2}"]) + "\n")
    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: tiny\nmethod: grid\nparameters:\n  config: {{value: {exp}}}\n{parameters}")
    return path


@pytest.mark.parametrize("text, message", [
    ("parameters: [1, 2\n", "malformed sweep YAML .* line"),
    ("method: grid\n", "needs a 'parameters' mapping"),
    ("method: hill\nparameters: {seed: {values: [1]}}\n", "unknown method 'hill'; valid: grid, random, bayes"),
    ("method: bayes\nparameters: {seed: {values: [1, 2]}}\n", "bayes needs metric.name, one a run logs every epoch"),
    ("parameters: {seed: {values: []}}\n", "parameter 'seed' needs 'value: x' or a non-empty"),
])
def test_malformed_sweeps_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(DelvingError, match=message):
        load_sweep(path)


def test_unknown_key_in_a_sweep_fails_before_any_run(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, "  model.dept: {values: [9]}\n"))
    with pytest.raises(DelvingError, match="unknown config key 'model.dept'"):
        run_local(sweep, tmp_path / "runs", jobs=1)
    assert not (tmp_path / "runs").exists()


def test_local_sweep_runs_skips_finished_and_summarizes(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, "  init.scheme: {values: [xavier, he]}\n  seed: {values: [0]}\n"))
    folder, failed = run_local(sweep, tmp_path / "runs", jobs=1)
    assert failed == 0
    results = sorted(folder.glob("*/result.json"))
    assert [p.parent.name for p in results] == ["scheme=he,seed=0", "scheme=xavier,seed=0"]
    stamps = [p.stat().st_mtime_ns for p in results]
    run_local(sweep, tmp_path / "runs", jobs=1)  # everything finished: nothing runs again
    assert [p.stat().st_mtime_ns for p in results] == stamps
    text = summarize(folder)
    assert "| 9 | relu | xavier | 1 |" in text
    # the Sec. 2.2 signal at init of the same nets: 6 convs, Xavier's prediction 2^-(5/2) = 0.177
    assert "| xavier | 6 |" in text and "1.77e-01" in text
    assert (folder / "variance_profile.png").stat().st_size > 5000 and (folder / "init_depth.png").is_file()
    assert cell_name({"model.activation": "relu", "seed": 1}) == "activation=relu,seed=1"


def fake_results(folder: Path, curves: dict) -> None:
    for (act, init, depth, seed), curve in curves.items():
        run = folder / f"{act}-{init}-{depth}-{seed}"
        run.mkdir(parents=True)
        history = [{"epoch": i, "val/err1": e, "train/err1": e - 0.02} for i, e in enumerate(curve)]
        run.joinpath("config.yaml").write_text(json.dumps({"seed": seed, "model": {"activation": act, "depth": depth},
                                                           "init": {"scheme": init}}))
        run.joinpath("result.json").write_text(json.dumps({
            "status": "finished", "name": run.name, "activation": act, "init": init, "depth": depth, "seed": seed,
            "final_val_err1": curve[-1], "best_val_err1": min(curve), "final_train_err1": curve[-1] - 0.02,
            "history": history}))


def test_summary_table_figure_and_paper_checks(tmp_path):
    curves = {}
    for seed in range(3):
        curves[("relu", "xavier", 30, seed)] = [0.9, 0.9, 0.9]
        curves[("relu", "he", 30, seed)] = [0.6, 0.2, 0.05]
        curves[("relu", "xavier", 22, seed)] = [0.9, 0.7, 0.45]
        curves[("relu", "he", 22, seed)] = [0.45, 0.2, 0.1]
    fake_results(tmp_path, curves)
    text = summarize(tmp_path)
    assert all(ok for _, ok in checks(finished_runs(tmp_path)))
    assert "| 30 | relu | xavier | 3 | 0.880 ± 0.000 | 0.900 ± 0.000" in text and "3/3" in text  # train, val
    assert (tmp_path / "init_depth.png").stat().st_size > 5000 and (tmp_path / "summary.csv").is_file()
    # A He run that does not train breaks the check.
    fake_results(tmp_path / "bad", {**curves, ("relu", "he", 30, 0): [0.9, 0.9, 0.3]})
    assert not all(ok for _, ok in checks(finished_runs(tmp_path / "bad")))


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    cases = [
        (["fit", "--config", str(tmp_path / "missing.yaml")], "config file not found"),
        (["fit", "--model.dept=3"], "unknown config key 'model.dept'"),
        (["fit", "--model.activation=swish"], "unknown model.activation 'swish'"),
        (["fit", "--init.scheme=orthogonal"], "unknown init.scheme 'orthogonal'"),
        (["fit", "--model.depth=4", "--tracking.wandb=disabled", f"--out_dir={tmp_path}"],
         "model.depth=4 is too small"),
        (["sweep", str(tmp_path / "none.yaml")], "sweep file not found"),
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters: {seed: [1, 2}\n")
    cases.append((["sweep", str(bad)], "malformed sweep YAML"))
    cases.append((["sweep", str(ROOT / "sweeps" / "init_depth.yaml"), "--wandb"], "--wandb needs a W&B server"))
    for args, message in cases:
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr[-500:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert not list(tmp_path.glob("*/config.yaml"))  # a rejected run leaves no half-made run folder


@pytest.mark.slow
def test_killed_sweep_resumes_unfinished_and_skips_finished(tmp_path):
    path = write_sweep(tmp_path, "  seed: {values: [0, 1]}\n")
    text = path.read_text().replace("max_epochs: 2", "max_epochs: 6")
    path.write_text(text.replace("limit_train_batches: 4", "limit_train_batches: 8"))
    (tmp_path / "tiny.yaml").write_text((tmp_path / "tiny.yaml").read_text().replace("max_epochs: 2", "max_epochs: 6"))
    out = tmp_path / "runs"
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen([sys.executable, "-m", "delving", "sweep", str(path), "--out", str(out), "--jobs", "1"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first, second = out / "tiny" / "seed=0", out / "tiny" / "seed=1"
    deadline = time.time() + 900  # generous: a loaded shared machine runs this tiny grid 10x slower
    while not (second / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (first / "result.json").is_file() and not (second / "result.json").exists()
    done_stamp = (first / "result.json").stat().st_mtime_ns
    proc = run_cli("sweep", str(path), "--out", str(out), "--jobs", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 cells, 1 already done, 1 to run" in proc.stdout
    assert (first / "result.json").stat().st_mtime_ns == done_stamp
    result = json.loads((second / "result.json").read_text())
    assert result["status"] == "finished" and [r["epoch"] for r in result["history"]] == list(range(6))


def test_wandb_mode_creates_the_sweep_from_the_same_yaml_and_runs_an_agent(monkeypatch, capsys):
    """Online path with W&B's own API stubbed (no server here): the raw YAML goes to wandb.sweep unchanged."""
    import wandb

    import delving.experiment.sweeps.online as sweep_module

    calls = {}
    monkeypatch.setattr(sweep_module, "wandb_mode", lambda requested: "online")
    monkeypatch.setattr(wandb, "sweep", lambda config, project: calls.update(config=config, project=project) or "s1")
    monkeypatch.setattr(wandb, "Api", lambda: type("Api", (), {"default_entity": "me"})())
    monkeypatch.setattr(sweep_module.subprocess, "run", lambda cmd, **kw: calls.update(cmd=cmd))
    sweep = load_sweep(ROOT / "sweeps" / "init_depth.yaml")
    path = sweep_module.run_wandb(sweep, count=2)
    assert path == "me/delving-init-depth/s1"
    assert calls["config"] == sweep.raw and calls["project"] == "delving-init-depth"
    assert calls["cmd"] == ["wandb", "agent", "--count", "2", path]
    assert f"wandb agent {path}" in capsys.readouterr().out


def test_list_and_cell_cover_the_grid_once_and_skip_finished(tmp_path, capsys):
    """Spreading a sweep over a job array: every listed cell run by index covers the grid exactly once."""
    from delving.cli import main
    from delving.experiment.sweeps.local import list_cells

    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(
        "name: tiny\nparameters:\n  model.depth: {value: 9}\n  model.kwargs.widths: {value: [4, 4, 4]}\n"
        "  model.kwargs.fc_width: {value: 8}\n  trainer.max_epochs: {value: 1}\n"
        "  trainer.limit_train_batches: {value: 2}\n  trainer.limit_val_batches: {value: 1}\n"
        "  tracking.wandb: {value: disabled}\n  trainer.enable_progress_bar: {value: false}\n"
        "  model.activation: {values: [relu, prelu]}\n  seed: {values: [0, 1]}\n")
    out = tmp_path / "runs"
    assert main(["sweep", str(sweep_file), "--out", str(out), "--list"]) == 0
    listed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [int(k) for k, _, _ in listed] == [0, 1, 2, 3] and {s for _, s, _ in listed} == {"todo"}
    for k, _, _ in listed:
        assert main(["sweep", str(sweep_file), "--out", str(out), "--cell", k]) == 0
    capsys.readouterr()
    finished = sorted(p.parent.name for p in (out / "tiny").glob("*/result.json"))
    assert finished == sorted(name for _, _, name in listed)  # each cell once, nothing else
    assert all(done for _, _, done in list_cells(load_sweep(sweep_file), out))
    stamp = (out / "tiny" / listed[2][2] / "result.json").stat().st_mtime_ns
    assert main(["sweep", str(sweep_file), "--out", str(out), "--cell", "2"]) == 0
    assert "already finished, skipped" in capsys.readouterr().out
    assert (out / "tiny" / listed[2][2] / "result.json").stat().st_mtime_ns == stamp
    assert main(["sweep", str(sweep_file), "--out", str(out), "--cell", "4"]) == 2
    assert "--cell 4 is out of range: sweep tiny has cells 0 to 3" in capsys.readouterr().err


def test_every_listed_cell_of_the_default_sweep_covers_its_grid_once(tmp_path, monkeypatch, capsys):
    """`--list` then `--cell K` for every K over sweeps/init_depth.yaml (training replaced by a recorder that writes
    result.json): the 24 grid points each run once, and a second pass over the cells trains nothing."""
    import delving.experiment.sweeps.local
    import delving.experiment.training.train
    from delving.cli import main
    from delving.experiment.rundir.run_dir import RunDir
    from delving.experiment.training.train import run_dir

    trained = []

    def record(cfg, **kwargs):
        trained.append((cfg.model.activation, cfg.init.scheme, cfg.model.depth, cfg.seed))
        run_dir(cfg).mkdir(parents=True, exist_ok=True)
        RunDir(run_dir(cfg)).write_result({"status": "finished", "name": cfg.name, "epochs": cfg.trainer.max_epochs})
        return {"status": "finished", "name": cfg.name, "final_val_err1": 0.5, "fit_seconds": 0.0}

    monkeypatch.setattr(delving.experiment.training.train, "fit", record)
    merged = {}  # each CLI call re-merges the 24 configs (0.75 s); they do not change between calls: merge once
    monkeypatch.setattr(delving.experiment.sweeps.local, "configs", lambda sweep, folder: merged.get(folder) or merged.setdefault(
        folder, configs(sweep, folder)))
    sweep_file, out = ROOT / "sweeps" / "init_depth.yaml", tmp_path / "runs"
    assert main(["sweep", str(sweep_file), "--out", str(out), "--list"]) == 0
    indices = [int(line.split("\t")[0]) for line in capsys.readouterr().out.splitlines()]
    for _ in range(2):
        for k in indices:
            assert main(["sweep", str(sweep_file), "--out", str(out), "--cell", str(k)]) == 0
    grid = load_sweep(sweep_file).grid
    expected = {(a, s, d, seed) for a in grid["model.activation"] for s in grid["init.scheme"]
                for d in grid["model.depth"] for seed in grid["seed"]}
    assert len(trained) == len(expected) == 24 and set(trained) == expected  # once each, and not again


def test_local_runner_starts_the_longest_cells_first(tmp_path, monkeypatch):
    """Cells run deepest first (cost ~ depth x epochs), so no worker idles at the end while another trains a deep
    net; within a depth, the grid's own order."""
    import delving.experiment.sweeps.local

    order = []

    def record(cfg):
        order.append((cfg.model.depth, cfg.model.activation, cfg.init.scheme, cfg.seed))
        return {"status": "finished", "name": cfg.name, "final_val_err1": 0.5, "fit_seconds": 0.0}

    monkeypatch.setattr(delving.experiment.sweeps.local, "_run_cell", record)
    monkeypatch.setattr(delving.experiment.sweeps.local, "_setup", lambda threads: None)
    folder, failed = delving.experiment.sweeps.local.run_local(load_sweep(ROOT / "sweeps" / "init_depth.yaml"), tmp_path, jobs=1)
    depths = [depth for depth, *_ in order]
    assert failed == 0 and len(order) == 24 and depths == [30] * 12 + [22] * 12
    assert order[:2] == [(30, "relu", "xavier", 0), (30, "relu", "xavier", 1)]


def test_duplicate_grid_values_collapse_with_a_note(tmp_path, capsys):
    sweep = load_sweep(write_sweep(tmp_path, "  seed: {values: [0, 0, 1]}\n"))
    assert sweep.grid["seed"] == [0, 1] and len(sweep.cells()) == 2
    note = "parameter 'seed' lists a value more than once; each cell runs once (3 values -> 2)"
    assert note in capsys.readouterr().err


def test_every_cell_is_checked_before_the_first_run(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, "  model.depth: {values: [9, 4]}\n"))
    with pytest.raises(DelvingError, match=r"sweep cell depth=4: model.depth=4 is too small"):
        run_local(sweep, tmp_path / "runs", jobs=1)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "sweeps").glob("*.yaml")))
def test_every_cell_of_every_repo_sweep_passes_the_check_before_the_first_run(name, tmp_path):
    from delving.experiment.sweeps.local import check_cells

    cfgs = configs(load_sweep(ROOT / "sweeps" / name), tmp_path)
    check_cells(cfgs)  # e.g. delta-orthogonal weights built under the check's meta device
    assert cfgs and not (tmp_path / "runs").exists()


def test_a_cell_folder_holding_another_config_fails_the_sweep_before_any_run(tmp_path):
    from delving.experiment.rundir.run_dir import RunDir

    sweep = load_sweep(write_sweep(tmp_path, "  seed: {values: [0, 1]}\n"))
    cfg = configs(sweep, tmp_path / "runs" / "tiny")[1]
    folder = RunDir(tmp_path / "runs" / "tiny" / cfg.name)
    folder.path.mkdir(parents=True)
    cfg.optim.lr = 0.5  # a run of another config under the cell's name
    OmegaConf.save(OmegaConf.structured(cfg), folder.config_path)
    with pytest.raises(DelvingError, match=r"seed=1 holds another config \(optim.lr: 0.5 -> 0.01\)"):
        run_local(sweep, tmp_path / "runs", jobs=1)
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir()) == ["seed=1"]


def test_a_filesystem_fault_stops_the_sweep_with_its_cause(tmp_path, monkeypatch):
    import delving.experiment.sweeps.local as sweep_module
    from delving.experiment.rundir.run_dir import FilesystemError

    sweep = load_sweep(write_sweep(tmp_path, "  seed: {values: [0, 1]}\n"))
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(FilesystemError, match=r"cannot write .*file/tiny: (Not a directory|File exists)"):
        run_local(sweep, blocked, jobs=1)

    def full(cfg):
        raise FilesystemError(f"cannot write {cfg.out_dir}/{cfg.name}/checkpoints/last.ckpt: No space left on device")

    monkeypatch.setattr(sweep_module, "_run_cell", full)
    monkeypatch.setattr(sweep_module, "_setup", lambda threads: None)
    with pytest.raises(FilesystemError, match="No space left on device"):
        run_local(sweep, tmp_path / "runs", jobs=1)


def test_a_locked_cell_is_skipped_not_failed(tmp_path, monkeypatch, capsys):
    import delving.experiment.sweeps.local as sweep_module
    from delving.experiment.rundir.run_dir import RunLocked

    def busy(cfg):
        raise RunLocked(f"run folder {cfg.name} is in use by PID 1 on host")

    monkeypatch.setattr(sweep_module, "_run_cell", busy)
    monkeypatch.setattr(sweep_module, "_setup", lambda threads: None)
    _, failed = run_local(load_sweep(write_sweep(tmp_path, "  seed: {values: [0, 1]}\n")), tmp_path / "runs", jobs=1)
    out = capsys.readouterr().out
    assert failed == 0 and "FAILED" not in out and "2 cell(s) skipped: another process is training them" in out


def test_the_summary_has_a_row_per_value_of_every_key_the_grid_varies(tmp_path):
    curves = {("prelu", "he", 9, seed): [0.5, 0.2] for seed in range(2)}
    fake_results(tmp_path / "a", curves)
    for run in (tmp_path / "a").iterdir():  # half the runs at another lr
        config = json.loads((run / "config.yaml").read_text())
        config["optim"] = {"lr": 0.1 if run.name.endswith("0") else 0.2}
        (run / "config.yaml").write_text(json.dumps(config))
        shutil.copytree(run, tmp_path / "a" / f"{run.name}-lr")
        (tmp_path / "a" / f"{run.name}-lr" / "config.yaml").write_text(json.dumps({**config, "optim": {"lr": 0.3}}))
    text = summarize(tmp_path / "a")
    assert "| depth | activation | init | optim.lr | seeds |" in text
    rows = [line for line in text.splitlines() if line.startswith("| 9 | prelu | he |")]
    assert [row.split(" | ")[3] for row in rows] == ["0.1", "0.2", "0.3"] and all("| 1 |" in r or "| 2 |" in r
                                                                                 for r in rows)


@pytest.mark.slow
def test_two_sweeps_at_once_train_every_cell_exactly_once(tmp_path):
    path = write_sweep(tmp_path, "  seed: {values: [0, 1, 2, 3]}\n")
    out = tmp_path / "runs"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "delving", "sweep", str(path), "--out", str(out), "--jobs", "1"]
    procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-1500:] for _, err in outputs]
    text = "".join(stdout for stdout, _ in outputs)
    assert "FAILED" not in text and "Traceback" not in "".join(err for _, err in outputs)
    trained = sorted(line.split(":")[0].strip() for line in text.splitlines() if ": finished, final val err" in line)
    assert trained == [f"seed={seed}" for seed in range(4)]  # each cell trained by one of the two sweeps, once
    for seed in range(4):
        run = out / "tiny" / f"seed={seed}"
        metrics = pd.read_csv(run / "csv" / "metrics.csv")
        assert not metrics.duplicated().any() and metrics["val/err1"].notna().sum() == 2
        assert json.loads((run / "result.json").read_text())["epochs"] == 2
    report = run_cli("report", str(out / "tiny"))
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr[-1500:]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG and /proc are Linux's")
@pytest.mark.parametrize("moment", ["starting", "training"])
def test_no_worker_survives_a_sigkill_of_the_sweep(tmp_path, moment):
    path = write_sweep(tmp_path, "  seed: {values: [0, 1, 2, 3]}\n")
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "delving", "sweep", str(path), "--out", str(out), "--jobs", "2"],
                            cwd=ROOT, env={**os.environ, "WANDB_MODE": "offline"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    workers: list[int] = []
    while time.time() < deadline:
        workers = _children(proc.pid)
        ready = len(workers) >= 2 and (moment == "starting" or len(list(out.glob("tiny/*/csv/metrics.csv"))) >= 1)
        if ready:
            break
        time.sleep(0.1)
    assert workers, "the sweep started no worker"
    proc.kill()
    proc.wait()
    deadline = time.time() + 60
    while any(_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)]


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_stops_the_sweep_with_one_line_and_exit_130(tmp_path, jobs):
    path = write_sweep(tmp_path, "  seed: {values: [0, 1, 2]}\n")
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "delving", "sweep", str(path), "--out", str(out), "--jobs", jobs],
                            cwd=ROOT, env={**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=terminal_sigint)
    deadline = time.time() + 240
    while not list(out.glob("tiny/*/checkpoints/last.ckpt")) and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("delving: interrupted: sweep tiny: ")
    assert "keep their last checkpoint; run the same command again to resume" in last


def test_list_names_a_damaged_result_and_lists_its_cell_as_todo(tmp_path, capsys):
    from delving.experiment.rundir.run_dir import RunDir
    from delving.experiment.sweeps.local import list_cells

    sweep = load_sweep(write_sweep(tmp_path, "  seed: {values: [0, 1]}\n"))
    damaged = RunDir(tmp_path / "runs" / "tiny" / "seed=1")
    damaged.path.mkdir(parents=True)
    damaged.result_path.write_bytes(b"\x00\xffnot json")
    assert [(k, done) for k, _, done in list_cells(sweep, tmp_path / "runs")] == [(0, False), (1, False)]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(damaged.result_path) in err[0] and "todo" in err[0]


def test_summary_names_the_runs_dataset(tmp_path, monkeypatch):
    fake_results(tmp_path, {("relu", "he", 30, 0): [0.6, 0.2, 0.05]})
    config = tmp_path / "relu-he-30-0" / "config.yaml"
    config.write_text(json.dumps({**json.loads(config.read_text()), "data": {"name": "mnist5k"}}))
    assert list(finished_runs(tmp_path).dataset) == ["mnist5k"]
    titles = []
    monkeypatch.setattr("matplotlib.figure.Figure.suptitle", lambda fig, text, **kw: titles.append(text))
    summarize(tmp_path)
    assert titles and " on mnist5k, 1 runs" in titles[0]
