"""delving's models as timm citizens (pretrained_cfg, resolve_data_config, create_optimizer_v2's weight decay,
reset_classifier, forward_head(pre_logits), features_only) and any timm model through delving's factory, CLI and
training (resnet18 with relu and PReLU at a tiny input)."""

import math

import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from timm.optim import create_optimizer_v2
from torch import nn

import delving  # noqa: F401
from delving.errors import DelvingError
from delving.models.factory import TimmPReLU, create_initialized, create_model
from delving.nn.prelu import PReLU
from conftest import run_cli

MODELS = sorted(timm.list_models("delving_*"))
PLAIN = ("delving_plain", "delving_resplain")  # 16x16 digits; the others take 224x224 photos
MIN_SIDE = {"delving_plain": 16, "delving_resplain": 16, "delving_small14": 80, "delving_small30": 80}
SMALL = dict(depth=9, widths=(4, 8, 8), fc_width=16, in_chans=3, num_classes=10)  # delving_plain, seconds


@pytest.mark.parametrize("name", MODELS)
def test_resolve_data_config_returns_each_models_cfg(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    cfg = model.pretrained_cfg
    assert cfg["architecture"] == name and model.default_cfg is cfg
    side = 16 if name in PLAIN else 224
    assert cfg["input_size"] == (3, side, side)
    smallest = MIN_SIDE.get(name, 112)  # Table 3's models: 112
    assert cfg["min_input_size"] == (3, smallest, smallest)
    # the named layers exist: timm adapts them for in_chans / num_classes
    modules = dict(model.named_modules())
    assert isinstance(modules[cfg["first_conv"]], nn.Conv2d) and isinstance(modules[cfg["classifier"]], nn.Linear)
    data = resolve_data_config({}, model=model)
    assert data == dict(input_size=cfg["input_size"], interpolation="bilinear", mean=cfg["mean"], std=cfg["std"],
                        crop_pct=cfg["crop_pct"], crop_mode="center")
    assert data["mean"] == pytest.approx((0.485, 0.456, 0.406)) and data["std"] == pytest.approx((0.229, 0.224, 0.225))
    image = create_transform(**data)(Image.new("RGB", (300, 260), (124, 116, 104)))
    assert image.shape == cfg["input_size"]
    torch.testing.assert_close(image, torch.zeros_like(image), atol=0.02, rtol=0)  # the mean colour normalizes to ~0


@pytest.mark.parametrize("name", MODELS)
def test_min_input_size_is_the_smallest_size_the_net_takes(name):
    side = timm.models.get_pretrained_cfg(name).min_input_size[-1]
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=10)
        assert model(torch.empty(1, 3, side, side)).shape == (1, 10)
        largest_level = max(model.pool.levels)
        assert model.forward_features(torch.empty(1, 3, side, side)).shape[-1] == largest_level
        assert model.forward_features(torch.empty(1, 3, side - 8, side - 8)).shape[-1] < largest_level


@pytest.mark.parametrize("name", MODELS)
def test_pool_size_is_the_unpooled_feature_map_at_input_size(name):
    """timm's pool_size: the map forward_features returns at the cfg's input_size (SPP pools it afterwards)."""
    cfg = timm.models.get_pretrained_cfg(name)
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=0, global_pool="")
        features = model.forward_features(torch.empty(1, *cfg.input_size))
        assert model(torch.empty(1, *cfg.input_size)).shape == features.shape  # no pooling, no fc layers
    assert features.shape[-2:] == cfg.pool_size == model.pretrained_cfg["pool_size"]
    assert features.shape[1] == model.num_features == model.head_hidden_size


