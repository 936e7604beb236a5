"""Signal at initialization on deep plain nets: last/first conv forward-std ratio (``variance_profile``) for each
activation and init scheme, over seeds, on one batch of training digits. 1.0 means the variance is held.

Compares, side by side in one run: the paper's Xavier (sqrt(1/n)), He (rectifiers only, Eq. 10/15), the analytic
``variance_preserving`` rule (Sec. 2.2 for any f) and the data-dependent LSUV (Mishkin & Matas 2016).

    .venv/bin/python benchmarks/init_signal.py [--depth 50] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from delving.nn.probes import variance_profile
from delving.data import DigitsDataModule
from delving.errors import DelvingError
from delving.nn.init import initialize
from delving.nn.lsuv import lsuv
from delving.models import create_initialized

ACTIVATIONS = ("relu", "prelu", "elu", "selu", "gelu", "silu", "tanh", "softplus")
SCHEMES = ("xavier", "he", "variance_preserving", "lsuv")


def ratio(activation: str, scheme: str, depth: int, seed: int, x: torch.Tensor) -> float | None:
    """Last conv's forward std over the first conv's, or None where the scheme does not apply (He on tanh)."""
    generator = torch.Generator().manual_seed(seed)
    model = create_initialized("delving_plain", "xavier", depth=depth, activation=activation, in_chans=1,
                               num_classes=10, widths=(16, 32, 32))
    try:
        if scheme == "lsuv":
            lsuv(model, x, generator=generator)
        else:
            initialize(model, scheme, generator=generator)
    except DelvingError:
        return None
    convs = [s for s in variance_profile(model, x) if s.layer.startswith("conv")]
    return convs[-1].forward_std / convs[0].forward_std


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    digits = DigitsDataModule()
    digits.setup()
    x = digits.train_set.tensors[0][:256]
    print(f"last/first conv forward std at init, {args.depth}-layer plain net, mean [min, max] over "
          f"{args.seeds} seeds\n")
    print("| activation | " + " | ".join(SCHEMES) + " |\n|---|" + "---|" * len(SCHEMES))
    for activation in ACTIVATIONS:
        cells = []
        for scheme in SCHEMES:
            values = [ratio(activation, scheme, args.depth, seed, x) for seed in range(args.seeds)]
            if None in values:
                cells.append("n/a")
                continue
            cells.append(f"{statistics.mean(values):.3g} [{min(values):.3g}, {max(values):.3g}]")
        print(f"| {activation} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
