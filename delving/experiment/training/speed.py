"""Speed switches of a training run (``trainer.channels_last``, ``trainer.inplace_activations``,
``trainer.compile``; bf16 autocast is Lightning's ``trainer.precision=bf16-mixed``), applied to a built model.

None changes what is computed, only how: each is checked against the plain model by ``tests/test_speed_options.py``
(losses after a few SGD steps within a stated tolerance) and timed by ``benchmarks/train_throughput.py``. They are
off by default (README, "Speed"): on the 2-core CPU only bf16 was clearly faster, and it matches fp32 only to bf16's
precision; channels_last slowed the default sweep's small convs; compile was no faster.
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from delving.errors import DelvingError

# Activations whose backward needs only their output or a mask, so overwriting the input is safe after a conv
# (a conv's backward needs its input and weight, not its output). PReLU is left alone: its backward keeps its
# input or its output (delving.nn.prelu._PReLUFunction).
INPLACE_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU)


@dataclass(frozen=True)
class SpeedOptions:
    channels_last: bool = False        # NHWC activations and conv weights (oneDNN / cuDNN's preferred layout)
    inplace_activations: bool = False  # ReLU-family activations overwrite their input: one tensor less per layer
    compile: bool = False              # torch.compile (inductor: generated C++/Triton kernels)

    @classmethod
    def from_trainer(cls, trainer) -> "SpeedOptions":
        """The switches of a :class:`delving.experiment.training.config.TrainerConfig`."""
        return cls(trainer.channels_last, trainer.inplace_activations, trainer.compile)


def set_inplace(model: nn.Module) -> int:
    """Make every ReLU-family activation of ``model`` in-place; return how many were switched."""
    switched = [m for m in model.modules() if isinstance(m, INPLACE_ACTIVATIONS)]
    for module in switched:
        module.inplace = True
    return len(switched)


def apply_speed_options(model: nn.Module, options: SpeedOptions) -> nn.Module:
    """``model`` with the switches applied, in place (same object, same parameter names, so checkpoints, slope
    logging and weight-decay groups are unchanged).

    Raises:
        DelvingError: ``compile`` where torch.compile cannot run (no C++ compiler for inductor on CPU, Windows).
    """
    if options.inplace_activations:
        set_inplace(model)
    if options.channels_last:
        # Conv weights in NHWC make every conv output NHWC (torch follows the weight's suggested format), so the
        # input batch need not be converted.
        model.to(memory_format=torch.channels_last)
    if options.compile:
        try:
            model.compile()  # nn.Module.compile: in place, keeps the state_dict keys (torch.compile would prefix them)
        except RuntimeError as err:
            raise DelvingError(f"trainer.compile=true: torch.compile is unavailable here ({err}); set "
                               f"trainer.compile=false") from None
    return model


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Leave the objects alive when training starts out of Python's garbage collector until it ends.

    Torch, Lightning, W&B and the run's own objects are ~650k tracked objects on the CPU. Training allocates enough
    to trigger a full collection now and then, and each walks every one of them: 0.36 s once in the main job's
    14-epoch run, 1.5% of it, where the plain loop of ``benchmarks/fit_overhead.py`` (fewer objects, so under
    the collector's threshold) paid none. ``gc.freeze`` moves them to the permanent generation (the Python docs'
    use: objects that live as long as the process), so collections during training only walk what training made;
    ``gc.unfreeze`` hands them back to the oldest generation. Nothing is leaked: an object frozen here that becomes
    garbage meanwhile is collected after. A caller that froze objects itself is left as it is."""
    if gc.get_freeze_count() or not gc.isenabled():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class StepTimer(Callback):
    """Seconds spent inside training steps (forward, backward, optimizer step), summed over the run.

    Lightning calls ``on_train_batch_end`` after the optimizer step, so start-to-end covers the whole step and
    nothing else (data loading, validation, checkpoints, logging at epoch end fall outside). On CUDA the time is
    the host's (kernels may still run after a step ends), which is fine summed over many steps.
    """

    def __init__(self):
        self.seconds = 0.0
        self.steps = 0
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds += time.perf_counter() - self._start
        self.steps += 1
