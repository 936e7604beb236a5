"""Images/s of a full training step (forward, backward, SGD step) of the paper's models, ReLU vs PReLU and with each
speed option, against the machine's own matrix-multiply peak measured in the same run.

Each group's variants are built side by side and their timed steps interleaved (round-robin, best of the
repeats), so machine noise hits every variant of a group alike; variants that differ only in activation (ReLU,
PReLU, torch's PReLU) train one shared model with their activations swapped in (``SharedModel``). ``ratio`` is a variant's img/s over the group's
first variant's. Multiply-adds per image come from ``delving.models.complexity.model_size`` (forward, conv + fc);
a training step counts 3× the forward (backward: gradients w.r.t. inputs and w.r.t. weights, each about one
forward), so ``GMAC/s`` is 3 × forward MACs × images/s and ``% peak`` divides it by the multiply-adds per second of
a large square ``torch.mm`` at the variant's dtype (fp32, or bf16 under bf16 autocast), same device and threads,
measured in this process before and after the groups (the best of those).

    .venv/bin/python benchmarks/train_throughput.py                      # CPU defaults (make bench)
    .venv/bin/python benchmarks/train_throughput.py --device cuda        # GPU: batch 64 at 224
    .venv/bin/python benchmarks/train_throughput.py --groups a,small14 --repeats 9
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import delving  # noqa: F401  (registers the delving_* models with timm)
from delving.nn.activations import PRELU_INIT, make_activation
from delving.models import create_initialized
from delving.models.complexity import model_size
from delving.experiment.training.speed import INPLACE_ACTIVATIONS, SpeedOptions, apply_speed_options
from delving.experiment.training.system import sgd

ROOT = Path(__file__).resolve().parent.parent
BF16 = "bf16-mixed"
STEP_MACS_PER_FORWARD = 3  # forward + backward (input gradients + weight gradients), each ~ one forward's MACs
NUM_CLASSES = 1000


@dataclass(frozen=True)
class Variant:
    model: str
    activation: str = "prelu"
    precision: str = "32-true"
    options: SpeedOptions = field(default_factory=SpeedOptions)
    torch_prelu: bool = False  # torch's own nn.PReLU instead of delving.nn.prelu.PReLU (for comparison)
    fused: bool = True  # optim.fused: torch's fused SGD kernel (delving.experiment.training.system.sgd)

    @property
    def label(self) -> str:
        on = [k for k in ("channels_last", "inplace_activations", "compile") if getattr(self.options, k)]
        extra = ([self.precision] if self.precision != "32-true" else []) + on
        extra += ["torch's backward"] if self.torch_prelu else []
        extra += [] if self.fused else ["unfused SGD"]
        return f"{self.model.removeprefix('delving_')} {self.activation}" + (f" +{'+'.join(extra)}" if extra else "")

    def with_option(self, **kw) -> "Variant":
        precision = kw.pop("precision", self.precision)
        return replace(self, precision=precision, options=replace(self.options, **kw))


def default_groups() -> dict[str, list[Variant]]:
    """Named groups; the first variant of each is its reference. Model B's options are each paired with plain
    model B (two large models in memory at a time, not seven)."""
    a, b, c, s14 = (Variant(f"delving_{m}") for m in ("model_a", "model_b", "model_c", "small14"))
    relu = dict(activation="relu")
    return {
        "a": [replace(a, **relu), a, replace(a, activation="prelu_shared"), replace(a, torch_prelu=True)],
        "small14": [replace(s14, **relu), s14, replace(s14, activation="prelu_shared"),
                    replace(s14, torch_prelu=True)],
        "b": [replace(b, **relu), b, replace(b, activation="prelu_shared")],
        "c": [replace(c, **relu), c],
        "b-channels_last": [b, b.with_option(channels_last=True)],
        "b-bf16": [b, b.with_option(precision=BF16)],
        "b-inplace": [replace(b, **relu), replace(b, **relu).with_option(inplace_activations=True)],
        "b-compile": [b, b.with_option(compile=True)],
        "b-fused": [replace(b, fused=False), b],
    }


def step_macs(forward_macs: float, batch: int) -> float:
    """Multiply-adds of one training step on ``batch`` images (see STEP_MACS_PER_FORWARD)."""
    return STEP_MACS_PER_FORWARD * forward_macs * batch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 3, clock=time.perf_counter) -> float:
    """Multiply-adds per second of an n×n by n×n ``torch.mm`` (n³ multiply-adds), best of ``repeats``."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = clock()
        torch.mm(a, b)
        sync(device)
        best = min(best, clock() - start)
    return n**3 / best


