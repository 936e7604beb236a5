"""ImageNet-style class folders (``root/train/<class>/*.jpg``, ``root/val/<class>/*.jpg``) through torchvision:
``ImageFolder`` + PIL + ``DataLoader``. The fallback for users without FFCV, with the same augmentations.

Train pipeline, in order (Sec. 3), for a crop size c (224 in the paper):
  scale_jitter: shorter side s ~ U[c·256/224, c·512/224] (U[256, 512] at c = 224), random c×c crop, flip;
  single_scale: shorter side c·256/224, random c×c crop, flip (Table 2's 14-layer runs);
  inception:    torchvision's RandomResizedCrop(c), flip (the common alternative, not the paper's);
  none:         the validation pipeline;
  then, with ``color_jitter``, torchvision's ColorJitter(0.4, 0.4, 0.4) — an approximation of AlexNet's PCA
  colour altering [16], which torchvision does not ship.
Validation: shorter side c·256/224, centre c×c crop ("resize 256, centre crop 224").
Normalization: per-channel ImageNet mean/std, where the paper subtracts a per-pixel mean image.
Order and augmentation are functions of (run seed, epoch, image) (:mod:`delving.data.order`): the same with any
number of workers, and the same in a run resumed at any batch as in one that was not interrupted.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from delving.data.order import EpochSampler, ResumableLoader, SeededSamples
from delving.errors import DelvingError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _scaled(crop: int, side: int) -> int:
    return round(crop * side / 224)


def train_transform(crop: int, augmentation: str, color_jitter: bool) -> v2.Compose:
    if augmentation == "scale_jitter":
        ops = [v2.RandomShortestSize(list(range(_scaled(crop, 256), _scaled(crop, 512) + 1)), antialias=True),
               v2.RandomCrop(crop), v2.RandomHorizontalFlip()]
    elif augmentation == "single_scale":  # Table 2: shorter side fixed at 256 (c·256/224), random crop, flip
        ops = [v2.Resize(_scaled(crop, 256), antialias=True), v2.RandomCrop(crop), v2.RandomHorizontalFlip()]
    elif augmentation == "inception":
        ops = [v2.RandomResizedCrop(crop, antialias=True), v2.RandomHorizontalFlip()]
    else:
        ops = _val_ops(crop)
    if color_jitter:
        ops.append(v2.ColorJitter(0.4, 0.4, 0.4))
    return v2.Compose([v2.ToImage(), *ops, *_to_float()])


def _val_ops(crop: int) -> list:
    return [v2.Resize(_scaled(crop, 256), antialias=True), v2.CenterCrop(crop)]


def _to_float() -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def val_transform(crop: int) -> v2.Compose:
    return v2.Compose([v2.ToImage(), *_val_ops(crop), *_to_float()])


def class_names(split_dir: Path) -> list[str]:
    """The sorted class folders of a split, or a one-line error naming the path."""
    if not split_dir.is_dir():
        raise DelvingError(f"data folder not found: {split_dir} (expected one sub-folder per class)")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise DelvingError(f"data folder {split_dir} has no class sub-folders")
    return classes


class FolderDataModule(L.LightningDataModule):
    in_chans = 3

    def __init__(self, root: str | Path, image_size: int = 224, batch_size: int = 128, num_workers: int = 0,
                 augmentation: str = "scale_jitter", color_jitter: bool = False, seed: int = 0):
        super().__init__()
        self.seed = seed
        self.root = Path(root)
        self.classes = class_names(self.root / "train")
        self.num_classes = len(self.classes)
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.augmentation, self.color_jitter = augmentation, color_jitter

    @classmethod
    def from_config(cls, cfg, seed: int = 0) -> "FolderDataModule":
        return cls(cfg.root, cfg.image_size, cfg.batch_size, cfg.num_workers, cfg.augmentation, cfg.color_jitter,
                   seed)

    def setup(self, stage: str | None = None) -> None:
        self.train_set = datasets.ImageFolder(
            self.root / "train", train_transform(self.image_size, self.augmentation, self.color_jitter))
        self.val_set = datasets.ImageFolder(self.root / "val", val_transform(self.image_size))
        if self.val_set.classes != self.classes:
            raise DelvingError(f"{self.root / 'val'} has classes {self.val_set.classes[:3]}..., train has "
                               f"{self.classes[:3]}...; they must match")

    def train_dataloader(self) -> DataLoader:
        # An epoch-seeded sampler (not RandomSampler) and a loader generator of its own: the order and the worker
        # seeds then draw nothing from the global RNG, which dropout uses.
        return ResumableLoader(SeededSamples(self.train_set), self.batch_size,
                               sampler=EpochSampler(len(self.train_set), self.seed, seeded=True),
                               num_workers=self.num_workers, drop_last=True, persistent_workers=self.num_workers > 0,
                               generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, self.batch_size, shuffle=False, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))
