"""The embedded default dataset: scikit-learn's bundled ``load_digits`` (1,797 real 8×8 handwritten digits).

It ships inside scikit-learn, so nothing is downloaded. Pipeline, in order:
  1. pixels 0..16 -> [0, 1];
  2. bilinear upscale 8×8 -> ``image_size`` (the plain nets' two pools need at least 16×16);
  3. per-pixel mean subtraction (Sec. 3's "per-pixel mean"), computed on the training split only;
  4. division by the training split's global std (the paper does not scale; without it the 0..1 digits would
     enter with a tiny variance and the Sec. 2.2 analysis starts from unit-variance inputs).
The train/val split is stratified and fixed by ``split_seed`` (not the run's seed), so every run of a sweep
sees the same validation set. The training order is a function of (run seed, epoch) (:mod:`delving.data.order`),
so a run resumed at any batch sees the same batches as one that was not interrupted.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

from delving.data.order import EpochSampler, ResumableLoader


class DigitsDataModule(L.LightningDataModule):
    num_classes = 10
    in_chans = 1

    def __init__(self, image_size: int = 16, batch_size: int = 64, val_fraction: float = 0.2, split_seed: int = 0,
                 num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.seed = seed
        self.image_size = image_size
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    @classmethod
    def from_config(cls, cfg, seed: int = 0) -> "DigitsDataModule":
        return cls(cfg.image_size, cfg.batch_size, cfg.val_fraction, cfg.split_seed, cfg.num_workers, seed)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
        images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        labels = torch.tensor(digits.target, dtype=torch.long)
        train_idx, val_idx = train_test_split(torch.arange(len(labels)).numpy(), test_size=self.val_fraction,
                                              random_state=self.split_seed, stratify=labels.numpy())
        train, val = images[train_idx], images[val_idx]
        mean, std = train.mean(dim=0, keepdim=True), train.std()
        self.train_set = TensorDataset((train - mean) / std, labels[train_idx])
        self.val_set = TensorDataset((val - mean) / std, labels[val_idx])

    def train_dataloader(self) -> DataLoader:
        # The loader's own generator: its per-pass worker seed is then not drawn from the global RNG (dropout's).
        return ResumableLoader(self.train_set, batch_size=self.batch_size,
                               sampler=EpochSampler(len(self.train_set), self.seed), num_workers=self.num_workers,
                               drop_last=False, generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256, shuffle=False, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))
