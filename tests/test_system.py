import lightning as L
import pytest
import timm
import torch
from torch import nn

import delving  # noqa: F401
from delving.data import DigitsDataModule
from delving.experiment.rundir.history import History
from delving.experiment.training.config import OptimConfig
from delving.experiment.training.system import DelvingSystem, param_groups


def test_weight_decay_groups_by_module_type():
    model = timm.create_model("delving_plain", depth=9, activation="prelu", in_chans=1, num_classes=10)
    decay, no_decay = param_groups(model, 5e-4)
    slopes = {id(m.weight) for m in model.modules() if isinstance(m, nn.PReLU)}
    assert {id(p) for p in no_decay["params"]} == slopes and no_decay["weight_decay"] == 0.0
    assert decay["weight_decay"] == 5e-4
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert not slopes & {id(p) for p in decay["params"]}


def test_sgd_step_decays_weights_but_not_slopes():
    """With a zero loss gradient only weight decay moves parameters (the paper's footnote 2 diagnosis)."""
    model = timm.create_model("delving_plain", depth=9, activation="prelu", in_chans=1, num_classes=10)
    system = DelvingSystem(model, OptimConfig(lr=1.0, weight_decay=0.1, schedule="none"), num_classes=10)
    optimizer = system.configure_optimizers()
    slope_before = model.features.conv1.act.weight.detach().clone()
    weight_before = model.features.conv1.conv.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    torch.testing.assert_close(model.features.conv1.act.weight, slope_before)
    torch.testing.assert_close(model.features.conv1.conv.weight, weight_before * 0.9)


@pytest.mark.parametrize("schedule, kind", [("plateau", "ReduceLROnPlateau"), ("step", "MultiStepLR")])
def test_lr_schedules(schedule, kind):
    model = timm.create_model("delving_plain", depth=9, in_chans=1, num_classes=10)
    cfg = OptimConfig(schedule=schedule, milestones=[3])
    conf = DelvingSystem(model, cfg, num_classes=10).configure_optimizers()
    assert type(conf["lr_scheduler"]["scheduler"]).__name__ == kind
    assert conf["optimizer"].defaults["momentum"] == 0.9
    if schedule == "plateau":
        assert conf["lr_scheduler"]["monitor"] == "val/err1"


class _RecordingSystem(DelvingSystem):
    """Records, per epoch, each training batch's summed loss, wrong top-1 count and size as its step saw them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: dict[int, list[tuple[float, int, int]]] = {}

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        x, y = batch
        with torch.no_grad():  # no dropout in a plain net: the logits the step saw, before its update
            wrong = int((self(x).argmax(dim=1) != y).sum())
        self.batches.setdefault(self.current_epoch, []).append((float(loss) * len(y), wrong, len(y)))
        return loss


def test_epoch_means_are_the_means_over_every_epochs_batches():
    """train/loss_epoch and train/err1 are handed to self.log once per epoch: each epoch's value must still be the
    mean over all of that epoch's batches (not the first batch's, not a previous epoch's), weighted by batch size."""
    model = timm.create_model("delving_plain", depth=9, activation="prelu", in_chans=1, num_classes=10,
                              widths=[4, 8, 8], fc_width=16)
    system = _RecordingSystem(model, OptimConfig(lr=0.05, schedule="none"), num_classes=10)
    history = History()
    trainer = L.Trainer(max_epochs=3, limit_train_batches=3, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[history])
    trainer.fit(system, datamodule=DigitsDataModule(batch_size=25))
    assert [row["epoch"] for row in history.rows] == [0, 1, 2]
    for row in history.rows:
        loss_sums, wrong, sizes = zip(*system.batches[row["epoch"]])
        assert len(sizes) == 3
        assert row["train/loss"] == pytest.approx(sum(loss_sums) / sum(sizes), rel=1e-5)
        assert row["train/err1"] == pytest.approx(sum(wrong) / sum(sizes), abs=1e-6)


def test_step_loss_reaches_the_log_at_the_logging_steps_only_and_slope_means_match_slopes_csv(tiny, monkeypatch):
    """``train/loss_step`` is the loss of each logging step (every log_every_n_steps), handed to ``self.log`` at those
    steps only; each epoch's ``prelu/<layer>`` row in metrics.csv is the channel mean written to slopes.csv."""
    import pandas as pd

    from delving.experiment.training.config import load_config
    from delving.experiment.training.train import fit, run_dir

    losses, calls = {}, []

    class Losses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses[trainer.global_step - 1] = float(outputs["loss"])

    original = DelvingSystem.log
    monkeypatch.setattr(DelvingSystem, "log", lambda self, name, *a, **k: (calls.append(name),
                                                                           original(self, name, *a, **k))[1])
    cfg = load_config(None, [*tiny, "model.activation=prelu", "trainer.max_epochs=2", "trainer.log_every_n_steps=3"])
    fit(cfg, progress=False, callbacks=[Losses()])
    metrics = pd.read_csv(run_dir(cfg) / "csv" / "metrics.csv")
    logged = metrics.dropna(subset=["train/loss_step"])
    assert list(logged.step) == [2, 5] and len(losses) == 8  # 8 steps; Lightning logs steps 3 and 6 (1-based)
    assert logged["train/loss_step"].tolist() == pytest.approx([losses[2], losses[5]])
    assert calls.count("train/loss_step") == 2
    slopes = pd.read_csv(run_dir(cfg) / "slopes.csv")
    for epoch in (0, 1):
        row = metrics[metrics.epoch.eq(epoch) & metrics["prelu/conv1"].notna()]
        expected = slopes[(slopes.epoch == epoch) & (slopes.layer == "conv1")].slope.mean()
        assert len(row) == 1 and row["prelu/conv1"].item() == pytest.approx(expected, rel=1e-5)
