"""`delving report`: the reproduction report from run folders, beside the paper's numbers."""

import json
import math
import shutil

import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from delving import paper_values
from delving.studies import report
from delving.cli import main
from delving.experiment.training.config import load_config, to_dict
from delving.errors import DelvingError

EPOCHS = 6
# 30-layer net: conv1, 4 stage-2 convs, 22 stage-3 convs, fc1, fc2 (what SlopeLogger logs for delving_plain)
LAYERS = ["conv1", "conv21", "conv22", "conv23", "conv24", *(f"conv3_{i}" for i in range(1, 23)), "fc1", "fc2"]


def curve(final: float) -> list[float]:
    """Val error falling linearly from 0.9 to ``final`` at the last epoch.

    A final of 0.11 goes 0.768, 0.637, 0.505, 0.373, ...: below 50% at epoch 4."""
    return [0.9 + (final - 0.9) * (e + 1) / EPOCHS for e in range(EPOCHS)]


def make_run(root, activation, init, seed, final, slopes=None, status="finished"):
    """A run folder as `delving fit` leaves it: config.yaml, csv/metrics.csv, slopes.csv, result.json."""
    name = f"activation={activation},scheme={init},depth=30,seed={seed}"
    folder = root / name
    (folder / "csv").mkdir(parents=True)
    cfg = load_config(None, [f"model.activation={activation}", f"init.scheme={init}", "model.depth=30",
                             f"seed={seed}", "data.image_size=16", "model.kwargs.widths=[16,32,32]",
                             "optim.gradient_clip_norm=1.0", f"trainer.max_epochs={EPOCHS}", f"name={name}"])
    OmegaConf.save(to_dict(cfg), folder / "config.yaml")
    val = curve(final)
    rows = [{"epoch": e, "step": 10 * (e + 1), "train/err1": v, "train/loss_epoch": 2 * v, "val/err1": v,
             "val/err5": v / 3, "val/loss": 2 * v} for e, v in enumerate(val)]
    pd.DataFrame(rows).to_csv(folder / "csv" / "metrics.csv", index=False)
    if slopes is not None:  # final-epoch channel-mean slope per layer; 4 channels spread ±0.01 around it
        pd.DataFrame([{"epoch": EPOCHS - 1, "depth": d, "layer": layer, "channel": c, "slope": s + 0.01 * (c - 1.5)}
                      for d, (layer, s) in enumerate(zip(LAYERS, slopes), start=1) for c in range(4)]
                     ).to_csv(folder / "slopes.csv", index=False)
    if status != "incomplete":
        (folder / "result.json").write_text(json.dumps({"status": status, "name": name, "final_val_err1": val[-1]}))
    return folder


# Table 1's shape: conv1 large, deeper convs smaller, fc small
PROFILE = [0.6, *[0.45 - 0.012 * i for i in range(26)], 0.08, 0.07]


@pytest.fixture
def sweep(tmp_path):
    """30 layers x {xavier, he} x {relu, prelu} x seeds {0, 1}: Xavier stalls, He trains; PReLU 10% better."""
    root = tmp_path / "sweep"
    for seed in (0, 1):
        relu_final = 0.11 + 0.02 * seed
        make_run(root, "relu", "he", seed, relu_final)
        make_run(root, "prelu", "he", seed, 0.9 * relu_final, PROFILE)
        make_run(root, "relu", "xavier", seed, 0.9)
        make_run(root, "prelu", "xavier", seed, 0.9, [0.25] * len(LAYERS))
    return root


def table_row(text: str, start: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(start))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_report_sets_our_numbers_beside_the_papers(sweep, tmp_path):
    path = report.write_report(sweep, tmp_path / "out")
    text = path.read_text()
    # 1. Fig. 3: Xavier stalls on both seeds, He trains and gets below 50% at epoch 4
    xavier = table_row(text, "| 30 | xavier | relu |")
    assert xavier[4:8] == ["0.900 [0.900, 0.900]", "2/2", "never, never", "never, never"]
    assert xavier[8] == paper_values.FIG_CLAIMS[(30, "xavier")]
    he = table_row(text, "| 30 | he | relu |")
    assert he[4:8] == ["0.120 [0.110, 0.130]", "0/2", "4, 4", "never, never"]
    assert "- [x] 30-layer ReLU, Xavier: stalls" in text and "- [ ] 30-layer ReLU, He: trains" in text
    # 2. Table 1: the paper's row from Table 1's channel-wise column, ours recovers the synthetic profile
    ours = table_row(text, "| ours, 30 layers, he |")
    assert ours[1] == "2" and float(ours[2]) == pytest.approx(0.6) and float(ours[3]) < -0.5
    assert float(ours[5]) == pytest.approx(0.075)
    assert table_row(text, "| paper, 14 layers, channel-wise")[2] == "0.596"
    assert "holds in 1 of 2 run sets: ours, 30 layers, he." in text
    # 3. Table 2: 33.82 -> 32.64 is 1.18 points, 3.5% relative; ours is exactly 10% on every He pair
    assert table_row(text, "| paper, 14 layers, ImageNet")[4:] == ["1.18", "3.5%"]
    assert table_row(text, "| 30 layers, he |")[5] == "10.0 ± 0.0 [10.0, 10.0]%"
    trained = table_row(text, "| all pairs where both trained |")
    assert trained[1] == "2" and "2 pair(s) with a run at chance" in text
    # 4. the departures come from the runs' config
    assert table_row(text, "| input |")[1] == "16×16" and "clipped at 1.0" in table_row(text, "| clipping |")[1]
    # every linked figure exists and opens as a PNG
    names = report.figures(path)
    assert names == ["init_depth.png", "slope_profile_30.png", "slopes_vs_table1.png", "prelu_gain.png"]
    for name in names:
        with Image.open(path.parent / name) as image:
            assert image.format == "PNG" and image.size[0] > 300