def test_global_pool_none_spp_and_empty():
    torch.manual_seed(0)
    model = timm.create_model("delving_plain", **SMALL).eval()
    x = torch.randn(2, 3, 16, 16)
    features = model.forward_features(x)
    model.reset_classifier(0, "")  # timm's "no pooling": the forward ends at the last conv map
    assert model.global_pool == "" and not hasattr(model.head, "fc1")
    torch.testing.assert_close(model(x), features)
    torch.testing.assert_close(model.forward_head(features, pre_logits=True), features)
    assert model.head_hidden_size == model.num_features == 8 and isinstance(model.get_classifier(), nn.Identity)
    model.reset_classifier(0)  # None keeps the pooling
    assert model(x).dim() == 4
    model.reset_classifier(4)  # a classifier brings SPP and fresh fc layers back
    assert model.global_pool == "spp" and model(x).shape == (2, 4) and model.head_hidden_size == 16
    assert not model.head.fc1.training  # the model's mode
    with pytest.raises(DelvingError, match="global_pool='' takes num_classes=0"):
        model.reset_classifier(4, "")
    with pytest.raises(DelvingError, match="global_pool='' takes num_classes=0"):
        timm.create_model("delving_plain", global_pool="", **SMALL)
    with pytest.raises(DelvingError, match="global_pool='max' is not supported; valid: None, 'spp'"):
        timm.create_model("delving_plain", global_pool="max", **SMALL)


def test_device_and_dtype_reach_every_parameter_and_a_reset_classifier():
    model = timm.create_model("delving_resplain", device="meta", dtype=torch.float64, **SMALL)
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("meta", torch.float64)}
    model.reset_classifier(0, "")
    model.reset_classifier(3)
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("meta", torch.float64)}
    with pytest.raises(TypeError):
        timm.create_model("delving_plain", not_a_model_arg=1)


def _decay_of_each_parameter(optimizer, model) -> dict[str, float]:
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    return {name: decay[id(p)] for name, p in model.named_parameters()}


@pytest.mark.parametrize("activation", ["prelu", "prelu_shared"])
def test_timm_optimizer_factory_leaves_every_slope_undecayed(activation):
    model = timm.create_model("delving_plain", activation=activation, **SMALL)
    slopes = {n for n, m in model.named_modules() if isinstance(m, nn.PReLU) for n in [f"{n}.weight"]}
    assert model.no_weight_decay() == slopes and len(slopes) == 9 - 1  # every activated layer (fc3 feeds softmax)
    decay = _decay_of_each_parameter(create_optimizer_v2(model, weight_decay=5e-4), model)
    assert {n for n, d in decay.items() if d == 0} >= slopes
    assert decay["features.conv1.conv.weight"] == 5e-4 and decay["head.fc3.fc.weight"] == 5e-4
    # where 1-d parameters are decayed too (biases), no_weight_decay is what keeps the slopes out
    decay = _decay_of_each_parameter(create_optimizer_v2(model, weight_decay=5e-4, filter_bias_and_bn=False),
                                     model)
    assert {n for n, d in decay.items() if d == 0} == slopes
    assert decay["features.conv1.conv.bias"] == 5e-4


def test_forward_head_pre_logits_and_reset_classifier():
    torch.manual_seed(0)
    model = timm.create_model("delving_plain", activation="prelu", **SMALL).eval()
    x = torch.randn(2, 3, 16, 16)
    features = model.forward_features(x)
    assert features.shape[1] == model.num_features == 8
    pre = model.forward_head(features, pre_logits=True)
    assert pre.shape == (2, model.head_hidden_size) == (2, 16)
    fc3 = model.get_classifier()
    assert fc3 is model.head.fc3.fc
    torch.testing.assert_close(fc3(pre), model(x))  # pre_logits is exactly what the classifier reads
    model.reset_classifier(5)
    assert model(x).shape == (2, 5) and model.num_classes == 5 and model.get_classifier().in_features == 16
    model.reset_classifier(0)
    torch.testing.assert_close(model(x), pre)  # no classifier: the forward ends at fc2's activations
    with pytest.raises(DelvingError, match="global_pool='avg' is not supported"):
        model.reset_classifier(3, global_pool="avg")
    headless = timm.create_model("delving_plain", **{**SMALL, "num_classes": 0})
    assert headless(x).shape == (2, 16) and isinstance(headless.get_classifier(), nn.Identity)


