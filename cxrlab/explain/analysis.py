"""Attention measured over many images and models: tables with bootstrap intervals.

Everything takes trained models by name (``{"ERM": algorithm, ...}``: any
:class:`~cxrlab.methods.base.Algorithm`, or a module giving logits with ``target_layers``
registered), so a new method (RRR, ActDiff ...) is compared by adding it to the dict.

* :func:`region_masks` - images and their lung / lesion / shortcut masks from a cache
* :func:`attention_table` - one row per (model, image): energy shares, pointing game, centre
* :func:`summarize` - mean and 95 % bootstrap interval of each column, per model
* :func:`agreement_table` - how two models' maps of the same image agree
* :func:`consistency_table` - how much a model's attention moves across images of one label
* :func:`faithfulness_table` - ROAD of the maps against random maps
"""
from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxrlab.explain.cams import cam_maps
from cxrlab.explain.metrics import (bootstrap_mean, centre_of_mass, com_spread, energy_share,
                                    pointing_game, rank_correlation, topk_iou)

#: the per-image columns :func:`summarize` reports by default
SHARE_COLUMNS = ("share_lesion", "share_lung", "share_shortcut", "pointing_lesion")


def region_masks(cache, rows: Sequence[int], label: str | None = None,
                 shortcut: bool | None = None) -> dict:
    """Images and masks of cache ``rows``: ``images`` uint8 tensor [N, 1, S, S], ``lung``,
    ``lesion`` (of ``label``: its bit of the NIH-14 lesion masks; None without a label) and
    ``shortcut`` (the chest drain, redrawn for synthetic caches; None otherwise) as bool
    [N, S, S]."""
    from cxrlab.labels import NIH14

    rows = np.asarray(rows, dtype=np.int64)
    out = {"rows": rows, "images": torch.from_numpy(np.asarray(cache.images[rows]))[:, None]}
    lung = cache.lung_masks
    out["lung"] = None if lung is None else np.asarray(lung[rows]) > 0
    out["lesion"] = None
    if label is not None and cache.lesion_masks is not None:
        if label not in NIH14:
            raise KeyError(f"unknown label {label!r}; lesion masks exist for {list(NIH14)}")
        bit = np.uint32(1 << NIH14.index(label))
        out["lesion"] = (np.asarray(cache.lesion_masks[rows]).astype(np.uint32) & bit) > 0
    out["shortcut"] = None
    if shortcut is not False and cache.synthetic:
        from cxrlab.data.synthetic.writer import cache_shortcut_masks

        out["shortcut"] = cache_shortcut_masks(cache, rows) > 0
    return out


