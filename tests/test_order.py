"""The training order as a function of (seed, epoch), per-image augmentation seeds, and the loader that resumes
inside an epoch (delving/data/order.py), on the three torch data modules."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from delving.data.digits import DigitsDataModule
from delving.data.folder import FolderDataModule
from delving.data.order import EpochSampler, ResumableLoader
from delving.data.random import RandomDataModule
from test_folder_data import photo_folder  # noqa: F401 (fixture)


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch():
    sampler = EpochSampler(50, seed=3)
    orders = {}
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        orders.setdefault(epoch, []).append(list(sampler))
    assert orders[0][0] == orders[0][1] and sorted(orders[0][0]) == list(range(50))
    assert orders[1][0] != orders[0][0]
    other = EpochSampler(50, seed=4)
    assert list(other) != orders[0][0]
    # (seed 0, epoch 1) and (seed 1, epoch 0) are different orders (not seeded by seed + epoch)
    a, b = EpochSampler(50, seed=0), EpochSampler(50, seed=1)
    a.set_epoch(1)
    assert list(a) != list(b)
    assert list(EpochSampler(5, seed=0, shuffle=False)) == [0, 1, 2, 3, 4]
    seeded = EpochSampler(5, seed=0, seeded=True)
    pairs = list(seeded)
    assert [i for i, _ in pairs] == list(EpochSampler(5, seed=0)) and len({s for _, s in pairs}) == 5
    assert pairs == list(seeded)


def _loader(num_workers: int = 0) -> ResumableLoader:
    data = TensorDataset(torch.arange(22))
    return ResumableLoader(data, batch_size=4, sampler=EpochSampler(22, seed=1), num_workers=num_workers,
                           persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(0))


def _epoch(loader, epoch: int) -> list[list[int]]:
    loader.sampler.set_epoch(epoch)
    return [batch[0].tolist() for batch in loader]


def test_loader_resumes_after_the_batches_it_had_delivered():
    for workers in (0, 2):
        whole = _epoch(_loader(workers), 1)
        assert len(whole) == 6  # 22 images, batches of 4, the last one of 2
        first = _loader(workers)
        first.sampler.set_epoch(1)
        delivered = []
        for batch in first:  # killed after 2 batches
            delivered.append(batch[0].tolist())
            if len(delivered) == 2:
                break
        state = first.state_dict()
        assert state == {"batches": 2}
        resumed = _loader(workers)
        resumed.load_state_dict(state)
        assert len(resumed) == 6  # Lightning counts the epoch's batches from the restored position
        rest = _epoch(resumed, 1)
        assert delivered + rest == whole, workers  # the remaining batches, none twice, none skipped
        assert resumed.state_dict() == {"batches": 0}  # a whole pass: the next one starts a new epoch
        resumed.load_state_dict({"batches": 4})
        resumed.drop_resume_point_at(4)  # an epoch cut to 4 batches (limit_train_batches) had ended there
        assert len(_epoch(resumed, 3)) == 6
        assert _epoch(resumed, 2) == _epoch(_loader(workers), 2)  # the next pass is whole again


def test_folder_augmentations_depend_on_seed_epoch_and_image_only(photo_folder):  # noqa: F811
    def batches(workers: int, epoch: int):
        dm = FolderDataModule(photo_folder, image_size=32, batch_size=4, num_workers=workers, color_jitter=True,
                              seed=7)
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [x for x, _ in loader]

    before = torch.get_rng_state()
    one, again = batches(0, 1), batches(0, 1)
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG (dropout's) is not drawn from
    assert all(torch.equal(a, b) for a, b in zip(one, again))
    assert all(torch.equal(a, b) for a, b in zip(one, batches(2, 1)))  # 2 workers: the same images
    assert not torch.equal(one[0], batches(0, 2)[0])  # another epoch: another order and other crops


def test_digits_and_random_orders_follow_the_run_seed_and_leave_the_global_rng_alone():
    digits = [DigitsDataModule(seed=s) for s in (0, 0, 1)]
    firsts = []
    before = torch.get_rng_state()
    for dm in digits:
        dm.setup("fit")
        firsts.append(next(iter(dm.train_dataloader()))[1])
    assert torch.equal(firsts[0], firsts[1]) and not torch.equal(firsts[0], firsts[2])
    assert torch.equal(torch.get_rng_state(), before)
    dm = RandomDataModule(image_size=8, max_image_size=16, num_classes=5, samples=32, batch_size=4, order_seed=3)
    sizes = [[x.shape[-1] for x, _ in dm.val_dataloader()] for _ in range(2)]
    assert sizes[0] == sizes[1] and len(set(sizes[0])) > 1  # every validation pass alike, sizes varied
    train = dm.train_dataloader()
    whole = [(x.shape[-1], y.tolist()) for x, y in train]
    train.load_state_dict({"batches": 3})
    assert [(x.shape[-1], y.tolist()) for x, y in train] == whole[3:]  # resumed: the same labels and sizes
