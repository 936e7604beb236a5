"""The correlation between the responses to different digits, layer by layer, at init in deep plain nets: measured
beside the kernel recursion and the scalar C-map (reports/beyond_the_paper.md, Sec. 2.2).

One measurement for ``benchmarks/correlation_profile.py`` (by stage-3 width) and ``notebooks/deep_correlation.ipynb``
(one width, with a figure), so both report the same numbers the same way.
"""

from __future__ import annotations

import pandas as pd
import torch

from delving.experiment.training.config import load_config
from delving.experiment.training.train import build_datamodule
from delving.models import create_initialized
from delving.nn.probes import correlation_profile
from delving.studies.notebook import ROOT

# recipe -> (activation, init scheme, weights); TAT at eta 0.9 for both weight kinds, as the published correlation
# profiles were measured (the training default for Gaussian weights is 0.8: delving.nn.init)
RECIPES = {"relu + he": ("relu", "he", "gaussian"), "prelu + tat": ("prelu", "tat", "gaussian"),
           "prelu + tat + delta-orth": ("prelu", "tat", "delta_orthogonal")}
TAT_ETA = 0.9


def digits_batch(images: int = 64) -> torch.Tensor:
    """The first validation digits, normalized as training sees them (the runs' correlation.csv uses the same)."""
    datamodule = build_datamodule(load_config(ROOT / "experiments" / "init_depth.yaml"))
    datamodule.setup("fit")
    return next(iter(datamodule.val_dataloader()))[0][:images]


def measure(x: torch.Tensor, depth: int, widths: list[int], seeds: int) -> pd.DataFrame:
    """One row per (stage-3 width, recipe, seed, layer) of `correlation_profile` on the batch `x`."""
    rows = []
    for width in widths:
        for recipe, (activation, scheme, weights) in RECIPES.items():
            for seed in range(seeds):
                model = create_initialized("delving_plain", scheme, "fan_in", activation=activation, depth=depth,
                                           widths=(16, 32, width), in_chans=1, num_classes=10, weights=weights,
                                           tat_eta=TAT_ETA,
                                           generator=torch.Generator().manual_seed(seed))
                rows += [{"width": width, "recipe": recipe, "seed": seed, "index": p.index, "layer": p.layer,
                          "measured": p.measured, "theory": p.theory, "cmap": p.cmap_iterate,
                          "anchored": p.anchored}
                         for p in correlation_profile(model, x)]
    return pd.DataFrame(rows)


def conv_rows(data: pd.DataFrame) -> pd.DataFrame:
    return data[data.layer.str.startswith("conv")]


def gaps(data: pd.DataFrame) -> pd.DataFrame:
    """Per recipe and width, over the conv layers: the largest gap between the seeds' mean and the theory (kernel
    recursion, and the scalar C-map), the per-seed largest gaps, and the last conv per seed."""
    rows = []
    for (recipe, width), cell in conv_rows(data).groupby(["recipe", "width"], sort=False):
        mean = cell.groupby("index")[["measured", "theory", "cmap"]].mean()
        per_seed = cell.assign(gap=(cell.measured - cell.theory).abs()).groupby("seed").gap.max()
        last = cell[cell["index"] == cell["index"].max()]
        rows.append({"recipe": recipe, "stage-3 width": width, "seeds": cell.seed.nunique(),
                     "max gap of the seed mean (kernel)": round((mean.measured - mean.theory).abs().max(), 3),
                     "the same for the C-map": round((mean.measured - mean.cmap).abs().max(), 3),
                     "max gap per seed (min-max)": f"{per_seed.min():.3f}-{per_seed.max():.3f}",
                     "last conv, per seed": ", ".join(f"{v:.3f}" for v in last.measured),
                     "last conv, theory": round(last.theory.mean(), 3)})
    return pd.DataFrame(rows)
