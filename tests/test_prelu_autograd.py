"""delving.nn.prelu.PReLU wherever autograd goes, against an nn.PReLU twin in float64: double backward
(gradgradcheck, a Hessian-vector product of a whole net), torch.func (per-sample gradients with vmap(grad),
jacrev, forward-mode jvp/jacfwd), torch.jit.trace and torch.export; and the science core without numba."""

import copy
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vmap

import delving  # noqa: F401
from delving.nn import prelu as prelu_module
from delving.nn.prelu import PReLU

TOL = dict(rtol=1e-8, atol=1e-8)
SLOPES = {
    "positive": lambda c: torch.linspace(0.05, 1.5, c),  # the output is saved (Eq. 1 inverted in the backward)
    "mixed": lambda c: torch.linspace(-0.5, 1.5, c),     # negative, zero and > 1: the input is saved
}


@pytest.fixture
def differentiable_calls(monkeypatch):
    """Count the backward passes that took the differentiable path (the one autograd can go through again)."""
    calls = []
    original = prelu_module.prelu_backward_differentiable
    monkeypatch.setattr(prelu_module, "prelu_backward_differentiable", lambda *a: calls.append(1) or original(*a))
    return calls


def _layer(channels: int, slopes: str) -> PReLU:
    layer = PReLU(channels).double()
    with torch.no_grad():
        layer.weight.copy_(SLOPES[slopes](channels) if channels > 1 else SLOPES[slopes](2)[:1])
    return layer


@pytest.mark.parametrize("slopes", sorted(SLOPES))
@pytest.mark.parametrize("channels", [4, 1])
def test_gradgradcheck_on_the_layer(channels, slopes, differentiable_calls):
    layer = _layer(channels, slopes)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    assert torch.autograd.gradgradcheck(layer, (x,))
    # and w.r.t. the slopes: Eq. 2's dE/da is linear in x, its derivative w.r.t. a is zero, w.r.t. x is g
    assert torch.autograd.gradgradcheck(lambda x_, w: prelu_module._PReLUFunction.apply(x_, w, slopes == "positive"),
                                        (x, layer.weight.detach().clone().requires_grad_()))
    assert differentiable_calls
    # the differentiable backward's own first-order values are F.prelu's (gradgradcheck checks only consistency)
    w = layer.weight.detach().clone().requires_grad_()
    g = torch.randn_like(x)
    ours = torch.autograd.grad(prelu_module._PReLUFunction.apply(x, w, slopes == "positive"), (x, w), g,
                               create_graph=True)
    torch.testing.assert_close(ours, torch.autograd.grad(F.prelu(x, w), (x, w), g), **TOL)


def _twin(model: nn.Module) -> nn.Module:
    """The same net with torch's own nn.PReLU in place of every delving PReLU (same slopes)."""
    twin = copy.deepcopy(model)
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PReLU):
                ref = nn.PReLU(child.num_parameters).to(child.weight.dtype)
                ref.weight.data.copy_(child.weight.data)
                setattr(parent, name, ref)
    assert not any(isinstance(m, PReLU) for m in twin.modules())
    return twin


@pytest.fixture(params=["mixed", pytest.param("positive", marks=pytest.mark.slow)])
def nets(request):
    """An 11-layer delving_plain with PReLU (float64, the given slopes) and its nn.PReLU twin."""
    torch.manual_seed(0)
    model = timm.create_model("delving_plain", depth=11, activation="prelu", in_chans=1, num_classes=10,
                              widths=(4, 8, 8), fc_width=16).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, PReLU):
                m.weight.copy_(SLOPES[request.param](m.num_parameters))
    return model, _twin(model)


def _batch():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(2, 1, 16, 16, dtype=torch.float64, generator=gen), torch.tensor([3, 7])


def _hvp(net: nn.Module, x, y) -> list[torch.Tensor]:
    params = list(net.parameters())
    loss = F.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    vector = [torch.linspace(-1, 1, p.numel(), dtype=p.dtype).view_as(p) for p in params]
    return list(torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vector)), params))


def test_hessian_vector_product_of_the_whole_net_equals_the_twins(nets, differentiable_calls):
    model, twin = nets
    x, y = _batch()
    hvp = _hvp(model, x, y)
    assert len(differentiable_calls) == 10  # every PReLU's backward (10 activated layers) on the graph path
    for ours, ref in zip(hvp, _hvp(twin, x, y)):
        torch.testing.assert_close(ours, ref, **TOL)
    assert any(h.abs().max() > 0 for h in hvp)


def _per_sample_grads(net: nn.Module, x, y) -> dict[str, torch.Tensor]:
    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(net, p, (xi[None],)), yi[None])

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)


