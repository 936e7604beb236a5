"""Figures (PNG, matplotlib's Agg backend so no display is needed) and the conventions every figure shares.

One palette: an init scheme or an activation has the same colour in every figure (He red and Xavier blue as in
the paper's Fig. 2/3; activations in hues no scheme uses). Every figure gets a title naming what it shows and the
runs it comes from, integer epoch ticks, and a labelled chance line where it plots error.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

SCHEME_COLORS = {"he": "#d62728", "xavier": "#1f77b4", "glorot": "#17becf", "variance_preserving": "#2ca02c",
                 "lsuv": "#9467bd", "paper": "#8c564b", "tat": "#808000", "tat+delta_orthogonal": "#008b8b"}
ACTIVATION_COLORS = {"relu": "#444444", "prelu": "#ff7f0e", "prelu_shared": "#bcbd22", "leaky_relu": "#7f7f7f",
                     "elu": "#e377c2", "selu": "#8c564b", "gelu": "#9467bd", "silu": "#17becf", "tanh": "#2ca02c",
                     "softplus": "#1f77b4"}
ALIASES = {"channel-wise": "prelu", "channel-shared": "prelu_shared"}  # the notebooks' names of the two variants
FALLBACK = ["#e6ab02", "#a6761d", "#666666", "#1b9e77", "#7570b3"]  # names neither table knows, in order


def color(name: str) -> str:
    """The palette's colour of an init scheme or activation (a stable fallback for other names)."""
    name = ALIASES.get(str(name), str(name))
    if name in SCHEME_COLORS:
        return SCHEME_COLORS[name]
    if name in ACTIVATION_COLORS:
        return ACTIVATION_COLORS[name]
    return FALLBACK[sum(map(ord, name)) % len(FALLBACK)]


def line_style(label: str, seen: dict[str, str]) -> dict:
    """Colour and dash of a line labelled "<depth> layers, <scheme>" or by a scheme/activation: the colour from
    the palette (the label's last comma-separated word), the dash telling apart lines that share that colour."""
    key = str(label).split(", ")[-1]
    dashes = ["-", "--", "-.", ":"]
    used = [k for k, v in seen.items() if v == key]
    seen[str(label)] = key
    return {"color": color(key), "linestyle": dashes[len(used) % len(dashes)]}


def integer_epochs(ax) -> None:
    """Epoch axes count whole epochs: no 2.5 ticks."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def chance_line(ax, num_classes: int = 10) -> None:
    """A labelled line at the error of guessing (1 - 1/classes: 0.9 for the ten digits)."""
    error = 1 - 1 / num_classes
    ax.axhline(error, color="grey", lw=0.8, ls=":", label=f"chance ({error:.0%} error, {num_classes} classes)")


def plot_slope_profile(profile, path: Path, title: str | None = None) -> Path:
    """Learned slope by layer (Table 1's view): the channel mean, with a band of ±1 std over the layer's channels
    (zero for a channel-shared slope). The y-axis always spans at least 0-0.5 around the initial 0.25, so that
    movements of a few thousandths are not drawn as a profile."""
    depth = list(range(1, len(profile) + 1))
    means = [r.mean for r in profile]
    stds = [r.std for r in profile]
    fig, ax = plt.subplots(figsize=(max(6, len(profile) * 0.3), 3.5))
    ax.plot(depth, means, marker="o", color=ACTIVATION_COLORS["prelu"], label="slope a (mean over channels)")
    ax.fill_between(depth, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)], alpha=0.25,
                    color=ACTIVATION_COLORS["prelu"], label="±1 std over the layer's channels")
    ax.set_xticks(depth, [r.layer for r in profile], rotation=90, fontsize=7)
    ax.axhline(0.25, color="grey", lw=0.8, ls=":", label="initial slope 0.25")
    low = min([0.0, *[m - s for m, s in zip(means, stds)]])
    high = max([0.5, *[m + s for m, s in zip(means, stds)]])
    ax.set_ylim(low - 0.02, high + 0.02)
    ax.set_ylabel("learned slope a")
    ax.set_title(title or "Learned PReLU slopes by layer", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Lay out, write as PNG and close (figures are made in loops: an open figure per run would pile up)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)