def activation_for(variant: Variant, channels: int) -> nn.Module:
    """The activation module of ``variant`` for a layer of ``channels`` channels."""
    if variant.torch_prelu:  # torch's own class: its forward and its CPU backward kernel
        return nn.PReLU(channels if variant.activation == "prelu" else 1, init=PRELU_INIT)
    module = make_activation(variant.activation, channels)
    if isinstance(module, INPLACE_ACTIVATIONS):
        module.inplace = variant.options.inplace_activations
    return module


class SharedModel:
    """One model and one SGD optimizer for the variants that differ only in their activation: each variant's
    activations are swapped into the model before its step, so every variant trains the same weights in the same
    memory. Separate copies of one model differed by up to ~2% in speed among themselves (on where their weights
    landed in memory), as much as the PReLU-vs-ReLU difference measured here."""

    def __init__(self, variants: list[Variant], device: torch.device):
        first = variants[0]
        model = create_initialized(first.model, "he", activation="prelu", num_classes=NUM_CLASSES, device=device)
        self.slots = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
                      if isinstance(child, nn.PReLU)]
        channels = [getattr(parent, name).num_parameters for parent, name in self.slots]
        self.activations = {v: [activation_for(v, c).to(device) for c in channels] for v in variants}
        self.model = apply_speed_options(model, first.options).train()
        every = nn.ModuleList([self.model, *(m for acts in self.activations.values() for m in acts)])
        self.optimizer = sgd(every, lr=1e-4, momentum=0.9, weight_decay=5e-4, fused=first.fused)  # Sec. 3's recipe
        self.current: Variant | None = None

    def use(self, variant: Variant) -> None:
        if variant != self.current:
            for (parent, name), module in zip(self.slots, self.activations[variant]):
                setattr(parent, name, module)
            self.current = variant


def share_models(variants: list[Variant], device: torch.device) -> dict[Variant, SharedModel]:
    """Each variant's :class:`SharedModel`: one per (model, precision, options, optimizer)."""
    key = lambda v: (v.model, v.precision, v.options, v.fused)  # noqa: E731
    families: dict[tuple, list[Variant]] = {}
    for variant in variants:
        families.setdefault(key(variant), []).append(variant)
    shared = {k: SharedModel(vs, device) for k, vs in families.items()}
    return {v: shared[key(v)] for v in variants}


class Runner:
    """One variant's timed training step on its shared model."""

    def __init__(self, variant: Variant, shared: SharedModel, device: torch.device, x: torch.Tensor,
                 y: torch.Tensor, clock=time.perf_counter):
        self.variant, self.shared, self.device, self.x, self.y, self.clock = variant, shared, device, x, y, clock
        self.times: list[float] = []

    def step(self) -> float:
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.variant.precision == BF16
                    else nullcontext())
        self.shared.use(self.variant)
        model, optimizer = self.shared.model, self.shared.optimizer
        sync(self.device)
        start = self.clock()
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(model(self.x), self.y)
        loss.backward()
        optimizer.step()
        sync(self.device)
        return self.clock() - start


