"""Training throughput on 1 and 2 processes (gloo on CPU, NCCL on GPUs) as scaling efficiency, beside the paper's
3.8x on 4 GPUs (95%) and 6.0x on 8 GPUs (75%) (Sec. 3, "Implementation details").

The same total work in every row: the digits set, delving_plain, the same total batch (``data.batch_size_is=total``,
split over the processes), the same steps per epoch. Throughput is training images/s over the second epoch (the
first pays for start-up), timed on rank 0 from the epoch's first batch to its end. On CPU each of the 2 processes
gets 1 thread; 1 process is timed at 1 thread and at 2 threads (the same cores as 2 processes: the honest
baseline for this machine). Efficiency = throughput(N processes) / (N x throughput(1 process)).

    python benchmarks/scaling.py [--depth 11] [--image-size 32] [--batch 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parent.parent
PAPER = {4: 3.8, 8: 6.0}  # speed-up over 1 GPU, Sec. 3


class EpochTimer(L.Callback):
    """Seconds of the second training epoch (rank 0), written as JSON when training ends."""

    def __init__(self, path: Path):
        self.path, self.start, self.seconds, self.batches = path, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 0:
            self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            self.seconds, self.batches = time.perf_counter() - self.start, trainer.num_training_batches

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            self.path.write_text(json.dumps({"seconds": self.seconds, "batches": self.batches}))


def worker(args) -> None:
    """One run (Lightning's DDP re-runs this script for rank 1)."""
    from delving.experiment.training.config import load_config
    from delving.experiment.training.train import fit

    gpu = args.accelerator == "gpu"
    cfg = load_config(None, [
        f"model.depth={args.depth}", f"data.image_size={args.image_size}", f"data.batch_size={args.batch}",
        "data.batch_size_is=total", "trainer.max_epochs=2", "trainer.limit_val_batches=1",
        f"trainer.accelerator={args.accelerator}", f"trainer.devices={args.processes}",
        f"trainer.strategy={'ddp' if args.processes > 1 else 'auto'}", "trainer.enable_progress_bar=false",
        "tracking.wandb=disabled", "tracking.log_slopes=false", "tracking.log_variance=false",
        f"out_dir={args.out}", "name=run", *([] if gpu else [f"threads={args.threads}"])])
    fit(cfg, progress=False, callbacks=[EpochTimer(Path(args.out) / "timing.json")])


def measure(args, processes: int, threads: int) -> float:
    """Training images/s of one configuration, run in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="delving-scaling-") as out:
        cmd = [sys.executable, __file__, "--worker", "--out", out, "--processes", str(processes), "--threads",
               str(threads), "--accelerator", args.accelerator, "--depth", str(args.depth), "--image-size",
               str(args.image_size), "--batch", str(args.batch)]
        env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"run with {processes} processes failed:\n{proc.stderr[-2000:]}")
        timing = json.loads((Path(out) / "timing.json").read_text())
    return timing["batches"] * args.batch / timing["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=11)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128, help="total batch, split over the processes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--accelerator", default=None, help="cpu | gpu (default: gpu when there is one)")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    import torch

    gpus = torch.cuda.device_count()
    args.accelerator = args.accelerator or ("gpu" if gpus else "cpu")
    if args.accelerator == "gpu":  # NCCL: 1 GPU against every GPU there is
        counts = [1, gpus] if gpus > 1 else [1]
        rows = [(f"{n} process{'es' * (n > 1)}, 1 GPU each", n, measure(args, n, 1)) for n in counts]
        baselines = {"1 GPU": rows[0][2]}
    else:  # gloo on the 2 cores: 1 process at 1 and at 2 threads, 2 processes at 1 thread each
        one, one_two, two = measure(args, 1, 1), measure(args, 1, 2), measure(args, 2, 1)
        rows = [("1 process, 1 thread", 1, one), ("1 process, 2 threads", 1, one_two),
                ("2 processes (gloo), 1 thread each", 2, two)]
        baselines = {"1 process at 1 thread": one, "1 process at 2 threads (same cores)": one_two}
    print(f"delving_plain depth {args.depth}, {args.image_size}x{args.image_size} digits, total batch {args.batch}, "
          f"{args.accelerator}\n")
    print(f"| {'setting':<36} | images/s |")
    print(f"|{'-' * 38}|---------:|")
    for name, _, speed in rows:
        print(f"| {name:<36} | {speed:8.1f} |")
    n, top = rows[-1][1], rows[-1][2]
    print(f"\nscaling of {n} processes against:")
    for name, base in baselines.items():
        print(f"  {name:<38} speed-up {top / base:4.2f}x, efficiency {top / (n * base):5.1%}")
    for gpus_paper, speedup in PAPER.items():
        print(f"  paper, {gpus_paper} GPUs {'':<26} speed-up {speedup:4.2f}x, efficiency {speedup / gpus_paper:5.1%}")


if __name__ == "__main__":
    main()
