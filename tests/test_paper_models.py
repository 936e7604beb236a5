"""Every registered architecture against the paper: Table 3's complexity and depths, shapes at two input sizes,
gradients, PReLU parameter counts, the paper's init stds, a seeded output, and Table 1's layer names."""

import math

import pytest
import torch
from torch import nn

from delving.nn.probes import slope_profile
from delving.models import PAPER_MODELS, create_initialized
from delving.models.complexity import model_size
from paper_models import BIG, EXPECTED, MODELS, NUM_CLASSES, min_size, seeded_output


def marked(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in names]


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_complexity_and_depth_match_the_paper(name):
    size = model_size(name, 224)
    assert size.depth == PAPER_MODELS[name].depth  # A 19, B 22, C 22, Table 1's 14, Fig. 3's 30
    if size.paper_mult_adds:  # Table 3: 1.90, 2.32, 5.30 x 10^10
        assert size.mult_adds == pytest.approx(size.paper_mult_adds, rel=0.03)


def test_spp_gives_the_papers_fc1_inputs():
    """63 bins x 512 = 32,256 for A/B, 63 x 896 = 56,448 for C; 50 bins x 256 for the 14-layer model."""
    import timm

    with torch.device("meta"):
        widths = {n: timm.create_model(n).head.fc1.fc.in_features for n in PAPER_MODELS}
    assert widths["delving_model_a"] == widths["delving_model_b"] == 63 * 512
    assert widths["delving_model_c"] == 63 * 896
    assert widths["delving_small14"] == widths["delving_small30"] == 50 * 256


@pytest.mark.parametrize("name", marked(MODELS))
def test_forward_two_sizes_finite_and_every_parameter_learns(name):
    model = create_initialized(name, "paper", activation="prelu", num_classes=NUM_CLASSES)
    for size in (min_size(name), min_size(name) + 32):
        out = model(torch.randn(2, 3, size, size))
        assert out.shape == (2, NUM_CLASSES) and torch.isfinite(out).all()
    model.zero_grad()
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def activated_widths(model: nn.Module) -> list[int]:
    """Output widths of every conv and of every fc but the last (the activated layers, Sec. 2.1)."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return [getattr(m, "out_channels", None) or m.out_features for m in layers[:-1]]


@pytest.mark.parametrize("name", MODELS)
def test_prelu_adds_one_parameter_per_activated_channel_or_layer(name):
    import timm

    with torch.device("meta"):
        count = {a: sum(p.numel() for p in timm.create_model(name, activation=a).parameters())
                 for a in ("relu", "prelu", "prelu_shared")}
        widths = activated_widths(timm.create_model(name))
    assert count["prelu"] - count["relu"] == sum(widths)
    assert count["prelu_shared"] - count["relu"] == len(widths)


@pytest.mark.parametrize("name", marked(MODELS))
@pytest.mark.parametrize("activation, a", [("relu", 0.0), ("prelu", 0.25)])
def test_paper_init_stds_on_every_conv_and_fc(name, activation, a):
    """Eq. 14 (fan_out) with Eq. 15's (1 + a²) on convs; fc1, fc2, fc3 at 0.01, 0.01, 0.001; biases zero."""
    model = create_initialized(name, "paper", activation=activation, num_classes=1000,
                               generator=torch.Generator().manual_seed(0))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for conv in convs:
        fan_out = conv.out_channels * math.prod(conv.kernel_size)
        expected = math.sqrt(2 / ((1 + a * a) * fan_out))
        assert float(conv.weight.detach().std()) == pytest.approx(expected, rel=0.1 if conv.weight.numel() < 5000
                                                                  else 0.03)
    for fc, std in zip(fcs, (0.01, 0.01, 0.001)):
        assert float(fc.weight.detach().std()) == pytest.approx(std, rel=0.03)
    assert all(torch.all(m.bias == 0) for m in convs + fcs)


@pytest.mark.parametrize("name", marked(MODELS))
def test_seeded_output_matches_the_saved_file(name):
    _, out = seeded_output(name)
    expected = torch.load(EXPECTED / f"{name}.pt")
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))


def test_table1_slope_profile_uses_the_papers_layer_names():
    model = create_initialized("delving_small14", "paper", activation="prelu")
    names = [r.layer for r in slope_profile(model)]
    assert names == ["conv1", "conv21", "conv22", "conv23", "conv24",
                     "conv31", "conv32", "conv33", "conv34", "conv35", "conv36", "fc1", "fc2"]
    x = torch.randn(1, 3, 224, 224)
    assert model.forward_features(x).shape[-2:] == (18, 18)  # [10]: stage 3 is 18x18 (stage 2 "dominantly 36x36")


@pytest.mark.slow
def test_one_training_step_of_model_a_at_224():
    model = create_initialized("delving_model_a", "paper", activation="prelu", num_classes=1000)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(2, 3, 224, 224), torch.tensor([3, 7])
    before = model.features.conv1.conv.weight.detach().clone()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(math.log(1000), rel=0.05)  # fc3 std 0.001: uniform
    assert not torch.equal(model.features.conv1.conv.weight, before)


def test_info_command_prints_the_papers_numbers():
    from conftest import run_cli

    proc = run_cli("info", "delving_model_a", "delving_small14")
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| delving_model_a |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "224" and cells[7] == "19" and cells[8] == "19"
    assert float(cells[6]) == pytest.approx(1.0, abs=0.03)  # mult-adds / Table 3's 1.90e10


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_any_test_scale_from_224_up_through_separable_features_and_head(name):
    """The paper tests at 256, 384 and 480 (Table 4); shapes checked on the meta device (no compute)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, num_classes=1000)
        for size in (224, 256, 384, 480):
            features = model.forward_features(torch.empty(2, 3, size, size))
            assert features.shape[:2] == (2, model.num_features)
            assert model.forward_head(features).shape == (2, 1000)
