"""The torchvision folder data module on real photographs (scikit-learn's bundled sample images, as JPEG crops)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from delving.experiment.training.config import load_config
from delving.data.folder import FolderDataModule
from delving.errors import DelvingError
from delving.experiment.training.train import fit


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """root/{train,val}/{china,flower}/*.jpg: 427x640 photos cut into 200x260 crops."""
    root = tmp_path_factory.mktemp("photos")
    photos = load_sample_images()
    for cls, image in zip(("china", "flower"), photos.images):
        for split, offsets in (("train", range(0, 160, 20)), ("val", (170, 190))):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i, y in enumerate(offsets):
                crop = np.ascontiguousarray(image[y:y + 200, 2 * y:2 * y + 260])
                Image.fromarray(crop).save(folder / f"{i}.jpg", quality=90)
    return root


@pytest.mark.parametrize("augmentation", ["scale_jitter", "single_scale", "inception", "none"])
def test_pipelines_give_crops_of_the_configured_size(photo_folder, augmentation):
    dm = FolderDataModule(photo_folder, image_size=64, batch_size=4, augmentation=augmentation, color_jitter=True)
    dm.setup("fit")
    assert dm.num_classes == 2 and len(dm.train_set) == 16 and len(dm.val_set) == 4
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 64, 64) and y.shape == (4,)
    assert abs(float(x.mean())) < 1.5  # normalized, not 0..255
    xv, _ = next(iter(dm.val_dataloader()))
    assert xv.shape == (4, 3, 64, 64)


def test_missing_or_empty_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(DelvingError, match="data folder not found: .*train"):
        FolderDataModule(tmp_path / "nowhere")
    (tmp_path / "train").mkdir()
    with pytest.raises(DelvingError, match="has no class sub-folders"):
        FolderDataModule(tmp_path)


def test_training_step_on_the_photos(photo_folder, tmp_path):
    cfg = load_config(None, [
        "data.name=folder", f"data.root={photo_folder}", "data.image_size=32", "data.batch_size=4",
        "model.depth=9", "model.kwargs.widths=[4,8,8]", "model.kwargs.fc_width=16", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "tracking.wandb=disabled", f"out_dir={tmp_path}"])
    result = fit(cfg, progress=False)
    assert result["status"] == "finished" and result["history"][0]["step"] == 4  # 16 images / batch 4
