"""Numbers about attention maps: where the energy lies, whether the peak hits the lesion,
whether two models agree, how consistent one model is across images.

Every function takes CAMs ``[B, H, W]`` (from :func:`cxrlab.explain.cam_maps`) and, where a
region is involved, masks of exactly the same shape (lung, lesion, shortcut), and returns one
value per image; :func:`bootstrap_mean` turns a column of them into a mean with an interval.
"""
from __future__ import annotations

import numpy as np

from cxrlab.explain.cams import CamInputError


class MaskShapeError(CamInputError):
    """A mask does not have the CAMs' shape."""


def _cams(cams) -> np.ndarray:
    c = np.asarray(cams, dtype=np.float64)
    if c.ndim == 2:
        c = c[None]
    if c.ndim != 3:
        raise CamInputError(f"CAMs must be [B, H, W], got shape {c.shape}")
    return c


def _masks(masks, cams: np.ndarray, what: str = "mask") -> np.ndarray:
    m = np.asarray(masks)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim == 2:
        m = m[None]
    if m.shape != cams.shape:
        raise MaskShapeError(f"{what} shape {m.shape} does not match the CAMs' {cams.shape}: "
                             "compute the maps at the image size of the masks (cam_maps returns "
                             "them at the input size) or resize the masks")
    return m.astype(bool)


def energy_share(cams, masks) -> np.ndarray:
    """Fraction of each map's total value that lies inside its mask: [B] in [0, 1].

    An empty mask gives 0 (no energy can lie there); an all-zero map gives NaN."""
    c = _cams(cams)
    m = _masks(masks, c)
    total = c.sum(axis=(1, 2))
    inside = (c * m).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)


def pointing_game(cams, masks, tolerance: int = 0) -> np.ndarray:
    """1.0 where the map's maximum lies in the mask (grown by ``tolerance`` pixels), else 0.0;
    NaN for an empty mask (nothing to point at). Ties: the first maximum in raster order."""
    c = _cams(cams)
    m = _masks(masks, c)
    if tolerance > 0:
        from scipy.ndimage import binary_dilation

        m = binary_dilation(m, structure=np.ones((1, 3, 3), bool), iterations=int(tolerance))
    flat = c.reshape(len(c), -1).argmax(axis=1)
    hit = m.reshape(len(m), -1)[np.arange(len(m)), flat].astype(np.float64)
    return np.where(m.reshape(len(m), -1).any(axis=1), hit, np.nan)


def rank_correlation(cams_a, cams_b) -> np.ndarray:
    """Spearman rank correlation of two maps of the same images, pixel by pixel: [B]."""
    from scipy.stats import rankdata

    a, b = _cams(cams_a), _cams(cams_b)
    if a.shape != b.shape:
        raise MaskShapeError(f"the two sets of CAMs differ in shape: {a.shape} vs {b.shape}")
    ra = rankdata(a.reshape(len(a), -1), axis=1)
    rb = rankdata(b.reshape(len(b), -1), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1), np.nan)


def top_region(cams, fraction: float = 0.1) -> np.ndarray:
    """Boolean masks of each map's top ``fraction`` of pixels (exactly round(fraction*H*W),
    ties broken in raster order)."""
    if not 0 < fraction <= 1:
        raise CamInputError(f"fraction must be in (0, 1], got {fraction}")
    c = _cams(cams)
    flat = c.reshape(len(c), -1)
    k = max(1, int(round(fraction * flat.shape[1])))
    idx = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    out = np.zeros_like(flat, dtype=bool)
    np.put_along_axis(out, idx, True, axis=1)
    return out.reshape(c.shape)


def topk_iou(cams_a, cams_b, fraction: float = 0.1) -> np.ndarray:
    """Intersection over union of the two maps' top-``fraction`` regions: [B] in [0, 1]."""
    a, b = _cams(cams_a), _cams(cams_b)
    if a.shape != b.shape:
        raise MaskShapeError(f"the two sets of CAMs differ in shape: {a.shape} vs {b.shape}")
    ta, tb = top_region(a, fraction), top_region(b, fraction)
    inter = (ta & tb).sum(axis=(1, 2))
    union = (ta | tb).sum(axis=(1, 2))
    return inter / union


def centre_of_mass(cams, lung_masks) -> np.ndarray:
    """Each map's centre of mass in lung-normalised coordinates: [B, 2] = (x, y).

    (0, 0) is the centre of the lung field's bounding box, -1 / +1 its left / right (top /
    bottom) edges: images whose lungs sit at different places and sizes become comparable.
    NaN for an all-zero map or an empty lung mask."""
    c = _cams(cams)
    m = _masks(lung_masks, c, "lung mask")
    H, W = c.shape[1:]
    ys, xs = np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64)
    total = c.sum(axis=(1, 2))
    out = np.full((len(c), 2), np.nan)
    for i in range(len(c)):
        if total[i] <= 0 or not m[i].any():
            continue
        cy = (c[i].sum(1) * ys).sum() / total[i]
        cx = (c[i].sum(0) * xs).sum() / total[i]
        rows, cols = np.flatnonzero(m[i].any(1)), np.flatnonzero(m[i].any(0))
        y0, y1, x0, x1 = rows[0], rows[-1], cols[0], cols[-1]
        out[i] = ((cx - (x0 + x1) / 2) / max((x1 - x0) / 2, 0.5),
                  (cy - (y0 + y1) / 2) / max((y1 - y0) / 2, 0.5))
    return out


def com_spread(coords) -> float:
    """Spread of centres of mass [N, 2]: root mean squared distance to their mean (lung
    half-widths). 0 when every map centres on the same point; NaN rows are ignored."""
    p = np.asarray(coords, dtype=np.float64)
    p = p[np.isfinite(p).all(axis=1)]
    if len(p) == 0:
        return float("nan")
    return float(np.sqrt(((p - p.mean(0)) ** 2).sum(1).mean()))


def bootstrap_mean(values, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                   stat=np.mean) -> tuple[float, float, float]:
    """(statistic, lo, hi): the statistic of the finite values and a percentile bootstrap
    interval over them (resampling images). NaN when no finite value is left."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[np.isfinite(v)]
    else:
        v = v[np.isfinite(v).all(axis=tuple(range(1, v.ndim)))]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(int(n_boot), len(v)))
    reps = np.array([stat(v[i]) for i in idx])
    a = (1 - level) / 2
    return float(stat(v)), float(np.quantile(reps, a)), float(np.quantile(reps, 1 - a))
