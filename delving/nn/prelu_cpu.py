"""PReLU's backward on CPU as one fused pass over memory (Eq. 2 and 3 of the paper), compiled by numba.

Why hand-written: torch's CPU kernel (``_prelu_kernel_backward``) is scalar, writes a full-size slope gradient and
then reduces it, ~4x the cost of ReLU's backward; composed torch ops (``delving.nn.prelu.prelu_backward_ops``) still
take ~4 passes over memory. Here each (sample, channel) plane is read once: the input gradient is written and the
slope gradient summed in the same loop, so the backward moves the same bytes as ReLU's ``threshold_backward``.
No maintained library ships a fused CPU PReLU backward (oneDNN has one but torch does not route to it).

Threads: numba's ``omp`` threading layer is preferred (when the user has not chosen one). Its workers and torch's
OpenMP workers take turns cleanly; with ``tbb`` they competed for the cores and the kernel ran ~2x slower on 2
cores (measured by ``benchmarks/train_throughput.py``). GNU OpenMP is not fork-safe, so a child forked after a
parallel launch uses the single-threaded kernel.
"""

from __future__ import annotations

import os

import numba
import numpy as np
import torch
from numba import njit, prange

if "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ and "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]  # read at numba's first parallel launch

DTYPES = (torch.float32, torch.float64)
# Below this many elements one thread is faster than waking the others (a launch costs ~10 µs).
PARALLEL_MIN_NUMEL = 1 << 15

_state = {"launched": False, "forked": False, "threads": 0}


def _after_fork_in_child() -> None:
    _state["forked"] = _state["launched"]


os.register_at_fork(after_in_child=_after_fork_in_child)


@njit(cache=True, fastmath={"reassoc", "contract"})  # reassoc: the sum below vectorizes
def _plane(g, s, a, out):
    """One plane: out = g where s > 0, else a*g (Eq. 3's df/dy); returns the sum of g*s over s <= 0 (Eq. 2).

    The sum runs in the plane's dtype across the vector lanes (a float64 accumulator made the kernel ~1.5x slower
    on small maps); planes are summed in float64."""
    zero = s.dtype.type(0.0)
    total = zero
    for i in range(g.shape[0]):
        gv = g[i]
        sv = s[i]
        out[i] = a * gv if sv <= zero else gv
        total += gv * min(sv, zero)
    return total


@njit(cache=True)
def _slope_grad(sums, a, from_output):
    """Eq. 2's dE/da from partial sums: ``sums[i]`` belongs to slope i mod len(a) (one slope per channel, or one
    for all). Where the output was saved, the sums are of g*y = a*(g*x), so they are divided by a."""
    total = np.zeros(a.shape[0], dtype=np.float64)
    for i in range(sums.shape[0]):
        total[i % a.shape[0]] += sums[i]
    grad = np.empty_like(a)
    for k in range(a.shape[0]):
        grad[k] = total[k] / a[k] if from_output else total[k]
    return grad


@njit(parallel=True, cache=True)
def _planes_parallel(g, s, a, from_output):
    out = np.empty_like(g)
    sums = np.empty(g.shape[0], dtype=g.dtype)
    for p in prange(g.shape[0]):
        sums[p] = _plane(g[p], s[p], a[p % a.shape[0]], out[p])
    return out, _slope_grad(sums, a, from_output)


@njit(cache=True)
def _planes_serial(g, s, a, from_output):
    out = np.empty_like(g)
    sums = np.empty(g.shape[0], dtype=g.dtype)
    for p in range(g.shape[0]):
        sums[p] = _plane(g[p], s[p], a[p % a.shape[0]], out[p])
    return out, _slope_grad(sums, a, from_output)


@njit(cache=True, fastmath={"reassoc", "contract"})
def _rows(g, s, a, from_output):
    """(N, C) inputs (after an fc layer): planes of one element, so the loop runs along the channels instead.
    Serial: an fc layer's activations are small (N × 4096)."""
    out = np.empty_like(g)
    sums = np.zeros(g.shape[1], dtype=np.float64)
    zero = s.dtype.type(0.0)
    shared = a.shape[0] == 1
    for n in range(g.shape[0]):
        for c in range(g.shape[1]):
            gv = g[n, c]
            sv = s[n, c]
            out[n, c] = a[0 if shared else c] * gv if sv <= zero else gv
            sums[c] += gv * min(sv, zero)
    return out, _slope_grad(sums, a, from_output)


def supports(grad: torch.Tensor, saved: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the fused kernel takes these tensors: fp32/fp64 (N, C, ...) tensors in contiguous NCHW order."""
    return (saved.dtype in DTYPES and grad.dtype == saved.dtype == weight.dtype and saved.is_contiguous()
            and grad.is_contiguous())


def prelu_backward(grad: torch.Tensor, saved: torch.Tensor, weight: torch.Tensor,
                   from_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients w.r.t. PReLU's input and slopes (Eq. 3's df/dy and Eq. 2), from ``saved`` = the input, or the
    output when every slope is positive (``from_output``: then s <= 0 exactly where the input is, and x = y / a).

    Call only where :func:`supports` holds. Few Python steps on purpose: between two convs' backward passes, each
    one costs several times what it costs in a warm loop.
    """
    g, s, a = grad.numpy(), saved.detach().numpy(), weight.detach().numpy()
    if s.ndim == 2:
        out, grad_w = _rows(g, s, a, from_output)
    else:
        planes = (s.shape[0] * s.shape[1], -1)
        g, s = g.reshape(planes), s.reshape(planes)
        threads = torch.get_num_threads()
        if threads > 1 and s.size >= PARALLEL_MIN_NUMEL and not _state["forked"]:
            if threads != _state["threads"]:
                numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
                _state["threads"] = threads
            _state["launched"] = True
            out, grad_w = _planes_parallel(g, s, a, from_output)
        else:
            out, grad_w = _planes_serial(g, s, a, from_output)
    return torch.from_numpy(out).view(saved.shape), torch.from_numpy(grad_w).view(weight.shape)
