"""The CUDA path of the ImageNet recipes checked in one run sized for under 5 minutes: ``make gpu-check``.

On one CUDA device, with the small data the package makes itself (``delving photos``, then ``delving write-ffcv``),
it runs each step below, then prints one table (step, status, measured numbers, seconds) and writes it as Markdown
to ``--out``. Every step runs even after another one failed; the exit code is 1 if any step FAILED, naming it.

    mm-peak          torch.mm peak of this device in bf16, tf32 and fp32 (same process), the yardstick below
    train-fp32       model A training step (forward, backward, SGD step), fp32 NCHW: img/s, share of the peak
    train-bf16       the same under bf16 autocast
    train-bf16-cl    bf16 autocast + channels_last
    train-compile    bf16 + channels_last + torch.compile (inductor), and its compile time
    data             `delving photos` + `delving write-ffcv` (train and val .beton)
    ffcv             the .beton through FFCVDataModule with ToDevice: img/s; batches uint8, channels_last, on the
                     device; normalized there (on_after_batch_transfer); one training step fed by it
    relu-vs-prelu    ReLU vs PReLU model A at bf16 + channels_last (nn.PReLU's own CUDA kernel)
    fit-ddp          `delving fit` (model A, the ImageNet recipe's YAML) with strategy ddp on one device (NCCL),
                     bf16-mixed, channels_last, FFCV data: a few steps and a checkpoint
    resume           the same command with one more epoch: it restores the checkpoint and continues its steps
    evaluate-dense   `delving evaluate --protocol dense` of that checkpoint on cuda and on cpu: the same errors
    memory-c         peak memory of model C's training step at batch 64, 224×224, bf16, against the device's

FLOPs of a training step are counted as 3 × the forward's (backward: input and weight gradients, each about one
forward), the forward's from torch's FlopCounterMode (conv and fc layers), so a share of the peak reads like the
README's "Speed" table. cuDNN runs fp32 convs in TF32 by default (``torch.backends.cudnn.allow_tf32``): the fp32
step is set against both the tf32 and the fp32 mm peak.

Without CUDA, ``--device cpu --tiny`` runs the same steps at toy sizes: a 9-layer plain net (``delving_plain``,
widths 4/8/8) in place of model A, batch 2 at 64×64, 4 + 2 photos per class at 64 px, ``delving fit`` at 32×32 with
DDP over gloo. The CUDA-only parts (mm peak and the shares of it, torch.compile, NCCL, the memory line) are listed
as skipped. ``tests/test_gpu_check.py`` runs that mode.

    .venv/bin/python benchmarks/gpu_check.py                       # on a CUDA machine (make gpu-check)
    .venv/bin/python benchmarks/gpu_check.py --device cpu --tiny   # anywhere (toy sizes, ~170 s of CPU time)
    .venv/bin/python benchmarks/gpu_check.py --only ffcv,fit-ddp   # a subset (the others listed as skipped)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import timm
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

# ---- delving internals used here (the rest goes through `python -m delving` and timm): repoint these if they move
import delving  # noqa: F401,E402  (registers the delving_* models with timm)


def ffcv_datamodule_class():
    """``delving.data.ffcv.FFCVDataModule``, imported when the FFCV step runs (FFCV and numba take seconds)."""
    from delving.data.ffcv import FFCVDataModule

    return FFCVDataModule
# ----


ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ROOT = Path(delving.__file__).resolve().parent.parent  # the delving the subprocesses must run too
RECIPE = ROOT / "experiments" / "imagenet" / "model_a_prelu.yaml"
MODEL_C = "delving_model_c"
NUM_CLASSES = 1000
STEP_FORWARDS = 3  # a training step ~ 3 forwards (forward, input gradients, weight gradients)
PAPER_BATCH = 128  # Sec. 3: mini-batch 128 (a total, over the paper's 4 or 8 GPUs)
GIB = 2**30
OK, FAILED, SKIPPED = "ok", "FAILED", "skipped"


@dataclass(frozen=True)
class Sizes:
    """How big each step is: the GPU run is sized to finish in about 4 minutes, the tiny one in about 1."""

    model: str               # the net of the training steps (model A), from timm's registry
    model_kwargs: tuple[tuple[str, object], ...]  # its builder's arguments beyond activation and num_classes
    batch: int               # training-step batch
    image: int               # training-step image side
    warmup: int              # untimed steps first (allocator, cuDNN algorithm choice, compilation)
    steps: int               # timed steps
    mm_n: int                # side of the square torch.mm that measures the peak
    photos: tuple[int, int, int]  # train images per class, val images per class, longer side
    ffcv_batch: int
    ffcv_epochs: int         # timed epochs through the loader, after one warm-up epoch
    fit_batch: int
    fit_steps: int           # training steps per epoch of `delving fit` (trainer.limit_train_batches)
    fit_overrides: tuple[str, ...]  # what `delving fit` changes in the recipe at this size
    eval_scales: tuple[int, ...]    # dense test scales (shorter sides)
    memory_batch: int        # model C's batch for the memory line


FULL = Sizes(model="delving_model_a", model_kwargs=(), batch=64, image=224, warmup=3, steps=10, mm_n=8192,
             photos=(50, 2, 500), ffcv_batch=64, ffcv_epochs=4, fit_batch=32, fit_steps=4,
             fit_overrides=("--data.image_size=224",), eval_scales=(256, 384), memory_batch=64)
# Model A's 178M parameters (fc1 alone 132M) mean 2.1 GB of weights, gradients and momentum per training-step variant
# whatever the image size, and a 1.4 GB checkpoint of `delving fit`: the tiny mode trains a 9-layer plain net instead.
TINY = Sizes(model="delving_plain", model_kwargs=(("depth", 9), ("widths", (4, 8, 8)), ("fc_width", 16)), batch=2,
             image=64, warmup=1, steps=2, mm_n=512, photos=(4, 2, 64), ffcv_batch=4, ffcv_epochs=1, fit_batch=4,
             fit_steps=2,
             fit_overrides=("--model.name=delving_plain", "--model.depth=9", "--model.kwargs.widths=[4,8,8]",
                            "--model.kwargs.fc_width=16", "--data.image_size=32", "--threads=1"),
             eval_scales=(37, 55), memory_batch=2)


class Skip(Exception):
    """A step that does not apply here (e.g. CUDA only) or whose input an earlier step failed to make."""


class CheckFailed(Exception):
    """A step ran but what it checks does not hold."""


class StepTimeout(Exception):
    pass


@dataclass
class Row:
    step: str
    status: str
    numbers: str
    seconds: float


@dataclass
class Context:
    """What the steps share: the device, the sizes, a work folder, and what earlier steps made or measured."""

    device: torch.device
    sizes: Sizes
    work: Path
    step_timeout: int
    made: dict = field(default_factory=dict)       # "photos", "betons", "ckpt", "peaks", by the step that made it
    measured: dict = field(default_factory=dict)   # training-step throughput by variant
    models: dict = field(default_factory=dict)     # the training-step net in use, by activation (one at a time)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def need(self, key: str, step: str):
        if key not in self.made:
            raise Skip(f"needs {step}, which did not finish")
        return self.made[key]

    def release_models(self) -> None:
        self.models.clear()
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------- measuring


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(value: float, unit: str) -> str:
    """``1.234e12, "FLOP/s"`` -> ``"1.234 TFLOP/s"``: giga or tera, four significant digits."""
    scale, prefix = (1e12, "T") if value >= 1e12 else (1e9, "G")
    return f"{value / scale:.4g} {prefix}{unit}"


def file_size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def mm_peak(device: torch.device, dtype: torch.dtype, n: int, tf32: bool = False, repeats: int = 3,
            inner: int = 10) -> float:
    """FLOP/s of an n×n by n×n ``torch.mm`` (2n³ FLOPs), best of ``repeats`` runs of ``inner`` products."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        out = torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            for _ in range(inner):
                torch.mm(a, b, out=out)
            sync(device)
            best = min(best, time.perf_counter() - start)
        return 2 * n**3 * inner / best
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def forward_flops(name: str, image: int, activation: str = "prelu", **kwargs) -> float:
    """FLOPs of one image's forward pass (FlopCounterMode on the meta device: nothing allocated or computed)."""
    with torch.device("meta"):
        model = timm.create_model(name, activation=activation, num_classes=NUM_CLASSES, **kwargs)
        x = torch.empty(1, 3, image, image)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


