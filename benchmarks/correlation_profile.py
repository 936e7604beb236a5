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
from delving.studies.init_correlation import digits_batch, gaps, measure

ROOT = Path(__file__).resolve().parent.parent


def report(data: pd.DataFrame) -> None:
    table = gaps(data)
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "reports" / "figures" / "correlation_profile.csv"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = measure(digits_batch(), args.depth, args.widths, args.seeds)
    data.to_csv(args.out, index=False)
    report(data)


if __name__ == "__main__":
    main()
