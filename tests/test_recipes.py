"""The ImageNet recipe configs (Sec. 3): the paper's hyper-parameters, and a fast_dev_run of each on small
random-size inputs on CPU."""

from pathlib import Path

import pytest

from delving.experiment.training.config import load_config
from delving.errors import DelvingError
from delving.experiment.training.train import fit

RECIPES = sorted(p for p in (Path(__file__).parent.parent / "experiments" / "imagenet").glob("*.yaml")
                 if p.name != "base.yaml")
DRY_RUN = ["data.name=random", "data.image_size=112", "data.max_image_size=144", "data.batch_size=2",
           "data.samples=4", "trainer.fast_dev_run=true", "trainer.enable_progress_bar=false",
           "tracking.wandb=disabled"]


def test_every_model_has_relu_and_prelu_recipes():
    names = {p.stem for p in RECIPES}
    for model in ("model_a", "model_b", "model_c", "small14", "small30"):
        assert {f"{model}_relu", f"{model}_prelu"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_the_papers(path):
    cfg = load_config(path, ["data.root=/imagenet"])
    assert (cfg.data.batch_size, cfg.optim.momentum, cfg.optim.weight_decay) == (128, 0.9, 5e-4)
    assert cfg.data.batch_size_is == "total"  # the paper's 128 is over all its GPUs
    assert (cfg.optim.lr, cfg.optim.schedule, cfg.optim.factor, cfg.optim.min_lr) == (0.01, "plateau", 0.1, 1e-4)
    assert cfg.init.scheme == "paper" and cfg.model.drop_rate == 0.5
    assert cfg.model.activation in path.stem and cfg.model.name == f"delving_{path.stem.split('_r')[0].split('_p')[0]}"
    small = cfg.model.name.startswith("delving_small")
    assert cfg.data.augmentation == ("single_scale" if small else "scale_jitter")  # Table 2 vs Sec. 3
    assert cfg.trainer.max_epochs == (75 if small else 80)


def test_recipe_without_data_root_is_a_one_line_error():
    with pytest.raises(DelvingError, match="data.name=ffcv needs data.root"):
        load_config(RECIPES[0])


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_fast_dev_run_on_random_size_inputs(path, tmp_path):
    cfg = load_config(path, [*DRY_RUN, f"out_dir={tmp_path}"])
    result = fit(cfg, progress=False)
    assert result["status"] == "finished" and result["history"][-1]["val/err1"] <= 1.0
    assert not list(tmp_path.rglob("*.ckpt")), "a dry run writes no checkpoint (model C's would be ~2 GB)"
