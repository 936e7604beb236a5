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
from functools import partial
from typing import Sequence, Union

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg
from torch import nn

from delving.errors import DelvingError
from delving.nn.activations import make_activation
from delving.nn.pooling import SpatialPyramidPool


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
    ``forward_head``), so dense testing can run the head on windows of the feature map. timm's model interface:
    ``num_features`` (channels of ``forward_features``), ``head_hidden_size`` (width of
    ``forward_head(pre_logits=True)``, fc2's), ``feature_info`` (the last conv of each stage, for
    ``features_only=True``), ``get_classifier``/``reset_classifier`` (the last fc) and ``no_weight_decay`` (the
    PReLU slopes: the paper does not decay them, Sec. 2.1).
    """

    def __init__(self, features: nn.Sequential, pool: nn.Module, head: nn.Sequential, num_classes: int,
                 head_hidden_size: int, feature_info: list[dict] | None = None):
        super().__init__()
        self.features = features
        self.pool = pool
        self.head = head
        self.num_classes = num_classes
        self.feature_info = feature_info or []
        self.num_features = self.feature_info[-1]["num_chs"] if self.feature_info else 0
        self.head_hidden_size = head_hidden_size  # the last fc's input width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """SPP and the fc layers; ``pre_logits``: stop before the last fc (fc2's activations, after dropout)."""
        x = self.pool(x)
        if not pre_logits:
            return self.head(x)
        for layer in list(self.head)[:-1]:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return _fc_of(self.head[-1])

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh last fc with ``num_classes`` outputs (0: none, the head ends at fc2), torch's default init.

        Raises:
            DelvingError: for a ``global_pool``: the pooling is the paper's SPP (Sec. 2.3), not a choice here.
        """
        if global_pool is not None:
            raise DelvingError(f"global_pool={global_pool!r} is not supported; valid: None (the pooling is SPP)")
        self.num_classes = num_classes
        self.head[-1].fc = _classifier(self.head_hidden_size, num_classes)

    def no_weight_decay(self) -> set[str]:
        """Names of the PReLU slopes, which timm's optimizer factory then leaves undecayed (Sec. 2.1: "we do not
        use weight decay (l2 regularization) when updating a_i")."""
        return {f"{name}.{p}" if name else p for name, m in self.named_modules() if isinstance(m, nn.PReLU)
                for p, _ in m.named_parameters(recurse=False)}


def _fc_of(layer: nn.Sequential) -> nn.Module:
    return layer.fc


def _classifier(width: int, num_classes: int) -> nn.Module:
    return nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()


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


def build(table: Sequence[Spec], activation: str = "relu", in_chans: int = 3, num_classes: int = 1000,
          drop_rate: float = 0.0) -> DelvingNet:
    """Build the net a table describes.

    Args:
        table: convs and pools, then one SPP, then the fc layers (the last with width None).
        activation: a name from :data:`delving.nn.activations.ACTIVATIONS`, used after every conv and fc1/fc2.
        in_chans: input image channels.
        num_classes: outputs of the last fc.
        drop_rate: dropout after each hidden fc's activation (the paper: 0.5 on fc1 and fc2).
    """
    convs = [s for s in table if isinstance(s, (Conv, Pool))]
    spp = next(s for s in table if isinstance(s, SPP))
    fcs = [s for s in table if isinstance(s, FC)]
    features, channels, stride, stage_ends = OrderedDict(), in_chans, 1, {}
    for name, spec in zip(_conv_names(convs), convs):
        if isinstance(spec, Conv):
            padding = spec.kernel // 2 if spec.padding is None else spec.padding
            conv = nn.Conv2d(channels, spec.width, spec.kernel, spec.stride, padding, padding_mode=spec.padding_mode)
            features[name] = nn.Sequential(OrderedDict(conv=conv, act=make_activation(activation, spec.width)))
            channels, stride = spec.width, stride * spec.stride
            stage_ends[len([n for n in features if n.startswith("pool")])] = (name, channels, stride)
        else:
            features[name] = nn.MaxPool2d(spec.kernel, spec.stride)
            stride *= spec.stride
    pool = SpatialPyramidPool(spp.levels)
    head, width = OrderedDict(flatten=nn.Flatten()), channels * pool.bins
    for i, spec in enumerate(fcs, start=1):
        last = i == len(fcs)
        hidden = width
        out = num_classes if last else spec.width
        layers = OrderedDict(fc=_classifier(width, out) if last else nn.Linear(width, out))
        if not last:
            layers["act"] = make_activation(activation, out)
            if drop_rate > 0:
                layers["drop"] = nn.Dropout(drop_rate)
        head[f"fc{i}"] = nn.Sequential(layers)
        width = out
    # timm's feature_info: each stage's last conv (a stage closes at a pool), with its total stride.
    info = [dict(num_chs=c, reduction=r, module=f"features.{n}") for n, c, r in stage_ends.values()]
    return DelvingNet(nn.Sequential(features), pool, nn.Sequential(head), num_classes, hidden, info)


def feature_cfg(table: Sequence[Spec]) -> dict:
    """timm's ``feature_cfg`` for ``features_only=True``: every stage by default (a stage closes at a pool), the
    Sequential ``features`` flattened so that timm's FeatureListNet reaches its convs."""
    stages = 1 + sum(isinstance(s, Pool) for s in table)
    return dict(flatten_sequential=True, out_indices=tuple(range(stages)))


def create(variant: str, table: Sequence[Spec], pretrained: bool, kwargs: dict) -> nn.Module:
    """A registered model through timm's ``build_model_with_cfg``: the variant's ``pretrained_cfg`` set on the
    model (``timm.data.resolve_data_config`` reads it), ``features_only``/``out_indices`` handled by timm."""
    if pretrained:
        raise DelvingError(f"{variant} has no pretrained weights; valid: pretrained=False")
    return build_model_with_cfg(partial(build, table), variant, pretrained, feature_cfg=feature_cfg(table), **kwargs)


def default_cfg(input_size: int, min_input_size: int, crop_pct: float, **kwargs) -> dict:
    """A timm ``pretrained_cfg`` (no weights): input sizes, ImageNet's per-channel mean/std (as
    ``delving.data.folder`` normalizes; the paper subtracts a per-pixel mean image), bilinear resizing,
    conv1 as the first conv and the last fc as the classifier."""
    return dict(num_classes=1000, input_size=(3, input_size, input_size),
                min_input_size=(3, min_input_size, min_input_size), crop_pct=crop_pct, interpolation="bilinear",
                mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, first_conv="features.conv1.conv",
                classifier="head.fc3.fc", paper_ids="arXiv:1502.01852", **kwargs)
