"""The validation images at full resolution, normalized as in training: the input of the scale-based test
protocols (10-view and dense, Sec. 3 "Testing"), which resize each whole image to a shorter side ``s`` themselves.

Per data source (the run's own ``data.name``):

- ``digits`` / ``random``: the datamodule's validation tensors. For digits the "full image" is the 8×8 digit
  upsampled to ``data.image_size`` (16), already normalized (per-pixel mean, global std); resizing a normalized
  image bilinearly equals normalizing the resized image with the resized mean image, since both are linear.
- ``folder``: ``root/val/<class>/*`` through torchvision at the file's own size, then the datamodule's own
  float conversion and ImageNet normalization (``delving.data.folder``).
- ``ffcv``: the images stored in ``root/val.beton`` (not FFCV's centre-crop decoder): FFCV's ``Reader`` gives
  each sample's metadata (mode, height, width, data pointer) and allocation table, the bytes are read from a
  memory map of the file as FFCV's OS-cache manager does, and decoded with torchvision (JPEG) or reshaped (raw
  pixels, stored RGB). FFCV's own decoders always crop and resize to one fixed size, hence this reader.
  Stored images are what ``write-ffcv`` kept (longer side at most 500 by default), not the original files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torchvision import datasets
from torchvision.io import decode_jpeg
from torchvision.transforms import v2

from delving.data import load_ffcv
from delving.data.folder import _to_float  # the datamodules' float conversion + normalization

JPEG_MODE = 0  # FFCV's IMAGE_MODES: 0 jpg, 1 raw


class BetonImages:
    """The images and labels of an FFCV ``.beton`` at their stored size, as uint8 CHW tensors (RGB)."""

    def __init__(self, path: str | Path):
        # Through delving.data.ffcv (the one module that imports FFCV), which holds FFCV's Reader.
        reader = load_ffcv().Reader(str(path))
        image, label = (f"f{reader.field_names.index(name)}" for name in ("image", "label"))
        self.images, self.labels = reader.metadata[image], reader.metadata[label]
        self.sizes = dict(zip(reader.alloc_table["ptr"].tolist(), reader.alloc_table["size"].tolist()))
        self.data = np.memmap(reader.file_name, dtype=np.uint8, mode="r")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        meta = self.images[index]
        ptr = int(meta["data_ptr"])
        raw = torch.from_numpy(np.array(self.data[ptr:ptr + self.sizes[ptr]]))
        if meta["mode"] == JPEG_MODE:  # FFCV encodes RGB (cv2 after an RGB->BGR swap), so it decodes as RGB
            image = decode_jpeg(raw)
        else:
            image = raw[: int(meta["height"]) * int(meta["width"]) * 3].view(
                int(meta["height"]), int(meta["width"]), 3).permute(2, 0, 1)
        return image, int(self.labels[index])


class Normalized:
    """A dataset of uint8 images seen through the training normalization."""

    def __init__(self, dataset: Sequence):
        self.dataset, self.transform = dataset, v2.Compose(_to_float())

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        return self.transform(v2.functional.to_image(image)), label


def full_val_images(name: str, datamodule) -> Sequence[tuple[torch.Tensor, int]]:
    """(normalized float image C×H×W at full resolution, label) for each validation image, in a fixed order."""
    if name == "ffcv":
        return Normalized(BetonImages(datamodule.paths["val"]))
    if name == "folder":
        return Normalized(datasets.ImageFolder(datamodule.root / "val"))
    datamodule.setup("validate")
    return datamodule.val_dataloader().dataset  # digits / random: TensorDatasets at data.image_size


def same_size_batches(images: Sequence, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Stack consecutive images of one size into batches of at most ``batch_size`` (folder and FFCV images
    differ in size; digits do not, so they batch fully)."""
    stack: list[torch.Tensor] = []
    labels: list[int] = []
    for image, label in (images[i] for i in range(len(images))):
        if stack and (len(stack) == batch_size or image.shape != stack[0].shape):
            yield torch.stack(stack), torch.tensor(labels)
            stack, labels = [], []
        stack.append(image)
        labels.append(int(label))
    if stack:
        yield torch.stack(stack), torch.tensor(labels)
