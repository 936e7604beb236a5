"""The command line's faces: ``fit --help`` from the schema, ``--print-config``, ``--version``, ``trainer.extra``,
did-you-mean, the end-of-run line, and a ``--help`` that loads no torch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from importlib.metadata import version

import pytest
import yaml

from conftest import ROOT
from delving.cli import _config_help, main
from delving.errors import DelvingError
from delving.experiment.training.config import RunConfig, load_config, to_dict


def _keys(cls, prefix=""):
    """(dotted key, dataclass field) of every leaf of the schema."""
    for f in dataclasses.fields(cls):
        section = getattr(cls(), f.name)
        if dataclasses.is_dataclass(section):
            yield from _keys(type(section), prefix + f.name + ".")
        else:
            yield prefix + f.name, f


def test_fit_help_lists_every_key_with_type_default_and_comment(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    keys = list(_keys(RunConfig))
    assert len(keys) > 60
    for key, f in keys:
        assert f"  {key}: " in text, key
    lines = text.splitlines()
    depth = lines.index("  model.depth: Optional[int] = None")
    assert lines[depth + 1].strip() == "weight layers (conv + fc), for models that take a depth"
    scheme = lines.index("  init.scheme: str = 'he'")  # a comment continued on the next source lines
    assert "he (Eq. 10/14/15)" in lines[scheme + 1] and "lsuv (data-dependent" in " ".join(lines[scheme + 1:scheme + 4])
    assert "  trainer.extra: Dict[str, Any] = {}" in lines
    assert "  optim.milestones: List[int] = []" in lines
    fused = lines.index("  optim.fused: bool = True")  # the comment written above the field
    assert lines[fused + 1].strip().startswith("torch's fused SGD kernel")


def test_help_text_follows_the_schema_defaults():
    """Every default the help shows is the dataclass's own (a stale help would mislead)."""
    text = _config_help()
    for key, f in _keys(RunConfig):
        if f.default is not dataclasses.MISSING:
            assert f"  {key}: " in text and f" = {f.default!r}" in text.split(f"  {key}: ", 1)[1].split("\n")[0], key


