"""What ``delving fit`` costs over a plain torch loop doing the same training, measured side by side.

Both sides train the main study's run (``experiments/init_depth.yaml`` with ``model.activation=prelu init.scheme=he
model.depth=30 seed=0``: 14 epochs of a 30-layer PReLU net on the embedded digits) on one thread:

- ``delving``: :func:`delving.experiment.training.train.fit` on the loaded config, as ``delving fit`` calls it
  (progress bar and model summary on, W&B offline as a user who is not logged in gets it: ``WANDB_MODE=offline``),
  into an empty folder; it writes everything a run records (config, metrics.csv, slopes, variance, a checkpoint per
  epoch, result.json, the offline W&B run).
- ``plain``: the loop below, nanoGPT style: the package's own data module and loaders, model build and init
  (``build_datamodule``, ``build_model``), fused SGD over the package's parameter groups (no decay on PReLU slopes),
  gradient-norm clipping, the step LR schedule and a validation pass per epoch computing top-1 and top-5 error;
  nothing written, nothing logged.

Each side of each repeat runs in a fresh interpreter (so neither inherits the other's allocator, caches or W&B
service), the sides alternating their order from one repeat to the next (``plain, delving``, then ``delving,
plain``), so drift in the machine's load hits both alike. A child times its run from after its imports to the end
(imports are a per-process cost, paid once per worker in a sweep: reported in their own column); it also gives its
process CPU time, which the other processes of a shared machine inflate less than the wall clock. The table holds
every repeat, the medians, the spread and the ratio plain / delving (1.0: the framework costs nothing) two ways:
of the medians, and paired (the median of each repeat's own ratio, robust to the machine's drift), and both
sides' final validation error (the same seed, the same math: they should agree up to float rounding).

    .venv/bin/python benchmarks/fit_overhead.py [--repeats 3] [--threads 1] [--ref COMMIT] [--no-progress]

``--ref COMMIT`` adds a third side: ``delving fit`` with the package of that commit (extracted with ``git
archive``; the working tree is left as it is), to measure a change; ``--ref DIR``: the ``delving/`` package of another
checkout. ``--no-progress`` runs the delving side as
``delving sweep`` runs its cells (no progress bar, no model summary).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "experiments" / "init_depth.yaml"
OVERRIDES = ["model.activation=prelu", "init.scheme=he", "model.depth=30", "seed=0"]
TARGET = 0.95  # plain / delving: the framework should cost at most ~5% of a run
RESULTS = ROOT / "benchmarks" / "results" / "fit_overhead.md"


def plain_fit(cfg) -> dict:
    """Train ``cfg`` as a minimal torch loop: the same model, data, optimizer, clipping, schedule and validation as
    ``fit``; returns the last epoch's validation errors."""
    import lightning as L
    import torch
    import torch.nn.functional as F

    from delving.experiment.training.system import sgd
    from delving.experiment.training.train import build_datamodule, build_model

    L.seed_everything(cfg.seed, workers=True, verbose=False)  # as fit(): the same init, the same data order
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    datamodule.setup("fit")
    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    o = cfg.optim
    optimizer = sgd(model, o.lr, o.momentum, o.weight_decay, fused=o.fused)
    params = [p for group in optimizer.param_groups for p in group["params"]]  # clipped in the optimizer's order
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(o.milestones), gamma=o.factor)
    err1 = err5 = float("nan")
    for epoch in range(cfg.trainer.max_epochs):
        train_loader.sampler.set_epoch(epoch)  # the epoch's order, a function of (seed, epoch)
        model.train()
        for x, y in train_loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, o.gradient_clip_norm)
            optimizer.step()
        err1, err5 = _validate(model, val_loader)
        scheduler.step()
    return {"final_val_err1": err1, "final_val_err5": err5}


def _validate(model, loader) -> tuple[float, float]:
    """Top-1 and top-5 error over the whole loader (the paper's two error rates)."""
    import torch

    model.eval()
    wrong1 = wrong5 = total = 0
    with torch.inference_mode():
        for x, y in loader:
            top5 = model(x).topk(5, dim=1).indices
            hit = top5 == y[:, None]
            wrong1 += int((~hit[:, 0]).sum())
            wrong5 += int((~hit.any(dim=1)).sum())
            total += len(y)
    return wrong1 / total, wrong5 / total


def delving_fit(cfg, out_dir: str, progress: bool) -> dict:
    """``delving fit``'s call on ``cfg``, into ``out_dir``."""
    from delving.experiment.training.train import fit

    cfg.out_dir = out_dir
    result = fit(cfg, progress=progress)
    return {k: result[k] for k in ("final_val_err1", "final_val_err5", "fit_seconds", "step_seconds")}


def child(side: str, threads: int, out_dir: str, progress: bool) -> None:
    """One side's run in this process; prints one JSON line: seconds of the run, its CPU time, imports, errors."""
    start = time.perf_counter()
    import torch

    import delving.experiment.training.train  # noqa: F401  (Lightning, timm, the package)
    if side != "plain":
        import wandb  # noqa: F401  (imported by the W&B logger on first use: a per-process cost, like the rest)
    from delving.experiment.training.config import load_config

    imported = time.perf_counter()
    torch.set_num_threads(threads)
    cfg = load_config(CONFIG, [*OVERRIDES, f"threads={threads}"])
    wall, cpu = time.perf_counter(), time.process_time()
    record = plain_fit(cfg) if side == "plain" else delving_fit(cfg, out_dir, progress)
    record.update(seconds=time.perf_counter() - wall, cpu_seconds=time.process_time() - cpu,
                  import_seconds=imported - start)
    print(json.dumps(record))


