"""Bench: linear probe on cached embeddings vs the seed's ten epochs of frozen forward passes.

Both arms train the same head (zero init, AdamW, lr 1e-3, batch 128, 10 epochs, the same
seeded minibatch order, embeddings standardised with training statistics, no augmentation) on
the same images through the same frozen backbone:

* ``epoch``: :func:`cxrlab.probe.train_frozen_probe_epochs`: ten forward passes per image (plus
  one to fit the standardisation statistics);
* ``cached``: :func:`cxrlab.probe.extract_embeddings` (one forward pass, written to a
  fresh on-disk cache) + :func:`cxrlab.probe.train_linear_probe`.

``probe_cached_vs_epoch_ratio`` = training wall time of ``epoch`` / ``cached`` (best of the
repeats), on CPU. Both probes are then scored on the same held-out embeddings; their macro
AUCs must agree (``probe_auc_abs_diff`` <= 0.01): the fast way computes the same model. Both
arms standardise: without it, a head on random-init features learns next to nothing in ten
epochs (AUC near 0.5 in both arms), and equal chance-level AUCs would prove nothing. Data: the synthetic "source" hospital,
shared labels, random-init tiny backbone (results are synthetic), or a toy cache when the
synthetic generator is unavailable.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

#: every figure this group can report (BENCHMARKS.md documents each)
KEYS = (
    "probe_cached_vs_epoch_ratio",
    "probe_seconds_cached",
    "probe_seconds_epoch",
    "probe_auc_cached",
    "probe_auc_epoch",
    "probe_auc_abs_diff",
    "probe_n_train_images",
)


SCHEDULE = dict(epochs=10, lr=1e-3, weight_decay=1e-4, batch_size=128, seed=0, standardize=True)


def _toy_cache(out: Path, n: int, size: int, seed: int = 0):
    """Random textured images; positives of one label carry a bright blob (learnable)."""
    from cxrlab.data.cache import CacheWriter

    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.float32)
    imgs = rng.normal(110, 25, (n, size, size)).clip(0, 255).astype(np.uint8)
    r = size // 8
    for i in np.flatnonzero(y):
        cy, cx = rng.integers(r, size - r, 2)
        patch = imgs[i, cy - r:cy + r, cx - r:cx + r].astype(np.int16) + 60
        imgs[i, cy - r:cy + r, cx - r:cx + r] = np.clip(patch, 0, 255)
    w = CacheWriter(out, n, size)
    w.write(0, imgs)
    split = np.where(np.arange(n) < int(0.75 * n), "train", "test")
    man = pd.DataFrame({"image_id": [f"toy{i}" for i in range(n)],
                        "patient_id": [f"p{i}" for i in range(n)], "split": split,
                        "domain": "toy", "Pneumothorax": y})
    return w.finalize(man, meta={"synthetic": True, "generator": "cxrlab.bench.probe toy"})


def _data(out: Path, n_per_hospital: int, size: int):
    """(cache, label space, data description)."""
    try:
        from cxrlab.data.synthetic import write_synthetic_cache
    except ImportError:
        return _toy_cache(out, n_per_hospital, size), "pneumothorax", "toy (synthetic)"
    cache = write_synthetic_cache(out, hospitals=["source"], n_per_hospital=n_per_hospital,
                                  image_size=size, seed=0)
    return cache, "shared7", "synthetic source hospital"


def run(quick: bool = False) -> dict[str, float]:
    from cxrlab.metrics import masked_auc_macro
    from cxrlab.models import create_backbone
    from cxrlab.probe import (extract_embeddings, predict_proba, train_frozen_probe_epochs,
                              train_linear_probe)

    n, size, name, repeats = (160, 64, "tiny_cnn", 1) if quick else (1000, 64, "tiny_resnet", 2)
    with tempfile.TemporaryDirectory(prefix="cxrlab-bench-probe-") as tmp:
        tmp = Path(tmp)
        cache, space, _ = _data(tmp / "data", n, size)
        train = np.concatenate([cache.select("train"), cache.select("val")])
        test = cache.select("test")
        y_train = torch.from_numpy(cache.labels(space, train))
        y_test = cache.labels(space, test)
        bb = create_backbone(name, pretrained=False, image_size=size)
        # warm-up, so that neither arm pays one-time costs (first conv kernels, the optimiser's
        # lazy imports: seconds on a cold start)
        with torch.inference_mode():
            bb.embed(torch.from_numpy(np.asarray(cache.images[train[:32]]))[:, None])
        train_linear_probe(torch.randn(8, bb.num_features), y_train[:8], **{**SCHEDULE, "epochs": 1})

        t_epoch, t_cached = [], []
        for r in range(repeats):
            t0 = time.perf_counter()
            emb = extract_embeddings(bb, cache, train, device="cpu", cache_dir=tmp / f"emb{r}")
            probe_cached = train_linear_probe(emb, y_train, **SCHEDULE)
            t_cached.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            probe_epoch = train_frozen_probe_epochs(bb, cache, train, y_train, device="cpu",
                                                    **SCHEDULE)
            t_epoch.append(time.perf_counter() - t0)

        emb_test = extract_embeddings(bb, cache, test, device="cpu", cache_dir=False)
        auc_cached = masked_auc_macro(y_test, predict_proba(probe_cached, emb_test))
        auc_epoch = masked_auc_macro(y_test, predict_proba(probe_epoch, emb_test))
    return {
        "probe_cached_vs_epoch_ratio": round(min(t_epoch) / min(t_cached), 2),
        "probe_seconds_cached": round(min(t_cached), 3),
        "probe_seconds_epoch": round(min(t_epoch), 3),
        "probe_auc_cached": round(auc_cached, 4),
        "probe_auc_epoch": round(auc_epoch, 4),
        "probe_auc_abs_diff": round(abs(auc_cached - auc_epoch), 5),
        "probe_n_train_images": float(len(train)),
    }