def test_vmap_grad_per_sample_gradients_equal_the_twins(nets, differentiable_calls):
    model, twin = nets
    x, y = _batch()
    ours, ref = _per_sample_grads(model, x, y), _per_sample_grads(twin, x, y)
    assert differentiable_calls  # the custom Function ran under the transforms, not a fallback
    for key in ref:
        assert ours[key].shape[0] == 2
        torch.testing.assert_close(ours[key], ref[key], **TOL)
    # per-sample gradients average to the batch gradient
    F.cross_entropy(model(x), y, reduction="sum").backward()
    torch.testing.assert_close(ours["features.conv1.act.weight"].sum(0), model.features.conv1.act.weight.grad, **TOL)


def test_jacrev_equals_the_twins(nets, differentiable_calls):
    model, twin = nets
    x, _ = _batch()
    jac = jacrev(model)(x)
    assert jac.shape == (2, 10, 2, 1, 16, 16) and differentiable_calls
    torch.testing.assert_close(jac, jacrev(twin)(x), **TOL)
    slopes = {k: v for k, v in model.named_parameters() if k.endswith("act.weight")}  # w.r.t. the slopes too
    jac_w = jacrev(lambda p: functional_call(model, p, (x,)))(slopes)
    jac_w_ref = jacrev(lambda p: functional_call(twin, p, (x,)))({k: v for k, v in twin.named_parameters()
                                                                  if k in slopes})
    for key in jac_w_ref:
        torch.testing.assert_close(jac_w[key], jac_w_ref[key], **TOL)


@pytest.mark.parametrize("slopes", sorted(SLOPES))
def test_forward_mode_jvp_and_jacfwd_on_the_layer_equal_the_twins(slopes):
    layer = _layer(4, slopes)
    twin = _twin(nn.Sequential(layer))[0]
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(jacfwd(layer)(x), jacfwd(twin)(x), **TOL)
    w = layer.weight.detach()
    tangents = (torch.randn_like(x), torch.randn_like(w))
    ours = jvp(lambda x_, w_: functional_call(layer, {"weight": w_}, (x_,)), (x, w), tangents)
    ref = jvp(lambda x_, w_: functional_call(twin, {"weight": w_}, (x_,)), (x, w), tangents)
    torch.testing.assert_close(ours, ref, **TOL)
    assert torch.autograd.gradcheck(layer, (x.requires_grad_(),), check_forward_ad=True)
    # forward-mode w.r.t. the slopes too, with the tensor the eager layer saves (the output where every a > 0)
    assert torch.autograd.gradcheck(lambda x_, w_: prelu_module._PReLUEager.apply(x_, w_, slopes == "positive"),
                                    (x, w.clone().requires_grad_()), check_forward_ad=True)


def test_jvp_through_the_whole_net_equals_the_twins(nets):
    model, twin = nets
    x, _ = _batch()
    tangent = torch.randn_like(x)
    torch.testing.assert_close(jvp(model, (x,), (tangent,)), jvp(twin, (x,), (tangent,)), **TOL)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace is deprecated in favour of export
def test_jit_trace_with_grad_gives_a_valid_graph_equal_to_eager(nets):
    model, _ = nets
    x, _ = _batch()
    traced = torch.jit.trace(model, (x,))  # its sanity check reruns the graph and compares: raises if it differs
    other = torch.randn_like(x)
    torch.testing.assert_close(traced(other), model(other), rtol=0, atol=0)
    traced(other).sum().backward()
    assert model.features.conv1.act.weight.grad is not None


def test_torch_export_equals_eager(nets):
    model, _ = nets
    x, _ = _batch()
    exported = torch.export.export(model, (x,))
    other = torch.randn_like(x)
    torch.testing.assert_close(exported.module()(other), model(other), rtol=0, atol=0)


def test_first_order_backward_keeps_the_fast_path(differentiable_calls):
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    PReLU(3)(x).sum().backward()
    assert not differentiable_calls and x.grad is not None


NO_NUMBA = """
import sys, warnings
sys.modules["numba"] = None  # `import numba` now raises ImportError, as on a machine without it
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import delving, timm, torch
    from delving.nn.init import initialize
    from delving.nn.prelu import PReLU
    for name in timm.list_models("delving_*"):
        with torch.device("meta"):
            timm.create_model(name, activation="prelu")
    model = initialize(timm.create_model("delving_plain", depth=9, activation="prelu", in_chans=1), "he")
    x = torch.randn(2, 1, 16, 16, requires_grad=True)
    model(x).sum().backward()
    ref = torch.nn.PReLU(4)
    act = PReLU(4)
    y = torch.randn(3, 4, 5, 5)
    a, b = y.clone().requires_grad_(), y.clone().requires_grad_()
    act(a).square().sum().backward()
    ref(b).square().sum().backward()
    assert torch.equal(a.grad, b.grad) and torch.allclose(act.weight.grad, ref.weight.grad, rtol=1e-5)
notes = [w for w in caught if "numba is not available" in str(w.message)]
assert "numba" not in sys.modules or sys.modules["numba"] is None
assert "delving.nn.prelu_cpu" not in sys.modules
print("notes", len(notes))
"""


@pytest.mark.slow
def test_science_core_and_every_model_without_numba():
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(NO_NUMBA)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("notes 1")  # one note, however many PReLUs are built
