"""The second moments of a plain conv net's responses at init, for every pair of a batch's inputs and every
position: the infinite-width kernel recursion of a CNN (Xiao et al., ICML 2018, "Dynamical Isometry and a Mean
Field Theory of CNNs"; Novak et al., ICLR 2019, "Bayesian Deep Convolutional Networks with Many Channels are
Gaussian Processes").

The scalar C-map (:mod:`delving.nn.correlation`) iterates one number, the mean correlation. A conv net's kernel is
richer: each position of each pair of inputs has its own correlation, the activation's dual acts on each one, and
a conv layer then averages its neighbours with the weights of its taps. Averaging after a convex map is not
mapping the average (Jensen), so the two theories part where correlations vary across positions or pairs. They
part most with delta-orthogonal weights, whose centre-only kernels never mix positions.

The recursion, for a weight layer with zero-mean independent weights, given the per-position Gram
K[p, x, y] = E_c[u_c(p, x) u_c(p, y)] of its input:

    Conv2d:  K'[p] = Σ_δ e_δ Φ[p + δ] + E[b²]      e_δ = mean over outputs of Σ over inputs of w²[·, ·, δ]
    Linear:  K'    = e mean_p Φ[p] + E[b²]          e   = mean over outputs of Σ over inputs of w²
    Φ = the activation's dual of K: √(K_xx K_yy) · κ(ρ_xy), κ the rectifier's unnormalized C-map.

Zero padding, stride and dilation are the layer's own (the recursion is itself a convolution). The tap energies
are read from the layer's weights, so one code covers Gaussian kernels (all taps alike in expectation) and
delta-orthogonal ones (the centre only). Pooling is outside the algebra: :func:`delving.nn.probes.
correlation_profile` restarts from the measured Gram after it.

Scope: rectifiers (and layers without an activation), whose dual is positively homogeneous, so that it needs each
position's correlation and not its variance; there the recursion is exact at infinite width. For ELU, GELU, tanh
... the dual depends on each position's variance too; :func:`delving.nn.probes.correlation_profile` then reports
the scalar C-map iterate as its theory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from delving.nn.correlation import leaky_dual, slopes_of


def response_gram(y: torch.Tensor) -> torch.Tensor:
    """K[p, x, y] = mean over channels of y_c(p, x) y_c(p, y): [H, W, N, N] for maps [N, C, H, W], and [1, 1, N, N]
    for vectors [N, F]."""
    y = y.detach().double()
    if y.dim() == 2:
        return (y @ y.T / y.shape[1])[None, None]
    return torch.einsum("nchw,mchw->hwnm", y, y) / y.shape[1]


def gram_cosine(gram: torch.Tensor) -> float:
    """The mean cosine between the flattened responses to different inputs that the Gram describes (what
    :func:`delving.nn.probes.mean_cosine` measures on the responses themselves)."""
    total = gram.sum((0, 1))
    norm = total.diagonal().sqrt()
    return mean_off_diagonal(total / (norm[:, None] * norm[None, :]))


def mean_off_diagonal(matrix: torch.Tensor) -> float:
    """The mean of a square matrix's entries off its diagonal: over the pairs of different inputs."""
    n = matrix.shape[0]
    return float((matrix.sum() - matrix.diagonal().sum()) / (n * (n - 1)))


def dual_gram(gram: torch.Tensor, act: nn.Module | None) -> torch.Tensor:
    """Φ[p, x, y] = E[f(u) f(v)] for Gaussian (u, v) with the second moments ``gram`` [..., N, N], for a rectifier;
    None: the identity. Other activations: ValueError (see the module's scope)."""
    if act is None:
        return gram
    slopes = slopes_of(act)
    if slopes is None:
        raise ValueError(f"the kernel recursion covers rectifiers (ReLU, leaky ReLU, PReLU) and no activation, not "
                         f"{type(act).__name__}: its dual depends on each position's variance, not on the "
                         f"correlation alone")
    q = gram.diagonal(dim1=-2, dim2=-1)
    norm = torch.sqrt(q.unsqueeze(-1) * q.unsqueeze(-2))
    rho = torch.where(norm > 0, gram / norm.clamp_min(torch.finfo(gram.dtype).tiny), 0.0).clamp(-1.0, 1.0)
    # positively homogeneous: E[f(u) f(v)] = √(q_x q_y) κ(ρ), κ the unit-variance dual
    kappa = torch.from_numpy(leaky_dual(rho.cpu().numpy(), slopes)).to(gram)
    return norm * kappa


def layer_gram(layer: nn.Module, phi: torch.Tensor) -> torch.Tensor:
    """K' of a Conv2d or Linear's responses, in expectation over weights with its own tap energies, from the Gram
    ``phi`` [H, W, N, N] of its input (after the previous activation)."""
    weight = layer.weight.detach().double()
    bias = layer.bias.detach().double().pow(2).mean() if getattr(layer, "bias", None) is not None else 0.0
    if isinstance(layer, nn.Linear):  # the flattened maps: every (channel, position) an input unit
        return weight.pow(2).sum(1).mean() * phi.mean((0, 1), keepdim=True) + bias
    h, w, n, _ = phi.shape
    planes = phi.permute(2, 3, 0, 1).reshape(1, n * n, h, w)  # a plane per pair of inputs: [1, N*N, H, W]
    energy = weight.pow(2).sum(1).mean(0)  # e_δ: [kh, kw]
    # One depthwise convolution, a plane per pair (groups): on the CPU 50x faster than the same taps over a batch of
    # one-channel planes, and in float32, where torch's CPU convolution is fast (float64 is ~10x slower); a cosine
    # needs no more digits.
    taps = energy.float().expand(n * n, 1, *energy.shape).contiguous()
    mixed = F.conv2d(planes.float(), taps, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                     groups=n * n).double()[0]
    return mixed.reshape(n, n, *mixed.shape[1:]).permute(2, 3, 0, 1) + bias


