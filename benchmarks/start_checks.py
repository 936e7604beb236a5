"""What the checks before a run cost: ``trainer.extra`` (types against ``lightning.Trainer``'s annotations, then a
throwaway CPU Trainer) and ``check_model`` (the data module and the model built and initialized as ``fit`` builds
them), each the fastest of a few calls, on one thread, with Lightning already imported (``fit`` imports it anyway).

    .venv/bin/python benchmarks/start_checks.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
import warnings

import lightning  # noqa: F401  (imported first: its import is not the checks' cost)
import torch

from delving.experiment.training import trainer_extra
from delving.experiment.training.config import load_config
from delving.experiment.training.train import check_model

EXTRA = {"accumulate_grad_batches": 2, "val_check_interval": 0.5}
MODELS = [  # (label, experiment YAML, overrides)
    ("init_depth.yaml (plain, 30 layers, digits)", "experiments/init_depth.yaml", []),
    ("prelu_tat_delta.yaml at 1,000 layers", "experiments/init_depth_limit/prelu_tat_delta.yaml", ["model.depth=1000"]),
    ("model A (Table 3), 1000 classes", "experiments/imagenet/model_a_prelu.yaml", ["data.name=random"]),
]


def fastest_ms(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    parameters = trainer_extra.trainer_parameters()
    rows = [
        ("trainer.extra: types of 2 keys", fastest_ms(
            lambda: [trainer_extra._check_type(k, v, parameters[k]) for k, v in EXTRA.items()], args.repeats)),
        ("trainer.extra: throwaway Trainer", fastest_ms(lambda: trainer_extra._try_trainer(EXTRA), args.repeats)),
        ("trainer.extra: the whole check", fastest_ms(lambda: trainer_extra.check_trainer_extra(EXTRA), args.repeats)),
    ]
    for label, path, overrides in MODELS:
        cfg = load_config(path, overrides)
        rows.append((f"check_model: {label}", fastest_ms(lambda: check_model(cfg), args.repeats)))
    print("| check | ms |\n|---|---|")
    for label, ms in rows:
        print(f"| {label} | {ms:,.1f} |")


if __name__ == "__main__":
    main()
