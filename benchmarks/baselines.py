"""The scikit-learn baselines of the result tables, fitted afresh (no cache): validation and training error and fit
time per estimator, on each embedded dataset's default split (``delving.studies.baselines``).

    .venv/bin/python benchmarks/baselines.py [--data digits mnist5k]

Prints one Markdown table; the fit times are of ``estimator.fit`` alone (one BLAS thread, as the module fits), the
load time that of the data module's ``setup`` (the split the nets see).
"""

from __future__ import annotations

import argparse
import time

from delving.experiment.training.config import load_config
from delving.studies import baselines


def measure(name: str) -> list[str]:
    """The table rows of one dataset."""
    data = load_config(None, [f"data.name={name}"]).data
    start = time.perf_counter()
    arrays = baselines.split_arrays(data)
    loaded = time.perf_counter() - start
    rows = []
    for label, fitted in baselines.fit_estimators(*arrays).items():
        rows.append(f"| {baselines.describe(data)} | {len(arrays[1])} / {len(arrays[3])} | {label} "
                    f"| {fitted['val_err']:.4f} | {fitted['train_err']:.4f} | {fitted['fit_seconds']:.3f} "
                    f"| {loaded:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["digits", "mnist5k"], help="data.name values")
    args = parser.parse_args()
    print("| split | train / val | estimator | val err | train err | fit s | load s |\n|---|---|---|---|---|---|---|")
    for name in args.data:
        print("\n".join(measure(name)), flush=True)


if __name__ == "__main__":
    main()