def test_the_report_has_the_baselines_of_the_runs_split(sweep, tmp_path):
    from delving.studies import baselines

    text = report.write_report(sweep, tmp_path / "out").read_text()
    data = load_config(None, ["data.image_size=16"]).data  # make_run's split: the default one
    record = json.loads(baselines.cache_path(sweep, data).read_text())["baselines"]  # beside the runs, not in out
    assert list(record) == ["logistic regression", "linear SVM", "RBF SVM", "1-NN"]
    for name, fitted in record.items():  # section 1's column of final val error
        assert table_row(text, f"| – | – | baseline: {name} |")[4] == f"{fitted['val_err']:.3f}"
    assert table_row(text, "| 11 | he | baseline: plain CNN, 11 layers, ReLU |")[4] == "not trained (see below)"
    assert "make it with: delving fit --name=delving_plain-d11-relu-he-digits-" in text


def test_slopes_that_did_not_move_are_called_noise(tmp_path):
    root = tmp_path / "flat"
    make_run(root, "prelu", "he", 0, 0.1, [0.25 + 0.001 * (i % 2) for i in range(len(LAYERS))])
    text = report.write_report(root, tmp_path / "out").read_text()
    assert "**No profile has formed:** no layer's mean slope moved more than 0.001" in text


def test_without_prelu_runs_tables_1_and_2_say_not_measured(tmp_path):
    root = tmp_path / "relu"
    make_run(root, "relu", "he", 0, 0.1)
    make_run(root, "relu", "xavier", 0, 0.9)
    text = report.write_report(root).read_text()  # default --out: FOLDER/report
    assert (root / "report" / "report.md").is_file()
    assert "Not measured: no finished PReLU runs with logged slopes" in text
    assert "Not measured: needs ReLU and PReLU runs with the same depth, init and seed." in text
    assert report.figures(root / "report" / "report.md") == ["init_depth.png"]


def test_unfinished_runs_are_counted_but_left_out(sweep, tmp_path):
    make_run(sweep, "relu", "he", 7, 0.5, status="incomplete")
    text = report.write_report(sweep, tmp_path / "out").read_text()
    assert text.splitlines()[2].startswith("9 runs (8 finished, 1 ")  # running or incomplete, by its files' age
    assert table_row(text, "| 30 | he | relu |")[3] == "2" and "pooled" not in text
    shutil.copytree(sweep / "activation=relu,scheme=he,depth=30,seed=0", sweep / "relu-he-30-0-other-lr")
    text = report.write_report(sweep, tmp_path / "out2").read_text()
    assert "- not checked: several runs share a cell and seed" in text
    assert "differ in another setting and are pooled" in text and table_row(text, "| 30 | he | relu |")[3] == "3"


def test_epoch_counting_matches_summary():
    assert report.first_epoch_below([0.9, 0.6, 0.4], 0.5) == 3 and math.isinf(report.first_epoch_below([0.9], 0.5))


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"delving: error: runs folder not found: {tmp_path / 'missing'}"]
    make_run(tmp_path / "x", "relu", "he", 0, 0.1, status="incomplete")
    assert main(["report", str(tmp_path / "x")]) == 2
    assert "no finished runs under" in capsys.readouterr().err
    with pytest.raises(DelvingError, match="needs --out"):
        report.write_report("wandb:me/p")


def test_cli_writes_the_report(sweep, tmp_path, capsys):
    assert main(["report", str(sweep), "--out", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.strip() == (f"report: {tmp_path / 'r' / 'report.md'} (figures: init_depth.png, "
                                               "slope_profile_30.png, slopes_vs_table1.png, prelu_gain.png)")


def test_report_of_real_tiny_runs(tiny, tmp_path):
    """Two real runs (ReLU and PReLU, same init and seed) through fit -> csv -> load_runs -> report."""
    from delving.experiment.training.train import fit

    for act in ("relu", "prelu"):
        cfg = load_config(None, [*tiny, f"model.activation={act}", "trainer.max_epochs=2", f"name={act}"])
        fit(cfg, progress=False)
    path = report.write_report(tmp_path / "runs", tmp_path / "out")
    text = path.read_text()
    assert table_row(text, "| 9 | he | prelu |")[3] == "1" and table_row(text, "| 9 layers, he |")[1] == "1"
    assert "| ours, 9 layers, he | 1 |" in text
    for name in report.figures(path):
        with Image.open(path.parent / name) as image:
            assert image.format == "PNG"
