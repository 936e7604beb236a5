"""The SLURM and torchrun launch scripts, rendered with sample values and parsed (no cluster needed): their
options agree with each other and with the recipe, and every config override they pass is valid."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from conftest import ROOT
from delving.cli import overrides
from delving.experiment.training.config import load_config

SCRIPTS = ROOT / "scripts"
RECIPE = "experiments/imagenet/model_a_prelu.yaml"


def render(text: str, values: dict[str, str]) -> str:
    """Substitute ``$NAME`` / ``"$NAME"`` / ``${NAME...}`` with sample values, as the shell would."""
    text = re.sub(r"\$\{(\w+)[^}]*\}", lambda m: values[m.group(1)], text)
    return re.sub(r"\$(\w+)", lambda m: values.get(m.group(1), m.group(0)), text)


def command(text: str, program: str) -> list[str]:
    """The launch command (joined over backslash-newlines) starting at ``program``, as argv."""
    joined = text.replace("\\\n", " ")
    line = next(ln for ln in joined.splitlines() if program in ln and not ln.lstrip().startswith("#"))
    return shlex.split(line[line.index(program):])


def fit_overrides(argv: list[str]) -> tuple[str, list[str]]:
    rest = argv[argv.index("fit") + 1:]
    config = rest[rest.index("--config") + 1]
    return config, overrides([a for i, a in enumerate(rest) if a != "--config" and rest[i - 1] != "--config"])


@pytest.mark.parametrize("name", ["slurm_imagenet.sbatch", "torchrun_imagenet.sh"])
def test_scripts_are_valid_bash(name):
    assert subprocess.run(["bash", "-n", str(SCRIPTS / name)]).returncode == 0


def test_slurm_script_one_task_per_gpu_requeue_and_valid_overrides():
    text = (SCRIPTS / "slurm_imagenet.sbatch").read_text()
    options = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", text, flags=re.M))
    assert options["ntasks-per-node"] == options["gpus-per-node"]  # one process per GPU
    assert options["signal"].startswith("SIGUSR1@") and "requeue" in options  # Lightning's auto-requeue
    values = {"1": RECIPE, "2": "/shared/ffcv", "3": "/shared/runs", "GPUS": options["gpus-per-node"],
              "SLURM_CPUS_PER_TASK": options["cpus-per-task"], "SLURM_JOB_NUM_NODES": options["nodes"],
              "SLURM_GPUS_PER_NODE": options["gpus-per-node"], "CONFIG": RECIPE, "DATA": "/shared/ffcv",
              "OUT": "/shared/runs"}
    argv = command(render(text, values), "srun")
    config, dotlist = fit_overrides(argv)
    cfg = load_config(ROOT / config, dotlist)  # every key valid; the total batch divides by nodes x GPUs
    assert (cfg.trainer.devices, cfg.trainer.num_nodes, cfg.trainer.strategy) == (4, 2, "ddp")
    assert cfg.data.batch_size_is == "total" and cfg.data.batch_size % (4 * 2) == 0
    assert cfg.data.root == "/shared/ffcv" and cfg.out_dir == "/shared/runs"


def test_torchrun_script_matches_its_trainer_settings():
    text = (SCRIPTS / "torchrun_imagenet.sh").read_text()
    values = {"1": RECIPE, "2": "/shared/ffcv", "3": "/shared/runs", "NNODES": "2", "NODE_RANK": "1",
              "MASTER": "host0", "PORT": "29500", "GPUS": "8", "CONFIG": RECIPE, "DATA": "/shared/ffcv",
              "OUT": "/shared/runs"}
    argv = command(render(text, values), ".venv/bin/torchrun")
    torchrun = dict(a.lstrip("-").split("=", 1) for a in argv[1:argv.index("-m")])
    config, dotlist = fit_overrides(argv)
    cfg = load_config(ROOT / config, dotlist)
    assert int(torchrun["nnodes"]) == cfg.trainer.num_nodes and int(torchrun["nproc-per-node"]) == cfg.trainer.devices
    assert torchrun["node-rank"] == "1" and cfg.trainer.strategy == "ddp"
