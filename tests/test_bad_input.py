"""Bad input, case by case: each gets a non-zero exit, at most a few lines naming the problem, no traceback and no
new file in the output folder; legal edge cases (a 3×2000 JPEG, --max-resolution 1) work. Run in this process
through ``main`` (a subprocess costs seconds of imports), with end-to-end subprocess checks for a few."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from delving.cli import main
from delving.errors import DelvingError
from delving.experiment.training.config import load_config, validate


def run_main(args: list[str], capsys) -> tuple[int, str]:
    """``delving ARGS`` in this process: (exit code, stderr). argparse's own errors exit through SystemExit."""
    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def assert_one_clear_line(code: int, err: str, message: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("delving: error: "), err
    assert message in lines[0] and "Traceback" not in err, err


FIT = [  # (override, what the line must name)
    ("--optim.momentum=-5", "optim.momentum=-5.0 is out of range; valid: [0, 1)"),
    ("--optim.momentum=1", "optim.momentum=1.0 is out of range; valid: [0, 1)"),
    ("--data.image_size=0", "data.image_size=0 is out of range; valid: [1, 4096]"),
    ("--data.num_workers=-1", "data.num_workers=-1 is out of range; valid: >= 0"),
    ("--trainer.devices=0", "trainer.devices=0 is not valid; valid: an integer >= 1, -1 or 'auto'"),
    ("--optim.weight_decay=-1", "optim.weight_decay=-1.0 is out of range; valid: >= 0"),
    ("--optim.lr=nan", "optim.lr=nan must be a finite number"),
    ("--optim.lr=inf", "optim.lr=inf must be a finite number"),
    ("--optim.gradient_clip_norm=-1", "optim.gradient_clip_norm=-1.0 must be positive; valid: null or > 0"),
    ("--trainer.limit_train_batches=0", "trainer.limit_train_batches=0.0 is not valid; valid: null, a fraction"),
    ("--trainer.limit_val_batches=2.5", "trainer.limit_val_batches=2.5 is not valid"),
    ("--model.depth=100000", "model.depth=100000 is out of range; valid: null or an integer in [1, 2000]"),
    ("--model.depth=4", "model.depth=4 is too small for delving_plain; valid: an integer in [9, 2000]"),
    ("--trainer.max_epoch=3", "unknown config key 'trainer.max_epoch' (did you mean 'trainer.max_epochs'?)"),
    ("--trainer.precision=31", "unknown trainer.precision '31'"),
    ("--trainer.extra.max_epoch=3", "unknown trainer.extra key 'max_epoch' (did you mean 'max_epochs'?)"),
    ("--seed=-1", "seed=-1 is out of range"),
    ("--name=../elsewhere", "name='../elsewhere' is not a folder name"),
    ("--init.fc_std=[0.01,-1]", "init.fc_std[1]=-1.0 must be positive"),
]


@pytest.mark.parametrize("override, message", FIT, ids=[o for o, _ in FIT])
def test_fit_refuses_a_bad_value_before_writing_anything(override, message, tmp_path, capsys):
    out = tmp_path / "runs"
    code, err = run_main(["fit", f"--out_dir={out}", "--tracking.wandb=disabled", override], capsys)
    assert_one_clear_line(code, err, message)
    assert not out.exists()


SHORT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--threads=1"]
STARTS = [  # (arguments, what the line must name): refused before W&B, Lightning or the run folder start
    (("--model.kwargs={widths: [16, 32]}",),
     "model delving_plain: model.kwargs.widths=[16, 32] is out of range; valid: 3 positive integers"),
    (("--model.kwargs={bogus: 3}",), "model delving_plain cannot be built with model.kwargs={'bogus': 3} "),
    (("--model.kwargs={bogus: 3}",),
     "unexpected keyword argument 'bogus'); valid: model.kwargs among widths, fc_width"),
    (("--model.name=resnet18", "--model.kwargs={bogus: 3}"),
     "model resnet18 cannot be built with model.kwargs={'bogus': 3} "),
    (("--trainer.extra={accumulate_grad_batches: abc}",),
     "trainer.extra.accumulate_grad_batches='abc' has the wrong type; valid: int (lightning.Trainer's annotation)"),
    (("--trainer.extra.accumulate_grad_batches=true",),
     "trainer.extra.accumulate_grad_batches=True has the wrong type"),
    (("--trainer.extra={max_time: {hours: soon}}",),
     "trainer.extra.max_time={'hours': 'soon'} has the wrong type; valid: str | timedelta | dict[str, int] | None"),
    (("--trainer.extra={max_steps: 3, val_check_interval: -1}",),
     "trainer.extra.val_check_interval=-1 is refused by lightning.Trainer: You have passed invalid value -1"),
    (("--name=",), "name= has no value; valid: name=VALUE (leave the override out for the default)"),
    (("--name", " "), "name= has no value"),
]


@pytest.mark.parametrize("print_config", [False, True], ids=["fit", "print-config"])
@pytest.mark.parametrize("args, message", STARTS, ids=[" ".join(a) for a, _ in STARTS])
def test_fit_and_print_config_refuse_alike_before_anything_starts(args, message, print_config, tmp_path,
                                                                  capsys, monkeypatch):
    """The same one line from ``fit`` and ``fit --print-config``; W&B is on (offline): a check that came too late
    would leave its folder, or the run's, in the working directory."""
    monkeypatch.chdir(tmp_path)
    flag = ["--print-config"] if print_config else []
    code, err = run_main(["fit", "--out_dir=runs", "--tracking.wandb=offline", *SHORT, *args, *flag], capsys)
    assert_one_clear_line(code, err, message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [IndexError("tuple index out of range"), ValueError("negative dimensions"),
                                   KeyError("stage4"), RuntimeError("")], ids=lambda e: type(e).__name__)
def test_whatever_a_model_builder_raises_is_one_line_naming_the_model_and_values(error, tmp_path, capsys,
                                                                                  monkeypatch):
    import delving.experiment.training.train as train

    def refuse(*args, **kwargs):
        raise error

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "create_initialized", refuse)  # the builder's call inside build_model
    for flag in ([], ["--print-config"]):
        code, err = run_main(["fit", "--model.depth=12", "--model.kwargs={widths: [4, 8, 8]}", "--out_dir=runs",
                              "--tracking.wandb=offline", *SHORT, *flag], capsys)
        assert_one_clear_line(code, err, f"model delving_plain cannot be built with model.depth=12, model.kwargs="
                                         f"{{'widths': [4, 8, 8]}} ({type(error).__name__}")
        assert "valid: model.kwargs among widths, fc_width, spp_levels" in err
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_cell_is_refused_in_the_line_fit_gives_before_any_cell_runs(tmp_path, capsys):
    from delving.experiment.sweeps.grid import load_sweep
    from delving.experiment.sweeps.local import run_local

    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\nmethod: grid\nparameters:\n  model.depth: {value: 9}\n  tracking.wandb: {value: "
                     "disabled}\n  model.kwargs.widths: {values: [[4, 8, 8], [4, 8]]}\n")
    with pytest.raises(DelvingError) as info:
        run_local(load_sweep(sweep), tmp_path / "runs", jobs=1)
    line = str(info.value)
    assert line.startswith("sweep cell widths=[4, 8]: model delving_plain: model.kwargs.widths=[4, 8] is "
                           "out of range; valid: 3 positive integers"), line
    code, err = run_main(["fit", "--model.depth=9", "--model.kwargs={widths: [4, 8]}", f"--out_dir={tmp_path / 'runs'}",
                          "--tracking.wandb=disabled"], capsys)
    assert_one_clear_line(code, err, line.split(": ", 1)[1])
    assert not (tmp_path / "runs").exists()


