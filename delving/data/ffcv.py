"""FFCV: ImageNet-style class folders to ``.beton``, and the LightningDataModule that streams them.

The one file of ``delving`` that imports ``ffcv`` (FFCV is unmaintained since 2024: keeping it behind one
module means it can be patched or replaced in one place). The torchvision fallback with the same augmentations
is ``delving.data.folder``.

Train pipeline (Sec. 3 of the paper), crop size c (224): the shorter side is scaled to s ~ U[c·256/224,
c·512/224], a random c×c crop is taken, and flipped half the time. Written as one FFCV decoder that crops
first and resizes once: a c×c crop of the image scaled to shorter side s is the square of side
c·shorter/s of the original, resized to c×c — the same pixels up to interpolation, without resizing
whole images to up to 512 pixels first. ``single_scale`` fixes s at c·256/224 (Table 2), ``inception`` is
FFCV's RandomResizedCrop (not the paper's), ``none`` the validation pipeline. ``color_jitter`` adds FFCV's
random brightness, contrast and saturation (magnitude 0.4), an approximation of the paper's [16] colour
altering. Validation: "resize 256, centre crop 224" (``CenterCropRGBImageDecoder`` with ratio 224/256).

Batches are NCHW, channels_last. On a GPU they leave the loader as uint8 and are normalized there, in
``on_after_batch_transfer`` (FFCV's ``NormalizeImage`` would need cupy); on CPU, FFCV's ``NormalizeImage``
runs in its decoding threads, before ``ToTensor`` (placed after it, it hangs: ffcv#396).
"""

from __future__ import annotations

import ctypes
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import Process, Queue, Value
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from ffcv.fields import IntField, RGBImageField
from ffcv.fields.basics import IntDecoder
from ffcv.fields.rgb_image import IMAGE_MODES, CenterCropRGBImageDecoder, RandomResizedCropRGBImageDecoder, \
    ResizedCropRGBImageDecoder
from ffcv.libffcv import imdecode, resize_crop
from ffcv.loader import Loader, OrderOption
from ffcv.memory_allocator import MemoryAllocator
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.reader import Reader
from ffcv.transforms import NormalizeImage, RandomBrightness, RandomContrast, RandomHorizontalFlip, \
    RandomSaturation, Squeeze, ToDevice, ToTensor, ToTorchImage
from ffcv.writer import DatasetWriter
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from tqdm import tqdm

from delving.cpus import available_cpus  # FFCV's default worker count ignores affinity and containers
from delving.data.folder import IMAGENET_MEAN, IMAGENET_STD, class_names
from delving.errors import DelvingError, choices

WRITE_MODES = ("jpg", "raw", "proportion", "smart")
ORDERS = {"random": OrderOption.RANDOM, "quasi_random": OrderOption.QUASI_RANDOM,
          "sequential": OrderOption.SEQUENTIAL}
AUGMENTATIONS = ("scale_jitter", "single_scale", "inception", "none")


# --------------------------------------------------------------------------------------------- writing


@dataclass
class WriteReport:
    out: Path
    written: int
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (with --skip-bad)


class _Images:
    """The samples FFCV's writer reads, in its worker processes. A file that fails to decode is reported through a
    folder of marker files and a 1-pixel placeholder is written; the caller then fails or rewrites without it.

    Images are shrunk here to ``max_resolution`` (longer side), with every side kept at one pixel or more: FFCV's
    own resizer truncates each side, so a legal 3×2000 JPEG became 0×500 and failed inside ``cv2.resize``. Here
    the image is already small enough and FFCV's resizer leaves it alone. ``current`` is the file being written,
    for the report of a worker that fails outside this class (in FFCV's encoder)."""

    def __init__(self, samples: list[tuple[str, int]], failures: Path, max_resolution: int | None = None):
        self.samples, self.failures, self.max_resolution = samples, failures, max_resolution
        self.current = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        self.current = path
        try:
            with Image.open(path) as image:
                return fit_resolution(np.asarray(image.convert("RGB")), self.max_resolution), label
        except Exception as err:  # noqa: BLE001 - any undecodable file: report it, never raise here
            (self.failures / str(index)).write_text(f"{path}\t{type(err).__name__}: {err}")
            return np.zeros((1, 1, 3), np.uint8), label