def test_help_and_version_load_no_torch():
    """``delving --help`` must answer fast: nothing heavy is imported (torch alone is 1.6 s here)."""
    code = ("import sys\nfrom delving.cli import main\n"
            "for argv in (['--help'], ['fit', '--help'], ['--version']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'timm', 'lightning', 'omegaconf') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert f"delving {version('delving')}" in proc.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"delving {version('delving')}"


def test_print_config_is_the_resolved_config_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "exp.yaml"
    exp.write_text("model:\n  depth: 22\n")
    args = ["--print-config", "--optim.lr=0.05", "--trainer.extra.profiler=simple"]
    assert main(["fit", "--config", str(exp), *args]) == 0
    text = capsys.readouterr().out
    assert text.startswith("name: null\n")  # YAML alone: no Lightning start-up lines
    printed = yaml.safe_load(text)
    assert printed == to_dict(load_config(exp, ["optim.lr=0.05", "trainer.extra.profiler=simple"]))
    assert printed["model"]["depth"] == 22 and printed["optim"]["lr"] == 0.05 and printed["optim"]["momentum"] == 0.9
    assert printed["trainer"]["extra"] == {"profiler": "simple"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]  # no runs/ folder, no W&B folder


def test_trainer_extra_is_checked_against_lightnings_signature():
    cfg = load_config(None, ["trainer.extra.accumulate_grad_batches=2", "trainer.extra.val_check_interval=0.5"])
    assert cfg.trainer.extra == {"accumulate_grad_batches": 2, "val_check_interval": 0.5}
    with pytest.raises(DelvingError, match=r"unknown trainer.extra key 'acumulate_grad_batches' \(did you mean "
                                           r"'accumulate_grad_batches'\?\)"):
        load_config(None, ["trainer.extra.acumulate_grad_batches=2"])
    with pytest.raises(DelvingError, match="trainer.extra.max_epochs is set by delving itself; use trainer.max_epochs"):
        load_config(None, ["trainer.extra.max_epochs=2"])
    with pytest.raises(DelvingError, match="trainer.extra.gradient_clip_val .* use optim.gradient_clip_norm"):
        load_config(None, ["trainer.extra.gradient_clip_val=1.0"])
    with pytest.raises(DelvingError, match=r"trainer.extra.val_check_interval=-1 is refused by "
                                           r"lightning.Trainer: .*invalid value -1 for val_check_interval"):
        load_config(None, ["trainer.extra.val_check_interval=-1"])  # a known key, a value Lightning refuses


@pytest.mark.parametrize("extra", ["{accumulate_grad_batches: 2}", "{max_time: {hours: 1}}",
                                   "{max_time: '00:01:00:00'}", "{val_check_interval: 0.25}",
                                   "{val_check_interval: 10}", "{profiler: simple}", "{detect_anomaly: true}",
                                   "{enable_checkpointing: true}", "{check_val_every_n_epoch: null}"])
def test_trainer_extra_values_of_lightnings_annotated_types_pass(extra):
    """Every type an annotation allows passes, a key the throwaway Trainer also sets (enable_checkpointing) too."""
    assert load_config(None, [f"trainer.extra={extra}"]).trainer.extra


@pytest.mark.parametrize("extra, message", [
    ("{accumulate_grad_batches: abc}", "accumulate_grad_batches='abc' has the wrong type; valid: int "),
    ("{accumulate_grad_batches: '2'}", "accumulate_grad_batches='2' has the wrong type"),  # strict: no coercion
    ("{accumulate_grad_batches: 2.0}", "accumulate_grad_batches=2.0 has the wrong type"),
    ("{detect_anomaly: 1}", "detect_anomaly=1 has the wrong type; valid: bool "),
    ("{min_epochs: [1]}", "min_epochs=[1] has the wrong type; valid: int | None "),
    ("{max_time: {hours: 1.5}}", "max_time={'hours': 1.5} has the wrong type; valid: str | timedelta | dict[str, int]"),
    ("{max_time: soon}", "max_time='soon' is refused by lightning.Trainer: `Timer(duration='soon')` is not a valid "
                         "duration"),
    ("{profiler: fast}", "profiler='fast' is refused by lightning.Trainer: When passing string value for the "
                         "`profiler` parameter"),
    ("{max_steps: 10, overfit_batches: -1}", "overfit_batches=-1 is refused by lightning.Trainer"),
])
def test_a_bad_trainer_extra_value_is_named_by_key_value_and_what_is_valid(extra, message):
    with pytest.raises(DelvingError) as info:
        load_config(None, [f"trainer.extra={extra}"])
    assert str(info.value).startswith("trainer.extra.") and message in str(info.value), info.value


def test_annotations_read_as_written():
    import datetime
    from typing import Literal, Optional, Union

    from delving.experiment.training.trainer_extra import type_text

    assert type_text(int) == "int" and type_text(Optional[int]) == "int | None"
    assert type_text(Union[str, datetime.timedelta, dict[str, int], None]) == "str | timedelta | dict[str, int] | None"
    assert type_text(Union[bool, Literal["warn"], None]) == "bool | 'warn' | None"


def test_trainer_extra_reaches_the_lightning_trainer(tmp_path):
    from delving.experiment.training.train import build_trainer

    cfg = load_config(None, ["trainer.extra.accumulate_grad_batches=3", "trainer.extra.val_check_interval=0.5",
                             "tracking.wandb=disabled"])
    trainer = build_trainer(cfg, tmp_path, False, False)
    assert trainer.accumulate_grad_batches == 3 and trainer.val_check_interval == 0.5
    assert build_trainer(load_config(None), tmp_path, False, False).accumulate_grad_batches == 1


@pytest.mark.parametrize("override, suggestion", [
    ("trainer.max_epoch=3", "did you mean 'trainer.max_epochs'?"),
    ("optim.weight_decy=0", "did you mean 'optim.weight_decay'?"),
    ("sed=1", "did you mean 'seed'?"),
    ("model.activation=prelu_share", "did you mean 'prelu_shared'?"),
    ("init.scheme=xavir", "did you mean 'xavier'?"),
])
def test_did_you_mean_for_a_near_miss(override, suggestion):
    with pytest.raises(DelvingError) as info:
        load_config(None, [override])
    assert suggestion in str(info.value)


def test_no_suggestion_for_a_far_miss():
    with pytest.raises(DelvingError) as info:
        load_config(None, ["trainer.zzz=3"])
    assert "did you mean" not in str(info.value)


def test_fit_prints_the_run_folder_and_rounded_results(tmp_path, capsys, monkeypatch):
    import delving.experiment.training.train as train

    result = {"name": "delving_plain-relu-he-s0", "status": "finished", "final_val_err1": 0.9027777910232544,
              "best_val_err1": 0.12345678, "epochs": 3}
    monkeypatch.setattr(train, "fit", lambda cfg: result)
    assert main(["fit", f"--out_dir={tmp_path}", "--tracking.wandb=disabled"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == (f"delving_plain-relu-he-s0: finished, final val err1 0.9028, best 0.1235, 3 epochs -> "
                    f"{tmp_path / 'delving_plain-relu-he-s0'}")
