"""The order of the training data as a function of (seed, epoch), and a loader that resumes inside an epoch.

A run killed and resumed must see the same samples in the same order, with the same augmentations, as the run
that was not interrupted. Three pieces give that on the torch data modules (digits, folder, random):

- :class:`EpochSampler`: epoch ``e``'s permutation is drawn from a generator seeded with (seed, e) alone, so the
  order of any epoch can be rebuilt after a restart. torch's ``RandomSampler`` draws its seed from the global RNG
  at each epoch, so its order depends on everything that consumed that RNG before. Under DDP, Lightning wraps this
  sampler in its ``DistributedSamplerWrapper``, which gives each rank every W-th index of the same permutation and
  forwards ``set_epoch``.
- Per-sample seeds: with ``seeded=True`` the sampler yields ``(index, sample_seed)`` and :class:`SeededSamples`
  runs the dataset's random transforms under that seed (a function of (seed, epoch, index)), so an augmentation
  does not depend on the worker that made it, on how many workers there are, or on a restart.
- :class:`ResumableLoader`: a ``DataLoader`` with ``state_dict`` / ``load_state_dict`` (the batches of the current
  epoch it has delivered). Lightning 2.x saves that state in every checkpoint and, when it resumes inside an
  epoch, loads it before it iterates; the loader then skips those batches by index, without loading their data.
  The count is exact because Lightning fetches without look-ahead from a loader that has a length.
"""

from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def derived_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (e.g. run seed, epoch, sample index) through numpy's ``SeedSequence``, whose
    hashing keeps (0, 1) and (1, 0) apart, unlike ``seed + epoch``."""
    return int(np.random.SeedSequence([k % 2**64 for k in keys]).generate_state(1, np.uint64)[0] >> 1)


class EpochSampler(Sampler):
    """Indices ``0..size-1``, shuffled per epoch from (seed, epoch) when ``shuffle``; with ``seeded``, each index
    comes with its sample seed: ``(index, derived_seed(seed, epoch, index))``."""

    def __init__(self, size: int, seed: int, shuffle: bool = True, seeded: bool = False):
        self.size, self.seed, self.shuffle, self.seeded = size, seed, shuffle, seeded
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each training epoch (and forwarded by its DDP sampler wrapper)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator:
        epoch = self.epoch
        if not self.seeded:
            return iter(self.order(epoch))
        return ((i, derived_seed(self.seed, epoch, i)) for i in self.order(epoch))


class KeyedSamples(Dataset):
    """A dataset read by the ``(index, sample_seed)`` keys of a seeded :class:`EpochSampler`; subclasses say what
    the seed is used for."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)


class SeededSamples(KeyedSamples):
    """``dataset[index]`` computed under the sample seed that :class:`EpochSampler` (``seeded=True``) sends with
    the index: the transforms draw from torch's global RNG, which is forked, seeded and given back around each
    sample, so training's own RNG stream (dropout) is left as it was."""

    def __getitem__(self, key):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class _SkipOnce:
    """A batch sampler whose first pass starts after ``skip`` batches (later passes are whole): the mid-epoch
    resume point. Its length stays the epoch's, which Lightning's batch counter expects."""

    def __init__(self, batches, skip: int):
        self.batches, self.skip = batches, skip

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        # A generator: nothing runs until the first batch is asked for. The multi-process DataLoader iterator calls
        # iter() twice when it starts and uses the second; the skip is spent by the pass that yields a batch.
        batches = iter(self.batches)
        for _ in itertools.islice(batches, self.skip):
            pass
        self.skip = 0
        yield from batches


class ResumableLoader(DataLoader):
    """A ``DataLoader`` that Lightning checkpoints and resumes inside an epoch (see the module's docstring).

    ``state_dict()``: ``{"batches": n}``, the batches of the current pass delivered so far (skipped ones
    included). ``load_state_dict`` makes the next pass skip that many batches of the epoch's order; the epoch
    itself is set on the sampler by Lightning (``set_epoch``), as for any epoch."""

    _skip = 0
    _delivered = 0

    @property
    def _index_sampler(self):
        # DataLoader's own property, read when a pass starts: a pending resume point wraps it once.
        sampler = super()._index_sampler
        return _SkipOnce(sampler, self._skip) if self._skip else sampler

    def __iter__(self):
        self._delivered = self._skip
        batches = super().__iter__()
        self._skip = 0
        for batch in batches:
            self._delivered += 1
            yield batch

    def state_dict(self) -> dict:
        # A whole pass delivered: nothing is left to skip, the next pass is a new epoch.
        return {"batches": self._delivered if self._delivered < len(self) else 0}

    def load_state_dict(self, state: dict) -> None:
        self._skip = int(state.get("batches", 0))

    def drop_resume_point_at(self, epoch_batches: int) -> None:
        """Forget a resume point at or past the end of an epoch of ``epoch_batches`` (Lightning's epoch can be
        shorter than the loader: ``limit_train_batches``), so that the next epoch is whole."""
        if self._skip >= epoch_batches:
            self._skip = 0
