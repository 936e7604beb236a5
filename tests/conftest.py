"""Shared fixtures: tiny configs (depth 9, a few channels, a few batches) so runs take seconds on a CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

ROOT = Path(__file__).resolve().parent.parent

TINY = [
    "model.depth=9", "model.kwargs.widths=[4,8,8]", "model.kwargs.fc_width=16",
    "data.batch_size=32", "trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
    "trainer.enable_progress_bar=false", "tracking.wandb=disabled", "threads=1",
]


@pytest.fixture
def tiny(tmp_path) -> list[str]:
    """Overrides for a tiny, fast run writing under a temporary folder."""
    return [*TINY, f"out_dir={tmp_path / 'runs'}"]


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m delving ...`` as a user would, capturing its output."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "delving", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def terminal_sigint() -> None:
    """``preexec_fn`` for a child a test interrupts: Ctrl-C as in a terminal. A shell starts background jobs (``make
    test &``, some CI runners) with SIGINT ignored, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wandb_logs(run_folder: Path) -> list[Path]:
    """The ``.wandb`` transaction logs of ``run_folder``'s offline W&B runs, oldest first, complete on disk.

    ``run.finish()`` returns once W&B's service has the run's last records, not once its writer has flushed them: a
    loaded machine read a 7-byte log (the header alone) right after ``finish``. Closing the service, as the end of a
    ``delving`` process does, flushes every log; the next ``wandb.init`` starts a new one."""
    import wandb

    wandb.teardown()
    return sorted((run_folder / "wandb").glob("offline-run-*/*.wandb"), key=lambda p: p.stat().st_mtime)


SLOW_TIMEOUT = 1800  # seconds; pyproject's `timeout` (300 s) is the default of every other test


def pytest_collection_modifyitems(items):
    """Give tests marked slow a longer per-test timeout than the default, unless they set their own."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))
