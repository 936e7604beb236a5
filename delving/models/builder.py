"""One builder for every architecture: a table of layer specs in the paper's vocabulary -> an ``nn.Module``.

A table reads like the paper's Tables 1 and 3: ``Conv(k, width, stride)``, ``Pool(k, stride)``, ``SPP(levels)``,
``FC(width)``, and beyond the paper ``Residual(Conv, Conv)``, two convs with an identity shortcut around them (ResNet's
basic block, He et al. 2016). Stages are counted by the pools, so the builder names layers as the paper does (conv1,
pool1, conv21 ... fc1, fc2, fc3) and ``slope_profile`` can report them in those terms; a residual block's two convs
keep the names they have in the plain net. Every conv and every fc but the last is followed by the activation named
at build time (Sec. 2.1: "fc3 feeds the softmax").
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Sequence, Union

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, get_pretrained_cfg
from torch import nn

from delving.errors import DelvingError
from delving.nn.activations import make_activation
from delving.nn.pooling import SpatialPyramidPool
from delving.nn.residual import BlockEnd, BlockStart, skipinit_alpha


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
class Residual:
    """Beyond the paper: ResNet's basic block (He et al. 2016), ``first`` and ``second`` with an identity shortcut
    around them and the activation after the sum; SkipInit scales the branch (see :mod:`delving.nn.residual`).
    Both convs keep the map's size (stride 1), and the block may only widen it (option A's zero channels)."""

    first: Conv
    second: Conv


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


Spec = Union[Conv, Residual, Pool, SPP, FC]
Unit = tuple[Union[Conv, Pool], Union[str, None]]  # a conv or pool of the feature extractor, and its block role
# timm's global_pool for delving's nets: "spp" (the paper's pyramid, Sec. 2.3, then fc1 .. fc3) or "" (no pooling and
# no fc layers, which read SPP's bins: the forward ends at the last conv map, as timm's "" means for its nets).
GLOBAL_POOLS = ("spp", "")

# torch warns on every forward of an even-kernel padding="same" conv (Table 1's 2×2 convs) that it pads a copy;
# that copy is the intended asymmetric padding.
warnings.filterwarnings("ignore", message="Using padding='same' with even kernel", category=UserWarning)


@dataclass(frozen=True)
class Head:
    """What comes after the convs: SPP with ``levels`` on a ``channels``-channel map, then the fc layers (the last
    one's width None: the classes), each hidden one with the activation and dropout ``drop_rate``."""

    channels: int
    levels: tuple[int, ...]
    widths: tuple[int | None, ...]
    activation: str
    drop_rate: float = 0.0

    def build(self, num_classes: int) -> tuple[nn.Module, nn.Sequential, int]:
        """(SPP, the fc layers, the last fc's input width) for ``num_classes`` outputs (0: no last fc)."""
        pool = SpatialPyramidPool(self.levels)
        head, width, hidden = OrderedDict(flatten=nn.Flatten()), self.channels * pool.bins, 0
        for i, spec in enumerate(self.widths, start=1):
            last = i == len(self.widths)
            hidden, out = width, num_classes if last else spec
            layers = OrderedDict(fc=_classifier(width, out) if last else nn.Linear(width, out))
            if not last:
                layers["act"] = make_activation(self.activation, out)
                if self.drop_rate > 0:
                    layers["drop"] = nn.Dropout(self.drop_rate)
            head[f"fc{i}"] = nn.Sequential(layers)
            width = out
        return pool, nn.Sequential(head), hidden


class DelvingNet(nn.Module):
    """A rectifier net without normalization: ``features`` -> ``pool`` (SPP) -> ``head`` (fc layers); plain (no
    shortcut) unless its table has :class:`Residual` blocks.

    The feature extractor and the classifier are separate modules, as timm does (``forward_features``,
    ``forward_head``), so dense testing can run the head on windows of the feature map. timm's model interface:
    ``in_chans``, ``num_features`` (channels of ``forward_features``), ``head_hidden_size`` (width of
    ``forward_head(pre_logits=True)``, fc2's), ``feature_info`` (the last conv of each stage, for
    ``features_only=True``), ``global_pool`` (:data:`GLOBAL_POOLS`), ``get_classifier``/``reset_classifier`` (the
    last fc) and ``no_weight_decay`` (the PReLU slopes: the paper does not decay them, Sec. 2.1).
    """

    def __init__(self, features: nn.Sequential, head: Head, num_classes: int, in_chans: int,
                 feature_info: list[dict], global_pool: str = "spp"):
        super().__init__()
        self.features = features
        self.in_chans = in_chans
        self.feature_info = feature_info
        self.num_features = feature_info[-1]["num_chs"]
        self.head_spec = head
        self._set_head(num_classes, _check_pool(global_pool, num_classes))

    def _set_head(self, num_classes: int, global_pool: str) -> None:
        """SPP and fresh fc layers (torch's default init), or with ``global_pool=""`` neither."""
        if global_pool:
            self.pool, self.head, self.head_hidden_size = self.head_spec.build(num_classes)
        else:
            self.pool, self.head, self.head_hidden_size = nn.Identity(), nn.Identity(), self.num_features
        self.num_classes, self.global_pool = num_classes, global_pool

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """SPP and the fc layers; ``pre_logits``: stop before the last fc (fc2's activations, after dropout)."""
        x = self.pool(x)
        if not pre_logits or not self.global_pool:
            return self.head(x)
        for layer in list(self.head)[:-1]:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head[-1].fc if self.global_pool else nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh last fc with ``num_classes`` outputs (0: none, the head ends at fc2), torch's default init, on the
        model's device and dtype.

        ``global_pool``: None keeps the pooling, except that classes on a net without pooling bring SPP and fc1/fc2
        back (fresh ones: the classifier reads SPP's bins through them); ``"spp"`` keeps or brings back SPP; ``""``
        removes SPP and every fc, so the forward ends at the last conv map (``num_classes`` must be 0).

        Raises:
            DelvingError: for another ``global_pool`` (the pooling is the paper's SPP, Sec. 2.3), or ``""`` with
                classes.
        """
        if global_pool is None:
            global_pool = "spp" if num_classes else self.global_pool
        _check_pool(global_pool, num_classes)
        reference = next(self.features.parameters())
        with torch.device(reference.device):
            if global_pool == self.global_pool == "spp":
                self.head[-1].fc = _classifier(self.head_hidden_size, num_classes)
                self.num_classes = num_classes
            else:
                self._set_head(num_classes, global_pool)
        for module in (self.pool, self.head):
            module.to(reference.dtype).train(self.training)

    def no_weight_decay(self) -> set[str]:
        """Names of the PReLU slopes, which timm's optimizer factory then leaves undecayed (Sec. 2.1: "we do not
        use weight decay (l2 regularization) when updating a_i")."""
        return {f"{name}.{p}" if name else p for name, m in self.named_modules() if isinstance(m, nn.PReLU)
                for p, _ in m.named_parameters(recurse=False)}


def _check_pool(global_pool: str, num_classes: int) -> str:
    if global_pool not in GLOBAL_POOLS:
        raise DelvingError(f"global_pool={global_pool!r} is not supported; valid: None, 'spp' (the paper's pyramid) "
                           f"or '' (none, with num_classes=0)")
    if not global_pool and num_classes:
        raise DelvingError(f"global_pool='' takes num_classes=0 (the fc layers read SPP's bins), got "
                           f"num_classes={num_classes}")
    return global_pool


def _classifier(width: int, num_classes: int) -> nn.Module:
    return nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()


def _units(table: Sequence[Spec]) -> list[Unit]:
    """The convs and pools in order, each with its role in a residual block: "start", "end" or None (plain)."""
    units: list[Unit] = []
    for spec in table:
        if isinstance(spec, Residual):
            units += [(spec.first, "start"), (spec.second, "end")]
        elif isinstance(spec, (Conv, Pool)):
            units.append((spec, None))
    return units


def _conv_names(units: Sequence[Unit]) -> list[str]:
    """The paper's names: conv{stage}{i} (conv21, conv22 ...), or conv{stage} where a stage has one conv, and
    conv{stage}_{i} where a stage has ten or more (conv3_10 is not conv31 + 0); pools are pool{stage}."""
    stage_sizes, size = [], 0
    for spec, _ in units:
        if isinstance(spec, Conv):
            size += 1
        else:
            stage_sizes.append(size)
            size = 0
    stage_sizes.append(size)
    names, stage, index = [], 1, 0
    for spec, _ in units:
        if isinstance(spec, Conv):
            index += 1
            count = stage_sizes[stage - 1]
            names.append(f"conv{stage}" if count == 1 else f"conv{stage}{'_' if count >= 10 else ''}{index}")
        else:
            names.append(f"pool{stage}")
            stage, index = stage + 1, 0
    return names


def _padding(spec: Conv) -> int | str:
    return spec.kernel // 2 if spec.padding is None else spec.padding


def _keeps_size(spec: Conv) -> bool:
    return spec.stride == 1 and (spec.padding == "same" or 2 * _padding(spec) == spec.kernel - 1)


def _features(table: Sequence[Spec], activation: str, in_chans: int) -> tuple[nn.Sequential, int, list[dict]]:
    """The convs and pools as one Sequential, its output channels, and timm's ``feature_info``."""
    units = _units(table)
    alpha = skipinit_alpha(sum(isinstance(s, Residual) for s in table))
    features, channels, stride, stage, stage_ends, block_in = OrderedDict(), in_chans, 1, 0, {}, in_chans
    for name, (spec, role) in zip(_conv_names(units), units):
        if isinstance(spec, Pool):
            features[name] = nn.MaxPool2d(spec.kernel, spec.stride)
            stride, stage = stride * spec.stride, stage + 1
            continue
        if (role and not _keeps_size(spec)) or (role == "end" and spec.width < block_in):
            raise DelvingError(f"a residual block needs stride-1 convs that keep the map's size and do not narrow it, "
                               f"got {name}: {spec}")
        conv = nn.Conv2d(channels, spec.width, spec.kernel, spec.stride, _padding(spec),
                         padding_mode=spec.padding_mode)
        act = make_activation(activation, spec.width)
        block_in = channels if role == "start" else block_in
        features[name] = (BlockStart(conv, act) if role == "start" else BlockEnd(conv, act, alpha, block_in)
                          if role == "end" else nn.Sequential(OrderedDict(conv=conv, act=act)))
        channels, stride = spec.width, stride * spec.stride
        stage_ends[stage] = (name, channels, stride)
    # timm's feature_info: each stage's last conv (a stage closes at a pool), with its total stride.
    info = [dict(num_chs=c, reduction=r, module=f"features.{n}") for n, c, r in stage_ends.values()]
    return nn.Sequential(features), channels, info


def build(table: Sequence[Spec], activation: str = "relu", in_chans: int = 3, num_classes: int = 1000,
          drop_rate: float = 0.0, global_pool: str = "spp", device: torch.device | str | None = None,
          dtype: torch.dtype | None = None) -> DelvingNet:
    """Build the net a table describes.

    Args:
        table: convs, residual blocks and pools, then one SPP, then the fc layers (the last with width None).
        activation: a name from :data:`delving.nn.activations.ACTIVATIONS`, used after every conv and fc1/fc2.
        in_chans: input image channels.
        num_classes: outputs of the last fc.
        drop_rate: dropout after each hidden fc's activation (the paper: 0.5 on fc1 and fc2).
        global_pool: ``"spp"``, or ``""`` for a net that ends at its last conv map (``num_classes=0``).
        device, dtype: where and in which type the parameters are made (timm's factory arguments).
    """
    with torch.device(device) if device is not None else nullcontext():
        features, channels, info = _features(table, activation, in_chans)
        spp = next(s for s in table if isinstance(s, SPP))
        widths = tuple(s.width for s in table if isinstance(s, FC))
        net = DelvingNet(features, Head(channels, tuple(spp.levels), widths, activation, drop_rate), num_classes,
                         in_chans, info, global_pool)
    return net.to(dtype) if dtype is not None else net


def map_side(table: Sequence[Spec], side: int) -> int:
    """The side of the last conv map (``forward_features``) for a square input of ``side`` pixels, by torch's output
    size of each conv and max pool."""
    for spec, _ in _units(table):
        if isinstance(spec, Pool):
            side = (side - spec.kernel) // spec.stride + 1
        elif spec.padding != "same":
            side = (side + 2 * _padding(spec) - spec.kernel) // spec.stride + 1
    return side


def largest_level(table: Sequence[Spec]) -> int:
    return max(next(s for s in table if isinstance(s, SPP)).levels)


def min_side(table: Sequence[Spec]) -> int:
    """The smallest input side whose last conv map is at least as large as the largest SPP level."""
    side, level = 1, largest_level(table)
    while map_side(table, side) < level:  # the map grows with the input, so this ends
        side += 1
    return side


def feature_cfg(table: Sequence[Spec]) -> dict:
    """timm's ``feature_cfg`` for ``features_only=True``: every stage by default (a stage closes at a pool), the
    Sequential ``features`` flattened so that timm's FeatureListNet reaches its convs."""
    stages = 1 + sum(isinstance(s, Pool) for s in table)
    return dict(flatten_sequential=True, out_indices=tuple(range(stages)))


def sizes_cfg(table: Sequence[Spec], input_size: int, min_input_size: int, chans: int = 3) -> dict:
    """The size entries of a timm ``pretrained_cfg`` that hold for this table: ``min_input_size`` as given where its
    map reaches the largest SPP level, else the smallest side that does; ``input_size`` at least that; ``pool_size``
    the map ``forward_features`` returns at ``input_size`` (timm's meaning: the unpooled features' size)."""
    if map_side(table, min_input_size) < largest_level(table):
        min_input_size = min_side(table)
    input_size = max(input_size, min_input_size)
    return dict(input_size=(chans, input_size, input_size), min_input_size=(chans, min_input_size, min_input_size),
                pool_size=(map_side(table, input_size),) * 2)


def create(variant: str, table: Sequence[Spec], pretrained: bool, kwargs: dict) -> nn.Module:
    """A registered model through timm's ``build_model_with_cfg``: the variant's ``pretrained_cfg`` set on the
    model (``timm.data.resolve_data_config`` reads it), its sizes made true for the table actually built (a stride-2
    conv1 needs larger inputs), ``features_only``/``out_indices`` handled by timm."""
    if pretrained:
        raise DelvingError(f"{variant} has no pretrained weights; valid: pretrained=False")
    registered = get_pretrained_cfg(variant)
    overlay = sizes_cfg(table, registered.input_size[-1], registered.min_input_size[-1], registered.input_size[0])
    overlay.update(kwargs.pop("pretrained_cfg_overlay", None) or {})
    return build_model_with_cfg(partial(build, table), variant, pretrained, feature_cfg=feature_cfg(table),
                                pretrained_cfg_overlay=overlay, **kwargs)


def default_cfg(table: Sequence[Spec], input_size: int, min_input_size: int, crop_pct: float, **kwargs) -> dict:
    """A timm ``pretrained_cfg`` (no weights): input sizes and the feature map's (:func:`sizes_cfg`), ImageNet's
    per-channel mean/std (as ``delving.data.folder`` normalizes; the paper subtracts a per-pixel mean image),
    bilinear resizing, conv1 as the first conv and the last fc as the classifier."""
    return dict(num_classes=1000, **sizes_cfg(table, input_size, min_input_size), crop_pct=crop_pct,
                interpolation="bilinear", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv="features.conv1.conv", classifier="head.fc3.fc", paper_ids="arXiv:1502.01852", **kwargs)
