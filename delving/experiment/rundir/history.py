"""The run's per-epoch record, kept in every checkpoint (so a resumed run has all its epochs) and written into the
result; :func:`delving.experiment.rundir.run_io.restore_epoch_train_rows` reads it back from a checkpoint."""

from __future__ import annotations

import lightning as L


class History(L.Callback):
    """Per-epoch validation metrics, learning rate and the epoch's mean training error and loss (with dropout, as
    trained), kept in the checkpoint so a resumed run has all epochs."""

    KEYS = ("val/err1", "val/err5", "val/loss")
    TRAIN_KEYS = {"train/err1": "train/err1", "train/loss_epoch": "train/loss"}

    def __init__(self):
        self.rows: list[dict] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step,
               "lr": trainer.optimizers[0].param_groups[0]["lr"]}
        row.update({k: float(metrics[k]) for k in self.KEYS if k in metrics})
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = trainer.callback_metrics
        for row in self.rows:
            if row["epoch"] == trainer.current_epoch:
                row.update({name: float(metrics[k]) for k, name in self.TRAIN_KEYS.items() if k in metrics})

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict.get("rows", []))