@pytest.mark.parametrize("name, size, channels, reductions", [
    ("delving_plain", 16, [4, 8, 8], [1, 2, 4]),
    ("delving_small14", 224, [64, 128, 256], [2, 6, 12]),
    ("delving_model_a", 224, [96, 256, 512, 512], [2, 4, 8, 16]),
])
def test_features_only_gives_every_stage(name, size, channels, reductions):
    kwargs = dict(widths=(4, 8, 8), depth=9) if name == "delving_plain" else {}
    with torch.device("meta"):
        net = timm.create_model(name, features_only=True, **kwargs)
        maps = net(torch.empty(2, 3, size, size))
    assert net.feature_info.channels() == channels and net.feature_info.reduction() == reductions
    assert [m.shape[1] for m in maps] == channels
    assert [m.shape[-1] for m in maps][0] == math.ceil(size / reductions[0])
    with torch.device("meta"):
        last = timm.create_model(name, features_only=True, out_indices=(len(channels) - 1,), **kwargs)
        model = timm.create_model(name, **kwargs)
        x = torch.empty(1, 3, size, size)
        assert last(x)[0].shape == model.forward_features(x).shape


def test_features_only_maps_equal_the_models_own_layers():
    torch.manual_seed(0)
    net = timm.create_model("delving_plain", features_only=True, activation="prelu", depth=9, widths=(4, 8, 8))
    model = timm.create_model("delving_plain", activation="prelu", depth=9, widths=(4, 8, 8))
    features = dict(model.features.named_children())
    model_weights = {k.replace("features.", "features_", 1): v for k, v in model.state_dict().items()}
    net.load_state_dict({k: model_weights[k] for k in net.state_dict()})
    x = torch.randn(2, 3, 16, 16)
    stage1 = features["conv1"](x)
    torch.testing.assert_close(net(x)[0], stage1)
    torch.testing.assert_close(net(x)[-1], model.forward_features(x))


def test_resnet18_with_relu_and_prelu_initialized_at_a_tiny_input():
    relu = create_initialized("resnet18", "he", activation="relu", num_classes=7, in_chans=1)
    assert not any(isinstance(m, nn.PReLU) for m in relu.modules())
    # zero_init_last=False: timm zeroes each block's last BN scale, which would stop the gradient to its first act
    prelu = create_initialized("resnet18", "he", activation="prelu", num_classes=7, in_chans=1, zero_init_last=False)
    acts = [m for m in prelu.modules() if isinstance(m, nn.PReLU)]
    assert acts and all(isinstance(m, TimmPReLU) and isinstance(m, PReLU) for m in acts)
    assert all(m.weight.numel() == 1 and m.weight.item() == 0.25 for m in acts)  # channel-shared, Sec. 2.1's 0.25
    # He init applied (Eq. 10 with Eq. 15's 1 + a^2): conv1 has 7*7*1 inputs per output
    std = prelu.conv1.weight.std().item()
    assert std == pytest.approx(math.sqrt(2 / (1 + 0.25 ** 2) / 49), rel=0.1)
    assert relu.conv1.weight.std().item() == pytest.approx(math.sqrt(2 / 49), rel=0.1)
    x = torch.randn(2, 1, 32, 32)
    out = prelu(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs() > 0 for m in acts)


def test_a_model_without_act_layer_or_an_activation_timm_lacks_is_one_line():
    with pytest.raises(DelvingError, match=r"model 'dla34' takes no act_layer, so model.activation='relu'"):
        with torch.device("meta"):
            create_model("dla34", "relu")
    with pytest.raises(DelvingError, match=r"model.activation='softplus' has no timm act_layer; valid .*'relu'"):
        create_model("resnet18", "softplus")
    with pytest.raises(DelvingError, match="unknown model 'resnet_nope'"):
        create_model("resnet_nope", "relu")


def test_delving_info_prints_a_row_for_a_timm_model():
    proc = run_cli("info", "resnet18", "--activation", "prelu")
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| resnet18 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "224" and int(cells[2].replace(",", "")) == 11_689_512 + 17  # timm's count + 17 slopes
    assert cells[3] == "17" and cells[7] == "21" and cells[5] == cells[8] == "–"
    assert float(cells[4]) == pytest.approx(1.81e9, rel=0.01)  # resnet18's 1.8 GMACs at 224


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "prelu"])
def test_fit_resnet18_fast_dev_run(activation, tmp_path):
    proc = run_cli("fit", "--model.name=resnet18", f"--model.activation={activation}", "--trainer.fast_dev_run=true",
                   "--trainer.enable_progress_bar=false", "--threads=1", "--tracking.wandb=disabled",
                   f"--out_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resnet18-{activation}-he-s0: finished" in proc.stdout
