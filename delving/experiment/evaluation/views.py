"""Test-time view geometry (Sec. 3 "Testing" of the paper, Table 5's 10-view): pure box arithmetic, no tensors.

A box is ``(top, left, height, width)`` in pixels (or feature-map cells), the convention of torchvision's
``crop``. Two schemes:

- :func:`ten_crop_boxes`: AlexNet's 10-view test [16] that Table 2 and Table 5 use: the four corner crops and the
  centre crop of the image resized to a shorter side of 256, each also mirrored (the flag). The five boxes are
  those of torchvision's ``five_crop`` (the centre rounds as ``round((H - c) / 2)``, as ``center_crop`` does; the
  tests check both against hand-computed boxes). torchvision's ``ten_crop`` is not used: it cuts its last five
  crops from the *mirrored image*, so with an odd margin its mirrored centre crop is one pixel off the mirror of
  the centre crop; the paper mirrors the same five patches.
- :func:`dense_windows`: "dense multi-view testing on feature maps" (Sec. 3, SPP-net): every ``window``×``window``
  window of the last conv map, stride 1 cell. A map smaller than the window in a dimension gives one window
  spanning that whole dimension (the SPP layer accepts any size).
"""

from __future__ import annotations

from typing import NamedTuple


class Box(NamedTuple):
    top: int
    left: int
    height: int
    width: int


def five_crop_boxes(height: int, width: int, crop: int) -> list[Box]:
    """Top-left, top-right, bottom-left, bottom-right and centre ``crop``×``crop`` boxes of a height×width image
    (torchvision's ``five_crop`` order). The image must be at least ``crop`` in both sides."""
    if crop > min(height, width):
        raise ValueError(f"a {crop}x{crop} crop does not fit a {height}x{width} image")
    bottom, right = height - crop, width - crop
    centre = Box(int(round(bottom / 2)), int(round(right / 2)), crop, crop)  # torchvision's center_crop rounding
    return [Box(0, 0, crop, crop), Box(0, right, crop, crop), Box(bottom, 0, crop, crop),
            Box(bottom, right, crop, crop), centre]


def ten_crop_boxes(height: int, width: int, crop: int) -> list[tuple[Box, bool]]:
    """The 10 views of AlexNet's test (Table 5): the five crops, then the same five mirrored (``True``)."""
    five = five_crop_boxes(height, width, crop)
    return [(box, False) for box in five] + [(box, True) for box in five]


def dense_windows(height: int, width: int, window: int) -> list[Box]:
    """Every ``window``×``window`` window (stride 1) of a height×width map, row by row: (H−w+1)·(W−w+1) boxes.

    Where the map is smaller than ``window`` in a dimension, the one window there spans the whole dimension.
    """
    rows, cols = min(window, height), min(window, width)
    return [Box(top, left, rows, cols) for top in range(height - rows + 1) for left in range(width - cols + 1)]
