"""One builder for every architecture: a table of layer specs in the paper's vocabulary -> an ``nn.Module``.

A table reads like the paper's Tables 1 and 3: ``Conv(k, width, stride)``, ``Pool(k, stride)``, ``SPP(levels)``,
``FC(width)``. Stages are counted by the pools, so the builder names layers as the paper does (conv1, pool1,
conv2_1 ... fc1, fc2, fc3) and ``slope_profile`` can report them in those terms. Every conv and every fc but the
last is followed by the activation named at build time (Sec. 2.1: "fc3 feeds the softmax").
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence, Union

import torch
from torch import nn

from delving.errors import DelvingError
from delving.layers import SpatialPyramidPool, make_activation


@dataclass(frozen=True)
class Conv:
    """A k×k convolution with ``width`` filters.

    ``padding`` None means k // 2 (the "same" size for odd k, the paper's implied choice for Table 3); ``"same"``
    keeps the size for even k too (torch pads one more on the bottom/right); an int is explicit.
    ``padding_mode`` is torch's (zeros, reflect, replicate, circular).
    """

    kernel: int
    width: int
    stride: int = 1
    padding: int | str | None = None
    padding_mode: str = "zeros"
@dataclass(frozen=True)
class Pool:
    """A k×k max pool with the given stride; it closes a stage."""

    kernel: int
    stride: int


@dataclass(frozen=True)
class SPP:
    """Spatial pyramid pooling with n×n bins per level, between the convs and fc1."""

    levels: tuple[int, ...]


@dataclass(frozen=True)
class FC:
    """A fully connected layer; width None means the number of classes (the last fc)."""

    width: int | None = None


Spec = Union[Conv, Pool, SPP, FC]

# torch warns on every forward of an even-kernel padding="same" conv (Table 1's 2×2 convs) that it pads a copy;
# that copy is the intended asymmetric padding.
warnings.filterwarnings("ignore", message="Using padding='same' with even kernel", category=UserWarning)


class DelvingNet(nn.Module):
    """A plain (no batch norm, no shortcut) rectifier net: ``features`` -> ``pool`` (SPP) -> ``head`` (fc layers).

    The feature extractor and the classifier are separate modules, as timm does (``forward_features``,
    ``forward_head``), so dense testing can run the head on windows of the feature map.
    """

    def __init__(self, features: nn.Sequential, pool: nn.Module, head: nn.Sequential, num_classes: int,
                 num_features: int):
        super().__init__()
        self.features = features
        self.pool = pool
        self.head = head
        self.num_classes = num_classes
        self.num_features = num_features  # length of the pooled vector that enters fc1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _conv_names(table: Sequence[Spec]) -> list[str]:
    """The paper's names: conv{stage}{i} (conv21, conv22 ...), or conv{stage} where a stage has one conv, and
    conv{stage}_{i} where a stage has ten or more (conv3_10 is not conv31 + 0); pools are pool{stage}."""
    stage_sizes, size = [], 0
    for spec in table:
        if isinstance(spec, Conv):
            size += 1
        elif isinstance(spec, Pool):
            stage_sizes.append(size)
            size = 0
    stage_sizes.append(size)
    names, stage, index = [], 1, 0
    for spec in table:
        if isinstance(spec, Conv):
            index += 1
            count = stage_sizes[stage - 1]
            names.append(f"conv{stage}" if count == 1 else f"conv{stage}{'_' if count >= 10 else ''}{index}")
        elif isinstance(spec, Pool):
            names.append(f"pool{stage}")
            stage, index = stage + 1, 0
    return names


# What timm's create_model passes about pretrained weights; none of these nets has published weights.
TIMM_WEIGHT_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def entrypoint_kwargs(name: str, pretrained: bool, kwargs: dict) -> dict:
    """The builder's share of a timm entrypoint's arguments: refuse ``pretrained``, drop timm's weight settings."""
    if pretrained:
        raise DelvingError(f"{name} has no pretrained weights; valid: pretrained=False")
    return {key: value for key, value in kwargs.items() if key not in TIMM_WEIGHT_KWARGS}


def build(table: Sequence[Spec], activation: str = "relu", in_chans: int = 3, num_classes: int = 1000,
          drop_rate: float = 0.0) -> DelvingNet:
    """Build the net a table describes.

    Args:
        table: convs and pools, then one SPP, then the fc layers (the last with width None).
        activation: a name from :data:`delving.layers.ACTIVATIONS`, used after every conv and fc1/fc2.
        in_chans: input image channels.
        num_classes: outputs of the last fc.
        drop_rate: dropout after each hidden fc's activation (the paper: 0.5 on fc1 and fc2).
    """
    convs = [s for s in table if isinstance(s, (Conv, Pool))]
    spp = next(s for s in table if isinstance(s, SPP))
    fcs = [s for s in table if isinstance(s, FC)]
    features, channels = OrderedDict(), in_chans
    for name, spec in zip(_conv_names(convs), convs):
        if isinstance(spec, Conv):
            padding = spec.kernel // 2 if spec.padding is None else spec.padding
            conv = nn.Conv2d(channels, spec.width, spec.kernel, spec.stride, padding, padding_mode=spec.padding_mode)
            features[name] = nn.Sequential(OrderedDict(conv=conv, act=make_activation(activation, spec.width)))
            channels = spec.width
        else:
            features[name] = nn.MaxPool2d(spec.kernel, spec.stride)
    pool = SpatialPyramidPool(spp.levels)
    head, width = OrderedDict(flatten=nn.Flatten()), channels * pool.bins
    for i, spec in enumerate(fcs, start=1):
        out = spec.width or num_classes
        layers = OrderedDict(fc=nn.Linear(width, out))
        if i < len(fcs):
            layers["act"] = make_activation(activation, out)
            if drop_rate > 0:
                layers["drop"] = nn.Dropout(drop_rate)
        head[f"fc{i}"] = nn.Sequential(layers)
        width = out
    return DelvingNet(nn.Sequential(features), pool, nn.Sequential(head), num_classes, channels * pool.bins)