def extract(ref: str, into: Path) -> Path:
    """The ``delving/`` package of commit ``ref`` under ``into`` (git archive: the repository is not touched)."""
    archive = subprocess.run(["git", "archive", "--format=tar", ref, "delving"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_side(side: str, code: Path, threads: int, progress: bool) -> dict:
    """One side in a fresh interpreter with the package in ``code``; its JSON record plus the load average."""
    out = tempfile.mkdtemp(prefix="delving-overhead-")
    env = {**os.environ, "PYTHONPATH": str(code), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "plain" if side == "plain" else "delving",
           "--threads", str(threads), "--run-dir", out, *([] if progress else ["--no-progress"])]
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"{side} run failed (exit {proc.returncode}); run it alone: {' '.join(cmd)}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load": load}


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def table(records: dict[str, list[dict]], repeats: int) -> str:
    """Markdown: each repeat's wall and CPU seconds per side, the medians, the spread, the ratios."""
    sides = list(records)
    head = "| repeat | " + " | ".join(f"{s}: wall s | {s}: CPU s" for s in sides) + " | load (1 min) |"
    lines = [head, "|" + "---|" * (2 * len(sides) + 2)]
    for r in range(repeats):
        cells = " | ".join(f"{records[s][r]['seconds']:.2f} | {records[s][r]['cpu_seconds']:.2f}" for s in sides)
        loads = ", ".join(f"{records[s][r]['load']:.1f}" for s in sides)
        lines.append(f"| {r + 1} | {cells} | {loads} |")
    med = {s: (statistics.median(x["seconds"] for x in records[s]),
               statistics.median(x["cpu_seconds"] for x in records[s])) for s in sides}
    lines.append("| median | " + " | ".join(f"**{med[s][0]:.2f}** | {med[s][1]:.2f}" for s in sides) + " | |")
    lines.append("| spread | " + " | ".join(f"{spread([x['seconds'] for x in records[s]])} | "
                                            f"{spread([x['cpu_seconds'] for x in records[s]])}" for s in sides)
                 + " | |")
    lines += ["", "| side | median wall s | plain / side (wall) | plain / side (CPU) | paired: median of the repeats' "
                  "plain / side (wall) | final val err1 | final val err5 | imports s (median) |",
              "|---|---|---|---|---|---|---|---|"]
    for s in sides:
        last = records[s][-1]
        lines.append(f"| {s} | {med[s][0]:.2f} | {med['plain'][0] / med[s][0]:.3f} | "
                     f"{med['plain'][1] / med[s][1]:.3f} | {paired_ratio(records, s):.3f} | "
                     f"{last['final_val_err1']:.4f} | {last['final_val_err5']:.4f} | "
                     f"{statistics.median(x['import_seconds'] for x in records[s]):.2f} |")
    return "\n".join(lines)


def paired_ratio(records: dict[str, list[dict]], side: str) -> float:
    """The median over repeats of plain / side, each from the two runs of one repeat (back to back): the machine's
    slow drift over the benchmark's minutes cancels within a pair, where a ratio of medians can pair a fast
    minute on one side with a slow one on the other."""
    return statistics.median(p["seconds"] / x["seconds"] for p, x in zip(records["plain"], records[side]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ref", default=None,
                        help="also time delving fit at this commit (or the checkout in this folder)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="the delving side as a sweep cell: no progress bar, no model summary")
    parser.add_argument("--out", default=str(RESULTS), help="markdown file for the table ('' : print only)")
    parser.add_argument("--child", choices=("plain", "delving"), help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.threads, args.run_dir, args.progress)
        return 0
    sides = {"plain": ROOT, "delving": ROOT}
    if args.ref and Path(args.ref).is_dir():  # another checkout: its delving/ package
        sides[f"delving@{Path(args.ref).name}"] = Path(args.ref).resolve()
    elif args.ref:
        sides[f"delving@{args.ref}"] = extract(args.ref, Path(tempfile.mkdtemp(prefix="delving-ref-")))
    records: dict[str, list[dict]] = {s: [] for s in sides}
    before = os.getloadavg()
    for r in range(args.repeats):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))  # alternate: drift hits every side alike
        for side in order:
            records[side].append(run_side(side, sides[side], args.threads, args.progress))
            print(f"repeat {r + 1} {side}: {records[side][-1]['seconds']:.2f} s", file=sys.stderr)
    after = os.getloadavg()
    text = (f"`benchmarks/fit_overhead.py --repeats {args.repeats} --threads {args.threads}"
            f"{f' --ref {args.ref}' if args.ref else ''}{'' if args.progress else ' --no-progress'}`: "
            f"`{CONFIG.relative_to(ROOT)}` with `{' '.join(OVERRIDES)}`, {args.threads} thread(s), one fresh process "
            f"per side and repeat, sides alternating. Load average (1/5/15 min) before "
            f"{'/'.join(f'{x:.1f}' for x in before)}, after {'/'.join(f'{x:.1f}' for x in after)}.\n\n"
            f"{table(records, args.repeats)}\n")
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    ratio = statistics.median(x["seconds"] for x in records["plain"]) / statistics.median(
        x["seconds"] for x in records["delving"])
    print(f"plain / delving (wall): {ratio:.3f}, paired {paired_ratio(records, 'delving'):.3f} (target >= {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
