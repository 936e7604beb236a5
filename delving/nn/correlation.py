"""How a rectifier net moves the correlation between the responses to two inputs: the C-map, its L-fold iterate,
and the depth-shaped slope of Tailored Activation Transformation (TAT).

Sec. 2.2 keeps the *variance* of each layer's response fixed; it says nothing about the *correlation* between the
responses to two different inputs. For a layer with Gaussian weights (std from Eq. 10/15) and pre-activations
(u, v) ~ N(0, [[1, c], [c, 1]]), the next layer's pre-activations have correlation

    C(c) = E[f(u) f(v)] / E[f(u)²]                                               (the normalized C-map)

(Cho & Saul 2009; Poole et al. 2016; Martens et al. 2021, "Rapid training of deep neural networks without skip
connections or normalization layers using Deep Kernel Shaping"). Closed forms:

    ReLU:              C(c) = (√(1 − c²) + (π − arccos c) c) / π                     (the degree-1 arc-cosine kernel)
    Leaky/PReLU at a:  C(c; a) = [(1 − a)² (√(1 − c²) + (π − arccos c) c) / π + 2 a c] / (1 + a²)

(write f(y) = (1 − a) relu(y) + a y and expand; E[relu(u) v] = c/2). Every other activation the factory builds is
integrated numerically (2-D Gauss–Legendre quadrature in polar coordinates). C(1) = 1 and C(c) > c for a < 1:
iterated over L layers every pair of inputs is driven towards c = 1 (kernel degeneracy), which is why a plain
100-layer ReLU net with a correct variance init still fails to train.

TAT (Zhang, Botev & Martens, "Deep Learning without Shortcuts: Shaping the Kernel with Tailored Rectifiers",
ICLR 2022, Sec. 4) picks the leaky slope a from the depth L so that the whole chain's map sends c = 0 to a target
η (0.9 by default): C^L(0; a) = η, solved here by bisection (C^L(0; a) falls monotonically from the ReLU value at
a = 0 to 0 at a = 1, the identity). Its output scale √(2 / (1 + a²)) is Eq. 15's factor, so a PReLU net at the TAT
slope is initialized with Eq. 15 at that a.

Departure from the theory, stated: the algebra assumes infinite width and a plain chain of dense or convolutional
layers. Max pooling and SPP are not covered (DKS assumes average pooling); the iterate here passes through them
unchanged, and :func:`delving.nn.probes.correlation_profile` measures what they really do.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from delving.errors import DelvingError

# Quadrature: Gauss–Legendre in polar coordinates, radius on [0, 12] (the normal's tail beyond weighs < 1e-31) and
# angle split at the four angles where u = 0 or v = 0. Every activation here is smooth except possibly at 0, so
# each piece is smooth and the rule converges spectrally; a plain 2-D Gauss–Hermite grid does not, because ReLU's
# kink cuts through its cells (measured: 1.6e-3 off the closed form at c = 0 with 160² nodes, 8.7e-4 with 300²).
_RADIUS, _RADIAL_NODES, _ARC_NODES = 12.0, 96, 48


def relu_kernel(c: np.ndarray | float) -> np.ndarray:
    """J(c) = √(1 − c²) + (π − arccos c) c: π times ReLU's normalized C-map (Cho & Saul 2009, degree 1)."""
    c = np.clip(np.asarray(c, dtype=np.float64), -1.0, 1.0)
    return np.sqrt(1.0 - c * c) + (np.pi - np.arccos(c)) * c


def leaky_cmap(c: np.ndarray | float, a: float | Sequence[float] = 0.0) -> np.ndarray:
    """The normalized C-map of a leaky ReLU / PReLU with negative slope ``a`` (a = 0: ReLU, a = 1: identity).

    A sequence of slopes is a channel-wise PReLU: the map is the channel average of E[f(u)f(v)] over the channel
    average of E[f(u)²], each channel with its own slope.
    """
    slopes = np.atleast_1d(np.asarray(a, dtype=np.float64))
    return leaky_dual(c, slopes) / ((1.0 + slopes ** 2) / 2).mean()  # over E[f(u)²] = (1 + a²)/2, channel mean


