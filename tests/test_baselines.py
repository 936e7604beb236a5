"""Baselines beside the result tables: scikit-learn on the nets' own split (cached) and a shallow CNN run."""

import json
import shlex

import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from conftest import ROOT
from delving.data import DigitsDataModule
from delving.errors import DelvingError
from delving.experiment.rundir.run_dir import RunDir, fingerprint
from delving.experiment.training.config import load_config, to_dict
from delving.studies import baselines

# The estimators written out here, independently of the module: the test fits them itself
SKLEARN = {"logistic regression": lambda: LogisticRegression(max_iter=1000),
           "linear SVM": lambda: SVC(kernel="linear"), "RBF SVM": lambda: SVC(kernel="rbf"),
           "1-NN": lambda: KNeighborsClassifier(n_neighbors=1)}


@pytest.fixture
def nearest_only(monkeypatch):
    """The cache's mechanics with the fastest estimator alone (the key holds the estimators, so it stays valid)."""
    monkeypatch.setattr(baselines, "ESTIMATORS", {"1-NN": SKLEARN["1-NN"]})


def digits_data(*overrides: str):
    return load_config(None, list(overrides)).data


def test_baselines_reproduce_scikit_learn_on_the_data_modules_split(tmp_path):
    data = digits_data()
    rows = {row.label: row for row in baselines.sklearn_rows(data, tmp_path)}
    module = DigitsDataModule.from_config(data)
    module.setup("fit")
    (x_train, y_train), (x_val, y_val) = module.train_set.tensors, module.val_set.tensors
    x_train, x_val = x_train.flatten(1).numpy(), x_val.flatten(1).numpy()
    assert x_train.shape == (1437, 256) and x_val.shape == (360, 256)  # 16x16, 20% of 1,797 held out
    assert list(rows) == list(SKLEARN)
    for label, make in SKLEARN.items():
        with threadpool_limits(limits=1):  # one BLAS thread, as the module fits
            estimator = make().fit(x_train, y_train.numpy())
        assert rows[label].val_err == 1.0 - estimator.score(x_val, y_val.numpy()), label
        assert rows[label].train_err == 1.0 - estimator.score(x_train, y_train.numpy()), label
        assert 0 <= rows[label].fit_seconds < 30
    assert rows["1-NN"].train_err == 0.0  # each training image is its own nearest neighbour
    assert rows["RBF SVM"].val_err < 0.05 and rows["RBF SVM"].split == "digits, split_seed 0, val_fraction 0.2, 16x16"


def test_the_cache_is_written_once_and_read_back(tmp_path, monkeypatch, nearest_only):
    data = digits_data()
    first = baselines.sklearn_record(data, tmp_path)
    path = baselines.cache_path(tmp_path, data)
    assert path.parent == tmp_path / "baselines" and path.name.startswith("digits-") and path.suffix == ".json"
    assert json.loads(path.read_text()) == first and sorted(p.name for p in path.parent.iterdir()) == [path.name]

    def refit(*args):
        raise AssertionError("fitted again")

    monkeypatch.setattr(baselines, "fit_estimators", refit)
    monkeypatch.setattr(baselines, "split_arrays", refit)
    assert baselines.sklearn_record(data, tmp_path) == first
    # the loader's settings do not change the split: the same entry
    assert baselines.sklearn_record(digits_data("data.batch_size=7", "data.num_workers=1"), tmp_path) == first
    stamp = path.stat().st_mtime_ns
    assert baselines.sklearn_rows(data, tmp_path)[0].val_err == first["baselines"]["1-NN"]["val_err"]
    assert path.stat().st_mtime_ns == stamp  # read, not rewritten


@pytest.mark.parametrize("override", ["data.split_seed=1", "data.val_fraction=0.3", "data.image_size=8"])
def test_another_split_key_misses_the_cache(tmp_path, monkeypatch, override, nearest_only):
    data, other = digits_data(), digits_data(override)
    baselines.sklearn_record(data, tmp_path)
    assert baselines.cache_path(tmp_path, other) != baselines.cache_path(tmp_path, data)

    def refit(*args):
        raise RuntimeError("fitted")

    monkeypatch.setattr(baselines, "fit_estimators", refit)
    with pytest.raises(RuntimeError, match="fitted"):
        baselines.sklearn_record(other, tmp_path)


def test_a_damaged_cache_file_is_fitted_again(tmp_path, nearest_only):
    data = digits_data()
    path = baselines.cache_path(tmp_path, data)
    path.parent.mkdir(parents=True)
    path.write_text('{"key": {"data"')  # cut short
    record = baselines.sklearn_record(data, tmp_path)
    assert json.loads(path.read_text()) == record and set(record["baselines"]) == {"1-NN"}


