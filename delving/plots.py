"""Figures (PNG, matplotlib's Agg backend so no display is needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_slope_profile(profile, path: Path) -> Path:
    """Learned slope by layer: channel mean with ±1 std band (channel-wise) or the shared value (Table 1)."""
    depth = list(range(1, len(profile) + 1))
    means = [r.mean for r in profile]
    stds = [r.std for r in profile]
    fig, ax = plt.subplots(figsize=(max(6, len(profile) * 0.3), 3.5))
    ax.plot(depth, means, marker="o", label="mean slope a")
    ax.fill_between(depth, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)], alpha=0.25,
                    label="±1 std over channels")
    ax.set_xticks(depth, [r.layer for r in profile], rotation=90, fontsize=7)
    ax.axhline(0.25, color="grey", lw=0.8, ls=":", label="init 0.25")
    ax.set_ylabel("learned slope a")
    ax.set_title("PReLU slopes by layer")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Lay out, write as PNG and close (figures are made in loops: an open figure per run would pile up)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)
