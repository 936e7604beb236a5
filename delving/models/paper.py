"""The paper's architectures as tables: models A, B, C (Table 3), the 14-layer model (Table 1) and the 30-layer
model (Fig. 3), each a timm entrypoint (``timm.create_model("delving_model_a", activation="prelu")``).

Choices where the paper is silent (stated here and in the README):

- Table 3: "same" padding for every conv (the maps are 112/56/28/14, which needs it) and for conv1 (3 pixels).
- Table 1: conv1 7×7/2 padded by 3 (224 -> 112); pool1 3×3/3 (-> 37); conv21 unpadded (37 -> 36) and the other
  2×2 convs "same" (torch pads one pixel bottom/right), which gives the "dominantly 36×36" stage-2 map and the 18×18
  stage-3 map that He & Sun's Table 1 caption describes; pool2 2×2/2.
- Fig. 3: the sixteen extra 2×2, 256 convs go at the end of stage 3 (they have stage 3's width; the paper does not
  say where), making conv31 .. conv3_22.
- Dropout 0.5 on fc1 and fc2 for every model (Sec. 3 states it for Table 3; the 14-layer model follows [10], NS).
"""

from __future__ import annotations

from typing import NamedTuple

from timm.models import generate_default_cfgs, register_model

from delving.models.builder import FC, SPP, Conv, DelvingNet, Pool, Spec, create, default_cfg


def _stage(count: int, width: int, kernel: int = 3, padding=None) -> list[Conv]:
    return [Conv(kernel, width, padding=padding) for _ in range(count)]


def table_3(convs_per_stage: int, widths: tuple[int, int, int]) -> list[Spec]:
    """Models A/B/C (Table 3): 7×7/2 conv, 2×2 pool, three 3×3 stages at 56/28/14, SPP {7, 3, 2, 1}, fc 4096 ×2."""
    w56, w28, w14 = widths
    return [
        Conv(7, 96, stride=2), Pool(2, 2),
        *_stage(convs_per_stage, w56), Pool(2, 2),
        *_stage(convs_per_stage, w28), Pool(2, 2),
        *_stage(convs_per_stage, w14),
        SPP((7, 3, 2, 1)),
        FC(4096), FC(4096), FC(None),
    ]


def table_1(extra_stage3: int = 0) -> list[Spec]:
    """The 14-layer model (Table 1); ``extra_stage3=16`` gives Fig. 3's 30-layer model."""
    return [
        Conv(7, 64, stride=2), Pool(3, 3),
        Conv(2, 128, padding=0), *_stage(3, 128, kernel=2, padding="same"), Pool(2, 2),
        *_stage(6 + extra_stage3, 256, kernel=2, padding="same"),
        SPP((6, 3, 2, 1)),
        FC(4096), FC(4096), FC(None),
    ]


class PaperModel(NamedTuple):
    """A model of the paper: its layer table, its depth in conv + fc layers, Table 3's complexity in multiply-adds
    (None where the paper gives none). Input sizes live in the timm ``pretrained_cfg`` (``default_cfgs``)."""

    table: list[Spec]
    depth: int
    mult_adds: float | None


PAPER_MODELS: dict[str, PaperModel] = {
    "delving_model_a": PaperModel(table_3(5, (256, 512, 512)), 19, 1.90e10),
    "delving_model_b": PaperModel(table_3(6, (256, 512, 512)), 22, 2.32e10),
    "delving_model_c": PaperModel(table_3(6, (384, 768, 896)), 22, 5.30e10),
    "delving_small14": PaperModel(table_1(), 14, None),
    "delving_small30": PaperModel(table_1(16), 30, None),
}

# timm's pretrained_cfg of each (no weights): the paper trains on 224×224 crops and tests single-view on the center
# 224 of the image resized to 256 (crop_pct 0.875, Sec. 3); min_input_size is a round input whose last conv map is
# at least as large as the largest SPP level (7 for Table 3: 112; 6 for Table 1: 80).
# pool_size, timm's size of the unpooled feature map at input_size, follows from each table: 14 for Table 3 (224 / 16),
# 18 for Table 1 ([10]'s stage 3).
default_cfgs = generate_default_cfgs({
    name: default_cfg(PAPER_MODELS[name].table, 224, 80 if name.startswith("delving_small") else 112, 0.875)
    for name in PAPER_MODELS
})


def _create(name: str, pretrained: bool, kwargs: dict) -> DelvingNet:
    kwargs.setdefault("drop_rate", 0.5)
    return create(name, PAPER_MODELS[name].table, pretrained, kwargs)


@register_model
def delving_model_a(pretrained: bool = False, **kwargs) -> DelvingNet:
    """Model A (Table 3, 19 layers): VGG-19 with a 7×7/2 conv1, the 224/112 convs moved down, SPP before fc1."""
    return _create("delving_model_a", pretrained, kwargs)


@register_model
def delving_model_b(pretrained: bool = False, **kwargs) -> DelvingNet:
    """Model B (Table 3, 22 layers): model A plus one 3×3 conv in each of the three stages."""
    return _create("delving_model_b", pretrained, kwargs)


@register_model
def delving_model_c(pretrained: bool = False, **kwargs) -> DelvingNet:
    """Model C (Table 3, 22 layers): model B with widths 384 / 768 / 896."""
    return _create("delving_model_c", pretrained, kwargs)


@register_model
def delving_small14(pretrained: bool = False, **kwargs) -> DelvingNet:
    """The 14-layer model of Table 1 (model E of He & Sun), whose learned slopes Table 1 lists."""
    return _create("delving_small14", pretrained, kwargs)


@register_model
def delving_small30(pretrained: bool = False, **kwargs) -> DelvingNet:
    """The 30-layer model of Fig. 3: Table 1 plus sixteen 2×2, 256 convs at the end of stage 3."""
    return _create("delving_small30", pretrained, kwargs)
