"""A 2-process DDP ``fit`` (Lightning re-runs this script for rank 1) that writes, per rank, the epoch metrics each
rank holds when the epoch ends, for the test that they are reduced over both ranks:

    python tests/ddp_metrics_worker.py OUT_DIR key=value ...

Each rank appends ``{"epoch", "metrics": {name: value}}`` lines to ``OUT_DIR/metrics-rank<R>.jsonl``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L

from delving.experiment.training.config import load_config
from delving.experiment.training.train import fit

KEYS = ("train/err1", "train/loss_epoch", "val/err1", "val/err5", "val/loss")


class EpochMetrics(L.Callback):
    def __init__(self, out: Path):
        self.out = out

    def on_train_epoch_end(self, trainer, pl_module):
        metrics = {k: float(trainer.callback_metrics[k]) for k in KEYS if k in trainer.callback_metrics}
        with (self.out / f"metrics-rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps({"epoch": trainer.current_epoch, "metrics": metrics}) + "\n")


def main() -> None:
    out = Path(sys.argv[1])
    cfg = load_config(None, [*sys.argv[2:], f"out_dir={out}", "name=ddp", "trainer.strategy=ddp",
                             "trainer.devices=2", "trainer.accelerator=cpu"])
    fit(cfg, progress=False, callbacks=[EpochMetrics(out)])


if __name__ == "__main__":
    main()