def build_model(name: str, activation: str, device: torch.device, **kwargs) -> torch.nn.Module:
    """``name`` from timm's registry, built on ``device`` (torch's default init there: weights are not measured)."""
    with device:
        return timm.create_model(name, activation=activation, num_classes=NUM_CLASSES, **kwargs).train()


def train_step(model, optimizer, x, y, bf16: bool) -> torch.Tensor:
    """Forward, backward and SGD step; the loss, not synchronized."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def sgd(model: torch.nn.Module) -> torch.optim.SGD:
    # Sec. 3's momentum and weight decay; a small lr keeps the default-initialized net finite over the steps.
    return torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4, fused=True)


def model_a(ctx: Context, activation: str, channels_last: bool) -> torch.nn.Module:
    """Model A (the tiny mode's small net): built once per activation, one alive at a time, in the asked memory
    format."""
    if activation not in ctx.models:
        ctx.release_models()
        ctx.models[activation] = build_model(ctx.sizes.model, activation, ctx.device, **dict(ctx.sizes.model_kwargs))
    model = ctx.models[activation]
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@dataclass(frozen=True)
class Throughput:
    images_per_s: float
    flops_per_s: float
    warmup_seconds: float
    loss: float


def measure(ctx: Context, activation: str = "prelu", bf16: bool = False, channels_last: bool = False,
            compiled: bool = False) -> Throughput:
    """Training steps of model A (tiny: the small net) on a random batch: ``warmup`` untimed, then ``steps`` timed
    between syncs."""
    key = (activation, bf16, channels_last, compiled)
    if key in ctx.measured:
        return ctx.measured[key]
    s = ctx.sizes
    model = model_a(ctx, activation, channels_last)
    if compiled:
        model = torch.compile(model)  # a wrapper sharing the parameters; compiled on its first step
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(s.batch, 3, s.image, s.image, generator=gen).to(ctx.device)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x  # as FFCV delivers batches
    y = torch.randint(0, NUM_CLASSES, (s.batch,), generator=gen).to(ctx.device)
    optimizer = sgd(model)
    start = time.perf_counter()
    for _ in range(s.warmup):
        train_step(model, optimizer, x, y, bf16)
    sync(ctx.device)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(s.steps):
        loss = train_step(model, optimizer, x, y, bf16)
    sync(ctx.device)
    seconds = (time.perf_counter() - start) / s.steps
    if not torch.isfinite(loss):
        raise CheckFailed(f"non-finite loss {loss.item()} after {s.warmup + s.steps} steps")
    step_flops = STEP_FORWARDS * forward_flops(s.model, s.image, activation, **dict(s.model_kwargs)) * s.batch
    result = Throughput(s.batch / seconds, step_flops / seconds, warm, float(loss))
    ctx.measured[key] = result
    return result


def peak_shares(ctx: Context, result: Throughput, bf16: bool) -> list[str]:
    """The step's FLOP/s as a share of this process's mm peak in the same precision (CUDA only)."""
    peaks = ctx.made.get("peaks")
    if not ctx.cuda:
        return ["peak share: CUDA only"]
    if not peaks:
        return ["peak share: needs mm-peak"]
    if bf16:
        return [f"{100 * result.flops_per_s / peaks['bf16']:.1f}% of bf16 peak"]
    conv = "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"
    return [f"{100 * result.flops_per_s / peaks['tf32']:.1f}% of tf32 peak (cuDNN convs in {conv})",
            f"{100 * result.flops_per_s / peaks['fp32']:.1f}% of fp32 peak"]


def throughput_numbers(ctx: Context, result: Throughput, bf16: bool) -> list[str]:
    return [f"{result.images_per_s:.1f} img/s", rate(result.flops_per_s, "FLOP/s"), *peak_shares(ctx, result, bf16)]


# --------------------------------------------------------------------------------------------- the steps


def step_mm_peak(ctx: Context) -> list[str]:
    """Peak FLOP/s of a large torch.mm in bf16, tf32 and fp32, measured in this process."""
    if not ctx.cuda:
        raise Skip("CUDA only")
    n = ctx.sizes.mm_n
    peaks = {"bf16": mm_peak(ctx.device, torch.bfloat16, n), "tf32": mm_peak(ctx.device, torch.float32, n, tf32=True),
             "fp32": mm_peak(ctx.device, torch.float32, n)}
    ctx.made["peaks"] = peaks
    return [f"{k} {rate(v, 'FLOP/s')}" for k, v in peaks.items()] + [f"n={n}"]


def step_train_fp32(ctx: Context) -> list[str]:
    """Model A (PReLU), fp32, NCHW."""
    return throughput_numbers(ctx, measure(ctx), bf16=False)


def step_train_bf16(ctx: Context) -> list[str]:
    """Model A (PReLU) under bf16 autocast, NCHW."""
    result = measure(ctx, bf16=True)
    ratio = [f"{result.images_per_s / ctx.measured[k].images_per_s:.2f}x fp32"
             for k in [("prelu", False, False, False)] if k in ctx.measured]
    return [*throughput_numbers(ctx, result, bf16=True), *ratio]


def step_train_bf16_cl(ctx: Context) -> list[str]:
    """Model A (PReLU) under bf16 autocast, weights and batch channels_last."""
    result = measure(ctx, bf16=True, channels_last=True)
    ratio = [f"{result.images_per_s / ctx.measured[k].images_per_s:.2f}x bf16 NCHW"
             for k in [("prelu", True, False, False)] if k in ctx.measured]
    return [*throughput_numbers(ctx, result, bf16=True), *ratio]


def step_train_compile(ctx: Context) -> list[str]:
    """Model A (PReLU), bf16 + channels_last, torch.compile'd (inductor); the warm-up includes compilation."""
    if not ctx.cuda:
        raise Skip("CUDA only (inductor's C++ compile costs minutes on this CPU)")
    result = measure(ctx, bf16=True, channels_last=True, compiled=True)
    eager = measure(ctx, bf16=True, channels_last=True)
    return [*throughput_numbers(ctx, result, bf16=True), f"{result.images_per_s / eager.images_per_s:.2f}x eager",
            f"compile + {ctx.sizes.warmup} warm-up steps {result.warmup_seconds:.0f} s"]


def step_relu_vs_prelu(ctx: Context) -> list[str]:
    """ReLU vs channel-wise PReLU model A, bf16 + channels_last (eager)."""
    prelu = measure(ctx, "prelu", bf16=True, channels_last=True)
    relu = measure(ctx, "relu", bf16=True, channels_last=True)
    ctx.release_models()
    return [f"relu {relu.images_per_s:.1f} img/s", f"prelu {prelu.images_per_s:.1f} img/s",
            f"prelu/relu {prelu.images_per_s / relu.images_per_s:.3f}"]


def step_data(ctx: Context) -> list[str]:
    """The real-photo set (`delving photos`) and its train/val .beton (`delving write-ffcv`, both at once)."""
    train, val, size = ctx.sizes.photos
    photos, betons = ctx.work / "photos", ctx.work / "betons"
    betons.mkdir(parents=True, exist_ok=True)
    run_delving(ctx, {"photos": ["photos", "--out", str(photos), "--train-per-class", str(train),
                                 "--val-per-class", str(val), "--size", str(size)]})
    workers = str(max(1, min(8, cpu_count() // 2)))
    run_delving(ctx, {f"write-ffcv-{split}": ["write-ffcv", "--root", str(photos), "--split", split, "--out",
                                              str(betons / f"{split}.beton"), "--workers", workers, "--overwrite"]
                      for split in ("train", "val")})
    counts = {split: len(list((photos / split).glob("*/*.jpg"))) for split in ("train", "val")}
    ctx.made.update(photos=photos, betons=betons)
    megabytes = sum(f.stat().st_size for f in betons.glob("*.beton")) / 1e6
    return [f"{counts['train']} train + {counts['val']} val photos, longer side {size}", f".beton {megabytes:.1f} MB"]


def step_ffcv(ctx: Context) -> list[str]:
    """FFCVDataModule's train loader with ToDevice: batch checks, img/s, normalization, one training step."""
    betons = ctx.need("betons", "data")
    s = ctx.sizes
    model = model_a(ctx, "prelu", channels_last=True)  # before the loader: PReLU's CPU kernel sets numba's threads
    datamodule = ffcv_datamodule_class()(
        betons, image_size=s.image, batch_size=s.ffcv_batch, num_workers=min(8, cpu_count()), color_jitter=True,
        # On a GPU batches stay uint8 to the device and are normalized there (None: the module's choice by device);
        # on CPU FFCV would normalize in its threads: False keeps the GPU path's uint8 batches to check here.
        normalize_in_loader=None if ctx.cuda else False)
    # The loaders read the device, the world size and the epoch from the trainer: a stand-in for one device.
    datamodule.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=ctx.device), world_size=1,
                                         current_epoch=0)
    loader = datamodule.train_dataloader()
    first = check_batches(ctx, loader, 0)  # warm-up epoch: FFCV compiles its pipeline
    images, start = 0, time.perf_counter()
    for epoch in range(1, 1 + s.ffcv_epochs):
        datamodule.trainer.current_epoch = epoch
        for x, _ in loader:
            images += len(x)
        sync(ctx.device)
    seconds = time.perf_counter() - start
    x, y = datamodule.on_after_batch_transfer(first, 0)
    if x.dtype != torch.float32 or x.device != first[0].device or not torch.isfinite(x).all():
        raise CheckFailed(f"on_after_batch_transfer gave {x.dtype} on {x.device}, expected finite float32 there")
    loss = train_step(model, sgd(model), x, y, bf16=True)
    if not torch.isfinite(loss):
        raise CheckFailed(f"non-finite loss {loss.item()} on an FFCV batch")
    return [f"{images / seconds:.0f} img/s over {images} images",
            f"uint8 {tuple(first[0].shape)} channels_last on {first[0].device}",
            f"normalized mean {x.mean().item():+.2f} std {x.std().item():.2f}", f"bf16 step loss {loss.item():.3f}"]


def check_batches(ctx: Context, loader, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one epoch, checking every batch: uint8 NCHW images in channels_last and int64 labels, on the device.
    Returns the first batch."""
    first, s = None, ctx.sizes
    for x, y in loader:
        where = f"epoch {epoch}: batch of {x.dtype} {tuple(x.shape)} on {x.device}"
        if x.dtype != torch.uint8 or x.shape[1:] != (3, s.image, s.image):
            raise CheckFailed(f"{where}, expected uint8 (N, 3, {s.image}, {s.image})")
        if not x.is_contiguous(memory_format=torch.channels_last):
            raise CheckFailed(f"{where} is not channels_last")
        if x.device.type != ctx.device.type or y.device != x.device or y.dtype != torch.int64 or y.shape != x.shape[:1]:
            raise CheckFailed(f"{where}, labels {y.dtype} {tuple(y.shape)} on {y.device}: expected both on "
                              f"{ctx.device.type}, int64 labels")
        first = first or (x.clone(), y.clone())
    if first is None:
        raise CheckFailed("the train loader gave no batch")
    return first


def fit_args(ctx: Context, epochs: int) -> list[str]:
    """`delving fit` with the ImageNet recipe's YAML, on this device with DDP, on the .beton files."""
    s = ctx.sizes
    return ["fit", "--config", str(RECIPE), f"--data.root={ctx.made['betons']}", f"--data.batch_size={s.fit_batch}",
            f"--data.num_workers={min(8, cpu_count())}", f"--trainer.accelerator={'gpu' if ctx.cuda else 'cpu'}",
            "--trainer.devices=1", "--trainer.strategy=ddp", "--trainer.precision=bf16-mixed",
            "--trainer.channels_last=true", f"--trainer.max_epochs={epochs}",
            f"--trainer.limit_train_batches={s.fit_steps}", "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false", "--tracking.wandb=disabled", f"--out_dir={ctx.work / 'runs'}",
            "--name=fit", *s.fit_overrides]


def checkpoint_state(path: Path) -> tuple[int, int]:
    """(global step, epoch) of a Lightning checkpoint, read without loading its tensors (mmap)."""
    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return int(state["global_step"]), int(state["epoch"])


def step_fit_ddp(ctx: Context) -> list[str]:
    """One epoch of a few steps under DDP on one device (NCCL on CUDA, gloo on CPU), ending in a checkpoint."""
    ctx.need("betons", "data")
    log = run_delving(ctx, {"fit": fit_args(ctx, epochs=1)})["fit"]
    backend = re.search(r"distributed_backend=(\w+)", log)
    expected = "nccl" if ctx.cuda else "gloo"
    if not backend or backend.group(1) != expected:
        raise CheckFailed(f"expected DDP over {expected}, the log says {backend.group(0) if backend else 'nothing'}")
    ckpt = ctx.work / "runs" / "fit" / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise CheckFailed(f"no checkpoint at {ckpt}")
    step, _ = checkpoint_state(ckpt)
    if step != ctx.sizes.fit_steps:
        raise CheckFailed(f"checkpoint at step {step}, expected {ctx.sizes.fit_steps}")
    ctx.made["ckpt"] = ckpt
    result = json.loads((ckpt.parent.parent / "result.json").read_text())
    return [f"DDP over {backend.group(1)}" + ("" if ctx.cuda else " (NCCL: CUDA only)"),
            f"{step} steps of {ctx.sizes.fit_batch}", f"val err1 {result['final_val_err1']:.3f}",
            f"step time {result['step_seconds']:.2f} s in all", f"checkpoint {file_size(ckpt)}"]


def step_resume(ctx: Context) -> list[str]:
    """The same command with max_epochs 2: it must restore last.ckpt and end at twice the steps."""
    ckpt = ctx.need("ckpt", "fit-ddp")
    log = run_delving(ctx, {"resume": fit_args(ctx, epochs=2)})["resume"]
    if "Restoring states from the checkpoint" not in log:
        raise CheckFailed("the second run did not restore the checkpoint (it started afresh)")
    step, epoch = checkpoint_state(ckpt)
    if step != 2 * ctx.sizes.fit_steps:
        raise CheckFailed(f"after resuming: step {step}, expected {2 * ctx.sizes.fit_steps}")
    result = json.loads((ckpt.parent.parent / "result.json").read_text())
    return [f"restored, continued to step {step} (epoch {epoch})", f"epochs in history {len(result['history'])}",
            f"val err1 {result['final_val_err1']:.3f}"]


def step_evaluate_dense(ctx: Context) -> list[str]:
    """`delving evaluate --protocol dense` on the device and on cpu (at once); their errors must agree."""
    ckpt = ctx.need("ckpt", "fit-ddp")
    scales = [str(s) for s in ctx.sizes.eval_scales]
    outs = {"eval-device": ctx.work / "eval-device.json", "eval-cpu": ctx.work / "eval-cpu.json"}
    jobs = {name: ["evaluate", "--ckpt", str(ckpt), "--protocol", "dense", "--scales", *scales, "--batch-size", "8",
                   "--device", ctx.device.type if name == "eval-device" else "cpu", "--no-wandb", "--out", str(out)]
            for name, out in outs.items()}
    # TF32 off for the comparison: with it, cuDNN's convs round inputs to 10 mantissa bits and a near-tie of two
    # classes may flip; the check is that the CUDA path computes the same function as the CPU one.
    run_delving(ctx, jobs, env={"NVIDIA_TF32_OVERRIDE": "0"})
    device, cpu = (json.loads(out.read_text()) for out in outs.values())
    pairs = [("combined", device, cpu)] + [(f"at {s}", device["per_scale"][s], cpu["per_scale"][s])
                                           for s in cpu["per_scale"]]
    worst = max(abs(a[k] - b[k]) for _, a, b in pairs for k in ("top1_err", "top5_err"))
    if worst > 1e-6 or device["images"] != cpu["images"]:
        detail = "; ".join(f"{n}: {a['top1_err']:.4f}/{a['top5_err']:.4f} vs {b['top1_err']:.4f}/{b['top5_err']:.4f}"
                           for n, a, b in pairs)
        raise CheckFailed(f"{device['device']} and cpu disagree (top-1/top-5 err): {detail}")
    return [f"{device['device']}: top-1 err {device['top1_err']:.4f}, top-5 {device['top5_err']:.4f}",
            f"cpu: the same (largest difference {worst:.1g})", f"{device['images']} images, scales {'/'.join(scales)}, "
            f"{device['views_per_image']:g} views each, window {device['window']}"]


def step_memory_c(ctx: Context) -> list[str]:
    """Peak memory of model C's training step (PReLU, bf16 autocast, channels_last, SGD with momentum)."""
    if not ctx.cuda:
        raise Skip("CUDA only")
    ctx.release_models()
    s, device = ctx.sizes, ctx.device
    before = torch.cuda.memory_allocated(device)
    model = build_model(MODEL_C, "prelu", device).to(memory_format=torch.channels_last)
    optimizer = sgd(model)
    x = torch.randn(s.memory_batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, NUM_CLASSES, (s.memory_batch,), device=device)
    train_step(model, optimizer, x, y, bf16=True)  # the first step creates the momentum buffers
    optimizer.zero_grad(set_to_none=True)
    sync(device)
    fixed = torch.cuda.memory_allocated(device) - before  # weights + momentum (+ the batch)
    torch.cuda.reset_peak_memory_stats(device)
    train_step(model, optimizer, x, y, bf16=True)
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    reserved = torch.cuda.max_memory_reserved(device)
    total = torch.cuda.get_device_properties(device).total_memory
    del model, optimizer, x, y
    ctx.release_models()
    # Batch-dependent memory grows linearly with the batch; gradients are counted in it, which overestimates.
    paper = fixed + (peak - fixed) * PAPER_BATCH / s.memory_batch
    return [f"peak {peak / GIB:.1f} GiB at batch {s.memory_batch} (allocator reserved {reserved / GIB:.1f} GiB)",
            f"device {total / GIB:.0f} GiB ({100 * peak / total:.0f}%)", f"weights+momentum {fixed / GIB:.1f} GiB",
            f"batch {PAPER_BATCH} (the paper's) ~{paper / GIB:.1f} GiB: "
            + ("fits on one device" if paper < 0.9 * total else "does NOT fit on one device")]


STEPS: dict[str, Callable[[Context], list[str]]] = {
    "mm-peak": step_mm_peak,
    "train-fp32": step_train_fp32,
    "train-bf16": step_train_bf16,
    "train-bf16-cl": step_train_bf16_cl,
    "train-compile": step_train_compile,
    "data": step_data,
    "ffcv": step_ffcv,  # before relu-vs-prelu: it trains the PReLU model A still in memory
    "relu-vs-prelu": step_relu_vs_prelu,
    "fit-ddp": step_fit_ddp,
    "resume": step_resume,
    "evaluate-dense": step_evaluate_dense,
    "memory-c": step_memory_c,
}


# --------------------------------------------------------------------------------------------- running


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def visible_device(device: torch.device) -> dict[str, str]:
    """``CUDA_VISIBLE_DEVICES`` that shows a subprocess only ``device`` (as its cuda:0, the device `fit` and
    `evaluate --device cuda` take), counted within the caller's own ``CUDA_VISIBLE_DEVICES`` if it has one."""
    if device.type != "cuda":
        return {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    return {"CUDA_VISIBLE_DEVICES": ids[device.index].strip()}


def run_delving(ctx: Context, jobs: dict[str, list[str]], env: dict | None = None) -> dict[str, str]:
    """Run ``python -m delving ARGS`` for each job at once, in the work folder; their logs (stdout + stderr), by
    name. A job that exits non-zero fails the step with its log's last line."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT),
                                                                              os.environ.get("PYTHONPATH")])),
                   "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore", **visible_device(ctx.device), **(env or {})}
    logs_dir = ctx.work / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    procs = {}
    try:
        for name, args in jobs.items():
            log = (logs_dir / f"{name}.log").open("w")
            procs[name] = (subprocess.Popen([sys.executable, "-m", "delving", *args], cwd=ctx.work, env=environment,
                                            stdout=log, stderr=subprocess.STDOUT), log)
        for proc, _ in procs.values():
            proc.wait()
    finally:  # a step timeout (or Ctrl-C) must not leave a training process behind
        for proc, log in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    texts = {name: (logs_dir / f"{name}.log").read_text() for name in jobs}
    for name, (proc, _) in procs.items():
        if proc.returncode:
            lines = [line for line in texts[name].splitlines() if line.strip()]
            raise CheckFailed(f"`delving {jobs[name][0]}` exited {proc.returncode}: "
                              f"{lines[-1] if lines else 'no output'} (log: {logs_dir / (name + '.log')})")
    return texts


def _alarm(signum, frame):
    raise StepTimeout()


def run_step(ctx: Context, name: str, step: Callable[[Context], list[str]]) -> Row:
    """One step as a table row; an exception is a FAILED row (traceback on stderr), never the end of the run."""
    timer = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM")
    if timer:
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(ctx.step_timeout)
    start = time.perf_counter()
    try:
        row = Row(name, OK, "; ".join(step(ctx)), 0.0)
    except Skip as reason:
        row = Row(name, SKIPPED, str(reason), 0.0)
    except StepTimeout:
        row = Row(name, FAILED, f"timed out after {ctx.step_timeout} s", 0.0)
    except CheckFailed as err:  # what the step checks does not hold: the message says what and where
        row = Row(name, FAILED, f"CheckFailed: {err}", 0.0)
    except Exception as err:  # noqa: BLE001 - any error is this step's failure; the next steps still run
        traceback.print_exc(file=sys.stderr)
        row = Row(name, FAILED, f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}", 0.0)
    finally:
        if timer:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    row.seconds = time.perf_counter() - start
    print(f"gpu_check: {row.step}: {row.status} ({row.seconds:.1f} s) {row.numbers}", file=sys.stderr, flush=True)
    return row


def device_line(device: torch.device) -> str:
    versions = f"torch {torch.__version__}"
    if device.type != "cuda":
        return f"device cpu ({cpu_count()} CPUs, {torch.get_num_threads()} torch threads), {versions}"
    props = torch.cuda.get_device_properties(device)
    return (f"device {props.name} ({device}, {props.total_memory / GIB:.0f} GiB), {versions}, CUDA "
            f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")


def markdown(rows: list[Row], header: str) -> str:
    lines = [header, "", "| step | status | measured | seconds |", "|---|---|---|---|"]
    lines += [f"| {r.step} | {r.status} | {r.numbers.replace('|', '/')} | {r.seconds:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (default cuda)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes, for a CPU (CUDA-only steps skipped)")
    parser.add_argument("--out", default=None, help="Markdown table to write (default benchmarks/results/"
                                                     "gpu_check.md, with --tiny gpu_check_tiny.md)")
    parser.add_argument("--only", default=None, help=f"comma list of steps to run (default all): {', '.join(STEPS)}")
    parser.add_argument("--work", default=None, help="folder for the data, runs and logs (default: a temporary one, "
                                                     "removed at the end)")
    parser.add_argument("--step-timeout", type=int, default=None, help="seconds per step before it fails "
                                                                       "(default 240, tiny 300)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cuda", "cpu"):
        print(f"gpu_check: error: --device {args.device!r}; valid: cuda, cuda:N, cpu", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: error: --device {args.device}: no CUDA device here; valid here: --device cpu --tiny",
              file=sys.stderr)
        return 2
    only = args.only.split(",") if args.only else list(STEPS)
    unknown = sorted(set(only) - set(STEPS))
    if unknown:
        print(f"gpu_check: error: unknown step(s) {', '.join(unknown)}; valid: {', '.join(STEPS)}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        torch.cuda.set_device(device)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="delving-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = TINY if args.tiny else FULL
    ctx = Context(device, sizes, work.resolve(), args.step_timeout or (300 if args.tiny else 240))
    started = time.perf_counter()
    try:
        rows = [run_step(ctx, name, step) if name in only else Row(name, SKIPPED, "not in --only", 0.0)
                for name, step in STEPS.items()]
    finally:
        ctx.release_models()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    header = (f"gpu_check{' --tiny' if args.tiny else ''}: {device_line(device)}; {sizes.model} batch {sizes.batch} at "
              f"{sizes.image}×{sizes.image}, {sizes.warmup} warm-up + {sizes.steps} timed steps; "
              f"{time.perf_counter() - started:.0f} s in all")
    text = markdown(rows, header)
    print(text)
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"gpu_check{'_tiny' if args.tiny else ''}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    failed = [r.step for r in rows if r.status == FAILED]
    if failed:
        print(f"gpu_check: FAILED: {', '.join(failed)} (table: {out})", file=sys.stderr)
        return 1
    print(f"gpu_check: all steps ok or skipped (table: {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
