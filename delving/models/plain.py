"""Plain deep nets of any depth for the init study (Sec. 2.2, Fig. 3), scaled to small inputs.

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
"""

from __future__ import annotations

from timm.models import generate_default_cfgs, register_model

from delving.errors import DelvingError, choices
from delving.models.builder import FC, SPP, Conv, DelvingNet, Pool, Spec, create, default_cfg

STAGE2_CONVS = 4  # Table 1: conv21..conv24
MIN_DEPTH = 1 + STAGE2_CONVS + 1 + 3  # conv1, stage 2, one stage-3 conv, three fc
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def plain_table(depth: int, widths: tuple[int, int, int] = (16, 32, 64), fc_width: int = 128,
                spp_levels: tuple[int, ...] = (4,), padding_mode: str = "circular") -> list[Spec]:
    """The layer table of a plain net with ``depth`` weight layers (conv + fc), Table 1 / Fig. 3 layout."""
    if not isinstance(depth, int) or depth < MIN_DEPTH:
        raise DelvingError(f"model.depth={depth!r} is too small for delving_plain; valid: an integer >= {MIN_DEPTH} "
                           f"(conv1 + {STAGE2_CONVS} stage-2 convs + >= 1 stage-3 conv + 3 fc)")
    if padding_mode not in PADDING_MODES:
        raise DelvingError(f"unknown padding_mode {padding_mode!r}; valid: {choices(PADDING_MODES)}")
    stage3 = depth - 3 - 1 - STAGE2_CONVS

    def conv(width: int) -> Conv:
        return Conv(3, width, padding_mode=padding_mode)

    return [
        conv(widths[0]), Pool(2, 2),
        *[conv(widths[1]) for _ in range(STAGE2_CONVS)], Pool(2, 2),
        *[conv(widths[2]) for _ in range(stage3)],
        SPP(tuple(spp_levels)),
        FC(fc_width), FC(fc_width), FC(None),
    ]


# timm's pretrained_cfg (no weights): 16×16 inputs, the whole image (digits, Sec. 2.2's study scaled down); the
# last conv map is 1/4 of the input, so 16 is the smallest input for the default SPP level 4. The digits data
# normalizes itself (per-pixel mean, global std); mean/std are ImageNet's for 3-channel photos.
default_cfgs = generate_default_cfgs({"delving_plain": default_cfg(16, 16, 1.0)})


@register_model
def delving_plain(pretrained: bool = False, depth: int = 30, widths=(16, 32, 64), fc_width: int = 128,
                  spp_levels=(4,), padding_mode: str = "circular", **kwargs) -> DelvingNet:
    """Plain net of ``depth`` weight layers (Table 1 / Fig. 3 layout, scaled down); see the module docstring.

    Other keyword arguments (``activation``, ``in_chans``, ``num_classes``, ``drop_rate``) go to the builder.
    """
    table = plain_table(depth, tuple(widths), fc_width, tuple(spp_levels), padding_mode)
    return create("delving_plain", table, pretrained, kwargs)
