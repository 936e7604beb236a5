import pytest

from delving.cli import overrides
from delving.experiment.training.config import load_config
from delving.errors import DelvingError


def test_defaults_experiment_and_overrides_merge(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model:\n  depth: 22\noptim:\n  lr: 0.05\n")
    cfg = load_config(path, ["model.depth=30", "init.scheme=xavier"])
    assert (cfg.model.depth, cfg.optim.lr, cfg.init.scheme) == (30, 0.05, "xavier")
    assert cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 5e-4  # untouched defaults (Sec. 3)


def test_repo_experiment_loads():
    cfg = load_config("experiments/init_depth.yaml")
    assert cfg.model.name == "delving_plain" and cfg.model.depth == 30


@pytest.mark.parametrize("override, message", [
    ("model.dept=30", r"unknown config key 'model.dept'.*valid keys under model: .*'depth'"),
    ("bogus=1", r"unknown config key 'bogus'"),
    ("model.depth=deep", r"bad config value for 'model.depth'"),
    ("model.activation=swish", r"unknown model.activation 'swish'; valid: .*'prelu'"),
    ("init.scheme=kaiming",
     r"unknown init.scheme 'kaiming'; valid: 'glorot', 'he', 'lsuv', 'paper', 'tat', 'variance_preserving', 'xavier'"),
    ("init.mode=fan_avg", r"unknown init.mode 'fan_avg'"),
    ("optim.lr=-1", r"optim.lr=-1.0 must be positive"),
])
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(DelvingError, match=message) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(DelvingError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(DelvingError, match="malformed YAML in .*bad.yaml line"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(DelvingError, match="must hold a mapping"):
        load_config(scalar)


@pytest.mark.parametrize("override", ["name=", "name=  ", "tracking.group=", "model.depth="])
def test_an_override_without_a_value_is_refused_not_read_as_null(override, tmp_path):
    """OmegaConf reads ``key=`` as null: ``name=`` would train under the default name, ``model.depth=`` the
    builder's default depth."""
    key = override.split("=")[0]
    with pytest.raises(DelvingError, match=rf"^{key}= has no value; valid: {key}=VALUE \(leave the override out"):
        load_config(None, [override])
    assert load_config(None, ["name=null"]).name is None  # null said outright is the default, as in YAML
    assert load_config(None, ["tracking.group=''"]).tracking.group == ""  # an empty string said outright is a value
    (tmp_path / "empty_name.yaml").write_text("name: ''\n")
    with pytest.raises(DelvingError, match=r"name='' is not a folder name"):
        load_config(tmp_path / "empty_name.yaml")


def test_cli_override_syntax():
    assert overrides(["--model.depth=30", "--seed", "2"]) == ["model.depth=30", "seed=2"]
    with pytest.raises(DelvingError, match="has no value"):
        overrides(["--model.depth"])
    with pytest.raises(DelvingError, match="unexpected argument 'depth'"):
        overrides(["depth"])


def test_batch_size_per_process_or_total():
    from delving.experiment.training.config import DataConfig, per_process_batch

    assert per_process_batch(DataConfig(batch_size=128, batch_size_is="total"), 8) == 16
    assert per_process_batch(DataConfig(batch_size=128), 8) == 128  # per process by default
    with pytest.raises(DelvingError, match=r"data.batch_size=128 is a total .* does not divide by the 3 processes"):
        per_process_batch(DataConfig(batch_size=128, batch_size_is="total"), 3)
    with pytest.raises(DelvingError, match="does not divide by the 6 processes"):  # 3 GPUs x 2 nodes, at load
        load_config(None, ["data.batch_size=128", "data.batch_size_is=total", "trainer.devices=3",
                           "trainer.num_nodes=2"])
    with pytest.raises(DelvingError, match="unknown data.batch_size_is 'global'; valid: 'per_process', 'total'"):
        load_config(None, ["data.batch_size_is=global"])