def fit_resolution(image: np.ndarray, max_resolution: int | None) -> np.ndarray:
    """``image`` (H×W×3) shrunk so that its longer side is at most ``max_resolution``, each side >= 1 pixel.

    The same sizes and interpolation (OpenCV's INTER_AREA) as FFCV's ``resizer``, except that no side drops to 0.
    """
    height, width = image.shape[:2]
    if not max_resolution or max(height, width) <= max_resolution:
        return image
    ratio = max_resolution / max(height, width)
    size = (max(1, int(ratio * width)), max(1, int(ratio * height)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


class _WorkerDied(Exception):
    """A writer process ended before its work was done (its report, if it could write one, is a marker file)."""


def _worker(work_fn, partial: str, failures: Path, parent: int, *args) -> None:
    """One FFCV writer process, made to stop with its parent: Linux sends it SIGTERM when the parent dies (even by
    SIGKILL), and it then deletes the partial file and the marker folder itself (a living parent stops its workers
    with SIGKILL and cleans up after them). Ctrl-C is the parent's to handle. A failure is written to a marker
    naming the file being written, and the process exits without a traceback."""
    def stop(*_):
        Path(partial).unlink(missing_ok=True)
        shutil.rmtree(failures, ignore_errors=True)
        os._exit(1)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop)
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        stop()
    dataset = args[-1]
    try:
        work_fn(*args)
    except BaseException as err:  # noqa: BLE001 - reported to the parent through the marker
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]  # OpenCV's messages span lines
        (failures / f"worker-{os.getpid()}").write_text(f"{dataset.current}\t{reason}")
        os._exit(1)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class _SupervisedWriter(DatasetWriter):
    """FFCV's ``DatasetWriter``, whose parent watches its workers. FFCV's own loop waits until the workers have
    counted every sample: a worker that raised left it waiting for ever, and workers outlived a killed parent,
    writing on. Here a dead worker stops the write (:class:`_WorkerDied`), the workers are stopped whenever the
    parent leaves (error, Ctrl-C, SIGTERM) and die with it (SIGKILL), and the shared memory is always released."""

    def __init__(self, fname: str, fields: dict, num_workers: int, failures: Path, progress: bool):
        super().__init__(fname, fields, num_workers=num_workers)
        self.failures, self.progress = failures, progress

    def _write_common(self, num_samples, queue_content, work_fn, extra_worker_args):
        self.num_samples = num_samples
        self.prepare()
        work, allocations, done = Queue(), Queue(), Value(ctypes.c_uint64, 0)
        for todo in [*queue_content, *[None] * self.num_workers]:  # None: no more work for one worker
            work.put(todo)
        allocator = MemoryAllocator(self.fname, self.data_region_start, self.page_size)
        args = (work, self.metadata_sm, self.metadata_type, self.fields, allocator, done, allocations,
                *extra_worker_args)
        workers = [Process(target=_worker, args=(work_fn, self.fname, self.failures, os.getpid(), *args), daemon=True)
                   for _ in range(self.num_workers)]
        try:
            for process in workers:
                process.start()
            self._wait(workers, done)
            self.finalize(self._collect(workers, allocations))
        finally:
            for process in workers:
                if process.is_alive():
                    process.kill()  # not SIGTERM: that is the workers' signal that this process has died
            for process in workers:
                if process.pid is not None:  # started
                    process.join()
            for pipe in (work, allocations):  # unread work left in a pipe must not block this process's exit
                pipe.cancel_join_thread()
                pipe.close()
            self.metadata_sm.close()
            self.metadata_sm.unlink()

    def _wait(self, workers, done) -> None:
        seen = 0
        with tqdm(total=self.num_samples, disable=not self.progress, desc="writing", unit="img") as bar:
            while seen < self.num_samples:
                _check_alive(workers)
                bar.update(done.value - seen)
                seen = done.value
                time.sleep(0.05)

    def _collect(self, workers, allocations) -> list:
        collected = []
        for _ in workers:
            while True:
                try:
                    collected.extend(allocations.get(timeout=0.2))
                    break
                except queue.Empty:
                    _check_alive(workers)
        return collected


def _check_alive(workers) -> None:
    dead = [p.exitcode for p in workers if p.exitcode not in (None, 0)]
    if dead:
        raise _WorkerDied(f"a writer process exited with code {dead[0]}")


