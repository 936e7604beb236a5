"""Spatial pyramid pooling (SPP-net), used before fc1 in Sec. 2.3."""

from __future__ import annotations

import torch
from torch import nn


class SpatialPyramidPool(nn.Module):
    """Spatial pyramid pooling (SPP-net, used before fc1 in Sec. 2.3): max-pool the map into n×n bins per level.

    Output length is ``channels * sum(n * n for n in levels)`` whatever the input's spatial size, so the fc layers
    accept any image size. torch's adaptive max pool computes the bins; where a level divides the map exactly it
    equals an ordinary max pool.
    """

    def __init__(self, levels: tuple[int, ...]):
        super().__init__()
        self.levels = tuple(levels)
        self.pools = nn.ModuleList(nn.AdaptiveMaxPool2d(n) for n in self.levels)

    @property
    def bins(self) -> int:
        return sum(n * n for n in self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, C * bins)
        return torch.cat([pool(x).flatten(1) for pool in self.pools], dim=1)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"