@pytest.mark.parametrize("overrides", [["data.name=random"], ["data.name=folder", "data.root=/nonexistent"]])
def test_data_without_a_split_in_memory_says_so(tmp_path, overrides):
    rows = baselines.for_runs([to_dict(load_config(None, overrides))], tmp_path)
    assert len(rows) == 1 and rows[0].val_err is None and "holds no split in memory" in rows[0].missing
    assert not (tmp_path / "baselines").exists()


def test_the_cnn_is_the_run_sets_own_settings_with_a_shallow_relu_he_net(tmp_path):
    cfg = load_config(ROOT / "experiments" / "init_depth.yaml", ["model.activation=prelu", "init.scheme=xavier",
                                                                 "seed=2", "model.depth=30",
                                                                 "tracking.group=init_depth"])
    cnn = baselines.cnn_config(cfg, tmp_path)
    assert (cnn.model.name, cnn.model.depth, cnn.model.activation, cnn.init.scheme, cnn.seed) == \
        ("delving_plain", 11, "relu", "he", 0)
    assert cnn.optim == cfg.optim and cnn.data == cfg.data and cnn.trainer == cfg.trainer
    assert cnn.model.kwargs == {"widths": [16, 32, 32]} and cnn.out_dir == str(tmp_path / "baselines")
    assert cnn.tracking.group == "init_depth-baselines" and "baseline" in cnn.tracking.tags
    # the command the table prints makes the very same run (same name, same identity)
    command = shlex.split(baselines.fit_command(cnn))
    assert command[:2] == ["delving", "fit"]
    again = load_config(None, [arg.removeprefix("--") for arg in command[2:]])
    assert again.name == cnn.name and fingerprint(to_dict(again)) == fingerprint(to_dict(cnn))
    # another optimizer setting: another CNN folder, never a clash with the first one's config
    cfg.optim.lr = 0.05
    assert baselines.cnn_config(cfg, tmp_path).name != cnn.name


def test_the_cnn_row_says_how_to_make_it_then_reads_the_run(tiny, tmp_path, nearest_only):
    cfg = load_config(None, [*tiny, "trainer.max_epochs=2"])
    rows = baselines.for_runs([to_dict(cfg)], tmp_path)
    cnn = rows[-1]
    assert cnn.label == "plain CNN, 11 layers, ReLU" and cnn.val_err is None
    assert cnn.missing.startswith("not trained (`delving sweep` trains it after its grid); make it with: delving fit ")
    rows = baselines.for_runs([to_dict(cfg)], tmp_path, train=True)
    run = RunDir(tmp_path / "baselines" / baselines.cnn_config(cfg, tmp_path).name)
    result = run.read_result()
    assert rows[-1].missing is None and rows[-1].val_err == result["final_val_err1"] and result["epochs"] == 2
    assert len(rows[-1].curve) == 2 and rows[-1].depth == 11 and rows[-1].seeds == 1
    stamp = run.result_path.stat().st_mtime_ns
    baselines.for_runs([to_dict(cfg)], tmp_path, train=True)  # finished: not trained again
    assert run.result_path.stat().st_mtime_ns == stamp


def test_one_set_of_rows_per_split(tmp_path, nearest_only):
    configs = [to_dict(load_config(None, [f"data.split_seed={s}", f"seed={seed}"])) for s in (0, 1) for seed in (0, 1)]
    rows = baselines.for_runs(configs, tmp_path)
    assert [row.split for row in rows].count("digits, split_seed 1, val_fraction 0.2, 16x16") == 2  # 1-NN, CNN
    assert len(rows) == 4 and baselines.several_splits(rows) and rows[0].val_err != rows[2].val_err
    assert baselines.label(rows[0], True) == "baseline: 1-NN (digits, split_seed 0, val_fraction 0.2, 16x16)"
    assert baselines.label(rows[0], False) == "baseline: 1-NN"


def test_a_config_of_another_schema_is_a_one_line_error():
    with pytest.raises(DelvingError, match="a run's config does not load .*data.split_seed"):
        baselines.run_config({"data": {"split_seed": "zero"}})


def table_rows(text: str, start: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith(start)]


