"""Batches for the training loop, in an order fixed by ``(seed, epoch)``.

The order of an epoch depends on nothing but the seed and the epoch number, never on how
many epochs ran in this process: a run resumed at epoch 3 draws exactly the batches that an
uninterrupted run draws at epoch 3. Under ``torchrun``, every rank computes the same global
order and takes its own contiguous slice of each global batch, so ``world_size`` processes
with ``batch_size / world_size`` images each see the same images per step as one process
with the whole batch.

Training data may be

* a :class:`cxrlab.data.dataset.CacheDataset` (or any Dataset whose items are
  ``(image, labels, row[, lung_mask, lesion_mask])`` tuples or dicts) - read through a
  DataLoader, with ``num_workers`` processes;
* in-memory tensors: ``(images, labels)`` as returned by :func:`cxrlab.data.dataset.load_arrays`,
  or a dict with keys ``image``, ``labels`` and optionally ``row``, ``lung_mask``,
  ``lesion_mask`` - indexed directly (no DataLoader overhead).

Every batch is a dict (see :mod:`cxrlab.methods.base`).
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

#: names of the items of a tuple-shaped dataset item, in order
ITEM_KEYS = ("image", "labels", "row", "lung_mask", "lesion_mask")


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for (seed, epoch) (``epoch`` counts from 1)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, dtype=np.uint64)[0]
               >> np.uint64(1))


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of ``range(n)`` used in ``epoch``."""
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(n, generator=g)


class EpochBatchSampler(Sampler[list]):
    """Yields this rank's indices for each step of an epoch (call :meth:`set_epoch` first).

    Each epoch has ``n // batch_size`` steps: the incomplete last batch is dropped (its
    images fall elsewhere in other epochs' orders), which keeps every step's batch - and
    every rank's share of it - the same size.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if batch_size % world_size:
            raise ValueError(f"batch_size={batch_size} (the global batch) must be divisible by "
                             f"the number of processes ({world_size})")
        if n < batch_size:
            raise ValueError(f"the training set has {n} images, fewer than batch_size={batch_size}; "
                             "lower batch_size or use more training data")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.per_rank = self.batch_size // self.world_size
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[list]:
        order = epoch_order(self.n, self.seed, self.epoch)
        lo = self.rank * self.per_rank
        for s in range(len(self)):
            start = s * self.batch_size + lo
            yield order[start:start + self.per_rank].tolist()


def collate_dict(items: Sequence[Any]) -> dict:
    """Stack dataset items (tuples in :data:`ITEM_KEYS` order, or dicts) into a batch dict."""
    first = items[0]
    if isinstance(first, dict):
        keys = list(first)
        cols = [[it[k] for it in items] for k in keys]
    else:
        if len(first) > len(ITEM_KEYS):
            raise ValueError(f"dataset items have {len(first)} elements; expected at most "
                             f"{len(ITEM_KEYS)}: {ITEM_KEYS}")
        keys = list(ITEM_KEYS[:len(first)])
        cols = list(zip(*items))
    out = {}
    for k, col in zip(keys, cols):
        out[k] = torch.stack([torch.as_tensor(c) for c in col])
    return out


class TensorBatches:
    """In-memory training data: index tensors directly."""

    def __init__(self, data: dict):
        if "image" not in data or "labels" not in data:
            raise ValueError("in-memory training data needs 'image' and 'labels' "
                             f"(got keys {sorted(data)})")
        n = len(data["image"])
        self.data = {}
        for k, v in data.items():
            v = torch.as_tensor(v)
            if len(v) != n:
                raise ValueError(f"training data {k!r} has {len(v)} rows, 'image' has {n}")
            self.data[k] = v
        if "row" not in self.data:
            self.data["row"] = torch.arange(n)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def loader(self, sampler: EpochBatchSampler, **_) -> Iterator[dict]:
        for idx in sampler:
            idx = torch.as_tensor(idx, dtype=torch.long)
            yield {k: v[idx] for k, v in self.data.items()}


class DatasetBatches:
    """A torch Dataset read through a DataLoader whose batches come from the sampler."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.n = len(dataset)

    def __len__(self) -> int:
        return self.n

    def loader(self, sampler: EpochBatchSampler, *, num_workers: int = 0, pin_memory: bool = False,
               seed: int = 0) -> DataLoader:
        from cxrlab.seeding import loader_seeding

        # worker seeds derive from (seed, epoch, rank): randomness inside the Dataset repeats
        # exactly after a resume too
        seeding = loader_seeding(epoch_seed(seed, sampler.epoch * 1009 + sampler.rank))
        return DataLoader(self.dataset, batch_sampler=sampler, collate_fn=collate_dict,
                          num_workers=num_workers, pin_memory=pin_memory, **seeding)


def as_batches(train_data) -> TensorBatches | DatasetBatches:
    """Wrap whatever ``fit`` was given (see the module docstring)."""
    if isinstance(train_data, (TensorBatches, DatasetBatches)):
        return train_data
    if isinstance(train_data, dict):
        return TensorBatches(train_data)
    if isinstance(train_data, (tuple, list)) and 2 <= len(train_data) <= len(ITEM_KEYS) \
            and all(isinstance(t, (torch.Tensor, np.ndarray)) for t in train_data):
        return TensorBatches(dict(zip(ITEM_KEYS, train_data)))
    if isinstance(train_data, Dataset) or (hasattr(train_data, "__getitem__")
                                           and hasattr(train_data, "__len__")):
        return DatasetBatches(train_data)
    raise TypeError(f"cannot train on {type(train_data).__name__}; pass a CacheDataset, "
                    "(images, labels) tensors from load_arrays, or a dict of tensors")


def label_width(batches) -> int | None:
    """L of the labels, read without loading images where possible."""
    if isinstance(batches, TensorBatches):
        return int(batches.data["labels"].shape[-1])
    labels = getattr(batches.dataset, "labels", None)
    if isinstance(labels, torch.Tensor) and labels.dim() == 2:
        return int(labels.shape[1])
    return None


def fingerprint(batches) -> str:
    """A short hash of what identifies the training set (its size, rows and labels - not the
    pixels, which would be slow to hash): a resume on different data is refused."""
    h = hashlib.sha1()
    h.update(str(len(batches)).encode())
    if isinstance(batches, TensorBatches):
        rows, labels = batches.data["row"], batches.data["labels"]
        h.update(str(tuple(batches.data["image"].shape)).encode())
    else:
        ds = batches.dataset
        rows, labels = getattr(ds, "rows", None), getattr(ds, "labels", None)
        h.update(type(ds).__name__.encode())
    for arr in (rows, labels):
        if arr is not None:
            a = np.nan_to_num(np.asarray(arr, dtype=np.float64), nan=-1.0)
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]
