"""``benchmarks/gpu_check.py``: its CPU tiny mode runs every step it can and writes the table; a failing step makes
the exit code 1 and is named, and every later step still runs."""

from __future__ import annotations

import functools
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
CUDA_ONLY = ("mm-peak", "train-compile", "memory-c")


@functools.cache
def _load():
    """The script as a module (benchmarks/ is no package); registered first, as its dataclasses need."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _rows(markdown: str) -> dict[str, list[str]]:
    """step -> [status, measured, seconds], from the Markdown table."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| step ")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}


@pytest.mark.slow
def test_tiny_cpu_mode_runs_every_step_and_writes_the_table(tmp_path):
    out = tmp_path / "gpu_check.md"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    # Its own session, so that a timeout also ends the `delving` subprocesses it started.
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=1500)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"gpu_check --tiny still running after 1500 s:\n{stderr[-4000:]}")
    assert proc.returncode == 0, stderr[-4000:]
    rows = _rows(out.read_text())
    assert list(rows) == list(_load().STEPS)
    for step, (status, measured, seconds) in rows.items():
        assert status == ("skipped" if step in CUDA_ONLY else "ok"), (step, status, measured)
        assert float(seconds) >= 0
    assert "CUDA only" in rows["mm-peak"][1] and "CUDA only" in rows["memory-c"][1]
    assert "img/s" in rows["train-fp32"][1] and "x fp32" in rows["train-bf16"][1]
    assert "uint8 (4, 3, 64, 64) channels_last on cpu" in rows["ffcv"][1]
    assert "DDP over gloo" in rows["fit-ddp"][1] and "2 steps of 4" in rows["fit-ddp"][1]
    assert "restored, continued to step 4" in rows["resume"][1]
    assert "cpu: the same" in rows["evaluate-dense"][1] and "window 8" in rows["evaluate-dense"][1]
    assert "prelu/relu" in rows["relu-vs-prelu"][1]
    assert out.read_text() in stdout  # the same table on stdout


def test_a_failing_step_is_named_exit_1_and_later_steps_still_run(tmp_path, monkeypatch, capsys):
    gpu_check = _load()
    ran = []

    def fine(name):
        def step(ctx):
            ran.append(name)
            return [f"{name} measured"]
        return step

    def broken(ctx):
        ran.append("ffcv")
        raise gpu_check.CheckFailed("batch of torch.float32 on cpu, expected uint8")

    def skipped(ctx):
        ran.append("memory-c")
        raise gpu_check.Skip("CUDA only")

    steps = {name: fine(name) for name in gpu_check.STEPS}
    steps.update(ffcv=broken, **{"memory-c": skipped})
    monkeypatch.setattr(gpu_check, "STEPS", steps)
    out = tmp_path / "table.md"
    code = gpu_check.main(["--device", "cpu", "--tiny", "--out", str(out), "--work", str(tmp_path / "work")])
    captured = capsys.readouterr()
    assert code == 1
    assert "gpu_check: FAILED: ffcv" in captured.err
    assert ran == list(steps)  # every step ran, in order, the ones after the failure too
    rows = _rows(out.read_text())
    assert rows["ffcv"][:2] == ["FAILED", "CheckFailed: batch of torch.float32 on cpu, expected uint8"]
    assert rows["memory-c"][:2] == ["skipped", "CUDA only"]
    assert rows["evaluate-dense"][:2] == ["ok", "evaluate-dense measured"]


def test_only_runs_a_subset_and_a_step_whose_input_is_missing_is_skipped_naming_it(tmp_path):
    gpu_check = _load()
    out = tmp_path / "table.md"
    code = gpu_check.main(["--device", "cpu", "--tiny", "--out", str(out), "--work", str(tmp_path), "--only",
                           "resume,evaluate-dense"])
    assert code == 0
    rows = _rows(out.read_text())
    assert list(rows) == list(gpu_check.STEPS)
    assert rows["resume"][:2] == rows["evaluate-dense"][:2] == ["skipped", "needs fit-ddp, which did not finish"]
    assert rows["fit-ddp"][:2] == rows["train-fp32"][:2] == ["skipped", "not in --only"]


def test_a_hung_step_fails_on_its_timeout(tmp_path, monkeypatch):
    gpu_check = _load()

    def hangs(ctx):
        import time
        time.sleep(30)

    monkeypatch.setattr(gpu_check, "STEPS", {"ffcv": hangs})
    out = tmp_path / "table.md"
    code = gpu_check.main(["--device", "cpu", "--tiny", "--out", str(out), "--work", str(tmp_path), "--step-timeout",
                           "1"])
    assert code == 1
    status, measured, seconds = _rows(out.read_text())["ffcv"]
    assert (status, measured) == ("FAILED", "timed out after 1 s") and float(seconds) < 10


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    gpu_check = _load()
    for args, message in ((["--device", "tpu"], "--device 'tpu'; valid: cuda, cuda:N, cpu"),
                          (["--device", "cpu", "--only", "ffcv,warp"], "unknown step(s) warp; valid: mm-peak")):
        assert gpu_check.main([*args, "--out", str(tmp_path / "t.md")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("gpu_check: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "t.md").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="here --device cuda would run the check")
def test_cuda_without_a_gpu_points_to_the_tiny_cpu_mode(tmp_path, capsys):
    assert _load().main(["--out", str(tmp_path / "t.md")]) == 2
    assert capsys.readouterr().err == ("gpu_check: error: --device cuda: no CUDA device here; valid here: "
                                       "--device cpu --tiny\n")


def test_subprocesses_see_only_the_checked_device(monkeypatch):
    gpu_check = _load()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert gpu_check.visible_device(torch.device("cuda", 1)) == {"CUDA_VISIBLE_DEVICES": "3"}
    assert gpu_check.visible_device(torch.device("cpu")) == {}


def test_flops_are_twice_the_packages_multiply_adds_and_the_mm_peak_is_measured(monkeypatch):
    """The FLOPs behind every peak share: model A's forward at 224 is 2 × the mult-adds `delving info` reports
    (Table 3's 1.90e10 order), and the mm peak is 2n³ over the measured time."""
    from delving.models.complexity import model_size

    gpu_check = _load()
    flops = gpu_check.forward_flops("delving_model_a", 224, "prelu")
    assert flops == 2 * model_size("delving_model_a", 224, "prelu", gpu_check.NUM_CLASSES).mult_adds
    assert 3.6e10 < flops < 4.2e10
    ticks = iter(range(100))
    monkeypatch.setattr(gpu_check.time, "perf_counter", lambda: float(next(ticks)))  # 1 s per reading
    assert gpu_check.mm_peak(torch.device("cpu"), torch.float32, 8, repeats=2, inner=5) == 2 * 8**3 * 5
