"""A training run over FFCV files that records the labels of every training batch, for the DDP-sharding and
resume tests (run as a script: Lightning's DDP re-executes it once per rank; the kill must end the process).

    python tests/ffcv_worker.py BETON_DIR OUT_DIR TAG [--devices 2] [--kill-at EPOCH,BATCH] [overrides...]

Each rank appends ``{"epoch", "batch", "labels"}`` lines to ``OUT_DIR/labels-TAG-rank<R>.jsonl``; with
``--kill-at`` the process ends abruptly (``os._exit``, like SIGKILL) at that batch, before training on it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import lightning as L

from delving.experiment.training.config import load_config
from delving.experiment.training.train import fit

TINY = ["model.depth=9", "model.kwargs.widths=[4,4,4]", "model.kwargs.fc_width=8", "data.name=ffcv",
        "data.image_size=32", "data.batch_size=4", "data.num_workers=1", "trainer.accelerator=cpu",
        "trainer.max_epochs=3", "trainer.enable_progress_bar=false", "tracking.wandb=disabled", "threads=1"]


class LabelRecorder(L.Callback):
    def __init__(self, path: Path, kill_at: tuple[int, int] | None):
        self.path, self.kill_at = path, kill_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == self.kill_at:
            os._exit(3)  # no clean-up, no checkpoint: the last one on disk is from the end of the last epoch
        with self.path.open("a") as f:
            f.write(json.dumps({"epoch": trainer.current_epoch, "batch": batch_idx,
                                "labels": batch[1].tolist()}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("betons")
    parser.add_argument("out", type=Path)
    parser.add_argument("tag")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--kill-at", default=None)
    args, extra = parser.parse_known_args()
    kill_at = tuple(int(v) for v in args.kill_at.split(",")) if args.kill_at else None
    strategy = ["trainer.strategy=ddp", f"trainer.devices={args.devices}"] if args.devices > 1 else []
    cfg = load_config(None, [*TINY, *strategy, f"data.root={args.betons}", f"out_dir={args.out}", "name=run",
                             *extra])
    rank = int(os.environ.get("LOCAL_RANK", 0))
    fit(cfg, progress=False, callbacks=[LabelRecorder(args.out / f"labels-{args.tag}-rank{rank}.jsonl", kill_at)])


if __name__ == "__main__":
    main()
