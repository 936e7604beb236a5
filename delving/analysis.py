"""Reading a network the way the paper does: learned PReLU slopes by layer (Table 1) and the forward/backward
signal std by depth (Sec. 2.2, Eq. 7-14). Plain torch: usable on any model, with or without Lightning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from delving.init import WEIGHT_LAYERS

_CONTAINERS = ("features.", "head.")
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
    responses: list[tuple[str, torch.Tensor]] = []
    hooks = [module.register_forward_hook(lambda m, i, out, name=name: responses.append((name, out)))
             for name, module in model.named_modules() if isinstance(module, WEIGHT_LAYERS)]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            out = model(x)
            grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out)
            grads = torch.autograd.grad(out, [y for _, y in responses], grad_outputs=grad_out, allow_unused=True)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return [LayerSignal(layer_label(name), index, float(y.detach().std()), _std(g))
            for index, ((name, y), g) in enumerate(zip(responses, grads), start=1)]


def _std(tensor: torch.Tensor | None) -> float:
    return float(tensor.std()) if tensor is not None else math.nan