def fake_run(folder, init: str, curve: list[float]) -> None:
    """A finished run folder as the summary reads it: config.yaml (digits' default split) and result.json."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(json.dumps({"seed": 0, "model": {"activation": "relu", "depth": 30},
                                                    "init": {"scheme": init}}))
    (folder / "result.json").write_text(json.dumps({
        "status": "finished", "name": folder.name, "activation": "relu", "init": init, "depth": 30, "seed": 0,
        "final_val_err1": curve[-1], "best_val_err1": min(curve), "final_train_err1": curve[-1] - 0.02,
        "history": [{"epoch": i, "val/err1": e, "train/err1": e - 0.02} for i, e in enumerate(curve)]}))


def test_the_summary_has_the_baseline_rows_in_the_nets_columns(tmp_path):
    from delving.studies.summary import summarize

    fake_run(tmp_path / "he", "he", [0.6, 0.2, 0.05])
    fake_run(tmp_path / "xavier", "xavier", [0.9, 0.9, 0.9])
    text = summarize(tmp_path)  # reads: a summary trains the CNN only when asked (delving sweep asks)
    record = json.loads(baselines.cache_path(tmp_path, digits_data()).read_text())
    header = table_rows(text, "| depth |")[0]
    net = table_rows(text, "| 30 | relu | he |")[0]
    rbf = table_rows(text, "| – | baseline: RBF SVM |")[0]
    assert len(rbf) == len(net) == len(header) == 13
    val = header.index("final val err")
    fitted = record["baselines"]["RBF SVM"]
    assert rbf[val] == f"{fitted['val_err']:.3f}"
    assert rbf[header.index("final train err")] == f"{fitted['train_err']:.3f}"
    assert [row[1] for row in table_rows(text, "| – | baseline: ")] == [f"baseline: {k}" for k in record["baselines"]]
    cnn = table_rows(text, "| 11 | baseline: plain CNN, 11 layers, ReLU | he |")[0]
    assert cnn[val] == "not trained (see below)" and "make it with: delving fit --name=delving_plain-d11-" in text
    assert (tmp_path / "summary.md").read_text().count("| baseline: ") == 5
    assert not (tmp_path / "baselines" / baselines.cnn_config(baselines.run_config({}), tmp_path).name).exists()


@pytest.mark.slow
def test_delving_sweep_prints_the_baselines_with_the_cnn_trained(tmp_path, capsys):
    from delving.cli import main

    exp = tmp_path / "tiny.yaml"
    exp.write_text("model: {depth: 9, kwargs: {widths: [4, 8, 8], fc_width: 16}}\ndata: {batch_size: 32}\n"
                   "tracking: {wandb: disabled}\nthreads: 1\n"
                   "trainer: {max_epochs: 1, limit_train_batches: 4, limit_val_batches: 2}\n")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: tiny\nmethod: grid\nparameters:\n  config: {{value: {exp}}}\n  seed: {{values: [0]}}\n")
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "runs"), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    cnn = table_rows(out, "| 11 | baseline: plain CNN, 11 layers, ReLU | he |")[0]
    folder = tmp_path / "runs" / "tiny"
    cfg = load_config(exp, ["seed=0"])
    result = RunDir(folder / "baselines" / baselines.cnn_config(cfg, folder).name).read_result()
    assert cnn[6] == f"{result['final_val_err1']:.3f}" and len(table_rows(out, "| – | baseline: ")) == 4
    assert "not trained" not in out and "| 11 | baseline: plain CNN" in (folder / "summary.md").read_text()
    assert sorted(p.name for p in folder.iterdir() if (p / "config.yaml").is_file()) == ["seed=0"]  # not a cell


@pytest.mark.slow  # mnist5k's CSV is parsed and 4,000 x 784 pixels searched: seconds
def test_mnist5k_baselines_fit_its_own_split(tmp_path, nearest_only):
    from delving.data.mnist5k import MNIST5kDataModule

    data = digits_data("data.name=mnist5k")
    row = baselines.sklearn_rows(data, tmp_path)[0]
    module = MNIST5kDataModule.from_config(data)
    module.setup("fit")
    (x_train, y_train), (x_val, y_val) = module.train_set.tensors, module.val_set.tensors
    assert x_train.flatten(1).shape == (4000, 784) and x_val.flatten(1).shape == (1000, 784)  # 28x28, 20% held out
    nearest = SKLEARN["1-NN"]().fit(x_train.flatten(1).numpy(), y_train.numpy())
    assert row.val_err == 1.0 - nearest.score(x_val.flatten(1).numpy(), y_val.numpy())
    assert row.split == "mnist5k, split_seed 0, val_fraction 0.2, 28x28"
    assert baselines.cache_path(tmp_path, data).name.startswith("mnist5k-")


def test_a_notebook_table_gets_the_baseline_rows_in_its_columns():
    import pandas as pd

    from delving.studies import notebook

    table = pd.DataFrame({"activation": ["relu"], "depth": [30], "init": ["he"], "seeds": [3], "final_val": [0.05]})
    rows = [baselines.Baseline("RBF SVM", "digits", 0.002, 0.011),
            baselines.Baseline(baselines.CNN_LABEL, "digits", 0.0, 0.03, 0.02, depth=11, init="he", seeds=1)]
    shown = notebook.with_baselines(table, rows, {"final_val": "val_err"})
    assert shown.activation.tolist() == ["relu", "baseline: RBF SVM", "baseline: plain CNN, 11 layers, ReLU"]
    assert shown.final_val.tolist() == [0.05, 0.011, 0.03] and shown.depth[2] == 11 and pd.isna(shown.depth[1])
    assert shown.init.tolist()[2] == "he" and shown.seeds[2] == 1
