"""FFCV: the photo set, ``write-ffcv`` (and its errors), the DataModule's pipelines, a training step of a
registered model on it, and (slow) 2-rank DDP sharding and mid-epoch kill + resume."""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from ffcv.reader import Reader
from PIL import Image

from conftest import ROOT, run_cli
from delving.cli import main
from delving.experiment.training.config import load_config
from delving.data import ffcv as ffcv_module
from delving.data.ffcv import EpochLoader, FFCVDataModule, _scale_jitter_crop, fit_resolution, write_beton
from delving.data.folder import FolderDataModule
from delving.data.photos import make_photos
from delving.errors import DelvingError
from delving.experiment.training.train import fit

CLASSES, TRAIN, VAL, SIZE = 3, 4, 2, 80


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photos(tmp_path_factory.mktemp("photos"), TRAIN, VAL, SIZE, classes=CLASSES, progress=False)


@pytest.fixture(scope="module")
def betons(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("betons")
    for split in ("train", "val"):
        write_beton(photos / split, out / f"{split}.beton", max_resolution=None, write_mode="jpg", workers=1,
                    progress=False)
    return out


def test_photo_set_is_imagenet_shaped_jpeg_and_made_once(photos):
    for split, count in (("train", TRAIN), ("val", VAL)):
        classes = sorted(p.name for p in (photos / split).iterdir())
        assert len(classes) == CLASSES
        files = sorted((photos / split).glob("*/*.jpg"))
        assert len(files) == CLASSES * count
    sizes = [Image.open(f).size for f in sorted(photos.glob("*/*/*.jpg"))]
    assert all(max(s) == SIZE and 3 / 4 - 0.02 <= s[0] / s[1] <= 4 / 3 + 0.02 for s in sizes)
    assert all(Image.open(f).format == "JPEG" for f in sorted(photos.glob("train/*/*.jpg"))[:3])
    stamp = next(photos.glob("train/*/*.jpg")).stat().st_mtime_ns
    make_photos(photos, TRAIN, VAL, SIZE, classes=CLASSES, progress=False)  # same settings: nothing rewritten
    assert next(photos.glob("train/*/*.jpg")).stat().st_mtime_ns == stamp


def test_photos_refuse_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DelvingError, match="not made by `delving photos`"):
        make_photos(tmp_path, 1, 1, 32, classes=1, progress=False)


def test_beton_holds_every_image_with_its_folder_label(photos, betons):
    reader = Reader(str(betons / "train.beton"))
    assert reader.num_samples == CLASSES * TRAIN
    labels = reader.metadata["f1"]
    assert sorted(labels.tolist()) == sorted([c for c in range(CLASSES) for _ in range(TRAIN)])
    images = reader.metadata["f0"]  # (mode, width, height, ptr): the files' own sizes were kept
    files = sorted((photos / "train").glob("*/*.jpg"))
    assert sorted(zip(images["width"], images["height"])) == sorted(Image.open(f).size for f in files)


def test_scale_jitter_crop_is_a_crop_of_the_rescaled_image():
    """Sec. 3: a c×c crop of the image with shorter side s ~ U[256, 512] is a square of side c·shorter/s."""
    np.random.seed(0)
    height, width, crop = 375, 500, 224
    sides = []
    for _ in range(2000):
        top, left, side, side_w = _scale_jitter_crop(height, width, np.array([256.0, 512.0]), float(crop))
        assert side == side_w and 0 <= top <= height - side and 0 <= left <= width - side
        sides.append(side)
    implied_s = 375 * crop / np.array(sides)  # the shorter side each crop stands for
    assert 256 - 2 <= implied_s.min() < 262 and 500 < implied_s.max() <= 512 + 2
    assert abs(np.median(implied_s) - 384) < 12  # uniform on [256, 512]


def test_train_and_val_batches(betons):
    module = FFCVDataModule(betons, image_size=64, batch_size=4, num_workers=1)
    assert module.num_classes == CLASSES
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.float32 and labels.shape == (4,)
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert -2.2 < images.mean() < 2.7 and images.std() > 0.1  # normalized by the ImageNet mean/std
    val_labels = torch.cat([y for _, y in module.val_dataloader()])
    assert sorted(val_labels.tolist()) == sorted(c for c in range(CLASSES) for _ in range(VAL))  # none dropped


