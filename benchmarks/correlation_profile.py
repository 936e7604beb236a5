"""Correlation between the responses to different digits, layer by layer, in a 100-layer plain net at init: measured
(mean cosine over a batch of 64 validation digits) beside the theory, for He + ReLU, PReLU + TAT and PReLU + TAT +
delta-orthogonal, over several seeds and stage-3 widths. Two theories: the infinite-width kernel recursion per pair
and position (delving/nn/conv_kernel.py, the `theory` column) and the scalar C-map iterate of the mean cosine
(delving/nn/correlation.py, `cmap`).

Prints, per recipe and width: the largest |mean measured - mean theory| over the convs (mean over seeds) for each
theory, the same per seed (its spread), and the last conv's measured value per seed beside the theory. Writes the
per-layer numbers to reports/figures/correlation_profile.csv (read by notebooks/deep_correlation.ipynb).

    .venv/bin/python benchmarks/correlation_profile.py [--seeds 5] [--widths 32 128 512] [--depth 100]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

import delving  # noqa: F401  (registers the timm models)
from delving.experiment.config import load_config
from delving.experiment.train import build_datamodule
from delving.models import create_initialized
from delving.nn.probes import correlation_profile

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"relu + he": ("relu", "he", "gaussian"), "prelu + tat": ("prelu", "tat", "gaussian"),
           "prelu + tat + delta-orth": ("prelu", "tat", "delta_orthogonal")}


def digits_batch(images: int = 64) -> torch.Tensor:
    """The first validation digits, normalized as training sees them (the runs' correlation.csv uses the same)."""
    datamodule = build_datamodule(load_config(ROOT / "experiments" / "init_depth.yaml"))
    datamodule.setup("fit")
    return next(iter(datamodule.val_dataloader()))[0][:images]


def measure(depth: int, widths: list[int], seeds: int) -> pd.DataFrame:
    x = digits_batch()
    rows = []
    for width in widths:
        for recipe, (activation, scheme, weights) in RECIPES.items():
            for seed in range(seeds):
                model = create_initialized("delving_plain", scheme, "fan_in", activation=activation, depth=depth,
                                           widths=(16, 32, width), in_chans=1, num_classes=10, weights=weights,
                                           generator=torch.Generator().manual_seed(seed))
                rows += [{"width": width, "recipe": recipe, "seed": seed, "index": p.index, "layer": p.layer,
                          "measured": p.measured, "theory": p.theory, "cmap": p.cmap_iterate,
                          "anchored": p.anchored}
                         for p in correlation_profile(model, x)]
    return pd.DataFrame(rows)


def report(data: pd.DataFrame) -> None:
    convs = data[data.layer.str.startswith("conv")]
    print("| recipe | stage-3 width | seeds | max over convs of abs(mean measured - mean theory) | the same for the "
          "C-map iterate | per seed: max abs gap (min-max) | last conv, per seed | last conv, theory |")
    print("|---|---|---|---|---|---|---|---|")
    for (recipe, width), cell in convs.groupby(["recipe", "width"], sort=False):
        mean = cell.groupby("index")[["measured", "theory", "cmap"]].mean()
        gap = (mean.measured - mean.theory).abs().max()
        cmap_gap = (mean.measured - mean.cmap).abs().max()
        per_seed = cell.assign(gap=(cell.measured - cell.theory).abs()).groupby("seed").gap.max()
        last = cell[cell["index"] == cell["index"].max()]
        print(f"| {recipe} | {width} | {cell.seed.nunique()} | {gap:.3f} | {cmap_gap:.3f} "
              f"| {per_seed.min():.3f}-{per_seed.max():.3f} "
              f"| {', '.join(f'{v:.3f}' for v in last.measured)} | {last.theory.mean():.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "reports" / "figures" / "correlation_profile.csv"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = measure(args.depth, args.widths, args.seeds)
    data.to_csv(args.out, index=False)
    report(data)


if __name__ == "__main__":
    main()
