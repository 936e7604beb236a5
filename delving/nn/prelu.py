"""PReLU (Eq. 1) as ``torch.nn.PReLU`` with a faster CPU backward: the autograd plumbing around the fused kernel
(``delving.nn.prelu_cpu``), the composed-ops fallback, and the differentiable backward that double backward and
``torch.func`` transforms take."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

# Elements per chunk of the composed-ops backward (4 MiB of fp32): the chunk's temporary is reused from the heap
# instead of freshly mapped pages, and there are few chunks, so few multi-threaded regions.
_CHUNK = 1 << 20

_NUMBA = {"checked": False, "kernel": None}


def _per_channel(weight: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The slopes shaped to broadcast over ``like`` (N, C, ...): one per channel, or the shared one."""
    return weight.reshape(1, -1, *([1] * (like.dim() - 2)))


def _negative_part(saved: torch.Tensor, positive: torch.Tensor, slope: torch.Tensor,
                   from_output: bool) -> torch.Tensor:
    """min(x, 0), Eq. 2's factor, differentiably: from the saved input, or from the saved output divided by its
    slope (Eq. 1 inverted where y <= 0)."""
    negative = torch.where(positive, torch.zeros_like(saved), saved)
    return negative / slope if from_output else negative


def prelu_backward_ops(grad: torch.Tensor, saved: torch.Tensor,
                       weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3's df/dy and Eq. 2's sum, from torch ops: dE/dy = g where s > 0 else a*g, and per slope the sum of g*s
    over s <= 0, ``s`` being PReLU's input (or its output, see ``_PReLUFunction``).

    For what the fused kernel (``delving.nn.prelu_cpu``) does not take: bf16 under autocast, channels_last, and
    every input when numba is not installed. Still ~2x faster than torch's own CPU backward: chunks of the batch
    through vectorized ops (ReLU's own ``threshold_backward``, a per-channel reduction, ``lerp_``) and one
    full-size allocation, the input gradient. In place and out=, so not differentiable: see
    :func:`prelu_backward_differentiable`.
    """
    channels = saved.shape[1]
    slope = _per_channel(weight, saved).to(grad.dtype)
    grad_x = torch.empty_like(grad)
    grad_w = torch.zeros(channels, dtype=torch.float32, device=saved.device)
    reduce_dims = [0, *range(2, saved.dim())]
    step = max(1, _CHUNK // max(1, saved[0].numel()))
    for start in range(0, saved.shape[0], step):
        g, s, out = grad[start:start + step], saved[start:start + step], grad_x[start:start + step]
        torch.ops.aten.threshold_backward.grad_input(g, s, 0, grad_input=out)  # g where s > 0, else 0 (ReLU's)
        grad_w += torch.sub(g, out).mul_(s).sum(reduce_dims, dtype=torch.float32)  # Eq. 2: g*s where s <= 0
        out.lerp_(g, slope)  # out + a*(g - out): g where s > 0, a*g elsewhere (Eq. 3's df/dy)
    if weight.numel() == 1:  # channel-shared (Eq. 3's sum over all channels)
        grad_w = grad_w.sum().reshape(weight.shape)
    return grad_x, grad_w.to(weight.dtype)


def prelu_backward_differentiable(grad: torch.Tensor, saved: torch.Tensor, weight: torch.Tensor,
                                  from_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3's df/dy and Eq. 2's dE/da from out-of-place torch ops, so that autograd can differentiate the
    backward itself (gradient penalties, Hessian-vector products) and ``torch.func`` can batch it.

    Where ``saved`` is the output y (every slope positive), min(y, 0) / a is min(x, 0), and y stays connected to
    x and a through this function's own node, so second derivatives are those of Eq. 1.
    """
    slope = _per_channel(weight, saved)
    positive = saved > 0  # y > 0 exactly where x > 0 when every a_i > 0
    grad_x = torch.where(positive, grad, slope * grad)
    grad_w = (grad * _negative_part(saved, positive, slope, from_output)).sum([0, *range(2, saved.dim())])
    if weight.numel() == 1:  # channel-shared (Eq. 3's sum over all channels)
        grad_w = grad_w.sum().reshape(weight.shape)
    return grad_x, grad_w


def _prelu_cpu():
    """``delving.nn.prelu_cpu``, imported when the first PReLU is built (numba costs ~0.3 s to import): before FFCV's
    loaders launch numba's threads, so that its choice of threading layer holds. None (with a one-time note)
    where numba is not installed: the composed-ops backward then serves every input."""
    if not _NUMBA["checked"]:
        _NUMBA["checked"] = True
        try:
            from delving.nn import prelu_cpu
            _NUMBA["kernel"] = prelu_cpu
        except ImportError as err:
            warnings.warn(f"delving: numba is not available ({err}); PReLU's CPU backward uses composed torch ops "
                          f"(same gradients, slower than the fused kernel). `pip install numba` for it.",
                          RuntimeWarning, stacklevel=3)
    return _NUMBA["kernel"]


def _functorch_active() -> bool:
    """Whether a ``torch.func`` transform (vmap, grad, jacrev ...) is running: then tensors are wrappers with no
    storage of their own, so neither numpy nor a data-dependent choice of the saved tensor applies."""
    return torch._C._are_functorch_transforms_active()


class _PReLUFunction(torch.autograd.Function):
    """Eq. 1 with a CPU backward that keeps ReLU's memory: where every slope is positive, the output is saved
    instead of the input (y > 0 exactly where x > 0, and x = y / a_i elsewhere), so the next layer's saved input
    is the same tensor and the conv output it came from is freed, as with ReLU.

    A first-order backward (grad mode off while it runs) takes the fused kernel or the composed ops. With
    ``create_graph=True``, and inside every ``torch.func`` transform (which differentiate with a graph), it takes
    :func:`prelu_backward_differentiable`, so autograd can go through it again, as through ``nn.PReLU``'s.
    The forward is ``F.prelu`` and the ``setup_context`` form lets torch derive the vmap rule; ``jvp`` gives
    forward-mode AD (``torch.func.jvp``, ``jacfwd``).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, from_output: bool) -> torch.Tensor:
        return F.prelu(x, weight)  # torch's forward kernel is vectorized: as fast as ReLU's

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, from_output = inputs
        ctx.from_output = from_output
        saved = output if from_output else x
        ctx.save_for_backward(saved, weight)
        ctx.save_for_forward(saved, weight)  # forward-mode AD (jvp, jacfwd): the same tensors, no extra memory

    @staticmethod
    def jvp(ctx, x_tangent, weight_tangent, _):
        """Eq. 1's directional derivative: dx where s > 0, a*dx elsewhere, plus min(x, 0) * da."""
        saved, weight = ctx.saved_tensors
        slope = _per_channel(weight, saved)
        positive = saved > 0
        tangent = torch.zeros_like(saved) if x_tangent is None else torch.where(positive, x_tangent,
                                                                                 slope * x_tangent)
        if weight_tangent is not None:
            negative = _negative_part(saved, positive, slope, ctx.from_output)
            tangent = tangent + negative * weight_tangent.reshape(slope.shape)
        return tangent

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        saved, weight = ctx.saved_tensors
        if torch.is_grad_enabled() or _functorch_active():  # the backward itself will be differentiated
            return (*prelu_backward_differentiable(grad, saved, weight, ctx.from_output), None)
        kernel = _prelu_cpu()
        if kernel is not None and kernel.supports(grad, saved, weight):
            return (*kernel.prelu_backward(grad, saved, weight, ctx.from_output), None)
        grad_x, grad_w = prelu_backward_ops(grad, saved, weight)
        # From the output, the sum of g*y over y <= 0 is a_i times Eq. 2's sum of g*x.
        return grad_x, grad_w / weight if ctx.from_output else grad_w, None


class _PReLUEager(torch.autograd.Function):
    """:class:`_PReLUFunction` in the ctx-in-forward form, for eager autograd outside ``torch.func``: the same
    saved tensor, backward (double backward included) and jvp. Why two forms: ``apply`` of the ``setup_context``
    form costs ~30 µs more per call on CPU (a PReLU forward + backward on an 8×64×2×2 input: 75 µs -> 105 µs,
    torch 2.14, 1 thread of a shared 2-core CPU, best of 3000 timed calls), which a small net's training step pays
    at every layer; ``torch.func`` needs that form."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, from_output: bool) -> torch.Tensor:
        y = F.prelu(x, weight)
        _PReLUFunction.setup_context(ctx, (x, weight, from_output), y)
        return y

    backward = staticmethod(_PReLUFunction.backward)
    jvp = staticmethod(_PReLUFunction.jvp)


class PReLU(nn.PReLU):
    """``torch.nn.PReLU`` (Eq. 1) with a faster backward on CPU (``delving.nn.prelu_cpu``, one pass over memory like
    ReLU's) that keeps ReLU's memory where every slope is positive; the same parameters, outputs and gradients
    (``tests/test_prelu_cpu.py``), to any order: double backward, ``torch.func`` transforms, tracing and export
    behave as with ``nn.PReLU`` (``tests/test_prelu_autograd.py``).

    A subclass, so anything that finds slopes by type (``delving.experiment.training.system.NO_DECAY_MODULES``,
    ``delving.nn.probes.slope_profile``) still finds them. It is ``nn.PReLU`` as is on other devices (CUDA's kernel
    is fused), for 0-d/1-d inputs, without grad, under ``torch.compile``/``torch.export`` (inductor fuses
    ``nn.PReLU``'s backward itself) and under ``torch.jit.trace`` (a trace records torch ops; an
    ``autograd.Function`` has no graph form there).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _prelu_cpu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dim() < 2 or not torch.is_grad_enabled()
                or torch.compiler.is_compiling() or torch.jit.is_tracing()):
            return super().forward(x)
        if _functorch_active():  # the slopes may be batched: no data-dependent choice, the input is saved
            return _PReLUFunction.apply(x, self.weight, False)
        # Every slope > 0: Eq. 1 can be inverted from the output. numpy's min: a torch reduction and .item() cost
        # several µs more per layer.
        return _PReLUEager.apply(x, self.weight, bool(self.weight.detach().numpy().min() > 0))
