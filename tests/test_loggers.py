"""W&B's start-up: a run applies staged W&B Launch inputs without importing Launch where none can be staged."""

import os
import subprocess
import sys
import types

from wandb.sdk.wandb_run import Run

from delving.experiment.training.loggers import STAGED_INPUTS_MODULE, skip_unstaged_launch_inputs


def test_staged_launch_inputs_are_applied_and_not_looked_for_where_none_can_be_staged(monkeypatch):
    assert skip_unstaged_launch_inputs() and skip_unstaged_launch_inputs()  # in place, and installed once
    applied = []

    class StagedLaunchInputs:  # the staging module's class, as W&B's own method reads it
        def apply(self, run):
            applied.append(run)

    run = object()
    monkeypatch.delitem(sys.modules, STAGED_INPUTS_MODULE, raising=False)
    Run._detect_and_apply_job_inputs(run)
    assert applied == [] and STAGED_INPUTS_MODULE not in sys.modules  # nothing imported, nothing to apply
    monkeypatch.setitem(sys.modules, STAGED_INPUTS_MODULE,
                        types.SimpleNamespace(StagedLaunchInputs=StagedLaunchInputs))
    Run._detect_and_apply_job_inputs(run)
    assert applied == [run]  # a program that staged inputs: W&B's own method runs and applies them


def test_an_offline_wandb_run_starts_without_importing_wandb_launch(tmp_path):
    code = ("import sys, wandb\n"
            "from delving.experiment.training.loggers import skip_unstaged_launch_inputs\n"
            "skip_unstaged_launch_inputs()\n"
            "wandb.init(mode='offline', dir=sys.argv[1], project='p').finish()\n"
            "print('wandb.sdk.launch' in sys.modules)\n")
    env = {**os.environ, "WANDB_SILENT": "true"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    assert out.stdout.split()[-1] == "False"

