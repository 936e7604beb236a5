"""delving.nn.prelu.PReLU's CPU backward (delving/nn/prelu_cpu.py's fused kernel, and the composed-ops fallback) against
torch.nn.PReLU: same output, bit-identical input gradient, slope gradient to rounding; which tensor is kept for
the backward; the forked-child guard."""

import multiprocessing

import pytest
import torch
from torch import nn

from delving.nn import prelu_cpu
from delving.nn.prelu import PReLU

SLOPES = {
    "positive": lambda c: torch.linspace(0.05, 1.5, c),  # every a_i > 0: the output is saved (Eq. 1 is invertible)
    "mixed": lambda c: torch.linspace(-0.5, 1.5, c),     # negative, zero and > 1: the input is saved
}


@pytest.fixture
def kernel_calls(monkeypatch) -> list[str]:
    """Which of the fused kernel's loops ran, one entry per backward that took the kernel: ``rows`` (N, C),
    ``parallel`` or ``serial`` planes. A wrapper per loop, so a test sees the kernel ran, not only the result."""
    calls = []
    for loop in ("_rows", "_planes_parallel", "_planes_serial"):
        original = getattr(prelu_cpu, loop)
        monkeypatch.setattr(prelu_cpu, loop, lambda *a, _o=original, _n=loop: calls.append(_n.split("_")[-1])
                            or _o(*a))
    return calls


def _grads(module: nn.Module, x: torch.Tensor, upstream: torch.Tensor):
    x = x.clone().requires_grad_()
    out = module(x)
    out.backward(upstream)
    return out, x.grad, module.weight.grad


def _compare(shape, channels, slopes, dtype=torch.float32, memory_format=torch.contiguous_format):
    torch.manual_seed(0)
    ref, fast = nn.PReLU(channels).to(dtype), PReLU(channels).to(dtype)
    with torch.no_grad():
        ref.weight.copy_(slopes(channels))
        fast.weight.copy_(slopes(channels))
    x = torch.randn(shape, dtype=dtype)
    x.view(-1)[:5] = 0.0  # Eq. 1's boundary: x = 0 takes the slope branch (its gradient is a*g)
    x = x.contiguous(memory_format=memory_format)
    upstream = torch.randn(shape, dtype=dtype).contiguous(memory_format=memory_format)
    out_ref, gx_ref, gw_ref = _grads(ref, x, upstream)
    out_fast, gx_fast, gw_fast = _grads(fast, x, upstream)
    torch.testing.assert_close(out_fast, out_ref, rtol=0, atol=0)
    torch.testing.assert_close(gx_fast, gx_ref, rtol=0, atol=0)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(gw_fast, gw_ref, rtol=tol, atol=tol * shape[0])


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("slopes", sorted(SLOPES))
@pytest.mark.parametrize("channels", [6, 1])
@pytest.mark.parametrize("shape", [(64, 6), (3, 6, 11), (5, 6, 7, 7), (33, 6, 4, 4), (2, 6, 3, 3, 3)])
def test_fused_kernel_matches_torch(shape, channels, slopes, parallel, monkeypatch, kernel_calls):
    monkeypatch.setattr(prelu_cpu, "PARALLEL_MIN_NUMEL", 0 if parallel else 1 << 62)
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if parallel else 1)
    try:
        _compare(shape, channels, SLOPES[slopes])
    finally:
        torch.set_num_threads(threads)
    # the fused kernel computed it (once: nn.PReLU's backward is torch's), and the loop the shape calls for
    assert kernel_calls == ["rows" if len(shape) == 2 else "parallel" if parallel else "serial"]


@pytest.mark.parametrize("slopes", sorted(SLOPES))
def test_fused_kernel_in_float64_and_on_a_large_map(slopes, kernel_calls):
    _compare((2, 4, 5, 5), 4, SLOPES[slopes], dtype=torch.float64)
    assert kernel_calls == ["serial"]  # 100 elements: below PARALLEL_MIN_NUMEL
    _compare((4, 16, 40, 40), 16, SLOPES[slopes])  # 102,400 elements: the parallel kernel at default threads
    assert kernel_calls[1:] == ["parallel" if torch.get_num_threads() > 1 else "serial"]


@pytest.mark.parametrize("slopes", sorted(SLOPES))
def test_channels_last_takes_the_composed_ops_and_matches_torch(slopes, monkeypatch):
    called = []
    original = prelu_cpu.prelu_backward
    monkeypatch.setattr(prelu_cpu, "prelu_backward", lambda *a: called.append(1) or original(*a))
    _compare((4, 8, 6, 6), 8, SLOPES[slopes], memory_format=torch.channels_last)
    assert not called  # NHWC is not the kernel's layout
    _compare((4, 8, 6, 6), 8, SLOPES[slopes])
    assert called


def _saved_tensors(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = module(x)
    return out, saved


def test_the_output_is_kept_when_every_slope_is_positive_else_the_input():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    act = PReLU(3)
    out, saved = _saved_tensors(act, x)
    assert any(t.data_ptr() == out.data_ptr() for t in saved)  # shared with the next layer's saved input
    assert not any(t.data_ptr() == x.data_ptr() for t in saved)
    with torch.no_grad():
        act.weight[1] = 0.0  # a zero slope loses the input where it is negative: keep the input
    out, saved = _saved_tensors(act, x)
    assert any(t.data_ptr() == x.data_ptr() for t in saved)
    assert not any(t.data_ptr() == out.data_ptr() for t in saved)


def _backward_in_child(conn):
    try:
        act = PReLU(4)
        x = torch.randn(2, 4, 8, 8, requires_grad=True)  # small: torch's own ops stay on one thread (see below)
        act(x).backward(torch.ones_like(x))
        expected = x.detach().clamp(max=0).sum(dim=(0, 2, 3))  # Eq. 2 with dE/df = 1
        conn.send((prelu_cpu._state["forked"], torch.allclose(act.weight.grad, expected, rtol=1e-4)))
    except Exception as err:  # noqa: BLE001 (reported to the parent)
        conn.send(repr(err))


def test_a_child_forked_after_a_parallel_backward_computes_serially(monkeypatch):
    """numba's GNU OpenMP layer terminates a forked child that starts a parallel region ("fork() called from a
    process already using GNU OpenMP"); the child must take the serial kernel and still get Eq. 2's gradient.

    The child's tensors are small because torch's own OpenMP pool can hang in a forked child (that is why
    DataLoader workers run on one thread); the kernel's threshold is 0 so that only the guard keeps it serial."""
    monkeypatch.setattr(prelu_cpu, "PARALLEL_MIN_NUMEL", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(2, 4, 8, 8, requires_grad=True)
        PReLU(4)(x).backward(torch.randn_like(x))
        assert prelu_cpu._state["launched"]
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_backward_in_child, args=(child,))
        proc.start()
        proc.join(60)
        if proc.exitcode is None:
            proc.kill()
        assert proc.exitcode == 0, f"child exit code {proc.exitcode}"
        assert parent.recv() == (True, True)
    finally:
        torch.set_num_threads(threads)