def list_images(split_dir: Path) -> list[tuple[str, int]]:
    """(path, class index) for every image under ``split_dir/<class>/``, or a one-line error."""
    classes = class_names(split_dir)
    samples = make_dataset(str(split_dir), {c: i for i, c in enumerate(classes)}, extensions=IMG_EXTENSIONS,
                           allow_empty=True)
    if not samples:
        raise DelvingError(f"no images in {split_dir}/<class>/ (extensions: {', '.join(IMG_EXTENSIONS)})")
    return samples


def _header_error(path: str) -> str | None:
    try:
        with Image.open(path) as image:
            image.verify()  # the header and, for PNG, the checksums: cheap, before any worker starts
    except Exception as err:  # noqa: BLE001
        return f"{type(err).__name__}: {err}"
    return None


def _check_headers(samples, workers: int, progress: bool) -> dict[str, str]:
    paths = [p for p, _ in samples]
    with ThreadPoolExecutor(workers) as pool:
        errors = list(tqdm(pool.map(_header_error, paths, chunksize=64), total=len(paths), disable=not progress,
                           desc="checking", unit="img"))
    return {p: e for p, e in zip(paths, errors) if e}


def _unreadable(path: str, reason: str) -> DelvingError:
    return DelvingError(f"unreadable image: {path} ({reason}); fix or remove it, or pass --skip-bad to leave "
                        "unreadable files out")


def write_beton(split_dir: str | Path, out: str | Path, *, max_resolution: int | None = 500,
                jpeg_quality: int = 90, compress_probability: float = 0.5, write_mode: str = "proportion",
                workers: int | None = None, skip_bad: bool = False, overwrite: bool = False,
                progress: bool = True) -> WriteReport:
    """Write ``split_dir/<class>/*.jpg`` to ``out`` with fields ``image`` (RGBImageField) and ``label``.

    Defaults are ffcv-imagenet's (longer side at most 500, half of the images JPEG-compressed at quality 90,
    the others raw pixels); ``max_resolution=None`` (or 0) keeps each file's own resolution. The file appears only
    when complete: it is written to ``<out>.partial`` and renamed, and the partial file is removed on any error,
    on Ctrl-C or SIGTERM, and by the writer processes themselves when this process is killed.
    """
    split_dir, out = Path(split_dir), Path(out)
    _check_write_options(max_resolution, jpeg_quality, compress_probability, write_mode, workers)
    _check_output(out, overwrite)
    if split_dir.exists() and not split_dir.is_dir():
        raise DelvingError(f"{split_dir} is a file; give the split's folder (<split>/<class>/*.jpg)")
    samples = list_images(split_dir)
    workers = workers or available_cpus()
    bad = _check_headers(samples, workers, progress)
    if bad and not skip_bad:
        raise _unreadable(*next(iter(bad.items())))
    fields = {"image": RGBImageField(write_mode=write_mode, max_resolution=max_resolution or None,
                                     jpeg_quality=jpeg_quality, compress_probability=compress_probability),
              "label": IntField()}
    skipped = dict(bad)
    with _SigtermAsInterrupt():
        while True:  # a file whose header reads but whose data does not: fail, or write again without it
            samples = [s for s in samples if s[0] not in skipped]
            if not samples:
                raise DelvingError(f"no readable images in {split_dir} ({len(skipped)} unreadable, e.g. "
                                   f"{next(iter(skipped))}); nothing written")
            failed = _write_atomically(out, fields, samples, workers, max_resolution, progress)
            if failed and not skip_bad:
                raise _unreadable(*next(iter(failed.items())))
            if not failed:
                return WriteReport(out, len(samples), sorted(skipped))
            skipped.update(failed)


def _check_write_options(max_resolution, jpeg_quality, compress_probability, write_mode, workers) -> None:
    if write_mode not in WRITE_MODES:
        raise DelvingError(f"write mode {write_mode!r} is not one of {choices(WRITE_MODES)}")
    if max_resolution is not None and max_resolution < 0:
        raise DelvingError(f"--max-resolution {max_resolution} must be >= 1, or 0 to keep each file's own size")
    if not 1 <= jpeg_quality <= 100:
        raise DelvingError(f"--jpeg-quality {jpeg_quality} is out of range; valid: 1 to 100")
    if not 0.0 <= compress_probability <= 1.0:
        raise DelvingError(f"--compress-probability {compress_probability} is out of range; valid: 0 to 1")
    if workers is not None and workers < 1:
        raise DelvingError(f"--workers {workers} must be >= 1 (or left out: the usable CPUs)")


