"""Mask geometry for the masking methods (RRR, ActDiff) of seed 002.

Seed 002 (pneumothorax; source SIIM-ACR) compares three kinds of region a model is told to
look at:

* **abnormality**: the ground-truth lesion segmentation (SIIM's pneumothorax masks);
* **scaled abnormality**: "scaling the ground-truth segmentations to a smaller resolution so
  that they cover a larger area" (section 5). The paper gives no factor. We read it as: shrink
  the mask to a coarse grid (each ``factor x factor`` block becomes one cell that is on when
  *any* of its pixels is) and blow it back up, so every lesion grows to the coarse cells it
  touches (:func:`scale_mask`);
* **lung periphery**: hand-drawn by the authors for the positive training images; we derive
  it from a lung mask as the band of lung within a distance of the lung border (lung minus
  eroded lung, :func:`lung_periphery`), which covers the apices and lateral margins where
  most pneumothoraces lie (the paper's figure 1).

All functions take a single mask ``[H, W]`` or a batch ``[N, H, W]`` of 0/1 (any integer or
bool dtype) and return uint8 0/1 of the same shape.
"""
from __future__ import annotations

import numpy as np

#: kinds accepted by :func:`attribution_mask`
MASK_KINDS = ("abnormality", "scaled_abnormality", "lung_periphery", "lung")


def _as_batch(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    m = np.asarray(mask)
    if m.ndim == 2:
        return m[None], True
    if m.ndim == 3:
        return m, False
    raise ValueError(f"expected a mask [H, W] or a batch [N, H, W], got shape {m.shape}")


def lung_periphery(lung_mask: np.ndarray, width_frac: float = 0.25) -> np.ndarray:
    """The outer band of each lung: lung pixels within ``d`` of the lung's border.

    ``d = width_frac x`` the width (horizontal extent) of that lung, so the band scales with
    the patient and the image size. ``width_frac = 0.25`` keeps roughly the outer half of each
    lung's half-width (apex, lateral margin, base; the centre is left out); ``0.5`` or more
    keeps the whole lung. Each connected lung region gets its own width. The image border
    counts as outside the lung, so a lung cut off by the image edge still has a periphery
    there.
    """
    from scipy import ndimage

    if not width_frac > 0:
        raise ValueError(f"width_frac must be > 0, got {width_frac}")
    batch, single = _as_batch(lung_mask)
    out = np.zeros(batch.shape, dtype=np.uint8)
    for i, m in enumerate(batch):
        lung = np.asarray(m) != 0
        if not lung.any():
            continue
        labels, n = ndimage.label(lung)
        widths = np.zeros(n + 1, dtype=np.float64)
        for k, sl in enumerate(ndimage.find_objects(labels), 1):
            widths[k] = sl[1].stop - sl[1].start
        # distance of every lung pixel to the nearest non-lung pixel (image edge included)
        dist = ndimage.distance_transform_edt(np.pad(lung, 1))[1:-1, 1:-1]
        out[i] = lung & (dist <= widths[labels] * width_frac)
    return out[0] if single else out


def scale_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """Coarsen a mask by ``factor``: every ``factor x factor`` block that touches the mask is
    filled (max-pool to the smaller resolution, nearest-neighbour back up).

    ``factor = 1`` returns the mask unchanged; larger factors cover more background around each
    lesion. The blocks are aligned to the image grid (as resizing to a smaller resolution and
    back would be); sizes that ``factor`` does not divide are handled by a partial last block.
    """
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    batch, single = _as_batch(mask)
    m = (np.asarray(batch) != 0)
    n, h, w = m.shape
    if factor == 1:
        out = m.astype(np.uint8)
        return out[0] if single else out
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    padded = np.zeros((n, hp, wp), dtype=bool)
    padded[:, :h, :w] = m
    coarse = padded.reshape(n, hp // factor, factor, wp // factor, factor).any(axis=(2, 4))
    out = np.repeat(np.repeat(coarse, factor, axis=1), factor, axis=2)[:, :h, :w]
    out = out.astype(np.uint8)
    return out[0] if single else out


def attribution_mask(kind: str, *, lesion: np.ndarray | None = None,
                     lung: np.ndarray | None = None, width_frac: float = 0.25,
                     scale_grid: int = 16, scale_factor: int | None = None) -> np.ndarray:
    """The region a masking method should attend to, by seed 002's name for it.

    ``kind``: ``"abnormality"`` (``lesion`` as is), ``"scaled_abnormality"``
    (:func:`scale_mask` of ``lesion``), ``"lung_periphery"`` (:func:`lung_periphery` of
    ``lung``) or ``"lung"`` (the whole lung). ``lesion`` / ``lung`` are 0/1 masks
    ``[H, W]`` or ``[N, H, W]``.

    The scaled abnormality is coarsened to a ``scale_grid x scale_grid`` grid (block =
    ``ceil(width / scale_grid)`` px), so it means the same at 64 and at 224 px; pass
    ``scale_factor`` to give the block size in pixels instead.

    Seed 002 draws masks for positive images only; what a method does with an image whose
    mask is empty (a negative, or a positive without a segmentation) is the method's choice,
    not this function's.
    """
    if kind not in MASK_KINDS:
        raise KeyError(f"unknown mask kind {kind!r}; choose one of {list(MASK_KINDS)}")
    if kind in ("abnormality", "scaled_abnormality"):
        if lesion is None:
            raise ValueError(f"mask kind {kind!r} needs lesion masks (e.g. SIIM's pneumothorax "
                             "segmentations); this cache has none")
        if kind == "abnormality":
            return (np.asarray(lesion) != 0).astype(np.uint8)
        if scale_factor is None:
            scale_factor = max(1, -(-np.asarray(lesion).shape[-1] // int(scale_grid)))
        return scale_mask(lesion, scale_factor)
    if lung is None:
        raise ValueError(f"mask kind {kind!r} needs lung masks; add them to a real cache with "
                         "cxrlab.data.chexmask.add_lung_masks (CheXmask) or use the synthetic "
                         "hospitals, which draw them")
    if kind == "lung":
        return (np.asarray(lung) != 0).astype(np.uint8)
    return lung_periphery(lung, width_frac)


def mask_coverage(mask: np.ndarray) -> float:
    """Fraction of pixels that are on (mean over a batch)."""
    return float((np.asarray(mask) != 0).mean())
