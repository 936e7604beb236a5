"""Speed options compute the same thing: delving.layers.PReLU against torch.nn.PReLU (forward and both gradients),
and each switch of delving.speed (channels_last, in-place activations, bf16 autocast, torch.compile) against the
plain model after a few SGD steps. No timings here: benchmarks/train_throughput.py measures speed."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import ROOT
from delving.config import load_config
from delving.errors import DelvingError
from delving.layers import PReLU, make_activation
from delving.models import create_initialized
from delving.speed import SpeedOptions, apply_speed_options
from delving.system import param_groups

STEPS = 3
FP32_TOL = 1e-4   # relative: the same math in another order (NHWC kernels, fused reductions)
BF16_TOL = 5e-2   # relative: bf16 keeps 8 bits of mantissa, ~0.4% per rounding, over 9 layers and 3 steps


def _pair(channels: int, slopes: torch.Tensor) -> tuple[nn.PReLU, PReLU]:
    ref, fast = nn.PReLU(channels), PReLU(channels)
    with torch.no_grad():
        ref.weight.copy_(slopes)
        fast.weight.copy_(slopes)
    return ref, fast


@pytest.mark.parametrize("shape", [(5, 6, 7, 7), (64, 6), (3, 6, 11), (33, 6, 4, 4), (2, 6, 3, 3, 3)])
@pytest.mark.parametrize("channels", [6, 1])
def test_prelu_matches_torch_forward_and_gradients(shape, channels):
    torch.manual_seed(0)
    slopes = torch.linspace(-0.5, 1.5, channels)  # negative, zero-crossing and > 1 slopes, not just 0.25
    ref, fast = _pair(channels, slopes)
    x = torch.randn(shape)
    x.view(-1)[:5] = 0.0  # Eq. 1's boundary: y = 0 takes the slope branch (its gradient is a*g)
    upstream = torch.randn(shape)
    x_ref, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, out_fast = ref(x_ref), fast(x_fast)
    out_ref.backward(upstream)
    out_fast.backward(upstream)
    torch.testing.assert_close(out_fast, out_ref, rtol=0, atol=0)
    torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=0, atol=0)
    torch.testing.assert_close(fast.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)


def test_prelu_matches_torch_on_channels_last_input():
    torch.manual_seed(0)
    ref, fast = _pair(8, torch.rand(8))
    x = torch.randn(4, 8, 6, 6).to(memory_format=torch.channels_last)
    x_ref, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref(x_ref).sum().backward()
    fast(x_fast).sum().backward()
    torch.testing.assert_close(x_fast.grad, x_ref.grad)
    torch.testing.assert_close(fast.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)


def test_prelu_is_still_an_nn_prelu_for_slopes_and_weight_decay_groups():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), make_activation("prelu", 4), nn.Conv2d(4, 4, 3),
                          make_activation("prelu_shared", 4))
    assert all(isinstance(model[i], nn.PReLU) for i in (1, 3))
    groups = {g["name"]: g["params"] for g in param_groups(model, 5e-4)}
    assert {id(p) for p in groups["no_decay"]} == {id(model[1].weight), id(model[3].weight)}


def _tiny(activation: str) -> nn.Module:
    return create_initialized("delving_plain", "he", activation=activation, depth=9, widths=(4, 8, 8), fc_width=16,
                              in_chans=1, num_classes=10, generator=torch.Generator().manual_seed(0))


def _sgd_losses(model: nn.Module, bf16: bool = False) -> list[float]:
    """Loss at each of STEPS SGD steps on one fixed batch (dropout off: it draws differently per layout)."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 1, 16, 16, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.eval()
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("activation", ["relu", "prelu"])
@pytest.mark.parametrize("option, tol", [("channels_last", FP32_TOL), ("inplace_activations", FP32_TOL)])
def test_option_gives_the_same_losses(activation, option, tol):
    plain = _sgd_losses(_tiny(activation))
    fast = _sgd_losses(apply_speed_options(_tiny(activation), SpeedOptions(**{option: True})))
    assert plain[-1] < plain[0]  # the steps really train
    torch.testing.assert_close(fast, plain, rtol=tol, atol=0)


@pytest.mark.parametrize("activation", ["relu", "prelu"])
def test_bf16_autocast_gives_the_same_losses_within_bf16_tolerance(activation):
    plain = _sgd_losses(_tiny(activation))
    torch.testing.assert_close(_sgd_losses(_tiny(activation), bf16=True), plain, rtol=BF16_TOL, atol=0)


@pytest.mark.slow
def test_compile_gives_the_same_losses():
    plain = _sgd_losses(_tiny("prelu"))
    compiled = apply_speed_options(_tiny("prelu"), SpeedOptions(compile=True))
    torch.testing.assert_close(_sgd_losses(compiled), plain, rtol=FP32_TOL, atol=0)
    assert set(compiled.state_dict()) == set(_tiny("prelu").state_dict())  # checkpoints keep their keys


def test_channels_last_really_changes_the_memory_format():
    model = apply_speed_options(_tiny("relu"), SpeedOptions(channels_last=True))
    outputs = []
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)  # 1 channel: both
    conv.register_forward_hook(lambda m, i, out: outputs.append(out))
    model(torch.randn(2, 1, 16, 16))  # an ordinary NCHW batch: the weights' layout decides the output's
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert outputs[0].is_contiguous(memory_format=torch.channels_last) and not outputs[0].is_contiguous()


def test_inplace_switches_relus_and_leaves_prelu_alone():
    relu_model = apply_speed_options(_tiny("relu"), SpeedOptions(inplace_activations=True))
    assert all(m.inplace for m in relu_model.modules() if isinstance(m, nn.ReLU))
    prelu_model = apply_speed_options(_tiny("prelu"), SpeedOptions(inplace_activations=True))
    assert not any(isinstance(m, nn.ReLU) for m in prelu_model.modules())  # PReLU's backward needs its input


def test_config_switches_are_typed_and_checked():
    cfg = load_config(None, ["trainer.channels_last=true", "trainer.compile=false"])
    assert SpeedOptions.from_trainer(cfg.trainer) == SpeedOptions(channels_last=True)
    with pytest.raises(DelvingError, match="trainer.channels_last"):
        load_config(None, ["trainer.channels_last=sometimes"])
    with pytest.raises(DelvingError, match="log_variance=false"):
        load_config(None, ["trainer.inplace_activations=true"])


def test_fit_with_the_switches_on_trains(tiny):
    from delving.train import fit

    cfg = load_config(None, [*tiny, "model.activation=prelu", "trainer.channels_last=true",
                             "trainer.inplace_activations=true", "tracking.log_variance=false"])
    result = fit(cfg, progress=False)
    assert result["status"] == "finished" and result["final_val_err1"] is not None


def _benchmark():
    spec = importlib.util.spec_from_file_location("train_throughput", ROOT / "benchmarks" / "train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_benchmark_mac_accounting_and_groups():
    bench = _benchmark()
    assert bench.step_macs(2.0e9, 8) == 3 * 2.0e9 * 8  # forward + two backward products per weight layer
    groups = bench.default_groups()
    keys = ("model", "activation", "precision", "options", "torch_prelu")
    for name, variants in groups.items():
        for k, variant in enumerate(variants[1:], start=1):  # each differs from an earlier one in one respect only
            assert any(sum(getattr(variant, key) != getattr(earlier, key) for key in keys) == 1
                       for earlier in variants[:k]), (name, variant.label)
    assert {v.activation for v in groups["a"]} >= {"relu", "prelu", "prelu_shared"}
    assert groups["b-bf16"][1].label == "model_b prelu +bf16-mixed"