def _check_output(out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise DelvingError(f"--out {out} is a directory; give the .beton file to write, e.g. {out / 'train.beton'}")
    if out.exists() and not overwrite:
        raise DelvingError(f"{out} exists; pass --overwrite to replace it")
    if out.parent.exists() and not out.parent.is_dir():
        raise DelvingError(f"output folder {out.parent} is a file, not a folder")
    if not out.parent.is_dir():
        raise DelvingError(f"output folder not found: {out.parent}")
    if not os.access(out.parent, os.W_OK):
        raise DelvingError(f"output folder {out.parent} is not writable (permission denied)")


class _SigtermAsInterrupt:
    """SIGTERM raises KeyboardInterrupt while writing, so the clean-up of Ctrl-C also runs on ``kill``: the writer
    processes are stopped and the partial file removed (by default SIGTERM ends Python without any clean-up)."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(*_):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _write_atomically(out: Path, fields: dict, samples, workers: int, max_resolution: int | None,
                      progress: bool = False) -> dict[str, str]:
    """Write ``samples`` to ``out`` through ``out.partial``; return {path: reason} of the files that failed
    (nothing is renamed then)."""
    partial = out.with_name(out.name + ".partial")
    failures = Path(tempfile.mkdtemp(prefix="delving-ffcv-"))
    try:
        writer = _SupervisedWriter(str(partial), fields, min(workers, len(samples)), failures, progress)
        try:
            writer.from_indexed_dataset(_Images(samples, failures, max_resolution))
        except _WorkerDied as died:
            if not any(failures.iterdir()):  # killed from outside (e.g. out of memory): no file to blame
                raise DelvingError(f"write-ffcv: {died} without a report (out of memory?); nothing written") from None
        failed = dict(f.read_text().split("\t", 1) for f in failures.iterdir())
        if not failed:
            os.replace(partial, out)
        return failed
    except OSError as err:
        raise DelvingError(f"cannot write {partial}: {err.strerror or err}") from None
    finally:  # also on KeyboardInterrupt and SIGTERM: never leave a partial .beton behind
        partial.unlink(missing_ok=True)
        shutil.rmtree(failures, ignore_errors=True)


# --------------------------------------------------------------------------------------------- reading


def _scale_jitter_crop(height, width, shorter_range, crop):
    """numba-compiled by FFCV: the square (top, left, side, side) of the original image that becomes a c×c
    crop of the image rescaled to shorter side s ~ U[shorter_range] (Sec. 3's scale augmentation)."""
    shorter = min(height, width)
    s = np.random.uniform(shorter_range[0], shorter_range[1])
    side = max(1, min(int(shorter), int(round(shorter * crop / s))))
    top = int(np.random.uniform(0, height - side + 1))
    left = int(np.random.uniform(0, width - side + 1))
    return top, left, side, side


def _mirror(image):
    """Flip an HxWx3 image left-right in place (numba-compiled by FFCV)."""
    width = image.shape[1]
    for y in range(image.shape[0]):
        for x in range(width // 2):
            for c in range(3):
                image[y, x, c], image[y, width - 1 - x, c] = image[y, width - 1 - x, c], image[y, x, c]


class ScaleJitterRGBImageDecoder(ResizedCropRGBImageDecoder):
    """Sec. 3's scale augmentation as one FFCV decoder: a random square standing for a ``crop``×``crop`` crop
    of the image rescaled to shorter side s ~ U[shorter], resized to ``crop``×``crop``, mirrored half the time.
    FFCV has no such decoder (its RandomResizedCrop is the Inception crop), hence this subclass of its abstract
    crop decoder.

    Speed (measured by ``benchmarks/data_throughput.py``): FFCV resizes with OpenCV's INTER_AREA, which is
    slow when it shrinks by a non-integer factor (0.37-0.49 ms for a 230-328 px square to 224, against
    0.63 ms to decode a 500x375 JPEG) and fast when it enlarges or halves. A square of up to twice the crop is
    therefore enlarged to 2·crop and then halved (0.21-0.24 ms; a supersampled, antialiased shrink). The
    mirror is done in place here, saving FFCV's separate flip pass over the batch.
    """

    def __init__(self, crop: int, shorter: tuple[float, float], mirror: bool = True):
        super().__init__((crop, crop))
        self.scale = (float(shorter[0]), float(shorter[1]))  # kept under FFCV's attribute names
        self.ratio = float(crop)
        self.mirror = mirror

    @property
    def get_crop_generator(self):
        return _scale_jitter_crop

    def declare_state_and_memory(self, previous_state):
        state, (output, decoded) = super().declare_state_and_memory(previous_state)
        double = (2 * self.output_size[0], 2 * self.output_size[1], 3)
        return state, (output, decoded, AllocationQuery(double, np.dtype("<u1")))

    def generate_code(self):
        jpg = IMAGE_MODES["jpg"]
        mem_read, my_range = self.memory_read, Compiler.get_iterator()
        imdecode_c, resize_crop_c = Compiler.compile(imdecode), Compiler.compile(resize_crop)
        crop_c, mirror_c = Compiler.compile(self.get_crop_generator), Compiler.compile(_mirror)
        shorter, crop, mirror = np.array(self.scale), self.ratio, self.mirror

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage, doubled = my_storage
            for dst_ix in my_range(len(batch_indices)):
                field = metadata[batch_indices[dst_ix]]
                data = mem_read(field["data_ptr"], storage_state)
                height, width = np.uint32(field["height"]), np.uint32(field["width"])
                if field["mode"] == jpg:
                    image = temp_storage[dst_ix].reshape(-1)[:3 * height * width].reshape(height, width, 3)
                    imdecode_c(data, image, height, width, height, width, 0, 0, 1, 1, False, False)
                else:
                    image = data.reshape(height, width, 3)
                top, left, side, _ = crop_c(height, width, shorter, crop)
                out = destination[dst_ix]
                if crop < side <= 2 * crop:  # enlarge to 2·crop, then halve: both fast in OpenCV
                    resize_crop_c(image, top, top + side, left, left + side, doubled[dst_ix])
                    resize_crop_c(doubled[dst_ix], 0, doubled.shape[1], 0, doubled.shape[2], out)
                else:
                    resize_crop_c(image, top, top + side, left, left + side, out)
                if mirror and np.random.random() < 0.5:
                    mirror_c(out)
            return destination[:len(batch_indices)]

        decode.is_parallel = True
        return decode


def _scaled(crop: int, side: int) -> float:
    return crop * side / 224


def train_decoder(crop: int, augmentation: str):
    if augmentation == "scale_jitter":
        return ScaleJitterRGBImageDecoder(crop, (_scaled(crop, 256), _scaled(crop, 512)))
    if augmentation == "single_scale":
        return ScaleJitterRGBImageDecoder(crop, (_scaled(crop, 256),) * 2)
    if augmentation == "inception":
        return RandomResizedCropRGBImageDecoder((crop, crop))
    return val_decoder(crop)


def val_decoder(crop: int):
    return CenterCropRGBImageDecoder((crop, crop), ratio=224 / 256)


class EpochLoader:
    """An FFCV ``Loader`` as Lightning should see it. Lightning calls ``iter()`` once on a loader that is not a
    torch DataLoader to probe it; on a bare FFCV Loader that starts an epoch thread that is never closed and
    advances the shuffle epoch. Here ``iter()`` makes a generator, and the Loader starts on its first batch.

    ``epoch`` (a callable, e.g. the trainer's current epoch) sets the shuffle epoch as each pass starts: a
    resumed run builds its loaders before Lightning restores the epoch counter, and a new Loader would
    otherwise replay epoch 0's order."""

    def __init__(self, loader: Loader, epoch=None):
        self.loader, self.epoch = loader, epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        if self.epoch is not None:
            self.loader.next_epoch = self.epoch()
        yield from self.loader


class FFCVDataModule(L.LightningDataModule):
    """``root/train.beton`` and ``root/val.beton`` (from ``delving write-ffcv``) as a LightningDataModule.

    Under DDP each rank reads its own shard (FFCV's ``distributed=True``; Lightning's sampler does not reach
    FFCV loaders), every rank with the same ``seed`` so the shards are disjoint. The loaders are built in the
    dataloader hooks, once the process group exists. A resumed run's loader starts at the restored epoch, so
    it replays that epoch's shuffle order.
    """

    in_chans = 3

    def __init__(self, root: str | Path, image_size: int = 224, batch_size: int = 128, num_workers: int = 0,
                 augmentation: str = "scale_jitter", color_jitter: bool = False, os_cache: bool = True,
                 order: str = "random", seed: int = 0, drop_last: bool = True,
                 normalize_in_loader: bool | None = None):
        super().__init__()
        self.root = Path(root)
        self.paths = {split: self.root / f"{split}.beton" for split in ("train", "val")}
        for path in self.paths.values():
            if not path.is_file():
                raise DelvingError(f"FFCV file not found: {path} (make it with `delving write-ffcv --root "
                                   f"IMAGENET --split {path.stem} --out {path}`)")
        if augmentation not in AUGMENTATIONS:
            raise DelvingError(f"data.augmentation={augmentation!r} is not one of {choices(AUGMENTATIONS)}")
        if order not in ORDERS:
            raise DelvingError(f"data.order={order!r} is not one of {choices(ORDERS)}")
        cpus = available_cpus()
        if num_workers > cpus:
            raise DelvingError(f"data.num_workers={num_workers} exceeds the {cpus} CPUs this process may use")
        self.num_workers = num_workers or cpus  # FFCV decodes in threads: 0 would mean none
        self.num_classes = int(Reader(str(self.paths["train"])).metadata["f1"].max()) + 1
        self.image_size, self.batch_size, self.augmentation = image_size, batch_size, augmentation
        self.color_jitter, self.os_cache, self.order, self.seed = color_jitter, os_cache, order, seed
        self.drop_last = drop_last
        self.normalize_in_loader = normalize_in_loader  # None: in FFCV's threads on CPU, on the device on GPU
        scale = torch.tensor([255.0]).view(1, 1, 1, 1)
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * scale
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * scale

    @classmethod
    def from_config(cls, cfg, seed: int = 0) -> "FFCVDataModule":
        return cls(cfg.root, cfg.image_size, cfg.batch_size, cfg.num_workers, cfg.augmentation, cfg.color_jitter,
                   cfg.os_cache, cfg.order, seed if cfg.order_seed is None else cfg.order_seed)

    # -- the pipelines

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def _distributed(self) -> bool:
        return self.trainer is not None and self.trainer.world_size > 1

    def _to_device(self) -> list:
        device = self._device()
        return [ToDevice(device, non_blocking=True)] if device.type == "cuda" else []

    def _image_pipeline(self, decoder, train: bool) -> list:
        ops = [decoder]
        if train and self.augmentation == "inception":  # the scale-jitter decoder mirrors by itself
            ops.append(RandomHorizontalFlip())
        if train and self.color_jitter:
            ops += [RandomBrightness(0.4, p=1.0), RandomContrast(0.4, p=1.0), RandomSaturation(0.4, p=1.0)]
        in_loader = self.normalize_in_loader
        if in_loader is None:
            in_loader = self._device().type == "cpu"
        if in_loader:  # before ToTensor: after it, it hangs on CPU (ffcv#396)
            ops.append(NormalizeImage(self.mean.flatten().numpy(), self.std.flatten().numpy(), np.float32))
        return [*ops, ToTensor(), *self._to_device(), ToTorchImage(channels_last=True)]

    def _label_pipeline(self) -> list:
        return [IntDecoder(), ToTensor(), Squeeze(1), *self._to_device()]

    def _loader(self, split: str, decoder, order: OrderOption, drop_last: bool) -> Loader:
        return Loader(str(self.paths[split]), batch_size=self.batch_size, num_workers=self.num_workers,
                      os_cache=self.os_cache, order=order, distributed=self._distributed(), seed=self.seed,
                      drop_last=drop_last, pipelines={"image": self._image_pipeline(decoder, split == "train"),
                                                      "label": self._label_pipeline()})

    # -- Lightning hooks

    def train_dataloader(self) -> EpochLoader:
        order = ORDERS[self.order]
        if order is OrderOption.QUASI_RANDOM and self._distributed():
            order = OrderOption.RANDOM  # FFCV raises NotImplementedError for QUASI_RANDOM with distributed=True
        loader = self._loader("train", train_decoder(self.image_size, self.augmentation), order, self.drop_last)
        return EpochLoader(loader, (lambda: self.trainer.current_epoch) if self.trainer is not None else None)

    def val_dataloader(self) -> EpochLoader:
        return EpochLoader(self._loader("val", val_decoder(self.image_size), OrderOption.SEQUENTIAL, False))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """On a GPU: uint8 → float, minus the ImageNet mean, over the std, there (on CPU, FFCV did it)."""
        images, labels = batch
        if images.dtype != torch.uint8:
            return images, labels
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return (images.float() - mean) / std, labels
