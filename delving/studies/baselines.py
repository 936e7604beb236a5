"""Baselines beside every result table: standard classifiers and a shallow CNN on the very split the nets see.

A table of deep nets alone does not say whether their error is good for the data: a reviewer first asks what a
standard classifier reaches on the same split. For the data section of a run config this module takes the train and
validation tensors from the data module itself (the same stratified split by ``split_seed``, the same upscaling and
the same normalization by the training split; no second split code) and gives two kinds of rows:

- scikit-learn estimators on the flattened pixels, with fixed hyper-parameters, never tuned on the validation split
  (:data:`ESTIMATORS`): scikit-learn's defaults (C = 1; RBF gamma "scale"), logistic regression allowed the
  iterations it needs to converge, the linear SVM solved by libsvm, and the nearest neighbour (1-NN, Euclidean);
- a shallow plain CNN trained by the package itself: ``delving_plain`` with :data:`CNN_DEPTH` weight layers, ReLU,
  He init (Eq. 10), seed 0, with the run set's own data, widths, optimizer, schedule and epochs. It is an ordinary
  run of :func:`delving.experiment.training.train.fit` (resumable, skipped when finished, recorded like any run) in
  ``<folder>/baselines/<name>/``; it is trained only when asked (:func:`for_runs` with ``train=True``, which
  ``delving sweep`` does after its grid). Until then its row says so and gives the ``delving fit`` command.

The scikit-learn results are cached in one JSON file per (dataset, split key): ``<folder>/baselines/<data.name>-
<hash>.json``, written atomically and read back by this module only. The key is the data section without the
loader-only keys (:data:`LOADER_KEYS`), the estimators' parameters and scikit-learn's version, so a changed split
(``split_seed``, ``val_fraction``, ``image_size``, ...) or estimator is another entry and is fitted again. Data modules
that stream images from disk (``folder``, ``ffcv``) or hold no fixed split (``random``) get a row that says the
baselines were not computed, and why.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterable

from delving.errors import DelvingError
from delving.experiment.rundir.run_dir import RunDir, flatten, fingerprint, write_json

FOLDER = "baselines"  # inside a sweep folder (the cache files and the CNN's run folder)
CNN_MODEL = "delving_plain"
CNN_DEPTH = 11  # conv1, 4 stage-2 convs, 3 stage-3 convs, 3 fc: a shallow net of the same family as the sweep's
CNN_LABEL = f"plain CNN, {CNN_DEPTH} layers, ReLU"
STREAMED = ("folder", "ffcv")  # data modules that read images from disk per batch: no split held in memory
# Keys of the data section that change how batches are loaded, not which tensors the split holds
LOADER_KEYS = ("batch_size", "batch_size_is", "num_workers", "os_cache", "order", "order_seed")


def _logistic():
    from sklearn.linear_model import LogisticRegression

    # multinomial, L2, C = 1, lbfgs; up to 1,000 iterations, as lbfgs needs 52 on digits but 107 on mnist5k (the
    # default 100 stops short there with a ConvergenceWarning)
    return LogisticRegression(max_iter=1000)


def _linear_svm():
    from sklearn.svm import SVC

    # C = 1, hinge loss, one-vs-one, solved exactly by libsvm: 0.08 s on digits and 2.6 s on mnist5k, where
    # liblinear's LinearSVC (squared hinge) had not converged after 1,000 iterations and 30 s (2-core CPU)
    return SVC(kernel="linear")


def _rbf_svm():
    from sklearn.svm import SVC

    return SVC(kernel="rbf")  # C = 1, gamma = "scale" = 1 / (n_features * Var[X])


def _nearest():
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=1)  # Euclidean 1-NN


ESTIMATORS: dict[str, Callable] = {"logistic regression": _logistic, "linear SVM": _linear_svm,
                                   "RBF SVM": _rbf_svm, "1-NN": _nearest}


@dataclass(frozen=True)
class Baseline:
    """One baseline row: what it is, on which split, and its top-1 errors (None where there is no number).

    ``missing`` says why there is none and how to make it; ``curve`` is the CNN's validation error per epoch;
    ``source`` the cache file or run folder, relative to the run set's folder."""

    label: str
    split: str
    train_err: float | None = None
    val_err: float | None = None
    best_val_err: float | None = None
    fit_seconds: float | None = None
    depth: int | None = None
    init: str | None = None
    seeds: int | None = None
    curve: tuple[float, ...] = ()
    missing: str | None = None
    source: str | None = None  # where it is kept, relative to the run set's folder


