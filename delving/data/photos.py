"""A small real-photo dataset in the ImageNet folder layout, made on the fly (no download).

The photographs that ship with scikit-learn (``load_sample_images``) and scikit-image (``skimage.data``) are
the classes; each image is a random crop of its class's photograph (random position, scale and aspect ratio,
random mirror), resized to an ImageNet-like size (longer side ``size``, 500 by default, like ImageNet's
typical 500x375) and saved as JPEG in ``root/{train,val}/<class>/``. It exercises the whole path of the
ImageNet recipes — folder → ``.beton`` → DataModule → model — with real JPEG statistics, in seconds.
It is a demo and test set, not a benchmark of accuracy: a class is one photograph.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from delving.errors import DelvingError

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina", "stereo_motorcycle")
SKLEARN_PHOTOS = ("china", "flower")
CLASSES = SKLEARN_PHOTOS + SKIMAGE_PHOTOS
MARKER = ".photos.json"  # the settings a finished folder was made with: a re-run with the same ones is a no-op


def source_photos() -> dict[str, np.ndarray]:
    """The bundled photographs as HxWx3 uint8 arrays, by class name."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = dict(zip(SKLEARN_PHOTOS, load_sample_images().images))
    for name in SKIMAGE_PHOTOS:
        image = getattr(data, name)()
        photos[name] = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle is (left, right, disp)
    return photos


def random_view(photo: np.ndarray, rng: np.random.Generator, size: int) -> Image.Image:
    """A random crop of ``photo`` (at least half its shorter side), mirrored half the time, resized so that
    its longer side is ``size`` and its aspect ratio is in [3/4, 4/3]."""
    height, width = photo.shape[:2]
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))  # width / height
    side = rng.uniform(0.5, 1.0) * min(height, width)
    crop_h, crop_w = (side, side * aspect) if aspect <= 1 else (side / aspect, side)
    crop_h, crop_w = int(min(crop_h, height)), int(min(crop_w, width))
    top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
    view = Image.fromarray(photo[top:top + crop_h, left:left + crop_w])
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    scale = size / max(crop_h, crop_w)
    return view.resize((max(1, round(crop_w * scale)), max(1, round(crop_h * scale))), Image.Resampling.LANCZOS)


# A JPEG at quality 90 of a photograph's crop: about one byte per 5 pixels (measured on this set at size 500: 45 KB
# for 500x375); counted as 1 byte per pixel to stay on the safe side.
BYTES_PER_PIXEL = 1.0


def _check_room(root: Path, images: int, size: int) -> None:
    """Refuse a set that cannot be made at ``root``: a file in the way, or more bytes than the disk has free."""
    existing = root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise DelvingError(f"photos: {existing} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK):
        raise DelvingError(f"photos: {existing} is not writable (permission denied); choose another --out")
    need, free = images * size * size * BYTES_PER_PIXEL, shutil.disk_usage(existing).free
    if need > free:
        raise DelvingError(f"photos: {images:,} images of {size} px need about {need / 2**30:,.1f} GiB, more than the "
                           f"{free / 2**30:,.1f} GiB free under {existing}; use smaller counts or --size")


def make_photos(root: str | Path, train_per_class: int = 100, val_per_class: int = 20, size: int = 500,
                classes: int = len(CLASSES), seed: int = 0, quality: int = 90, progress: bool = True) -> Path:
    """Write the photo set under ``root`` and return it; a folder already made with the same settings is kept."""
    if not 1 <= classes <= len(CLASSES):
        raise DelvingError(f"photos: classes={classes} must be in [1, {len(CLASSES)}] (one per bundled photograph)")
    for key, value in (("train_per_class", train_per_class), ("val_per_class", val_per_class), ("size", size)):
        if not isinstance(value, int) or value < 1:
            raise DelvingError(f"photos: {key}={value!r} must be an integer >= 1")
    if not 1 <= quality <= 100:
        raise DelvingError(f"photos: quality={quality} is out of range; valid: 1 to 100")
    root = Path(root)
    _check_room(root, (train_per_class + val_per_class) * classes, size)
    settings = dict(train_per_class=train_per_class, val_per_class=val_per_class, size=size, classes=classes,
                    seed=seed, quality=quality)
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return root
    if root.exists() and any(root.iterdir()) and not marker.is_file():
        raise DelvingError(f"photos: {root} exists and was not made by `delving photos`; choose an empty folder")
    for split in ("train", "val"):  # made by us with other settings: start again rather than mix the two
        shutil.rmtree(root / split, ignore_errors=True)
    marker.unlink(missing_ok=True)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DelvingError(f"photos: cannot make the folder {root}: {err.strerror or err}") from None
    photos = source_photos()
    rng = np.random.default_rng(seed)
    jobs = [(split, name, i) for split, count in (("train", train_per_class), ("val", val_per_class))
            for name in CLASSES[:classes] for i in range(count)]
    for split, name, i in tqdm(jobs, desc=f"photos → {root}", disable=not progress, unit="img"):
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        random_view(photos[name], rng, size).save(folder / f"{name}_{i:05d}.jpg", quality=quality)
    marker.write_text(json.dumps(settings))
    return root
