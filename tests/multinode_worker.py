"""``delving fit`` as a user runs it (through ``delving.cli.main``), with recording callbacks added, for the
multi-node and resume-across-world-sizes tests. Run under ``torchrun`` (each node one process) or plainly:

    python tests/multinode_worker.py OUT_DIR TAG [--kill-at EPOCH,BATCH] fit --key=value ...

Each rank (global ``RANK``) appends, to ``OUT_DIR``:
  ``labels-TAG-rank<R>.jsonl``  the labels of every training batch (tests/ffcv_worker.py's LabelRecorder, which
                                also ends the process abruptly at ``--kill-at``);
  ``state-TAG-rank<R>.jsonl``   epoch, global step and batch-in-epoch when training starts and ends;
  ``weights-TAG-rank<R>.pt``    the model's state_dict at the end of training.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ffcv_worker.py, when run by torchrun -m too
from ffcv_worker import LabelRecorder  # noqa: E402


class StateRecorder(L.Callback):
    """Where the loops stand at the start and end of training, and the final weights of this rank."""

    def __init__(self, out: Path, tag: str, rank: int):
        self.state = out / f"state-{tag}-rank{rank}.jsonl"
        self.weights = out / f"weights-{tag}-rank{rank}.pt"

    def _write(self, trainer: L.Trainer, when: str) -> None:
        row = {"when": when, "epoch": trainer.current_epoch, "step": trainer.global_step,
               "batch": trainer.fit_loop.epoch_loop.batch_progress.current.ready,
               "batches_per_epoch": trainer.num_training_batches, "world_size": trainer.world_size}
        with self.state.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def on_train_start(self, trainer, pl_module):
        self._write(trainer, "start")

    def on_train_end(self, trainer, pl_module):
        self._write(trainer, "end")
        torch.save({k: v.detach().cpu() for k, v in pl_module.state_dict().items()}, self.weights)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("tag")
    parser.add_argument("--kill-at", default=None)
    args, cli_args = parser.parse_known_args()
    kill_at = tuple(int(v) for v in args.kill_at.split(",")) if args.kill_at else None
    rank = int(os.environ.get("RANK", 0))  # the global rank torchrun sets (LOCAL_RANK is 0 on both nodes)
    callbacks = [LabelRecorder(args.out / f"labels-{args.tag}-rank{rank}.jsonl", kill_at),
                 StateRecorder(args.out, args.tag, rank)]
    import delving.experiment.training.train
    from delving.cli import main as cli

    delving.experiment.training.train.fit = functools.partial(delving.experiment.training.train.fit, callbacks=callbacks)  # cli imports fit when it runs
    return cli(cli_args)


if __name__ == "__main__":
    sys.exit(main())
