"""Lightning callbacks of a run: the per-layer slope log and the signal at init (variance profile), each written to
the run folder and, when the run has one, to its W&B run. (The per-epoch history is the run folder's:
:mod:`delving.experiment.rundir.history`.)"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from delving.experiment.rundir.run_dir import RunDir
from delving.nn.probes import correlation_profile, slope_profile, variance_profile

# Images the variance profile is measured on (the first of the val set): 64 × 16×16 maps give ≥ 16k values per
# layer for each std, and a 30-layer net's measurement takes 0.1 s instead of 0.35 s with the 256-image val batch.
VARIANCE_IMAGES = 64


class SlopeLogger(L.Callback):
    """Logs every PReLU layer's slopes each epoch (the data behind Table 1's columns).

    - ``prelu/<layer>``: the channel mean (or the shared value), in the metrics CSV (a row of its own at the
      epoch's last step) and on W&B, where it is plotted against ``epoch`` (``define_metric``).
    - ``prelu_hist/<layer>``: a W&B histogram of the per-channel slopes.
    - ``slopes.csv`` in the run folder: epoch, layer, channel, slope (long format, appended each epoch).
    - at the end, ``slopes_by_layer.png`` and a W&B line plot of slope against layer depth.
    """

    def __init__(self, run_dir: Path):
        self.run = RunDir(run_dir)

    def on_fit_start(self, trainer, pl_module) -> None:
        wb = wandb_logger(trainer)
        if wb is not None and trainer.is_global_zero:
            wb.experiment.define_metric("epoch")
            for key in ("prelu/*", "prelu_hist/*"):
                wb.experiment.define_metric(key, step_metric="epoch")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        profile = slope_profile(pl_module.model)
        if not profile:
            return
        epoch = trainer.current_epoch
        self._append_csv(epoch, profile)
        means = {f"prelu/{r.layer}": r.mean for r in profile}
        # Straight to the loggers, at the step Lightning gives the epoch's own row (its last step): through
        # pl_module.log each key would cost 0.7 ms (Lightning moves its result object to the device at every
        # call, benchmarks/fit_overhead.py), 20 ms an epoch for a 30-layer net, and nothing reads them back.
        step = max(trainer.global_step - 1, 0)
        wb = wandb_logger(trainer)
        for logger in trainer.loggers:
            if logger is not wb:
                logger.log_metrics({**means, "epoch": epoch}, step=step)
        if wb is not None:
            import wandb

            wb.experiment.log({**means, **{f"prelu_hist/{r.layer}": _histogram(wandb, r.values) for r in profile},
                               "epoch": epoch, "trainer/global_step": step})

    def _append_csv(self, epoch: int, profile) -> None:
        self.run.append_slopes([epoch, depth, record.layer, channel, f"{value:.6g}"]
                               for depth, record in enumerate(profile, start=1)
                               for channel, value in enumerate(record.values.tolist()))

    def on_train_end(self, trainer, pl_module) -> None:
        profile = slope_profile(pl_module.model)
        if not profile or not trainer.is_global_zero:
            return
        from delving.plots import plot_slope_profile

        plot_slope_profile(profile, self.run.slopes_plot_path)
        wb = wandb_logger(trainer)
        if wb is not None:
            import wandb

            table = wandb.Table(columns=["depth", "layer", "slope_mean", "slope_std"],
                                data=[[i, r.layer, r.mean, r.std] for i, r in enumerate(profile, start=1)])
            wb.experiment.log({"prelu/slope_by_layer": wandb.plot.line(
                table, "depth", "slope_mean", title="Learned PReLU slope by layer")})


def _histogram(wandb, values: torch.Tensor):
    """A W&B histogram that also works when every channel has the same slope (np.histogram needs a range)."""
    import numpy as np

    values = values.numpy()
    low, high = float(values.min()), float(values.max())
    pad = max(1e-3, 1e-3 * abs(low)) if high - low < 1e-6 else 0.0
    return wandb.Histogram(np_histogram=np.histogram(values, bins=min(64, max(values.size, 1)),
                                                     range=(low - pad, high + pad)))


class VarianceLogger(L.Callback):
    """``variance_profile`` (Sec. 2.2: per weight layer, the std of its response and of the gradient reaching it)
    on the first validation batch, at initialization and after the first epoch — the signal the init shapes, and
    what one epoch of training made of it.

    Written to ``variance.csv`` in the run folder (stage, index, layer, forward_std, backward_std) and, on W&B,
    as a table and a line plot of forward std against depth per stage.
    """

    def __init__(self, run_dir: Path):
        self.run = RunDir(run_dir)

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0 and "init" not in self.run.variance_stages():  # a resumed run keeps its init
            self._measure(trainer, pl_module, "init")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            self._measure(trainer, pl_module, "epoch1")

    def _measure(self, trainer, pl_module, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        device = pl_module.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # leave training's RNG
            x = next(iter(trainer.datamodule.val_dataloader()))[0][:VARIANCE_IMAGES].to(device)
            x = trainer.datamodule.on_after_batch_transfer((x, None), 0)[0]  # FFCV on GPU: normalized here
            profile = variance_profile(pl_module.model, x)
            correlation = correlation_profile(pl_module.model, x)
        self.run.append_variance([stage, s.index, s.layer, f"{s.forward_std:.6g}", f"{s.backward_std:.6g}"]
                                 for s in profile)
        # Beside it: the mean cosine between the batch's responses per layer, the kernel recursion's prediction
        # (delving.nn.conv_kernel) and the scalar C-map iterate.
        self.run.append_correlation([stage, c.index, c.layer, f"{c.measured:.6g}", f"{c.theory:.6g}",
                                     f"{c.cmap_iterate:.6g}", int(c.anchored)] for c in correlation)
        wb = wandb_logger(trainer)
        if wb is not None:
            import wandb

            table = wandb.Table(columns=["index", "layer", "forward_std", "backward_std"],
                                data=[[s.index, s.layer, s.forward_std, s.backward_std] for s in profile])
            wb.experiment.log({f"variance/{stage}": wandb.plot.line(
                table, "index", "forward_std", title=f"Forward std by layer ({stage})")})


def wandb_logger(trainer: L.Trainer) -> WandbLogger | None:
    """The run's W&B logger among the Trainer's loggers, or None (W&B disabled)."""
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
