"""Plain deep nets of any depth for the init study (Sec. 2.2, Fig. 3), scaled to small inputs, and their residual twin.

The paper's 30-layer model is the 14-layer model of Table 1 with sixteen more conv layers of the stage-3 width
(256 filters, 2×2). Our table keeps that layout at 1/16 of the width and for 16×16 inputs:

    conv1  3×3, 16                      (Table 1: 7×7, 64, /2)
    pool1  2×2, /2                      (Table 1: 3×3, /3)
    conv21..conv24  3×3, 32             (Table 1: 2×2, 128 × 4)
    pool2  2×2, /2
    conv31..  3×3, 64  × (depth - 8)    (Table 1: 2×2, 256 × 6, plus Fig. 3's extra layers; conv3_10 on)
    spp {4}                             (Table 1: {6, 3, 2, 1})
    fc1 128, fc2 128, fc3 classes       (Table 1: 4096, 4096, 1000)

Departures from the paper, chosen for 16×16 digits on a CPU: 3×3 "same" convs instead of 2×2 (the paper does not
give the 2×2 layers' padding, and 2×2 convs shrink small maps), a stride-1 conv1, a single-level SPP (on the 4×4
stage-3 map at 16×16 input it equals flattening it), 1/16 of the widths, and circular padding: on a 4×4 map, zero
padding leaves 31% of each 3×3 window empty, which shrinks Var[y] by ~0.69 per layer whatever the init (the
1/sqrt(2^L) effect of Sec. 2.2 would be buried under it); circular padding keeps every window at n = 9c real
inputs, as the paper's analysis (and its 56×56 maps, nearly) assume. ``padding_mode="zeros"`` restores the usual.
Depth counts conv + fc layers as the paper does, so depth 14 is Table 1's layer count and depth 30 is Fig. 3's
(27 conv + 3 fc); the extra depth goes to stage 3 because the paper adds 256-filter (stage-3) layers. The smallest
depth is 9 (one stage-3 conv).

conv1 nearer Table 1's: ``stem_kernel`` and ``stem_stride`` (default 3 and 1) make conv1 k×k with stride s, padded by
k // 2 (k odd), so its map is ceil(side / s). For 28×28 digits with ``stem_kernel=7, stem_stride=2``: conv1 14×14,
pool1 and stage 2 7×7, pool2 and stage 3 3×3 (max pooling floors 7 / 2). That 3×3 map is smaller than the default
SPP level 4 (adaptive max pooling would repeat pixels), so pair it with ``spp_levels=(3,)`` or ``(3, 2, 1)``, or use
inputs of at least 31 pixels (31 -> 16 -> 8 -> 4); the model's ``pretrained_cfg`` then says so (``min_input_size``).

The residual twin (``shortcut=True``, or the registered ``delving_resplain``): beyond the paper, the same widths,
depth (weight layers counted as above), activation and padding, with ResNet's basic block (He et al. 2016) around each
pair of 3×3 convs of a stage: stage 2's four convs make two blocks, stage 3's ``depth - 8`` make (depth - 8) // 2
(an odd count leaves stage 3's first conv plain: it changes the width, as a projection would). A block that widens
the map adds zero channels on the shortcut (option A). No normalization: SkipInit (De & Smith 2020) scales each
residual branch, see :mod:`delving.nn.residual`. conv1 and the fc layers stay plain. Layer names are the plain net's
(conv1, conv21 ... conv3_22, fc1), so ``slope_profile`` reads both alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Sequence

from timm.models import generate_default_cfgs, register_model

from delving.errors import DelvingError, choices
from delving.models.builder import FC, SPP, Conv, DelvingNet, Pool, Residual, Spec, create, default_cfg

STAGE2_CONVS = 4  # Table 1: conv21..conv24
MIN_DEPTH = 1 + STAGE2_CONVS + 1 + 3  # conv1, stage 2, one stage-3 conv, three fc
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def plain_table(depth: int, widths: Sequence[int] = (16, 32, 64), fc_width: int = 128,
                spp_levels: Sequence[int] = (4,), padding_mode: str = "circular", stem_kernel: int = 3,
                stem_stride: int = 1, shortcut: bool = False) -> list[Spec]:
    """The layer table of a plain net with ``depth`` weight layers (conv + fc), Table 1 / Fig. 3 layout; with
    ``shortcut`` its residual twin (see the module docstring).

    Raises:
        DelvingError: for a value out of range, naming the key, the value and what is valid.
    """
    _check_table_args(depth, widths, fc_width, spp_levels, padding_mode, stem_kernel, stem_stride, shortcut)
    stage3 = depth - 3 - 1 - STAGE2_CONVS

    def stage(width: int, count: int) -> list[Spec]:
        convs = [Conv(3, width, padding_mode=padding_mode) for _ in range(count)]
        if not shortcut:
            return convs
        lead, paired = convs[:count % 2], convs[count % 2:]
        return [*lead, *(Residual(a, b) for a, b in zip(paired[::2], paired[1::2]))]

    return [
        Conv(stem_kernel, widths[0], stride=stem_stride, padding_mode=padding_mode), Pool(2, 2),
        *stage(widths[1], STAGE2_CONVS), Pool(2, 2),
        *stage(widths[2], stage3),
        SPP(tuple(spp_levels)),
        FC(fc_width), FC(fc_width), FC(None),
    ]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_ints(key: str, values, count: int | None, what: str) -> None:
    """A one-line error unless ``values`` is a sequence of positive integers (exactly ``count`` of them if given)."""
    iterable = hasattr(values, "__iter__") and not isinstance(values, (str, bytes, Mapping))
    items = list(values) if iterable else None
    if not items or (count and len(items) != count) or not all(_is_int(v) and v > 0 for v in items):
        raise DelvingError(f"model.kwargs.{key}={values if items is None else items!r} is out of range; valid: "
                           f"{count or 'one or more'} positive integers ({what})")


def _check_table_args(depth, widths, fc_width, spp_levels, padding_mode, stem_kernel, stem_stride, shortcut) -> None:
    if not _is_int(depth) or depth < MIN_DEPTH:
        raise DelvingError(f"model.depth={depth!r} is too small for delving_plain; valid: an integer >= {MIN_DEPTH} "
                           f"(conv1 + {STAGE2_CONVS} stage-2 convs + >= 1 stage-3 conv + 3 fc)")
    _positive_ints("widths", widths, 3, "conv1, stage 2, stage 3")
    _positive_ints("spp_levels", spp_levels, None, "bins per side of each SPP level")
    if not _is_int(fc_width) or fc_width < 1:
        raise DelvingError(f"model.kwargs.fc_width={fc_width!r} is out of range; valid: a positive integer (the "
                           f"width of fc1 and fc2)")
    if padding_mode not in PADDING_MODES:
        raise DelvingError(f"unknown padding_mode {padding_mode!r}; valid: {choices(PADDING_MODES)}")
    if not _is_int(stem_kernel) or stem_kernel < 1 or stem_kernel % 2 == 0:
        raise DelvingError(f"model.kwargs.stem_kernel={stem_kernel!r} is out of range; valid: an odd positive "
                           f"integer (conv1 is k×k, padded by k // 2; Table 1: 7)")
    if not _is_int(stem_stride) or not 1 <= stem_stride <= stem_kernel:
        raise DelvingError(f"model.kwargs.stem_stride={stem_stride!r} is out of range; valid: an integer in "
                           f"[1, stem_kernel={stem_kernel}] (Table 1: 2)")
    if not isinstance(shortcut, bool):
        raise DelvingError(f"model.kwargs.shortcut={shortcut!r} is not valid; valid: true or false")


# timm's pretrained_cfg (no weights): 16×16 inputs, the whole image (digits, Sec. 2.2's study scaled down); the
# last conv map is 1/4 of the input, so 16 is the smallest input for the default SPP level 4. The digits data
# normalizes itself (per-pixel mean, global std); mean/std are ImageNet's for 3-channel photos.
default_cfgs = generate_default_cfgs({
    "delving_plain": default_cfg(plain_table(30), 16, 16, 1.0),
    "delving_resplain": default_cfg(plain_table(30, shortcut=True), 16, 16, 1.0),
})


def _create(variant: str, depth: int, widths, fc_width: int, spp_levels, padding_mode: str, stem_kernel: int,
            stem_stride: int, shortcut: bool, pretrained: bool, kwargs: dict) -> DelvingNet:
    table = plain_table(depth, widths, fc_width, spp_levels, padding_mode, stem_kernel, stem_stride, shortcut)
    return create(variant, table, pretrained, kwargs)


@register_model
def delving_plain(pretrained: bool = False, depth: int = 30, widths=(16, 32, 64), fc_width: int = 128,
                  spp_levels=(4,), padding_mode: str = "circular", stem_kernel: int = 3, stem_stride: int = 1,
                  shortcut: bool = False, **kwargs) -> DelvingNet:
    """Plain net of ``depth`` weight layers (Table 1 / Fig. 3 layout, scaled down); see the module docstring.

    ``stem_kernel``/``stem_stride``: conv1's size and stride (Table 1: 7 and 2). ``shortcut``: the residual twin.
    Other keyword arguments (``activation``, ``in_chans``, ``num_classes``, ``drop_rate``, ``global_pool``) go to the
    builder.
    """
    return _create("delving_plain", depth, widths, fc_width, spp_levels, padding_mode, stem_kernel, stem_stride,
                   shortcut, pretrained, kwargs)


@register_model
def delving_resplain(pretrained: bool = False, depth: int = 30, widths=(16, 32, 64), fc_width: int = 128,
                     spp_levels=(4,), padding_mode: str = "circular", stem_kernel: int = 3, stem_stride: int = 1,
                     **kwargs) -> DelvingNet:
    """Beyond the paper: ``delving_plain`` with ResNet's basic block around each pair of a stage's convs (He et al.
    2016), no normalization, SkipInit on each branch (De & Smith 2020); ``delving_plain(shortcut=True)``."""
    return _create("delving_resplain", depth, widths, fc_width, spp_levels, padding_mode, stem_kernel, stem_stride,
                   True, pretrained, kwargs)