def attention_table(models: Mapping[str, nn.Module], images, targets, *, lung=None,
                    lesion=None, shortcut=None, method: str = "gradcam",
                    ids: Sequence | None = None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """One row per (model, image) and the maps themselves (``{model: [N, H, W]}``).

    Columns: ``model``, ``image`` (``ids`` or 0..N-1), ``target``, ``share_lesion``,
    ``share_lung``, ``share_shortcut`` (energy share inside each mask; NaN without the mask),
    ``pointing_lesion`` (1 / 0, NaN where the image has no lesion), ``com_x``, ``com_y``
    (centre of mass in lung-normalised coordinates), ``has_lesion``, ``has_shortcut``.
    """
    n = len(images)
    ids = list(range(n)) if ids is None else list(ids)
    tg = np.broadcast_to(np.asarray(targets), (n,)) if np.ndim(targets) == 0 else np.asarray(targets)
    frames, cams = [], {}
    for name, model in models.items():
        c = cam_maps(model, images, tg.tolist(), method=method)
        cams[name] = c
        nan = np.full(n, np.nan)
        com = centre_of_mass(c, lung) if lung is not None else np.full((n, 2), np.nan)
        frames.append(pd.DataFrame({
            "model": name, "image": ids, "target": tg,
            "share_lesion": energy_share(c, lesion) if lesion is not None else nan,
            "share_lung": energy_share(c, lung) if lung is not None else nan,
            "share_shortcut": energy_share(c, shortcut) if shortcut is not None else nan,
            "pointing_lesion": pointing_game(c, lesion) if lesion is not None else nan,
            "com_x": com[:, 0], "com_y": com[:, 1],
            "has_lesion": (np.asarray(lesion).reshape(n, -1).any(1) if lesion is not None
                           else np.zeros(n, bool)),
            "has_shortcut": (np.asarray(shortcut).reshape(n, -1).any(1) if shortcut is not None
                             else np.zeros(n, bool)),
        }))
    return pd.concat(frames, ignore_index=True), cams


def summarize(df: pd.DataFrame, columns: Sequence[str] = SHARE_COLUMNS,
              by: Sequence[str] = ("model",), n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean and 95 % percentile-bootstrap interval (resampling images) of each column per
    group: long format ``by..., metric, mean, lo, hi, n`` (n = finite values)."""
    rows = []
    for key, g in df.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        for col in columns:
            v = g[col].to_numpy(dtype=np.float64)
            m, lo, hi = bootstrap_mean(v, n_boot=n_boot, seed=seed)
            rows.append(dict(zip(by, key), metric=col, mean=m, lo=lo, hi=hi,
                             n=int(np.isfinite(v).sum())))
    return pd.DataFrame(rows)


def agreement_table(cams: Mapping[str, np.ndarray], fraction: float = 0.1, n_boot: int = 1000,
                    seed: int = 0) -> pd.DataFrame:
    """For each pair of models (maps of the same images and labels): mean Spearman rank
    correlation and IoU of the top-``fraction`` regions, with 95 % bootstrap intervals."""
    rows = []
    for a, b in itertools.combinations(list(cams), 2):
        rc = rank_correlation(cams[a], cams[b])
        iou = topk_iou(cams[a], cams[b], fraction)
        for metric, v in (("rank_corr", rc), (f"top{int(round(fraction * 100))}_iou", iou)):
            m, lo, hi = bootstrap_mean(v, n_boot=n_boot, seed=seed)
            rows.append({"model_a": a, "model_b": b, "metric": metric, "mean": m, "lo": lo,
                         "hi": hi, "n": int(np.isfinite(v).sum())})
    return pd.DataFrame(rows)


def consistency_table(df: pd.DataFrame, by: Sequence[str] = ("model",), n_boot: int = 1000,
                      seed: int = 0) -> pd.DataFrame:
    """Spread of the centre of mass across images (lung half-widths; :func:`com_spread`) per
    group of :func:`attention_table`'s rows, with a 95 % bootstrap interval over images."""
    rows = []
    for key, g in df.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        pts = g[["com_x", "com_y"]].to_numpy(dtype=np.float64)
        m, lo, hi = bootstrap_mean(pts, n_boot=n_boot, seed=seed, stat=com_spread)
        rows.append(dict(zip(by, key), spread=m, lo=lo, hi=hi,
                         n=int(np.isfinite(pts).all(1).sum())))
    return pd.DataFrame(rows)


def faithfulness_table(models: Mapping[str, nn.Module], images, targets,
                       cams: Mapping[str, np.ndarray], percentiles=(20, 50, 80),
                       n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """ROAD faithfulness (``lerf - morf``, see :mod:`cxrlab.explain.faithfulness`) of each
    model's maps and of random maps on the same images: mean and 95 % bootstrap interval."""
    from cxrlab.explain.faithfulness import random_maps, road_scores

    rows = []
    for name, model in models.items():
        c = np.asarray(cams[name])
        for kind, maps in (("cam", c), ("random", random_maps(c.shape, seed=seed))):
            f = road_scores(model, images, targets, maps, percentiles)["faithfulness"]
            m, lo, hi = bootstrap_mean(f, n_boot=n_boot, seed=seed)
            rows.append({"model": name, "maps": kind, "mean": m, "lo": lo, "hi": hi, "n": len(f)})
    return pd.DataFrame(rows)
