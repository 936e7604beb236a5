"""``delving fit`` as a user runs it (through ``delving.cli.main``), which sends itself a signal at a chosen moment,
for the kill-and-resume tests:

    python tests/resume_worker.py --kill-at MOMENT --signal KILL|TERM|INT fit --key=value ...

MOMENT is one of
  ``step:N``      before training step N+1, i.e. after N optimizer steps (after step 1: "after the first batch";
                  with ``trainer.checkpoint_every_n_steps`` dividing N: right after a mid-epoch checkpoint);
  ``epoch-ckpt:E`` right after the end-of-epoch ``last.ckpt`` of epoch E is written, before anything else runs;
  ``ckpt-step:N``  right after the first ``last.ckpt`` written at global step N, by whichever checkpoint callback.

The signal goes to this process (``os.kill``): SIGKILL ends it at once, SIGTERM and SIGINT go through Lightning's
and Python's handlers as they would from a terminal or a job scheduler.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys

import lightning as L


class Killer(L.Callback):
    def __init__(self, moment: str, sig: signal.Signals):
        kind, value = moment.split(":")
        self.kind, self.value, self.sig = kind, int(value), sig

    def _fire(self) -> None:
        os.kill(os.getpid(), self.sig)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.kind == "step" and trainer.global_step == self.value:
            self._fire()

    def setup(self, trainer, pl_module, stage):
        if self.kind not in ("epoch-ckpt", "ckpt-step"):
            return
        save = trainer.strategy.save_checkpoint

        @functools.wraps(save)
        def save_then_kill(checkpoint, filepath, *args, **kwargs):
            save(checkpoint, filepath, *args, **kwargs)
            if not str(filepath).endswith("last.ckpt"):
                return
            progress = trainer.fit_loop.epoch_progress.current
            at_epoch_end = progress.processed == progress.started
            if self.kind == "epoch-ckpt" and at_epoch_end and trainer.current_epoch == self.value:
                self._fire()
            if self.kind == "ckpt-step" and trainer.global_step == self.value:
                self._fire()

        trainer.strategy.save_checkpoint = save_then_kill


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-at", required=True)
    parser.add_argument("--signal", choices=["KILL", "TERM", "INT"], default="KILL")
    args, cli_args = parser.parse_known_args()
    killer = Killer(args.kill_at, getattr(signal, f"SIG{args.signal}"))
    import delving.experiment.training.train
    from delving.cli import main as cli

    delving.experiment.training.train.fit = functools.partial(delving.experiment.training.train.fit, callbacks=[killer])
    return cli(cli_args)


if __name__ == "__main__":
    sys.exit(main())
