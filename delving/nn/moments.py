"""Second moments of an activation under a standard normal input, the quantity Sec. 2.2's argument turns on.

For a layer whose input is x = f(y), y ~ N(0, σ²) with zero mean and a symmetric distribution, Eq. 7 gives
Var[y_next] = n Var[w] E[f(y)²]; the backward pass (Eq. 12-13) has E[f'(y)²] instead. Keeping both variances
fixed needs

    forward  (fan_in):   n  Var[w] E[f(y)²]  = 1      (ReLU: E = 1/2, Eq. 10; PReLU: (1 + a²)/2, Eq. 15; linear: 1)
    backward (fan_out):  n̂ Var[w] E[f'(y)²] = 1      (ReLU: 1/2, Eq. 14)

The moments are computed by Gauss–Legendre quadrature of f(y)² φ(y) on [-12, 0] and [0, 12] separately: every
activation here is smooth except possibly at 0 (ReLU's kink, ELU/SELU's second derivative), where a split keeps the
rule exact to ~1e-12; φ's tails beyond 12 weigh < 1e-32. Results are cached per activation and parameters.

Where the argument's assumptions fail (stated here, not yet measured in this package):
- Zero mean. Eq. 7 propagates E[x²], and with zero-mean weights and b = 0 every response y has zero mean *over
  the draw of the weights*. But ReLU, PReLU, ELU, GELU, SiLU and softplus have E[f(y)] != 0, so in one given
  finite-width net each unit's response carries a fixed offset (μ Σ_j w_ij for an input mean μ): per unit, y is
  not centred, and E[f(y)²] per unit departs from the N(0, 1) value. The rule is exact only on average over
  weights; tanh and SELU (zero or near-zero output mean) are the cases where it is closest to per-net exact.
- Scale. For a non-homogeneous f (everything but the rectifiers), E[f(σz)²] is not σ² E[f(z)²]: the moment is
  computed at σ = 1, so the rule sets σ = 1 as a fixed point of the forward map, and whether deep nets stay there
  depends on that fixed point's stability.
The scheme does nothing about either: it is the analytic rule. A data-dependent init (LSUV) is the known remedy.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(200)
_HALF = 12.0  # integrate on [-12, 12]


def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    """Quadrature points and weights (including the N(0, 1) density) on [-12, 0] and [0, 12]."""
    left = (_NODES - 1.0) * _HALF / 2   # [-1, 1] -> [-12, 0]
    right = (_NODES + 1.0) * _HALF / 2  # [-1, 1] -> [0, 12]
    y = np.concatenate([left, right])
    w = np.concatenate([_WEIGHTS, _WEIGHTS]) * _HALF / 2 * np.exp(-y * y / 2) / np.sqrt(2 * np.pi)
    return torch.tensor(y, dtype=torch.float64), torch.tensor(w, dtype=torch.float64)


def _elementwise(act: nn.Module):
    """f as a function of a 1-D float64 tensor; a PReLU acts with its root-mean-square slope (Eq. 15's a)."""
    if isinstance(act, nn.PReLU):
        a = float(act.weight.detach().double().pow(2).mean().sqrt())
        return lambda y: torch.where(y > 0, y, a * y)
    return act  # the factory's other activations have no parameters and act elementwise in float64


def _key(act: nn.Module | None) -> str:
    if act is None:
        return "identity"
    if isinstance(act, nn.PReLU):
        return f"PReLU(a_rms={float(act.weight.detach().double().pow(2).mean().sqrt()):.12g})"
    return f"{type(act).__name__}({act.extra_repr()})"


_CACHE: dict[str, tuple[float, float]] = {}


def second_moments(act: nn.Module | None) -> tuple[float, float]:
    """(E[f(y)²], E[f'(y)²]) for y ~ N(0, 1), cached per activation; ``None`` is the identity (1, 1)."""
    key = _key(act)
    if key not in _CACHE:
        _CACHE[key] = (1.0, 1.0) if act is None else _integrate(act)
    return _CACHE[key]


def _values_and_slopes(act: nn.Module, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f(y) and f'(y) pointwise (the activation is elementwise), even when called under ``torch.no_grad``."""
    with torch.enable_grad():
        y = y.detach().clone().requires_grad_(True)
        f = _elementwise(act)(y)
        (slope,) = torch.autograd.grad(f.sum(), y)
    return f.detach(), slope


def _integrate(act: nn.Module) -> tuple[float, float]:
    y, w = _grid()
    f, slope = _values_and_slopes(act, y)
    return float((w * f ** 2).sum()), float((w * slope ** 2).sum())


def monte_carlo(act: nn.Module, samples: int = 1_000_000, seed: int = 0) -> tuple[float, float]:
    """An independent estimate of the same moments from ``samples`` standard normal draws (for checking)."""
    y = torch.randn(samples, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    f, slope = _values_and_slopes(act, y)
    return float(f.pow(2).mean()), float(slope.pow(2).mean())
