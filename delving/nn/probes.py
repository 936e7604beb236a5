"""Reading a network the way the paper does: learned PReLU slopes by layer (Table 1) and the forward/backward
signal std by depth (Sec. 2.2, Eq. 7-14); and beyond it, the correlation between the responses to different inputs
by depth, beside the C-map theory (:mod:`delving.nn.correlation`). Plain torch: usable on any model, with or
without Lightning.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from delving.nn.conv_kernel import dual_gram, gram_cosine, layer_gram, mean_off_diagonal, response_gram
from delving.nn.correlation import cmap, slopes_of
from delving.nn.init import WEIGHT_LAYERS, weight_layers
from delving.nn.pooling import SpatialPyramidPool

_CONTAINERS = ("features.", "head.")
# Where the C-map algebra stops: the iterate restarts after these (max pooling, SPP, any adaptive pooling).
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d, SpatialPyramidPool)
_LEAVES = (".conv", ".fc", ".act")


def layer_label(module_name: str) -> str:
    """The paper's name of the layer a module belongs to: ``features.conv32.act`` -> ``conv32``."""
    for prefix in _CONTAINERS:
        if module_name.startswith(prefix):
            module_name = module_name[len(prefix):]
    for suffix in _LEAVES:
        if module_name.endswith(suffix):
            module_name = module_name[: -len(suffix)]
    return module_name


@dataclass(frozen=True)
class SlopeRecord:
    """The learned slope(s) a_i of one PReLU layer (Eq. 1)."""

    layer: str            # the paper's layer name, e.g. conv21 or fc1
    module: str           # the full module path
    values: torch.Tensor  # one slope per channel (channel-wise) or a single one (channel-shared)

    @property
    def shared(self) -> bool:
        return self.values.numel() == 1

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def std(self) -> float:
        return float(self.values.std()) if self.values.numel() > 1 else 0.0


def slope_profile(model: nn.Module) -> list[SlopeRecord]:
    """Every PReLU layer's slopes, in network order, with the layer's name (Table 1's columns)."""
    return [SlopeRecord(layer_label(name), name, module.weight.detach().float().cpu().clone())
            for name, module in model.named_modules() if isinstance(module, nn.PReLU)]


@dataclass(frozen=True)
class LayerSignal:
    """Std of one weight layer's response y_l (forward) and of dE/dy_l (backward), Sec. 2.2's Var[y_l], Var[Δy_l]."""

    layer: str
    index: int            # 1-based depth of the weight layer (l in the paper)
    forward_std: float
    backward_std: float


def variance_profile(model: nn.Module, x: torch.Tensor, *, seed: int = 0) -> list[LayerSignal]:
    """Per weight layer, the std of its response y_l and of the gradient reaching it, at the current weights.

    The backward pass starts from a standard Gaussian gradient at the output (a stand-in for dE/dy_L that does
    not depend on the labels), and the gradients are taken with respect to each response directly, so the
    model's parameter ``.grad`` fields are left untouched. Dropout is switched off for the measurement.

    With ReLU and the paper's "Xavier" init (std sqrt(1/n)), the forward std shrinks by 1/sqrt(2) per layer, so
    by 1/sqrt(2^L) over L layers; with He init (Eq. 10) it stays of the same order (Sec. 2.2).
    """
    with _weight_layer_responses(model) as responses, torch.enable_grad():
        out = model(x)
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out)
        grads = torch.autograd.grad(out, [y for _, y in responses], grad_outputs=grad_out, allow_unused=True)
    return [LayerSignal(layer_label(name), index, float(y.detach().std()), _std(g))
            for index, ((name, y), g) in enumerate(zip(responses, grads), start=1)]


@contextmanager
def _weight_layer_responses(model: nn.Module) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """(name, output) of every Conv2d/Linear in the order the forward passes inside the block call them, with the
    model in eval mode (no dropout); hooks removed and the mode restored on leaving."""
    responses: list[tuple[str, torch.Tensor]] = []
    hooks = [module.register_forward_hook(lambda m, i, out, name=name: responses.append((name, out)))
             for name, module in model.named_modules() if isinstance(module, WEIGHT_LAYERS)]
    was_training = model.training
    model.eval()
    try:
        yield responses
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)


def _std(tensor: torch.Tensor | None) -> float:
    return float(tensor.std()) if tensor is not None else math.nan


@dataclass(frozen=True)
class LayerCorrelation:
    """Mean cosine similarity between one weight layer's responses y_l to different inputs, measured and predicted."""

    layer: str
    index: int            # 1-based depth of the weight layer
    measured: float
    theory: float         # the infinite-width kernel recursion (delving.nn.conv_kernel), per pair and position
    anchored: bool        # True where a pooling layer precedes: the theory restarts from the measured responses
    cmap_iterate: float = math.nan  # the scalar C-map iterate of the mean cosine, the simpler picture


def mean_cosine(batch: torch.Tensor) -> float:
    """The mean cosine similarity between the (flattened) items of a batch, over all pairs of different items."""
    flat = nn.functional.normalize(batch.detach().flatten(1).double(), dim=1)
    if flat.shape[0] < 2:
        raise ValueError("the correlation between inputs needs a batch of at least 2")
    return mean_off_diagonal(flat @ flat.T)


def correlation_profile(model: nn.Module, x: torch.Tensor) -> list[LayerCorrelation]:
    """Per weight layer, the mean cosine between its responses to the batch's different inputs, beside the theory.

    The theory is the infinite-width kernel recursion of :mod:`delving.nn.conv_kernel`, started from the batch
    itself: every pair of inputs at every position, the activation's dual on each, each conv's own taps (zero
    padding, stride; Gaussian or delta-orthogonal weights alike). It covers rectifier nets; with any other
    activation the theory is the C-map iterate. ``cmap_iterate`` is the scalar C-map
    (:func:`delving.nn.correlation.cmap`) iterated from the batch's own mean cosine: the same theory with every
    pair and position replaced by their mean. Max pooling and SPP are not covered by either (they
    raise the correlation of rectified maps): after each pooling layer both restart from the next weight layer's
    measured responses (``anchored``), so every other point tests the theory over a stage. Cosines are uncentred,
    as the C-map is (E[f(u) f(v)]).
    """
    with _weight_layer_responses(model) as recorded, torch.no_grad():
        model(x)
    responses = dict(recorded)  # a layer called twice: its last output, by name
    following = {name: act for name, _, act in weight_layers(model)}
    # the kernel recursion needs rectifiers (delving.nn.conv_kernel); any other activation: the C-map is the theory
    kernel = all(act is None or slopes_of(act) is not None for act in following.values())
    out, phi, c, pooled, index = [], response_gram(x), mean_cosine(x), False, 0
    for name, module in model.named_modules():
        if isinstance(module, _POOLS):
            pooled = True
        if not isinstance(module, WEIGHT_LAYERS):
            continue
        index += 1
        if name not in responses:  # a layer the forward pass did not reach
            continue
        measured = mean_cosine(responses[name])
        c = measured if pooled else c
        if kernel:
            gram = response_gram(responses[name]) if pooled else layer_gram(module, phi)
            phi = dual_gram(gram, following[name])
        theory = measured if pooled else gram_cosine(gram) if kernel else c
        out.append(LayerCorrelation(layer_label(name), index, measured, theory, pooled, c))
        c, pooled = float(cmap(following[name], c)), False
    return out
