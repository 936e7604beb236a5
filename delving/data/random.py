"""Random images with random labels: for ``fast_dev_run`` dry runs of the ImageNet recipes and for benchmarks.

Every batch can have its own size, drawn in ``[image_size, max_image_size]``: the SPP models accept any size, and
this checks it. Seeded, so a dry run is repeatable: the images by ``seed``, the training order by the run's seed and
the epoch, and each batch's size by the sample seed of its first image (:mod:`delving.data.order`), so a run
resumed at any batch gets the sizes an uninterrupted one gets, and every validation pass the same ones.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from delving.data.order import EpochSampler, KeyedSamples, ResumableLoader


class WithSeed(KeyedSamples):
    """``(image, label, sample_seed)`` for the ``(index, sample_seed)`` keys of a seeded :class:`EpochSampler`."""

    def __getitem__(self, key):
        index, seed = key
        return (*self.dataset[index], seed)


class RandomSizeCollate:
    """Stack a batch, then resize it to a size drawn from a generator seeded by the batch's first sample seed."""

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def __call__(self, batch):
        images = torch.stack([image for image, _, _ in batch])
        labels = torch.tensor([int(label) for _, label, _ in batch])
        generator = torch.Generator().manual_seed(int(batch[0][2]))
        size = int(torch.randint(self.low, self.high + 1, (1,), generator=generator))
        if size != images.shape[-1]:
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return images, labels


class RandomDataModule(L.LightningDataModule):
    in_chans = 3

    def __init__(self, image_size: int = 112, max_image_size: int | None = None, num_classes: int = 1000,
                 samples: int = 64, batch_size: int = 8, num_workers: int = 0, seed: int = 0, order_seed: int = 0):
        super().__init__()
        self.order_seed = order_seed
        self.image_size, self.max_image_size = image_size, max_image_size or image_size
        self.num_classes, self.samples = num_classes, samples
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    @classmethod
    def from_config(cls, cfg, seed: int = 0) -> "RandomDataModule":
        return cls(cfg.image_size, cfg.max_image_size, cfg.num_classes or 1000, cfg.samples, cfg.batch_size,
                   cfg.num_workers, order_seed=seed)

    def _split(self, offset: int) -> TensorDataset:
        generator = torch.Generator().manual_seed(self.seed + offset)
        images = torch.randn(self.samples, self.in_chans, self.image_size, self.image_size, generator=generator)
        labels = torch.randint(self.num_classes, (self.samples,), generator=generator)
        return TensorDataset(images, labels)

    def _loader(self, offset: int, shuffle: bool, loader: type = DataLoader) -> DataLoader:
        sampler = EpochSampler(self.samples, self.order_seed + offset, shuffle=shuffle, seeded=True)
        return loader(WithSeed(self._split(offset)), batch_size=self.batch_size, sampler=sampler,
                      num_workers=self.num_workers, collate_fn=RandomSizeCollate(self.image_size, self.max_image_size),
                      generator=torch.Generator().manual_seed(self.order_seed))

    def train_dataloader(self) -> DataLoader:
        return self._loader(0, shuffle=True, loader=ResumableLoader)

    def val_dataloader(self) -> DataLoader:
        return self._loader(1, shuffle=False)