def run_group(variants: list[Variant], device: torch.device, batch: int, size: int, warmup: int,
              repeats: int, clock=time.perf_counter) -> list[tuple[Variant, float]]:
    """(variant, best seconds per step), the variants' timed steps interleaved. The best of the repeats, as
    ``timeit`` advises: noise (other processes, page faults) only ever adds time, and on a 2-core machine the
    median of 9 still moved a ratio by up to 15% between runs while the best held within ~2%."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=gen).to(device)
    shared = share_models(variants, device)
    runners = [Runner(v, shared[v], device, x, y, clock) for v in variants]
    for runner in runners:
        for _ in range(warmup):  # first steps: allocator, oneDNN/cuDNN algorithm choice, compilation
            runner.step()
    for _ in range(repeats):
        for runner in runners:
            runner.times.append(runner.step())
    result = [(r.variant, min(r.times)) for r in runners]
    del runners, shared
    gc.collect()
    return result


def table(rows: list[dict]) -> str:
    """Markdown table of the measured rows."""
    lines = ["| group | variant | img/s | ratio to group's first | fwd GMAC/img | step GMAC/s | % of mm peak |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['group']} | {r['label']} | {r['img_s']:.2f} | {r['ratio']:.3f} | {r['fwd_gmac']:.2f} | "
                     f"{r['gmac_s']:.1f} | {100 * r['peak_share']:.1f}% |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.35 * len(rows) + 1.5), sharey=True)
    labels = [f"{r['group']}: {r['label']}" for r in rows][::-1]
    left.barh(labels, [r["ratio"] for r in rows][::-1], color="tab:blue")
    left.axvline(1.0, color="k", lw=0.8)
    left.axvline(0.97, color="tab:red", lw=0.8, ls="--")
    left.set_xlabel("img/s ratio to the group's first variant (red: 0.97)")
    right.barh(labels, [100 * r["peak_share"] for r in rows][::-1], color="tab:green")
    right.axvline(50, color="tab:red", lw=0.8, ls="--")
    right.set_xlabel("% of this run's torch.mm peak (same dtype)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--batch", type=int, default=None, help="default: 8 on CPU, 64 on CUDA")
    parser.add_argument("--size", type=int, default=None, help="image side; default: 112 on CPU, 224 on CUDA")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                        help="cpu: this thread's CPU time, immune to time-slicing on a shared machine (needs "
                             "--threads 1: torch then computes on the calling thread)")
    parser.add_argument("--groups", default=None, help=f"comma list of: {', '.join(default_groups())}")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for .md and .png")
    parser.add_argument("--name", default="train_throughput")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch, size = args.batch or (64 if cuda else 8), args.size or (224 if cuda else 112)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and (cuda or torch.get_num_threads() != 1):
        parser.error("--clock cpu needs --device cpu and --threads 1")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    groups = default_groups()
    if args.groups:
        unknown = set(args.groups.split(",")) - set(groups)
        if unknown:
            parser.error(f"unknown group(s) {sorted(unknown)}; valid: {', '.join(groups)}")
        groups = {k: groups[k] for k in args.groups.split(",")}
    n = 8192 if cuda else 2048
    dtypes = {"32-true": torch.float32, BF16: torch.bfloat16}
    used = {v.precision for vs in groups.values() for v in vs}
    peak = {p: matmul_peak(device, dtypes[p], n, clock=clock) for p in used}
    measured = {name: run_group(vs, device, batch, size, args.warmup, args.repeats, clock)
                for name, vs in groups.items()}
    peak = {p: max(peak[p], matmul_peak(device, dtypes[p], n, clock=clock)) for p in used}
    rows = []
    for name, results in measured.items():
        first = results[0][1]
        for variant, seconds in results:
            fwd = model_size(variant.model, size, variant.activation, NUM_CLASSES).mult_adds
            rows.append({"group": name, "label": variant.label, "img_s": batch / seconds, "ratio": first / seconds,
                         "fwd_gmac": fwd / 1e9, "gmac_s": step_macs(fwd, batch) / seconds / 1e9,
                         "peak_share": step_macs(fwd, batch) / seconds / peak[variant.precision]})
    header = (f"device {device.type}, {torch.get_num_threads()} threads, {args.clock} clock, batch {batch}, "
              f"{size}×{size}, {args.warmup} warm-up + {args.repeats} interleaved timed steps (best), "
              f"torch {torch.__version__}; "
              + ", ".join(f"mm peak {p}: {v / 1e9:.1f} GMAC/s (n={n})" for p, v in sorted(peak.items())))
    text = f"{header}\n\n{table(rows)}\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.md").write_text(text)
    plot(rows, out / f"{args.name}.png")
    print(f"wrote {out / (args.name + '.md')} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
