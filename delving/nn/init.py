"""Initialization schemes of Sec. 2.2, applied to an already built model.

``initialize(model, scheme, mode)`` walks the weight layers (Conv2d, Linear) in network order, pairs each with
the activation that follows it, and draws zero-mean Gaussian weights with the scheme's std; biases are zero.
Network order is the order in which modules are registered, which for the models built by
:mod:`delving.models` is the order of the forward pass.

Notation (paper Sec. 2.2): n_l = k² c (fan_in, the layer's inputs per output) and n̂_l = k² d (fan_out).

Beyond the paper: ``scheme="tat"`` first sets every leaky/PReLU slope to the depth-shaped value of Tailored Activation
Transformation (Zhang, Botev & Martens, ICLR 2022; :func:`delving.nn.correlation.tat_slope`), then draws Eq. 15 at
that slope. ``weights="delta_orthogonal"`` replaces the Gaussian draw by the delta-orthogonal kernels of Xiao et al.
(ICML 2018, "Dynamical Isometry and a Mean Field Theory of CNNs"), at the same gain as the chosen scheme.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from delving.errors import DelvingError, choices
from delving.nn.residual import has_shortcuts

WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)
MODES = ("fan_in", "fan_out")
WEIGHTS = ("gaussian", "delta_orthogonal")
TAT = "tat"
# TAT's target C_f(0) of the whole chain, chosen by the weights' kind when not given (init.tat_eta: null).
# Delta-orthogonal weights: 0.9, TAT's own default (Zhang et al. 2022, Sec. 5).
TAT_ETA_DELTA_ORTHOGONAL = 0.9
# Gaussian weights: 0.8. On the depth-limit sweep's 100-layer plain nets, 0.9 left a generalization gap: val error
# 0.067 / 0.064 against 0.036 / 0.036 at 0.8 (reports/beyond_the_paper.md, Sec. 2.3); at 150 layers the two are
# within the seeds' spread (docs/beyond-the-paper.md, with the commands).
TAT_ETA_GAUSSIAN = 0.8
TAT_ETA = {"gaussian": TAT_ETA_GAUSSIAN, "delta_orthogonal": TAT_ETA_DELTA_ORTHOGONAL}
# The fc stds the paper used for models A/B/C (Sec. 2.2, "a std of 0.01 for the first two fc layers and 0.001
# for the last"), deliberately smaller than He's sqrt(2/4096).
PAPER_FC_STD = (0.01, 0.01, 0.001)


def activation_slope(act: nn.Module | None) -> float:
    """The negative-side slope a of a rectifier, as it enters Eq. 15's factor (1 + a²).

    ReLU (and "no activation", the last layer) is a = 0, Leaky ReLU its fixed slope, PReLU its *current* slope
    (0.25 at construction). A channel-wise PReLU gives sqrt(mean(a_i²)) so that (1 + a²) is the channel mean.
    ELU, GELU and SiLU, rectifier-like (identity for large inputs, bounded below), count as ReLU (a = 0): the
    usual practice (``kaiming_normal_(nonlinearity="relu")`` in GELU/SiLU nets), and an approximation — their
    exact rule is the ``variance_preserving`` scheme. Tanh, SELU and softplus have no He form and are an error.
    """
    if act is None or isinstance(act, (nn.ReLU, nn.ELU, nn.GELU, nn.SiLU)):
        return 0.0
    if isinstance(act, nn.LeakyReLU):
        return float(act.negative_slope)
    if isinstance(act, nn.PReLU):
        return float(act.weight.detach().double().pow(2).mean().sqrt())
    raise DelvingError(f"He init needs a rectifier after each layer, got {type(act).__name__}; "
                       f"valid: ReLU, LeakyReLU, PReLU (and, as ReLU, ELU, GELU, SiLU); use variance_preserving")


def is_activation(module: nn.Module) -> bool:
    """True for the element-wise nonlinearities the activation factory builds."""
    return isinstance(module, (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Tanh,
                               nn.Softplus, nn.Sigmoid))


def weight_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module, nn.Module | None]]:
    """Yield ``(name, layer, activation)`` for every Conv2d/Linear in network order.

    ``activation`` is the first activation module registered after the layer and before the next weight layer,
    or None (e.g. fc3, which feeds the softmax).
    """
    pending: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, WEIGHT_LAYERS):
            yield from ((n, m, None) for n, m in pending)
            pending = [(name, module)]
        elif is_activation(module) and pending:
            yield pending[0][0], pending[0][1], module
            pending = []
    yield from ((n, m, None) for n, m in pending)


def fans(layer: nn.Module) -> tuple[int, int]:
    """(n, n̂) = (k² c, k² d) of a Conv2d, or (in, out) of a Linear (Sec. 2.2's n_l and n̂_l)."""
    weight = layer.weight
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def he_std(layer: nn.Module, act: nn.Module | None, mode: str, prelu_factor: bool = True) -> float:
    """He et al.: std = sqrt(2 / ((1 + a²) n)).

    Eq. 10 (forward, n = fan_in), Eq. 14 (backward, n = fan_out), and with ``prelu_factor`` Eq. 15:
    ½(1 + a²) n Var[w] = 1 with a the slope of the activation that follows the layer (a = 0 for ReLU).
    A layer followed by no activation (the classifier) also gets the ½ factor, as the paper does for the first
    layer "for simplicity" (Sec. 2.2): a constant factor on one layer does not change the depth behaviour.
    """
    a = activation_slope(act) if prelu_factor else 0.0
    return math.sqrt(2.0 / ((1.0 + a * a) * fans(layer)[MODES.index(mode)]))


def xavier_std(layer: nn.Module, act: nn.Module | None, mode: str, prelu_factor: bool = True) -> float:
    """The paper's "Xavier" baseline (Sec. 2.2, comparison with [7]): n Var[w] = 1, Gaussian std = sqrt(1 / n).

    This is Eq. 15 with a = 1 (the linear case). fan_in gives the forward form and fan_out the backward form
    (footnote 3). It is not torch's ``xavier_normal_``: see the ``glorot`` scheme for that.
    """
    return math.sqrt(1.0 / fans(layer)[MODES.index(mode)])


def glorot_std(layer: nn.Module, act: nn.Module | None, mode: str, prelu_factor: bool = True) -> float:
    """Glorot & Bengio's original average of both directions, Gaussian form: std = sqrt(2 / (n + n̂)).

    This is torch's ``nn.init.xavier_normal_`` (what most code calls "Xavier"); ``mode`` does not apply.
    """
    fan_in, fan_out = fans(layer)
    return math.sqrt(2.0 / (fan_in + fan_out))


def variance_preserving_std(layer: nn.Module, act: nn.Module | None, mode: str, prelu_factor: bool = True) -> float:
    """Sec. 2.2's rule for any activation f: std = sqrt(1 / (n E[f(y)²])) (fan_in, forward) or
    sqrt(1 / (n̂ E[f'(y)²])) (fan_out, backward), y ~ N(0, 1), the moments computed numerically
    (:mod:`delving.nn.moments`). It gives Eq. 10/14 for ReLU, Eq. 15 for PReLU and the paper's Xavier for a linear
    layer; the classifier, with no activation after it, is treated as linear. See :mod:`delving.nn.moments` for where
    the zero-mean assumption fails."""
    from delving.nn.moments import second_moments  # numpy quadrature, only needed by this scheme

    forward, backward = second_moments(act)
    moment = forward if mode == "fan_in" else backward
    return math.sqrt(1.0 / (moment * fans(layer)[MODES.index(mode)]))


SCHEMES: dict[str, Callable[..., float]] = {"he": he_std, "xavier": xavier_std, "glorot": glorot_std,
                                             "variance_preserving": variance_preserving_std,
                                             # TAT: Eq. 15 at the depth-shaped slope set by tat_slopes_ first
                                             TAT: he_std}
# Named recipes: "paper" is how models A/B/C were initialized (Sec. 2.2 and 3): Eq. 14 (He, fan_out) on the convs,
# with Eq. 15's (1 + a²) for PReLU nets (the paper does not say whether its PReLU nets used it; prelu_factor=False
# drops it), fc stds 0.01, 0.01, 0.001, biases 0. A preset fixes scheme, mode and fc_std.
PRESETS: dict[str, dict] = {"paper": {"scheme": "he", "mode": "fan_out", "fc_std": PAPER_FC_STD}}


def initialize(model: nn.Module, scheme: str = "he", mode: str = "fan_in", *,
               fc_std: Sequence[float] | None = None, prelu_factor: bool = True,
               generator: torch.Generator | None = None, tat_eta: float | None = None,
               weights: str = "gaussian") -> nn.Module:
    """Initialize every Conv2d/Linear of ``model`` in place with ``scheme`` and return the model.

    Args:
        model: any built network; its PReLU slopes are read as they are now (0.25 after construction).
        scheme: ``he`` (Eq. 10 / 14 / 15), ``xavier`` (the paper's sqrt(1/n)), ``glorot`` (torch's
            ``xavier_normal_``), ``variance_preserving`` (Sec. 2.2's rule for any activation), or the preset
            ``paper`` (models A/B/C: he, fan_out, fc stds 0.01/0.01/0.001), which overrides ``mode`` and ``fc_std``,
            or ``tat`` (beyond the paper: every leaky/PReLU slope set to TAT's depth-shaped value, then Eq. 15).
        mode: ``fan_in`` (forward form, Eq. 10) or ``fan_out`` (backward form, Eq. 14).
        fc_std: fixed stds for the last ``len(fc_std)`` Linear layers instead of the scheme, e.g.
            :data:`PAPER_FC_STD` (0.01, 0.01, 0.001) as the paper used for models A/B/C.
        prelu_factor: use the (1 + a²) factor of Eq. 15 (he only); False gives plain Eq. 10/14 for any rectifier.
        generator: optional RNG for reproducible draws.
        tat_eta: TAT's target C_f(0) of the whole chain (``tat`` only), in (0, 1); None: by ``weights``
            (:data:`TAT_ETA`: 0.8 for gaussian, 0.9 for delta_orthogonal).
        weights: ``gaussian`` (the paper's zero-mean Gaussian) or ``delta_orthogonal`` (beyond the paper: an
            orthogonal centre tap, zeros elsewhere, at the scheme's gain; see :func:`delta_orthogonal_`).
    Biases are set to zero (Sec. 2.2, "b = 0").
    """
    if scheme in PRESETS:
        preset = PRESETS[scheme]
        scheme, mode, fc_std = preset["scheme"], preset["mode"], preset["fc_std"]
    if scheme not in SCHEMES:
        raise DelvingError(f"unknown init scheme {scheme!r}; valid: {choices([*SCHEMES, *PRESETS])}")
    if mode not in MODES:
        raise DelvingError(f"unknown init mode {mode!r}; valid: {choices(MODES)}")
    if weights not in WEIGHTS:
        raise DelvingError(f"unknown init weights {weights!r}; valid: {choices(WEIGHTS)}")
    if scheme == TAT:
        tat_slopes_(model, tat_eta_for(weights, tat_eta))
    layers = list(weight_layers(model))
    fixed = _fixed_fc_stds(layers, fc_std)
    for name, layer, act in layers:
        std = fixed.get(name) or SCHEMES[scheme](layer, act, mode, prelu_factor)
        with torch.no_grad():
            if weights == "delta_orthogonal":
                # The scheme's std is gain / sqrt(n); the orthogonal centre tap carries the gain alone (Xiao et al.).
                fan = fans(layer)[0 if scheme == "glorot" else MODES.index(mode)]
                delta_orthogonal_(layer.weight, std * math.sqrt(fan), generator=generator)
            else:
                layer.weight.normal_(0.0, std, generator=generator)
            if layer.bias is not None:
                layer.bias.zero_()
    return model


def rectifier_layers(model: nn.Module) -> list[nn.Module]:
    """The activation after each weight layer that has one, in network order: the L of a plain chain."""
    return [act for _, _, act in weight_layers(model) if act is not None]


def tat_eta_for(weights: str, eta: float | None = None) -> float:
    """TAT's target C_f(0): ``eta`` where given, else the default for the weights' kind (:data:`TAT_ETA`)."""
    if eta is not None:
        return eta
    if weights not in TAT_ETA:
        raise DelvingError(f"unknown init weights {weights!r}; valid: {choices(TAT_ETA)}")
    return TAT_ETA[weights]


def tat_slopes_(model: nn.Module, eta: float = TAT_ETA_GAUSSIAN) -> float:
    """Set every leaky/PReLU slope of ``model`` to TAT's value for its depth and return that slope.

    TAT for leaky rectifiers (Zhang et al. 2022): with L the rectifier layers of the plain chain, the slope a solves
    C^L(0; a) = η (:func:`delving.nn.correlation.tat_slope`). PReLU slopes stay learnable from there. Max pooling
    and SPP do not enter the count (the C-map algebra does not cover them). The default η is Gaussian weights'
    (:data:`TAT_ETA`).

    TAT is defined for plain chains (no shortcuts, no normalization): a net with residual blocks
    (:mod:`delving.nn.residual`) is refused rather than given a slope for a chain it is not. Its remedy for depth is
    its own (shortcuts, and SkipInit on the branches), and He init (Eq. 10/15) inside the branches is its init.

    Raises:
        DelvingError: for an activation without a negative slope to set (ReLU, ELU, ...), naming those TAT takes,
            or for a net with residual blocks.
    """
    from delving.nn.correlation import tat_slope  # imported when used: numpy stays out of plain He init

    if has_shortcuts(model):
        raise DelvingError("init.scheme=tat shapes the slopes of a plain chain (Zhang et al. 2022) and this model has "
                           "residual blocks; valid: a plain net (model.kwargs.shortcut=false) or init.scheme=he")
    acts = rectifier_layers(model)
    bad = sorted({type(a).__name__ for a in acts if not isinstance(a, (nn.PReLU, nn.LeakyReLU))})
    if bad or not acts:
        raise DelvingError(f"init.scheme=tat sets a leaky slope from the depth, and {', '.join(bad) or 'no layer'} "
                           f"has none; valid activations: prelu, prelu_shared, leaky_relu")
    a = tat_slope(len(acts), eta)
    with torch.no_grad():
        for act in acts:
            if isinstance(act, nn.PReLU):
                act.weight.fill_(a)
            else:
                act.negative_slope = a
    return a


def delta_orthogonal_(weight: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Delta-orthogonal init (Xiao et al. 2018, Algorithm 2) of a torch Conv2d [out, in, k, k] or Linear [out, in].

    An orthogonal matrix H (orthonormal rows if out <= in, columns if out > in) at the kernel's centre tap, zeros
    elsewhere, scaled by ``gain`` x max(sqrt(out / in), 1): each output unit then gets E[y²] = gain² E[x²] (with
    orthonormal columns a row has squared norm in/out on average, hence the factor). A Linear gets gain x that
    factor x H. The gain of a scheme is its std x sqrt(fan), e.g. sqrt(2 / (1 + a²)) for Eq. 10/15.

    Raises:
        DelvingError: for an even kernel, which has no centre tap.
    """
    out_ch, in_ch = weight.shape[:2]
    kernel = tuple(weight.shape[2:])
    if any(k % 2 == 0 for k in kernel):
        raise DelvingError(f"init.weights=delta_orthogonal needs odd conv kernels (a centre tap), got {kernel}; "
                           f"valid: 1x1, 3x3, 5x5, ...")
    with torch.no_grad():
        # drawn where the generator lives (CPU by default), not on an ambient `with torch.device(...)`: under
        # "meta" the draw would hold no data to copy into a materialized weight
        draw = torch.randn(max(out_ch, in_ch), min(out_ch, in_ch), generator=generator, dtype=torch.float64,
                           device=generator.device if generator is not None else "cpu")
        q, r = torch.linalg.qr(draw)
        q = q * torch.sign(torch.diagonal(r))  # Haar-distributed (Mezzadri 2007), not biased by QR's sign choice
        h = q if out_ch >= in_ch else q.T     # [out, in]
        scale = gain * max(math.sqrt(out_ch / in_ch), 1.0)
        weight.zero_()
        centre = (slice(None), slice(None), *(k // 2 for k in kernel))
        weight[centre] = (scale * h).to(weight)
    return weight


def _fixed_fc_stds(layers, fc_std: Sequence[float] | None) -> dict[str, float]:
    """Map the last len(fc_std) Linear layers' names to the given stds (fc1, fc2, fc3 order)."""
    if not fc_std:
        return {}
    linear = [name for name, layer, _ in layers if isinstance(layer, nn.Linear)]
    if len(fc_std) > len(linear):
        raise DelvingError(f"init.fc_std has {len(fc_std)} values but the model has {len(linear)} fc layers")
    if any(s <= 0 for s in fc_std):
        raise DelvingError(f"init.fc_std values must be positive, got {list(fc_std)}")
    return dict(zip(linear[len(linear) - len(fc_std):], (float(s) for s in fc_std)))
