"""The thin LightningModule around any model: the paper's SGD recipe (Sec. 2.1, 3) and top-1/top-5 error."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from delving.experiment.training.config import OptimConfig

# Parameters of these module types get no weight decay: decay "tends to push a_i to zero, and thus biases PReLU
# toward ReLU" (Sec. 2.1). Chosen by module type, not by parameter name, so any model's PReLUs are found.
NO_DECAY_MODULES = (nn.PReLU,)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two SGD groups: ``decay`` (every other parameter) and ``no_decay`` (PReLU slopes), each with a name."""
    no_decay = {id(p) for m in model.modules() if isinstance(m, NO_DECAY_MODULES) for p in m.parameters(False)}
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"name": "decay", "params": [p for p in params if id(p) not in no_decay], "weight_decay": weight_decay},
        {"name": "no_decay", "params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]


# Devices with a fused SGD kernel in torch (torch.optim.SGD(fused=True) raises elsewhere).
FUSED_SGD_DEVICES = ("cpu", "cuda")


def sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float, fused: bool = True) -> torch.optim.SGD:
    """Sec. 3's SGD with momentum over :func:`param_groups`; ``fused`` uses torch's fused kernel where every
    parameter sits on a device that has one (the same update up to float rounding: ``tests/test_speed_options.py``;
    over a chaotic training run such last-bit differences grow, so runs are reproducible per setting)."""
    groups = param_groups(model, weight_decay)
    fused = fused and all(p.device.type in FUSED_SGD_DEVICES for g in groups for p in g["params"])
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, fused=fused or None)


class DelvingSystem(L.LightningModule):
    """Trains ``model`` (any ``nn.Module`` classifier) with SGD + momentum, LR /10 on plateau or at milestones.

    Logs ``train/loss`` (``_step`` at Lightning's logging steps, and ``_epoch``), ``train/err1``, ``val/loss``,
    ``val/err1``, ``val/err5`` (errors, as the paper reports). A non-finite training loss marks the run as
    ``diverged`` and stops training instead of crashing the sweep.

    The epoch means of the training loss and error are torchmetrics ``MeanMetric``s: under DDP they are reduced over
    all ranks when the epoch ends (not rank 0's alone), and their running sums travel in the checkpoint
    (``EPOCH_METRICS``), so an epoch resumed in its middle ends with the mean over all of its batches. They are
    updated at every step but handed to ``self.log`` once per epoch (see :meth:`_log_epoch_means`).
    """

    EPOCH_METRICS = "delving_epoch_metrics"

    def __init__(self, model: nn.Module, optim: OptimConfig, num_classes: int, config: dict | None = None):
        super().__init__()
        # In the checkpoint (delving evaluate rebuilds the run from it), not in the loggers: W&B gets the config
        # once, from the logger's own config argument.
        self.save_hyperparameters({"config": config or {}}, logger=False)
        self.model = model
        self.optim = optim
        self.diverged = False
        top5 = min(5, num_classes)
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.train_loss = MeanMetric()
        self.train_err1 = MeanMetric()
        self._means_logged_epoch: int | None = None  # the epoch whose means self.log holds (_log_epoch_means)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            self.diverged = True
            self.trainer.should_stop = True
            self.log("train/diverged", 1.0)
            return None  # skip the update; the run ends at the end of this epoch
        if self._logs_this_step():
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.train_loss.update(loss.detach(), weight=len(y))  # the epoch mean weighs each batch by its size
        self.train_err1.update((logits.argmax(dim=1) != y).float())  # per sample: the running top-1 error
        self._log_epoch_means()
        return loss

    def _logs_this_step(self) -> bool:
        """Whether Lightning hands this step's values to the loggers (every ``log_every_n_steps`` steps, and every
        step of a dry run): ``self.log`` at the other steps writes nothing anywhere and costs 0.7 ms a call on the
        CPU (``benchmarks/fit_overhead.py``). The same test Lightning's own ``LearningRateMonitor`` makes."""
        trainer = self.trainer
        connector = getattr(trainer, "_logger_connector", None)
        return connector is None or bool(connector.should_update_logs or trainer.fast_dev_run)

    def _log_epoch_means(self) -> None:
        """Hand the epoch-mean metrics to ``self.log`` at the first step this process trains in each epoch.

        Logging a torchmetrics ``Metric`` registers the object: Lightning computes it when the epoch ends, writes
        the value and resets it; what ``self.log`` does at later steps of the epoch is only to move the object to
        its device again (0.5 ms a call on the CPU, ``benchmarks/fit_overhead.py``). Keyed by the epoch rather than
        an epoch-start hook so that a run resumed in the middle of an epoch (where Lightning calls no
        ``on_train_epoch_start``) registers them at its first step too."""
        epoch = self.trainer.current_epoch
        if self._means_logged_epoch == epoch:
            return
        self.log("train/loss_epoch", self.train_loss, on_step=False, on_epoch=True)
        self.log("train/err1", self.train_err1, on_step=False, on_epoch=True)
        self._means_logged_epoch = epoch

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_top1.update(logits, y)
        self.val_top5.update(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True, prog_bar=False)

    def on_validation_epoch_end(self) -> None:
        # sync_dist: under DDP every rank must see the same monitored value (ReduceLROnPlateau).
        self.log("val/err1", 1.0 - self.val_top1.compute(), sync_dist=True, prog_bar=True)
        self.log("val/err5", 1.0 - self.val_top5.compute(), sync_dist=True)
        self.val_top1.reset()
        self.val_top5.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Inside an epoch only: at an epoch's end the sums are whole and Lightning resets them right after."""
        progress = self.trainer.fit_loop.epoch_progress.current
        if progress.processed < progress.started:
            checkpoint[self.EPOCH_METRICS] = {name: {key: value.detach().cpu().clone()
                                                     for key, value in getattr(self, name).metric_state.items()}
                                              for name in ("train_loss", "train_err1")}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """The current epoch's running sums, on one rank only: under DDP the epoch's mean is then reduced over
        rank 0's sums before the kill and every rank's after it (not exact; see docs/resume.md)."""
        if self.global_rank != 0:
            return
        for name, state in checkpoint.get(self.EPOCH_METRICS, {}).items():
            metric = getattr(self, name)
            for key, value in state.items():
                setattr(metric, key, value.to(metric.device))
            metric._update_count = 1  # sums restored: compute() must not warn that update() was never called

    def configure_optimizers(self):
        o = self.optim
        # Lightning refuses to clip the gradients of a fused optimizer under mixed precision (it unscales them
        # inside its step), so clipping + mixed precision keeps torch's default SGD.
        mixed = "mixed" in str(self._trainer.precision) if self._trainer is not None else False
        fused = o.fused and not (mixed and o.gradient_clip_norm)
        optimizer = sgd(self.model, o.lr, o.momentum, o.weight_decay, fused=fused)
        if o.schedule == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=o.factor,
                                                                   patience=o.patience, min_lr=o.min_lr)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": scheduler, "monitor": "val/err1", "interval": "epoch"}}
        if o.schedule == "step":
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(o.milestones), gamma=o.factor)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        return optimizer