def for_runs(configs: Iterable[dict], folder: str | Path, *, train: bool = False) -> list[Baseline]:
    """The baselines of every split the runs were trained on (one set per distinct split key, in first-seen order).

    Args:
        configs: the runs' configs as nested dicts (a run folder's stored config or a W&B run's config).
        folder: where ``baselines/`` lives (a sweep folder).
        train: train the shallow CNN if it has not finished (one ordinary run); otherwise its row says how.
    """
    rows = []
    for cfg in _one_per_split(configs):
        rows += sklearn_rows(cfg.data, folder)
        if not rows[-1].missing:  # a split held in memory: the CNN trains on the same one
            rows.append(cnn_row(cfg, folder, train=train))
    return rows


def _one_per_split(configs: Iterable[dict]) -> list:
    """The first run config of each distinct split key: its data, optimizer and trainer settings make the CNN."""
    first = {}  # a sweep's runs share one data section: each distinct section is loaded once
    for config in configs:
        first.setdefault(json.dumps(config.get("data"), sort_keys=True, default=str), config)
    chosen = {}
    for config in first.values():
        cfg = run_config(config)
        chosen.setdefault(_hash(split_key(cfg.data)), cfg)
    return list(chosen.values())


def run_config(config: dict):
    """A stored config (nested dicts) as the typed ``RunConfig`` a run of it gets: through ``load_config``, so the
    defaults a stored config omits are filled in as for any run. Keys the schema lacks at the top level (a W&B run's
    own) are dropped; any other misfit is a one-line error."""
    import tempfile

    import yaml

    from delving.experiment.training.config import RunConfig, load_config

    known = {f.name for f in fields(RunConfig)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stored.yaml"  # a temporary copy, not a run folder's file
        path.write_text(yaml.safe_dump({k: v for k, v in config.items() if k in known}))
        try:
            return load_config(path)
        except DelvingError as err:
            raise DelvingError(f"baselines: a run's config does not load ({err})") from None


# ----------------------------------------------------------------------------------------------- scikit-learn
def split_key(data) -> dict:
    """What fixes a split's tensors: the data section without :data:`LOADER_KEYS`."""
    return {k: v for k, v in sorted(asdict(data).items()) if k not in LOADER_KEYS}


def describe(data) -> str:
    """The split in words, e.g. ``digits, split_seed 0, val_fraction 0.2, 16x16``."""
    return f"{data.name}, split_seed {data.split_seed}, val_fraction {data.val_fraction:g}, " \
           f"{data.image_size}x{data.image_size}"


def cache_key(data) -> dict:
    """The cache entry's identity: split, estimators' parameters and scikit-learn's version."""
    import sklearn

    params = {label: make().get_params() for label, make in ESTIMATORS.items()}
    return _plain({"data": split_key(data), "estimators": params, "sklearn": sklearn.__version__})


def cache_path(folder: str | Path, data) -> Path:
    """``<folder>/baselines/<data.name>-<hash of the split key>.json``."""
    return Path(folder) / FOLDER / f"{data.name}-{_hash(split_key(data))}.json"


def sklearn_rows(data, folder: str | Path) -> list[Baseline]:
    """One row per estimator of :data:`ESTIMATORS`, from the cache or fitted now (and cached)."""
    record = sklearn_record(data, folder)
    if record is None:
        return [Baseline("scikit-learn", describe(data),
                         missing=f"not computed: data.name={data.name} holds no split in memory (baselines need the "
                                 "train and validation tensors of a split held in memory, like digits)")]
    source = f"{FOLDER}/{cache_path(folder, data).name}"
    return [Baseline(label, describe(data), r["train_err"], r["val_err"], fit_seconds=r["fit_seconds"], source=source)
            for label, r in record["baselines"].items()]


def sklearn_record(data, folder: str | Path) -> dict | None:
    """The cached record of ``data``'s split (fitted and written on a miss); None when the split is not in memory."""
    path, key = cache_path(folder, data), cache_key(data)
    cached = _read(path)
    if cached is not None and cached.get("key") == key:
        return cached
    arrays = split_arrays(data)
    if arrays is None:
        return None
    x_train, y_train, x_val, y_val = arrays
    record = {"key": key, "split": describe(data), "train_samples": len(y_train), "val_samples": len(y_val),
              "features": int(x_train.shape[1]), "baselines": fit_estimators(*arrays)}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    return record


def split_arrays(data):
    """``(x_train, y_train, x_val, y_val)`` as numpy arrays, pixels flattened, taken from the data module itself
    (its ``train_set`` and ``val_set`` tensors after ``setup``); None for a module that holds no split in memory."""
    if data.name in STREAMED:
        return None
    from torch.utils.data import TensorDataset

    from delving.data import datamodule_class

    module = datamodule_class(data.name).from_config(data, seed=0)
    module.setup("fit")
    sets = (getattr(module, "train_set", None), getattr(module, "val_set", None))
    if not all(isinstance(s, TensorDataset) for s in sets):
        return None
    (x_train, y_train), (x_val, y_val) = (s.tensors[:2] for s in sets)
    return (x_train.flatten(1).numpy(), y_train.numpy(), x_val.flatten(1).numpy(), y_val.numpy())


def fit_estimators(x_train, y_train, x_val, y_val) -> dict[str, dict]:
    """Fit each estimator once; its training and validation top-1 error (1 - accuracy) and fit time in seconds.

    On one BLAS thread: on a few hundred features a multi-threaded BLAS spends lbfgs' time handing work between
    threads (logistic regression on digits: 0.07 s on one thread, 0.6 s on two idle cores, 5.6 s on two busy ones)."""
    from threadpoolctl import threadpool_limits

    out = {}
    for label, make in ESTIMATORS.items():
        estimator = make()
        start = time.perf_counter()
        with threadpool_limits(limits=1):
            estimator.fit(x_train, y_train)
        seconds = time.perf_counter() - start
        out[label] = {"train_err": 1.0 - float(estimator.score(x_train, y_train)),
                      "val_err": 1.0 - float(estimator.score(x_val, y_val)), "fit_seconds": round(seconds, 3)}
    return out


def _read(path: Path) -> dict | None:
    """A cache file, or None when there is none or it is damaged (then it is fitted and written again)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _plain(value):
    """``value`` as JSON gives it back (tuples -> lists), so a key read from the cache compares equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------- shallow CNN
def cnn_config(cfg, folder: str | Path):
    """The shallow CNN's run config: ``cfg`` (a run of the set) with the model, init and seed of the baseline.

    Data, optimizer, schedule, epochs and trainer limits stay the run set's own; widths and dropout too when the set
    trains ``delving_plain``. The name holds the config's fingerprint, so a run set with other settings gets its own
    CNN instead of a clash with another config's folder."""
    from delving.experiment.training.config import InitConfig, ModelConfig, to_dict, validate

    cnn = copy.deepcopy(cfg)
    same_family = cfg.model.name == CNN_MODEL
    cnn.model = ModelConfig(name=CNN_MODEL, activation="relu", depth=CNN_DEPTH,
                            drop_rate=cfg.model.drop_rate if same_family else None,
                            kwargs=dict(cfg.model.kwargs) if same_family else {})
    cnn.init = InitConfig()  # He, fan_in, Gaussian weights (Eq. 10)
    cnn.seed = 0
    cnn.tracking.group = f"{cfg.tracking.group}-{FOLDER}" if cfg.tracking.group else FOLDER
    cnn.tracking.tags = [*cfg.tracking.tags, "baseline"]
    cnn.out_dir = str(Path(folder) / FOLDER)
    cnn.name = f"{CNN_MODEL}-d{CNN_DEPTH}-relu-he-{cfg.data.name}-{fingerprint(to_dict(cnn))[:8]}"
    validate(cnn)
    return cnn


def fit_command(cnn) -> str:
    """The ``delving fit`` line that trains ``cnn``: every key that differs from the defaults, as an override."""
    from delving.experiment.training.config import RunConfig, to_dict

    defaults, ours = flatten(to_dict(RunConfig())), flatten(to_dict(cnn))
    args = [f"--{key}={_cli_value(value)}" for key, value in ours.items() if defaults.get(key, ...) != value]
    return "delving fit " + " ".join(shlex.quote(arg) for arg in args)


def _cli_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def cnn_row(cfg, folder: str | Path, *, train: bool = False) -> Baseline:
    """The shallow CNN's row from its run folder (trained first when ``train`` and not finished)."""
    cnn = cnn_config(cfg, folder)
    run = RunDir(Path(cnn.out_dir) / cnn.name)
    missing = None
    if train and not run.is_done(cnn.trainer.max_epochs):
        missing = _train(cnn)
    if not run.is_done(cnn.trainer.max_epochs):
        return Baseline(CNN_LABEL, describe(cnn.data), depth=CNN_DEPTH, init="he",
                        missing=missing or f"not trained (`delving sweep` trains it after its grid); make it with: "
                                           f"{fit_command(cnn)}")
    result = run.read_result()
    curve = tuple(row["val/err1"] for row in result.get("history", []) if row.get("val/err1") is not None)
    return Baseline(CNN_LABEL + (" (diverged)" if result["status"] == "diverged" else ""), describe(cnn.data),
                    result.get("final_train_err1"), result.get("final_val_err1"), result.get("best_val_err1"),
                    result.get("fit_seconds"), CNN_DEPTH, "he", 1, curve, source=f"{FOLDER}/{cnn.name}/")


def _train(cnn) -> str | None:
    """Train the CNN as an ordinary run; None when done, else why not (another process holds its folder)."""
    import logging
    import warnings

    from delving.experiment.training.train import fit

    print(f"baseline: training {CNN_LABEL} -> {Path(cnn.out_dir) / cnn.name}", file=sys.stderr)
    levels = {name: logging.getLogger(name).level for name in ("lightning.pytorch", "lightning.fabric")}
    try:
        for name in levels:  # Lightning's start-up lines (devices found, tips) would interleave with the table
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit(cnn, progress=False)
    except DelvingError as err:  # e.g. the folder's lock: another process trains it
        return f"not trained ({err})"
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    return None


# ----------------------------------------------------------------------------------------------- for the tables
def home(source: str | Path, fallback: str | Path) -> Path:
    """Where a run set's ``baselines/`` lives: a sweep folder itself, a single run's parent, else ``fallback``
    (a W&B source has no local folder: the report's or notebook's output folder)."""
    if str(source).startswith("wandb:"):
        return Path(fallback)
    source = Path(source)
    return source.parent if RunDir(source).is_run() else source


def label(row: Baseline, several_splits: bool) -> str:
    """``baseline: RBF SVM``, with the split when a table holds runs of several splits."""
    return f"baseline: {row.label}" + (f" ({row.split})" if several_splits else "")


def several_splits(rows: list[Baseline]) -> bool:
    return len({row.split for row in rows}) > 1


def note(rows: list[Baseline]) -> str:
    """The paragraph under a table: what the baselines are, where they are kept, and any that are missing."""
    if not rows:
        return ""
    splits = list(dict.fromkeys(row.split for row in rows))
    kept = ", ".join(f"`{source}`" for source in dict.fromkeys(row.source for row in rows if row.source))
    text = (f"Baselines on the nets' own split ({'; '.join(splits)}), from `delving.studies.baselines`: scikit-learn "
            "on the flattened pixels with its default hyper-parameters, none tuned on the validation split (logistic "
            "regression, C 1, run to convergence; linear SVM, C 1; RBF SVM, C 1, gamma 'scale'; 1-NN, Euclidean); the "
            f"{CNN_LABEL} (`{CNN_MODEL}`, He init, seed 0) trained by `delving fit` with the runs' own data, widths, "
            f"optimizer and epochs" + (f"; kept in {kept}" if kept else "") + ".")
    gaps = [f"- {row.label} ({row.split}): {row.missing}" for row in rows if row.missing]
    return text + ("\n\n" + "\n".join(gaps) if gaps else "")
