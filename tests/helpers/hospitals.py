"""Hand-made "hospitals" with known answers for the shift and plot tests (seconds to write,
no synthetic generator): three that differ in brightness and noise, and two identical twins."""
from __future__ import annotations

import numpy as np
import pandas as pd

from cxrlab.data.cache import CacheWriter
from cxrlab.labels import NIH14, lesion_bit

# three fake hospitals that differ in brightness and noise (known answers)
FAKE = {"alpha": (70.0, 2.0), "beta": (120.0, 8.0), "gamma": (170.0, 20.0)}
SIZE = 32


def _lungs(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    left = ((xx - size * 0.3) / (size * 0.15)) ** 2 + ((yy - size * 0.5) / (size * 0.3)) ** 2 <= 1
    right = ((xx - size * 0.7) / (size * 0.15)) ** 2 + ((yy - size * 0.5) / (size * 0.3)) ** 2 <= 1
    return (left | right).astype(np.uint8)


def make_fake_cache(path, n_per_domain: int = 30, seed: int = 0):
    """Images: a flat background per hospital, darker lungs, Gaussian noise of the hospital's
    sigma; Effusion = a bright blob at the base of the left lung (with its lesion bit)."""
    rng = np.random.default_rng(seed)
    doms = list(FAKE)
    n = n_per_domain * len(doms)
    lung = _lungs(SIZE)
    w = CacheWriter(path, n, SIZE, lung_masks=True, lesion_masks=True)
    imgs = np.empty((n, SIZE, SIZE), np.uint8)
    lesions = np.zeros((n, SIZE, SIZE), np.uint16)
    rows = []
    for k, d in enumerate(doms):
        level, sigma = FAKE[d]
        for i in range(n_per_domain):
            r = k * n_per_domain + i
            eff = int(i % 3 == 0)
            img = np.full((SIZE, SIZE), level, np.float32) - 30.0 * lung
            if eff:
                blob = np.zeros((SIZE, SIZE), bool)
                blob[20:26, 6:13] = True
                img[blob] += 60
                lesions[r][blob] |= np.uint16(1 << lesion_bit("Effusion"))
            img += rng.normal(0, sigma, img.shape)
            imgs[r] = np.clip(np.round(img), 0, 255).astype(np.uint8)
            patient = f"{d}-p{i // 2}"  # two images per patient
            split = ("train", "train", "train", "val", "test")[(i // 2) % 5]
            row = {"image_id": f"{d}-{i}", "patient_id": patient, "split": split, "domain": d,
                   "age": 30 + 10 * k + i % 7, "sex": "F" if i % 2 else "M",
                   "view": "AP" if (d == "gamma" and i % 4) else "PA", "path": ""}
            row.update({lab: 0.0 for lab in NIH14})
            row["Effusion"] = float(eff)
            row["Cardiomegaly"] = float(i % 4 == 1)
            if d == "gamma":
                row["Pneumothorax"] = np.nan  # a label this hospital does not define
            rows.append(row)
    w.write(0, imgs, lung_masks=np.repeat(lung[None], n, 0), lesion_masks=lesions)
    return w.finalize(pd.DataFrame(rows), meta={"synthetic": True})


def make_twin_cache(path, n_per_domain: int = 150, seed: int = 1):
    """Two 'hospitals' whose images come from one distribution (brightness 120, noise 8):
    a domain classifier can only guess."""
    rng = np.random.default_rng(seed)
    n = 2 * n_per_domain
    w = CacheWriter(path, n, SIZE)
    base = np.full((SIZE, SIZE), 120.0, np.float32) - 30.0 * _lungs(SIZE)
    imgs = np.clip(np.round(base + rng.normal(0, 8, (n, SIZE, SIZE))), 0, 255).astype(np.uint8)
    rows = []
    for r in range(n):
        d, i = ("twin_a", "twin_b")[r % 2], r // 2
        row = {"image_id": f"{d}-{i}", "patient_id": f"{d}-p{i}", "domain": d, "age": 50,
               "sex": "F", "view": "PA", "path": "",
               "split": ("train", "train", "train", "val", "test")[i % 5]}
        row.update({lab: 0.0 for lab in NIH14})
        rows.append(row)
    w.write(0, imgs)
    return w.finalize(pd.DataFrame(rows), meta={"synthetic": True})