def test_val_pipeline_matches_the_torchvision_fallback(photos, betons):
    """Both are "resize 256, centre crop 224" (scaled to the crop size): the same pixels up to JPEG re-coding
    and interpolation."""
    ffcv = FFCVDataModule(betons, image_size=48, batch_size=CLASSES * VAL, num_workers=1)
    folder = FolderDataModule(photos, image_size=48, batch_size=CLASSES * VAL)
    folder.setup("fit")
    (x_ffcv, y_ffcv), (x_tv, y_tv) = next(iter(ffcv.val_dataloader())), next(iter(folder.val_dataloader()))
    assert torch.equal(y_ffcv, y_tv)
    same = (x_ffcv - x_tv).abs().mean()
    other = (x_ffcv - x_tv.roll(1, dims=0)).abs().mean()  # each image against another one
    assert same < 0.25 * other, (same, other)


def test_uint8_batches_are_normalized_on_the_device(betons):
    module = FFCVDataModule(betons, image_size=32, batch_size=2, num_workers=1, normalize_in_loader=False)
    images, labels = next(iter(module.val_dataloader()))
    assert images.dtype == torch.uint8
    normalized, _ = module.on_after_batch_transfer((images, labels), 0)
    expected = (images.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(normalized, expected)


def test_lightnings_probe_does_not_start_an_epoch(betons):
    wrapped = FFCVDataModule(betons, image_size=32, batch_size=2, num_workers=1).train_dataloader()
    assert isinstance(wrapped, EpochLoader) and len(wrapped) == CLASSES * TRAIN // 2
    iter(wrapped)  # what Lightning does to probe a loader that is not a torch DataLoader
    assert wrapped.loader.next_epoch == 0
    list(wrapped)
    assert wrapped.loader.next_epoch == 1


def test_missing_beton_and_too_many_workers_are_one_line_errors(betons, tmp_path):
    with pytest.raises(DelvingError, match=r"FFCV file not found: .*train\.beton .*write-ffcv"):
        FFCVDataModule(tmp_path)
    with pytest.raises(DelvingError, match="data.num_workers=999 exceeds"):
        FFCVDataModule(betons, num_workers=999)


def test_training_step_of_a_registered_model_on_the_photo_betons(betons, tmp_path):
    cfg = load_config(None, ["model.name=delving_small14", "model.activation=prelu", "data.name=ffcv",
                             f"data.root={betons}", "data.image_size=80", "data.batch_size=4", "data.num_workers=1",
                             "trainer.max_epochs=1", "trainer.limit_train_batches=2", "tracking.wandb=disabled",
                             "trainer.enable_progress_bar=false", f"out_dir={tmp_path}", "threads=1"])
    result = fit(cfg, progress=False)
    assert result["status"] == "finished" and result["history"][0]["epoch"] == 0
    assert 0.0 <= result["final_val_err1"] <= 1.0


# ------------------------------------------------------------------------------------------ write-ffcv errors


def _copy_classes(photos: Path, dest: Path) -> Path:
    shutil.copytree(photos / "val", dest / "val")
    return dest


def test_unreadable_image_names_the_file_and_leaves_nothing(photos, tmp_path):
    root = _copy_classes(photos, tmp_path / "data")
    bad = root / "val" / "china" / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    out = tmp_path / "val.beton"
    with pytest.raises(DelvingError, match=rf"unreadable image: {bad} .*--skip-bad"):
        write_beton(root / "val", out, workers=1, progress=False)
    assert not list(tmp_path.glob("val.beton*"))
    report = write_beton(root / "val", out, workers=1, skip_bad=True, progress=False)
    assert report.skipped == [str(bad)] and report.written == CLASSES * VAL
    assert Reader(str(out)).num_samples == CLASSES * VAL


def test_truncated_jpeg_found_while_writing_is_reported_and_skippable(photos, tmp_path):
    """A file whose header reads but whose data is cut: found by the writer's workers, not the header scan."""
    root = _copy_classes(photos, tmp_path / "data")
    victim = sorted((root / "val").glob("*/*.jpg"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[:len(data) // 2])
    Image.open(victim).verify()  # the header still reads
    out = tmp_path / "val.beton"
    with pytest.raises(DelvingError, match=rf"unreadable image: {victim} "):
        write_beton(root / "val", out, workers=1, progress=False)
    assert not list(tmp_path.glob("val.beton*"))
    report = write_beton(root / "val", out, workers=1, skip_bad=True, progress=False)
    assert report.skipped == [str(victim)] and Reader(str(out)).num_samples == CLASSES * VAL - 1


def test_write_ffcv_cli_errors_are_one_line_with_exit_2(photos, tmp_path, capsys):
    empty = tmp_path / "empty" / "train" / "some_class"
    empty.mkdir(parents=True)
    existing = tmp_path / "there.beton"
    existing.write_bytes(b"precious")
    cases = [
        (["--root", str(tmp_path / "nowhere"), "--split", "train", "--out", str(tmp_path / "a.beton")],
         "data folder not found"),
        (["--root", str(tmp_path / "empty"), "--split", "train", "--out", str(tmp_path / "a.beton")],
         "no images in"),
        (["--root", str(photos), "--split", "val", "--out", str(existing)], "exists; pass --overwrite"),
        (["--root", str(photos), "--split", "val", "--out", str(tmp_path / "a.beton"), "--write-mode", "png"],
         "argument --write-mode: invalid choice: 'png'"),
    ]
    gc.collect()  # numba's finalizers of earlier tests' FFCV pipelines print "Exception ignored" when collected
    capsys.readouterr()
    for args, message in cases:  # in this process (a subprocess costs seconds of imports), then one for real
        try:
            code = main(["write-ffcv", *args])
        except SystemExit as exit_:  # argparse's own checks (choices, ranges)
            code = exit_.code
        assert code == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    proc = run_cli("write-ffcv", *cases[2][0])
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"delving: error: {existing} exists; "
                                                                         "pass --overwrite to replace it"]
    assert existing.read_bytes() == b"precious" and not (tmp_path / "a.beton").exists()


def _tall_jpeg_set(root: Path) -> Path:
    """A legal 3×2000 JPEG beside two ordinary ones: FFCV's resizer made it 0×500 and its worker failed."""
    rng = np.random.default_rng(0)
    (root / "tall").mkdir(parents=True)
    (root / "wide").mkdir()
    Image.fromarray(rng.integers(0, 255, (2000, 3, 3), dtype=np.uint8)).save(root / "tall" / "tall.jpg")
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(root / "wide" / f"{i}.jpg")
    return root


@pytest.mark.timeout(120)  # a hang guard: the write itself takes about a second
@pytest.mark.parametrize("max_resolution, expected", [(500, (1, 500)), (1, (1, 1)), (None, (3, 2000))])
def test_a_3x2000_jpeg_is_written_with_at_least_one_pixel_per_side(tmp_path, max_resolution, expected):
    split = _tall_jpeg_set(tmp_path / "data")
    out = tmp_path / "train.beton"
    report = write_beton(split, out, max_resolution=max_resolution, write_mode="raw", workers=2, progress=False)
    assert report.written == 3 and not report.skipped
    reader = Reader(str(out))
    sizes = sorted(zip(reader.metadata["f0"]["width"].tolist(), reader.metadata["f0"]["height"].tolist()))
    assert expected in sizes and all(w >= 1 and h >= 1 for w, h in sizes)
    assert fit_resolution(np.zeros((2000, 3, 3), np.uint8), 500).shape == (500, 1, 3)


@pytest.mark.timeout(120)
def test_a_failing_worker_reaches_the_parent_named_or_skipped(tmp_path, monkeypatch):
    """FFCV's own resizer on the 3×2000 JPEG (our shrink patched away) fails inside a writer process: the parent
    stops with the file's name instead of waiting for ever, or writes the others under skip_bad."""
    monkeypatch.setattr(ffcv_module, "fit_resolution", lambda image, max_resolution: image)
    split = _tall_jpeg_set(tmp_path / "data")
    out = tmp_path / "train.beton"
    with pytest.raises(DelvingError, match=r"tall\.jpg .*inv_scale_x > 0") as info:
        write_beton(split, out, workers=2, progress=False)
    assert "\n" not in str(info.value) and sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    report = write_beton(split, out, workers=2, skip_bad=True, progress=False)
    assert report.written == 2 and report.skipped == [str(split / "tall" / "tall.jpg")]
    assert Reader(str(out)).num_samples == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["data", out.name]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_write_ffcv_leaves_no_process_and_no_partial(tmp_path, sig):
    source = tmp_path / "one.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(source)
    for c in range(2):
        (tmp_path / "data" / "train" / f"c{c}").mkdir(parents=True)
        for i in range(1500):  # several seconds of JPEG re-encoding on one worker
            os.link(source, tmp_path / "data" / "train" / f"c{c}" / f"{i}.jpg")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "delving", "write-ffcv", "--root", str(tmp_path / "data"),
                             "--split", "train", "--out", str(out / "train.beton"), "--workers", "2",
                             "--write-mode", "jpg", "--max-resolution", "0"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    deadline = time.time() + 240
    # started: the partial file, FFCV's two writer processes and multiprocessing's resource tracker
    while time.time() < deadline and not ((out / "train.beton.partial").exists() and len(parent.children()) >= 3):
        time.sleep(0.1)
    assert (out / "train.beton.partial").exists(), "the writer never started"
    children = parent.children(recursive=True)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------------------ DDP and resume


@pytest.fixture(scope="module")
def one_image_per_class(photos, tmp_path_factory) -> Path:
    """16 single-image classes (labels identify samples) as train.beton and val.beton."""
    folder = tmp_path_factory.mktemp("single")
    for i, path in enumerate(sorted((photos / "train").glob("*/*.jpg"))[:12] +
                             sorted((photos / "val").glob("*/*.jpg"))[:4]):
        (folder / "all" / f"c{i:02d}").mkdir(parents=True)
        shutil.copy(path, folder / "all" / f"c{i:02d}" / path.name)
    for split in ("train", "val"):
        write_beton(folder / "all", folder / f"{split}.beton", max_resolution=None, workers=1, progress=False)
    return folder


def _worker(betons: Path, out: Path, tag: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tests" / "ffcv_worker.py"), str(betons), str(out), tag, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def _labels(out: Path, tag: str, rank: int = 0) -> dict[int, list[int]]:
    """epoch -> labels in batch order, from the last time each epoch was run."""
    epochs: dict[int, list[int]] = {}
    for line in (out / f"labels-{tag}-rank{rank}.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["batch"] == 0:
            epochs[row["epoch"]] = []
        epochs[row["epoch"]] += row["labels"]
    return epochs


@pytest.mark.slow
def test_two_rank_ddp_reads_disjoint_shards_covering_each_epoch(one_image_per_class, tmp_path):
    proc = _worker(one_image_per_class, tmp_path, "ddp", "--devices", "2", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [_labels(tmp_path, "ddp", r) for r in (0, 1)]
    for epoch in (0, 1):
        a, b = ranks[0][epoch], ranks[1][epoch]
        assert len(a) == len(b) == 8 and not set(a) & set(b)
        assert sorted(a + b) == list(range(16))  # every sample once per epoch, across the ranks
    assert ranks[0][0] != ranks[0][1]  # and a new shuffle each epoch


@pytest.mark.slow
def test_killed_mid_epoch_resumes_that_epoch_in_its_shuffle_order(one_image_per_class, tmp_path):
    reference = _worker(one_image_per_class, tmp_path / "ref", "ref")
    assert reference.returncode == 0, reference.stderr[-3000:]
    killed = _worker(one_image_per_class, tmp_path / "run", "run", "--kill-at", "1,2")
    assert killed.returncode == 3
    assert (tmp_path / "run" / "run" / "checkpoints" / "last.ckpt").is_file()
    resumed = _worker(one_image_per_class, tmp_path / "run", "run")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = _labels(tmp_path / "ref", "ref"), _labels(tmp_path / "run", "run")
    assert sorted(got) == [0, 1, 2]
    assert got == expected  # epoch 1 re-run from its start, in epoch 1's order (not epoch 0's); then epoch 2
    assert expected[1] != expected[0]
    result = json.loads((tmp_path / "run" / "run" / "result.json").read_text())
    assert [h["epoch"] for h in result["history"]] == [0, 1, 2]
