"""Random images with random labels: for ``fast_dev_run`` dry runs of the ImageNet recipes and for benchmarks.

Every batch can have its own size, drawn in ``[image_size, max_image_size]``: the SPP models accept any size, and
this checks it. Seeded, so a dry run is repeatable.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


class RandomSizeCollate:
    """Stack a batch, then resize it to a size drawn from a seeded generator."""

    def __init__(self, low: int, high: int, seed: int):
        self.low, self.high = low, high
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch):
        images = torch.stack([image for image, _ in batch])
        labels = torch.tensor([int(label) for _, label in batch])
        size = int(torch.randint(self.low, self.high + 1, (1,), generator=self.generator))
        if size != images.shape[-1]:
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return images, labels


class RandomDataModule(L.LightningDataModule):
    in_chans = 3

    def __init__(self, image_size: int = 112, max_image_size: int | None = None, num_classes: int = 1000,
                 samples: int = 64, batch_size: int = 8, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.image_size, self.max_image_size = image_size, max_image_size or image_size
        self.num_classes, self.samples = num_classes, samples
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    @classmethod
    def from_config(cls, cfg, seed: int = 0) -> "RandomDataModule":
        return cls(cfg.image_size, cfg.max_image_size, cfg.num_classes or 1000, cfg.samples, cfg.batch_size,
                   cfg.num_workers)

    def _split(self, offset: int) -> TensorDataset:
        generator = torch.Generator().manual_seed(self.seed + offset)
        images = torch.randn(self.samples, self.in_chans, self.image_size, self.image_size, generator=generator)
        labels = torch.randint(self.num_classes, (self.samples,), generator=generator)
        return TensorDataset(images, labels)

    def _loader(self, offset: int, shuffle: bool) -> DataLoader:
        collate = RandomSizeCollate(self.image_size, self.max_image_size, self.seed + offset)
        return DataLoader(self._split(offset), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, collate_fn=collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader(0, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(1, shuffle=False)