def test_an_extends_cycle_is_one_line_naming_the_cycle(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nseed: 1\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nseed: 2\n")
    (tmp_path / "self.yaml").write_text("extends: self.yaml\n")
    code, err = run_main(["fit", "--config", str(tmp_path / "a.yaml")], capsys)
    assert_one_clear_line(code, err, f"'extends:' cycle: {tmp_path / 'a.yaml'} -> {tmp_path / 'b.yaml'} -> "
                                     f"{tmp_path / 'a.yaml'}")
    code, err = run_main(["fit", "--config", str(tmp_path / "self.yaml")], capsys)
    assert_one_clear_line(code, err, "'extends:' cycle")
    (tmp_path / "c.yaml").write_text("extends: b2.yaml\n")  # a chain without a cycle still merges
    (tmp_path / "b2.yaml").write_text("seed: 7\n")
    assert load_config(tmp_path / "c.yaml").seed == 7


@pytest.mark.parametrize("flag", ["--config", "--ckpt"])
def test_a_folder_where_a_file_is_expected_is_called_a_directory(flag, tmp_path, capsys):
    args = ["fit", "--config", str(tmp_path)] if flag == "--config" else \
        ["evaluate", "--ckpt", str(tmp_path), "--protocol", "center"]
    code, err = run_main(args, capsys)
    assert_one_clear_line(code, err, f"{flag} {tmp_path} is a directory; give a file")
    with pytest.raises(DelvingError, match="is a directory"):
        load_config(tmp_path)


def test_a_sweep_file_that_is_a_folder_is_called_a_directory(tmp_path, capsys):
    code, err = run_main(["sweep", str(tmp_path), "--list"], capsys)
    assert_one_clear_line(code, err, f"sweep file {tmp_path} is a directory")


def test_a_grid_cell_with_a_depth_too_small_fails_validation():
    cfg = load_config(None)
    cfg.model.depth = 5  # what a sweep cell sets: validate() is what the sweep runs on every cell first
    with pytest.raises(DelvingError, match=r"model.depth=5 is too small for delving_plain"):
        validate(cfg)


CLI = [  # (arguments, what the line must name); argparse's checks, before any import of torch
    (["info", "--size", "0"], "argument --size: 0 is out of range; valid: [1, 16384]"),
    (["info", "--size", "-5"], "argument --size: -5 is out of range"),
    (["sweep", "s.yaml", "--jobs", "0"], "argument --jobs: 0 is out of range; valid: >= 1"),
    (["sweep", "s.yaml", "--jobs", "-1"], "argument --jobs: -1 is out of range; valid: >= 1"),
    (["photos", "--out", "P", "--train-per-class", "-3"], "argument --train-per-class: -3 is out of range"),
    (["photos", "--out", "P", "--val-per-class", "-1"], "argument --val-per-class: -1 is out of range"),
    (["photos", "--out", "P", "--size", "0"], "argument --size: 0 is out of range"),
    (["write-ffcv", "--root", "R", "--split", "s", "--out", "o", "--workers", "-2"],
     "argument --workers: -2 is out of range; valid: >= 1"),
    (["write-ffcv", "--root", "R", "--split", "s", "--out", "o", "--jpeg-quality", "500"],
     "argument --jpeg-quality: 500 is out of range; valid: [1, 100]"),
    (["write-ffcv", "--root", "R", "--split", "s", "--out", "o", "--compress-probability", "7"],
     "argument --compress-probability: 7 is out of range; valid: [0, 1]"),
    (["write-ffcv", "--root", "R", "--split", "s", "--out", "o", "--compress-probability", "nan"],
     "argument --compress-probability: nan is out of range"),
    (["write-ffcv", "--root", "R", "--split", "s", "--out", "o", "--max-resolution", "-5"],
     "argument --max-resolution: -5 is out of range; valid: >= 0"),
    (["write-ffcv", "--root", "R", "--split", "s", "--out", "o", "--write-mode", "png"],
     "argument --write-mode: invalid choice: 'png'"),
    (["evaluate", "--ckpt", "c", "--protocol", "dense", "--scales", "100000"],
     "--scales 100000 needs at least"),
    (["evaluate", "--ckpt", "c", "--protocol", "sparse"], "unknown --protocol 'sparse'; valid: '10view', 'center'"),
]


@pytest.mark.parametrize("args, message", CLI, ids=[" ".join(a) for a, _ in CLI])
def test_cli_refuses_a_bad_option_in_one_line(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(args, capsys)
    assert_one_clear_line(code, err, message)
    assert list(tmp_path.iterdir()) == []


def test_scales_bound_names_the_largest_scale_that_fits(capsys, monkeypatch):
    from delving import cli

    monkeypatch.setattr(cli, "_memory_bytes", lambda: 16 * 2**30)
    with pytest.raises(DelvingError, match=r"more than this machine's 16 GiB of memory; valid: scales up to 5792 at "
                                           r"--batch-size 32") as info:
        cli.check_scales_memory(["256", "100000"], 32, "10view")
    assert "--scales 100000 needs at least 4,768 GiB" in str(info.value)
    cli.check_scales_memory(["5792"], 32, "10view")  # the largest that fits passes: 5792² · 32 · 12 B · 4/3 < 16 GiB
    with pytest.raises(DelvingError):
        cli.check_scales_memory(["5793"], 32, "10view")


def test_photos_with_an_unusable_output_path(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    for out in (blocker, blocker / "sub"):
        code, err = run_main(["photos", "--out", str(out), "--train-per-class", "1", "--val-per-class", "1"], capsys)
        assert_one_clear_line(code, err, f"photos: {blocker} is a file, not a folder")
    code, err = run_main(["photos", "--out", str(tmp_path / "big"), "--train-per-class", "100000000000"], capsys)
    assert_one_clear_line(code, err, "GiB free under")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"] and blocker.read_text() == "mine"


def test_info_size_too_small_for_a_model(capsys):
    code, err = run_main(["info", "delving_model_a", "--size", "64"], capsys)
    assert_one_clear_line(code, err, "--size 64 is too small for delving_model_a; valid: >= 112")
    code, err = run_main(["info", "delving_plain", "--size", "2"], capsys)
    assert_one_clear_line(code, err, "--size 2 is too small for delving_plain")


def _split(root):
    (root / "c").mkdir(parents=True)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "c" / "0.jpg")
    return root


def test_write_ffcv_output_paths(tmp_path, capsys):
    split = _split(tmp_path / "data" / "train")
    (tmp_path / "outdir").mkdir()
    (tmp_path / "afile").write_text("x")
    cases = [
        (["--out", str(tmp_path / "outdir")], f"--out {tmp_path / 'outdir'} is a directory"),
        (["--out", str(tmp_path / "afile" / "x.beton")], f"output folder {tmp_path / 'afile'} is a file"),
        (["--out", str(tmp_path / "nowhere" / "x.beton")], "output folder not found"),
        (["--out", str(tmp_path / "x.beton"), "--split", "train/c/0.jpg"], "is a file; give the split's folder"),
    ]
    for args, message in cases:
        split_args = [] if "--split" in args else ["--split", split.name]
        code, err = run_main(["write-ffcv", "--root", str(split.parent), *split_args, *args], capsys)
        assert_one_clear_line(code, err, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "data", "outdir"]
    assert list((tmp_path / "outdir").iterdir()) == []


def test_write_beton_api_checks_its_options(tmp_path):
    from delving.data.ffcv import write_beton

    split = _split(tmp_path / "train")
    for kwargs, message in (({"max_resolution": -5}, "--max-resolution -5 must be >= 1, or 0"),
                            ({"jpeg_quality": 500}, "--jpeg-quality 500 is out of range"),
                            ({"compress_probability": 7}, "--compress-probability 7 is out of range"),
                            ({"workers": -2}, "--workers -2 must be >= 1")):
        with pytest.raises(DelvingError, match=message):
            write_beton(split, tmp_path / "x.beton", progress=False, **kwargs)
    assert not list(tmp_path.glob("x.beton*"))


@pytest.mark.slow
def test_end_to_end_no_traceback_and_no_run_folder(tmp_path):
    """The installed entry point, as a user runs it: one line, exit 2, nothing written."""
    for args, message in ((["fit", "--optim.momentum=-5", f"--out_dir={tmp_path}"], "optim.momentum=-5.0"),
                          (["info", "--size", "0"], "argument --size: 0")):
        proc = run_cli(*args)
        assert_one_clear_line(proc.returncode, proc.stderr, message)
    assert list(tmp_path.iterdir()) == []
