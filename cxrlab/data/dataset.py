"""PyTorch views of a cache. Images stay uint8 until they reach the device (4x less to copy);
normalisation happens there, with each backbone's own statistics (``Backbone.normalize``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cxrlab.data.cache import Cache


class CacheDataset(Dataset):
    """Items are ``(image, labels, index)``: image uint8 [1, S, S], labels float32 [L] with NaN
    for "not labelled", index the row in the cache (to look up masks or metadata).

    ``transform`` (optional) maps the uint8 tensor [1, S, S] to a tensor; ``with_masks`` adds
    the lung mask and the lesion bit-planes as a 4th and 5th element.
    """

    def __init__(self, cache: Cache, rows: Sequence[int] | None = None,
                 label_space: str | Sequence[str] = "nih14", transform=None,
                 with_masks: bool = False):
        self.cache = cache
        self.rows = np.arange(len(cache)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.labels = torch.from_numpy(cache.labels(label_space, self.rows))
        self.transform = transform
        self.with_masks = with_masks
        if with_masks and (cache.lung_masks is None or cache.lesion_masks is None):
            raise ValueError(f"{cache.path} has no lung/lesion masks; prepare it with masks "
                             "or use with_masks=False")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        r = int(self.rows[i])
        img = torch.from_numpy(np.array(self.cache.images[r]))[None]
        if self.transform is not None:
            img = self.transform(img)
        item = (img, self.labels[i], r)
        if self.with_masks:
            lung = torch.from_numpy(np.array(self.cache.lung_masks[r]))[None]
            lesion = torch.from_numpy(np.array(self.cache.lesion_masks[r]).astype(np.int32))[None]
            item = item + (lung, lesion)
        return item


def load_arrays(cache: Cache, rows: Sequence[int], label_space="nih14"):
    """Images (uint8 tensor [n,1,S,S]) and labels (float [n,L]) of some rows, in memory: for
    small studies where a DataLoader is overhead."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows)  # memmap reads are fastest in file order
    imgs = np.empty((len(rows), cache.image_size, cache.image_size), dtype=np.uint8)
    imgs[order] = cache.images[rows[order]]
    return torch.from_numpy(imgs)[:, None], torch.from_numpy(cache.labels(label_space, rows))


def load_masks(cache: Cache, rows: Sequence[int]) -> dict[str, torch.Tensor]:
    """The rows' ``row`` index, ``lung_mask`` (uint8 [n,1,S,S]) and ``lesion_mask`` (int32
    [n,1,S,S], bit k = NIH14 label k), in memory: with :func:`load_arrays`'s images and labels
    they make the dict of tensors a mask-guided method trains on (``{"image": x, "labels": y,
    **load_masks(cache, rows)}``)."""
    if cache.lung_masks is None or cache.lesion_masks is None:
        raise ValueError(f"{cache.path} has no lung/lesion masks; prepare it with masks")
    rows = np.asarray(rows, dtype=np.int64)
    return {"row": torch.from_numpy(rows),
            "lung_mask": torch.from_numpy(np.asarray(cache.lung_masks[rows]))[:, None],
            "lesion_mask": torch.from_numpy(
                np.asarray(cache.lesion_masks[rows]).astype(np.int32))[:, None]}
