"""Small data and models for the engine, method and DDP tests (imported by the tests and by the
scripts in :mod:`tests.scripts` that the tests start as subprocesses)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxrlab.data.cache import CacheWriter
from cxrlab.labels import SHARED7
from cxrlab.models.backbone import Backbone

SIZE = 32


def signal_images(labels: np.ndarray, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """uint8 [n, S, S]: dim noise, plus a bright 6x6 patch in cell k (of a 4x4 grid of
    8-px cells) for every positive label k - a signal a tiny network learns in a few steps."""
    rng = np.random.default_rng(seed)
    n, L = labels.shape
    imgs = rng.integers(0, 70, size=(n, size, size), dtype=np.uint8)
    cell = size // 4
    for k in range(L):
        r, c = divmod(k, 4)
        pos = np.nan_to_num(labels[:, k]) == 1
        imgs[pos, r * cell + 1:r * cell + cell - 1, c * cell + 1:c * cell + cell - 1] = 230
    return imgs


def make_labels(n: int, seed: int = 0, nan_frac: float = 0.1, n_labels: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_labels)) < 0.35).astype(np.float32)
    y[rng.random((n, n_labels)) < nan_frac] = np.nan
    return y


def box_masks(labels: np.ndarray, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(lung uint8, lesion uint16) [n, S, S] for :func:`signal_images`: two "lungs" (the left
    and right thirds of the image, every image) and, for positive label k, bit k set on the
    patch of label k (the region a masking method should look at); the label columns are
    SHARED7's, so the lesion bit of column k is NIH14's index of ``SHARED7[k]``."""
    from cxrlab.labels import NIH14

    n, L = labels.shape
    lung = np.zeros((n, size, size), np.uint8)
    third = size // 3
    lung[:, 2:size - 2, 1:third] = 1
    lung[:, 2:size - 2, size - third:size - 1] = 1
    lesion = np.zeros((n, size, size), np.uint16)
    cell = size // 4
    for k in range(L):
        r, c = divmod(k, 4)
        pos = np.nan_to_num(labels[:, k]) == 1
        lesion[pos, r * cell + 1:r * cell + cell - 1,
               c * cell + 1:c * cell + cell - 1] |= 1 << NIH14.index(SHARED7[k])
    return lung, lesion


def make_cache(out, n_train: int = 96, n_val: int = 32, seed: int = 0, nan_frac: float = 0.1,
               masks: bool = False):
    """A finished cxrlab cache (domain "source", labels = SHARED7 columns, some NaN); with
    ``masks``, lung and lesion masks from :func:`box_masks`."""
    n = n_train + n_val
    y = make_labels(n, seed, nan_frac)
    w = CacheWriter(out, n, SIZE, lung_masks=masks, lesion_masks=masks)
    if masks:
        lung, lesion = box_masks(y)
        w.write(0, signal_images(y, seed=seed), lung_masks=lung, lesion_masks=lesion)
    else:
        w.write(0, signal_images(y, seed=seed))
    man = pd.DataFrame({
        "image_id": [f"img{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
        "split": ["train"] * n_train + ["val"] * n_val, "domain": "source", "age": 50.0,
        "sex": "F", "view": "PA", "path": "",
    })
    for j, name in enumerate(SHARED7):
        man[name] = y[:, j]
    return w.finalize(man, meta={"synthetic": True})


def tensor_data(n: int = 64, seed: int = 0, nan_frac: float = 0.1, n_labels: int = 7):
    """In-memory ``(images uint8 [n,1,S,S], labels float [n, L])``."""
    y = make_labels(n, seed, nan_frac, n_labels)
    return torch.from_numpy(signal_images(y, seed=seed))[:, None], torch.from_numpy(y)


class _NoBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.body(x)


def nobn_backbone() -> Backbone:
    """A 2-conv backbone without batch-norm, seeded: the same function on every rank, and one
    whose gradient does not depend on how the batch is split (batch-norm's would)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = _NoBN()
    return Backbone(m, name="nobn", num_features=16, in_chans=1, mean=(0.5,), std=(0.25,),
                    input_size=SIZE)