def leaky_dual(c: np.ndarray | float, a: float | Sequence[float] = 0.0) -> np.ndarray:
    """E[f(u) f(v)] of a leaky ReLU / PReLU at slope(s) ``a`` for unit-variance (u, v) of correlation c (the
    channel average for a sequence of slopes): (1 − a)² J(c) / (2π) + a c, the unnormalized C-map."""
    c = np.asarray(c, dtype=np.float64)
    slopes = np.atleast_1d(np.asarray(a, dtype=np.float64))
    # linear in the slopes' moments: the channel average needs E[(1 − a)²] and E[a], not a map per channel
    return ((1.0 - slopes) ** 2).mean() * relu_kernel(c) / (2 * np.pi) + slopes.mean() * c


def relu_cmap(c: np.ndarray | float) -> np.ndarray:
    """ReLU's normalized C-map, (√(1 − c²) + (π − arccos c) c) / π."""
    return relu_kernel(c) / np.pi


def _legendre(low: float, high: float, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(nodes)
    return (x + 1) * (high - low) / 2 + low, w * (high - low) / 2


def _expectation(g: Callable[[np.ndarray, np.ndarray], np.ndarray], kinks: Sequence[float]) -> float:
    """E[g(z₁, z₂)] for independent standard normals, in polar coordinates with the angle split at ``kinks``."""
    r, wr = _legendre(0.0, _RADIUS, _RADIAL_NODES)
    wr = wr * r * np.exp(-r * r / 2) / (2 * np.pi)
    edges = sorted({0.0, 2 * np.pi, *(k % (2 * np.pi) for k in kinks)})
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        theta, wt = _legendre(low, high, _ARC_NODES)
        rr, tt = np.meshgrid(r, theta, indexing="ij")
        total += float((np.outer(wr, wt) * g(rr * np.cos(tt), rr * np.sin(tt))).sum())
    return total


def numerical_cmap(f: Callable[[torch.Tensor], torch.Tensor], c: np.ndarray | float) -> np.ndarray:
    """E[f(u) f(v)] / E[f(u)²] for (u, v) standard normal with correlation c, by 2-D Gauss quadrature.

    u = z₁, v = c z₁ + √(1 − c²) z₂ with z₁, z₂ independent N(0, 1); in polar coordinates (z₁, z₂) = r(cos θ, sin θ),
    u = r cos θ and v = r cos(θ − φ) with c = cos φ, so u = 0 and v = 0 are rays at fixed angles, where the angular
    rule is split. ``f`` acts elementwise on a float64 tensor.
    """
    def fn(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return f(torch.from_numpy(np.ascontiguousarray(x))).numpy()

    second = _expectation(lambda z1, z2: fn(z1) ** 2, [np.pi / 2, 3 * np.pi / 2])
    out = []
    for ci in np.atleast_1d(np.asarray(c, dtype=np.float64)):
        ci = float(np.clip(ci, -1.0, 1.0))
        phi, root = math.acos(ci), math.sqrt(1.0 - ci * ci)
        out.append(_expectation(lambda z1, z2: fn(z1) * fn(ci * z1 + root * z2),
                                [np.pi / 2, 3 * np.pi / 2, phi + np.pi / 2, phi + 3 * np.pi / 2]))
    return np.asarray(out) / second


def monte_carlo_cmap(f: Callable[[torch.Tensor], torch.Tensor], c: float, samples: int = 1_000_000,
                     seed: int = 0) -> float:
    """An independent estimate of the same map from ``samples`` correlated normal pairs (for checking)."""
    gen = torch.Generator().manual_seed(seed)
    z1 = torch.randn(samples, generator=gen, dtype=torch.float64)
    z2 = torch.randn(samples, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        fu, fv = f(z1), f(c * z1 + math.sqrt(1 - c * c) * z2)
    return float((fu * fv).mean() / (fu * fu).mean())


def slopes_of(act: nn.Module | None) -> np.ndarray | None:
    """The negative-side slope(s) of a rectifier (ReLU: 0; PReLU: one per channel), or None for other modules."""
    if isinstance(act, nn.ReLU):
        return np.zeros(1)
    if isinstance(act, nn.LeakyReLU):
        return np.array([float(act.negative_slope)])
    if isinstance(act, nn.PReLU):
        return act.weight.detach().double().cpu().numpy().ravel()
    return None


def cmap(act: nn.Module | None, c: np.ndarray | float) -> np.ndarray:
    """The normalized C-map of ``act`` at c: closed form for ReLU / LeakyReLU / PReLU (at the module's current
    slopes), 2-D quadrature (:func:`numerical_cmap`) for any other elementwise activation; ``None`` (no
    activation) is the identity.
    """
    if act is None:
        return np.asarray(c, dtype=np.float64)
    slopes = slopes_of(act)
    if slopes is not None:
        return leaky_cmap(c, slopes)
    return numerical_cmap(act, c).reshape(np.shape(c))  # a scalar c gives a 0-d array, as the closed forms do


def iterate(maps: Sequence[Callable[[float], float]], c0: float) -> list[float]:
    """[c0, C₁(c0), C₂(C₁(c0)), ...]: the correlation after each map of a plain chain."""
    out = [float(c0)]
    for one in maps:
        out.append(float(one(out[-1])))
    return out


def leaky_iterate(c0: float, a: float, layers: int) -> float:
    """C^L(c0; a): the correlation after ``layers`` leaky/PReLU layers of slope ``a``."""
    c, a = float(c0), float(a)
    for _ in range(layers):  # scalar arithmetic: the slope search calls this ~40 times per depth
        c = min(1.0, max(-1.0, c))
        kernel = math.sqrt(1.0 - c * c) + (math.pi - math.acos(c)) * c
        c = ((1.0 - a) ** 2 * kernel / math.pi + 2 * a * c) / (1.0 + a * a)
    return c


def net_cmap(activations: Sequence[nn.Module | None], c0: float = 0.0) -> float:
    """The predicted C_f(c0) of a plain chain whose weight layers are followed by ``activations`` in order."""
    return iterate([lambda c, act=act: cmap(act, c) for act in activations], c0)[-1]


def tat_slope(layers: int, eta: float = 0.9, tol: float = 1e-12) -> float:
    """TAT's leaky-ReLU slope for a plain chain of ``layers`` rectifier layers: the a with C^L(0; a) = η.

    Bisection on a in [0, 1]: C^L(0; a) decreases from the ReLU value (a = 0) to 0 (a = 1, the identity).

    Raises:
        DelvingError: when η is not in (0, 1), or when even ReLU (the most nonlinear leaky slope) stays below η
            at this depth (a shallow net: lower η, or use He).
    """
    if not 0.0 < eta < 1.0:
        raise DelvingError(f"init.tat_eta={eta} must be between 0 and 1 (exclusive): the target C_f(0) of TAT")
    if layers < 1:
        raise DelvingError(f"TAT needs at least one rectifier layer, got {layers}")
    top = leaky_iterate(0.0, 0.0, layers)
    if top < eta:
        raise DelvingError(f"init.tat_eta={eta} is out of reach at {layers} rectifier layers: even ReLU gives "
                           f"C_f(0) = {top:.3f}; valid: tat_eta < {top:.3f}")
    low, high = 0.0, 1.0  # C^L(0; low) >= eta > C^L(0; high)
    while high - low > tol:
        mid = (low + high) / 2
        if leaky_iterate(0.0, mid, layers) >= eta:
            low = mid
        else:
            high = mid
    return (low + high) / 2
