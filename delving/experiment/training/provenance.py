"""Where a run came from: git commit, library versions, Python, host and hardware."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("torch", "torchvision", "lightning", "timm", "wandb", "omegaconf", "torchmetrics", "numpy", "ffcv")


def provenance() -> dict:
    """Where a run came from: git commit, library versions, Python, host and hardware."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)  # ffcv.__version__ is wrong (says 0.0.3rc1)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(_git("status", "--porcelain")),
        "versions": versions, "python": sys.version.split()[0], "platform": platform.platform(),
        "hostname": platform.node(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
