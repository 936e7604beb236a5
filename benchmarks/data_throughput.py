"""Training-pipeline throughput (images/s) on the real-photo set, side by side in one run:

  (a) delving's FFCV DataModule (``.beton`` at the files' own resolution), batches as delivered (uint8, then
      normalized on the device) and with that normalization done here on the CPU;
  (b) delving's torchvision fallback (``FolderDataModule``);
  (c) the standard recipe users would otherwise write: torchvision ``ImageFolder`` + PIL + ``DataLoader`` with
      ``torchvision.transforms`` (v1);
  (d) the machine's ceiling: a plain single-thread JPEG decode of the same files (PIL, and torchvision's
      libjpeg-turbo decoder; the faster is used), times the worker count.

Every pipeline does the same augmentation (default: the paper's scale jitter, shorter side ~ U[256, 512],
random 224 crop, flip) with the same worker count and batch size. A warm-up epoch (worker start-up, FFCV's
numba compilation) is not timed; the rate is over the timed epochs.

    .venv/bin/python benchmarks/data_throughput.py [--workers 2] [--epochs 3] [--write-mode jpg]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, io, transforms

from delving.data.ffcv import FFCVDataModule, write_beton
from delving.data.folder import IMAGENET_MEAN, IMAGENET_STD, FolderDataModule
from delving.data.photos import make_photos

RESULTS = Path(__file__).parent / "results"


def rate(loader, epochs: int, after=None) -> float:
    """Images per second over ``epochs`` passes, after one untimed warm-up pass."""
    for _ in loader:
        pass
    count, started = 0, time.perf_counter()
    for _ in range(epochs):
        for images, labels in loader:
            if after is not None:
                images, labels = after((images, labels), 0)
            count += len(labels)
    return count / (time.perf_counter() - started)


def fallback(root: Path, workers: int, batch: int, augmentation: str) -> DataLoader:
    module = FolderDataModule(root, 224, batch, workers, augmentation)
    module.setup("fit")
    return module.train_dataloader()


def standard_recipe(root: Path, workers: int, batch: int, augmentation: str) -> DataLoader:
    """What a user writes from the torchvision docs (v1 transforms), with the same augmentation."""
    if augmentation == "scale_jitter":
        crop = [transforms.RandomChoice([transforms.Resize(s) for s in range(256, 513)]), transforms.RandomCrop(224)]
    elif augmentation == "single_scale":
        crop = [transforms.Resize(256), transforms.RandomCrop(224)]
    else:
        crop = [transforms.RandomResizedCrop(224)]
    pipeline = transforms.Compose([*crop, transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                   transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return DataLoader(datasets.ImageFolder(root / "train", pipeline), batch, shuffle=True, num_workers=workers,
                      drop_last=True, persistent_workers=True)


def decode_rate(files: list[Path], decoder: str) -> float:
    """Single-thread decodes per second of ``files`` (best of two passes)."""
    torch.set_num_threads(1)
    best = 0.0
    for _ in range(2):
        started = time.perf_counter()
        for path in files:
            if decoder == "pil":
                with Image.open(path) as image:
                    image.convert("RGB").load()
            else:
                io.decode_jpeg(io.read_file(str(path)), mode=io.ImageReadMode.RGB)
        best = max(best, len(files) / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=RESULTS / "photos", help="photo set (made here if absent)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per pipeline (after one warm-up)")
    parser.add_argument("--augmentation", default="scale_jitter", choices=("scale_jitter", "single_scale",
                                                                          "inception"))
    parser.add_argument("--write-mode", default="jpg", help="FFCV write mode: jpg (every image decoded, like the "
                        "others) | proportion (ffcv-imagenet: half raw pixels) | raw")
    args = parser.parse_args()

    root = make_photos(args.root, train_per_class=100, val_per_class=10)  # 1,000 training JPEGs, ~500x375
    betons = RESULTS / f"beton-{args.write_mode}"
    betons.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        if not (betons / f"{split}.beton").is_file():
            write_beton(root / split, betons / f"{split}.beton", max_resolution=None, write_mode=args.write_mode,
                        workers=args.workers)
    w, b, aug = args.workers, args.batch_size, args.augmentation
    files = sorted((root / "train").glob("*/*.jpg"))

    ffcv = FFCVDataModule(betons, 224, b, w, aug)
    rows = {
        "(a) FFCV DataModule (on CPU: normalized in FFCV's threads)": rate(ffcv.train_dataloader(), args.epochs),
        "(a') FFCV DataModule, uint8 out (the GPU pipeline, normalized there)": rate(
            FFCVDataModule(betons, 224, b, w, aug, normalize_in_loader=False).train_dataloader(), args.epochs),
        "(b) torchvision fallback (FolderDataModule)": rate(fallback(root, w, b, aug), args.epochs),
        "(c) standard recipe: ImageFolder + PIL + DataLoader": rate(standard_recipe(root, w, b, aug), args.epochs),
    }
    decoders = {name: decode_rate(files, name) for name in ("pil", "torchvision")}
    ceiling = w * max(decoders.values())
    rows[f"(d) ceiling: {w} x single-thread decode ({max(decoders, key=decoders.get)})"] = ceiling
    standard = rows["(c) standard recipe: ImageFolder + PIL + DataLoader"]

    print(f"\n{len(files)} training JPEGs, {aug}, {w} workers, batch {b}, FFCV write mode {args.write_mode}, "
          f"{args.epochs} timed epochs; single-thread decode: "
          + ", ".join(f"{k} {v:.0f} img/s" for k, v in decoders.items()))
    print("| pipeline | img/s | vs (c) standard | vs (d) ceiling |\n|---|---:|---:|---:|")
    for name, value in rows.items():
        print(f"| {name} | {value:.0f} | {value / standard:.2f} | {value / ceiling:.2f} |")


if __name__ == "__main__":
    main()
