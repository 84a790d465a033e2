"""Image shift, measured: intensity histograms and per-image statistics per hospital."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlab.data.cache import Cache


def _sample_rows(cache: Cache, domain: str, n: int | None, seed: int,
                 split: str | None = None) -> np.ndarray:
    rows = cache.select(split=split, domain=domain)
    if n is not None and len(rows) > n:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(rows, size=n, replace=False))
    return rows


def _read(arr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Read memmap rows in file order (fast), return them in the order asked for."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows)
    out = np.empty((len(rows),) + arr.shape[1:], dtype=arr.dtype)
    out[order] = arr[rows[order]]
    return out


def _domains(cache: Cache, domains: Sequence[str] | None) -> list[str]:
    if domains is None:
        return cache.domains
    domains = [domains] if isinstance(domains, str) else list(domains)
    unknown = sorted(set(domains) - set(cache.domains))
    if unknown:
        raise KeyError(f"unknown domain(s) {unknown}; this cache has {cache.domains}")
    return domains


def intensity_histograms(cache: Cache, domains: Sequence[str] | None = None,
                         rows_per_domain: int | None = 200, bins: int = 64,
                         region: str = "all", seed: int = 0) -> pd.DataFrame:
    """Pixel-intensity histogram of each domain, as a tidy table.

    Parameters
    ----------
    domains: which domains (default: all in the cache).
    rows_per_domain: images sampled per domain (seeded; ``None`` = all).
    bins: histogram bins over the uint8 range 0..255.
    region: ``"all"`` pixels, or ``"lung"`` / ``"outside"`` the lung mask (needs lung masks):
        inside the lungs the histogram shows the contrast curve and exposure of the hospital,
        outside it shows collimation, markers and background.

    Returns
    -------
    DataFrame with one row per (domain, bin): ``domain, bin_left, bin_right, bin_center,
    density`` (fraction of pixels, sums to 1 per domain) and ``n_images``.
    """
    if bins < 2 or bins > 256:
        raise ValueError(f"bins must be between 2 and 256, got {bins}")
    if region not in ("all", "lung", "outside"):
        raise ValueError(f"region must be 'all', 'lung' or 'outside', got {region!r}")
    if region != "all" and cache.lung_masks is None:
        raise ValueError(f"region={region!r} needs lung masks and {cache.path.name} has none; "
                         "use region='all'")
    edges = np.linspace(0, 256, bins + 1)
    frames = []
    for dom in _domains(cache, domains):
        rows = _sample_rows(cache, dom, rows_per_domain, seed)
        if len(rows) == 0:
            continue
        px = _read(cache.images, rows)
        if region != "all":
            inside = _read(cache.lung_masks, rows).astype(bool)
            px = px[inside] if region == "lung" else px[~inside]
        counts, _ = np.histogram(px.ravel(), bins=edges)
        total = max(counts.sum(), 1)
        frames.append(pd.DataFrame({
            "domain": dom, "bin_left": edges[:-1], "bin_right": edges[1:],
            "bin_center": (edges[:-1] + edges[1:]) / 2, "density": counts / total,
            "n_images": len(rows),
        }))
    if not frames:
        raise ValueError("no images in the requested domains")
    out = pd.concat(frames, ignore_index=True)
    out.attrs.update(region=region, bins=bins, synthetic=cache.synthetic)
    return out


def _conv3x3(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """'valid' 3x3 correlation of a batch [n, H, W] with kernel k (float32 out, [n, H-2, W-2])."""
    h, w = x.shape[1] - 2, x.shape[2] - 2
    out = np.zeros((x.shape[0], h, w), dtype=np.float32)
    for i in range(3):
        for j in range(3):
            if k[i, j] != 0:
                out += k[i, j] * x[:, i:i + h, j:j + w]
    return out


_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)
_LAPLACE_DIFF = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_BOX = np.full((3, 3), 1 / 9, dtype=np.float32)


def _batch_statistics(img: np.ndarray) -> dict[str, np.ndarray]:
    x = img.astype(np.float32)
    flat = x.reshape(len(x), -1)
    p05, p95 = np.percentile(flat, [5, 95], axis=1)
    gx = _conv3x3(x, _SOBEL_X) / 8.0
    gy = _conv3x3(x, _SOBEL_X.T) / 8.0
    hp = x[:, 1:-1, 1:-1] - _conv3x3(x, _BOX)
    lap = np.abs(_conv3x3(x, _LAPLACE_DIFF))
    return {
        "mean": flat.mean(1), "std": flat.std(1), "p05": p05, "p95": p95,
        "contrast": p95 - p05,
        # mean Sobel gradient magnitude (grey levels per pixel): sharpness / edge energy
        "gradient": np.sqrt(gx ** 2 + gy ** 2).reshape(len(x), -1).mean(1),
        # std of the high-pass residual (image minus its 3x3 mean): fine texture + noise
        "highpass_std": hp.reshape(len(x), -1).std(1),
        # Immerkaer (1996) fast noise estimate: the Laplacian-difference kernel cancels
        # smooth structure, so what is left is mostly pixel noise (sigma in grey levels)
        "noise": math.sqrt(math.pi / 2) * lap.reshape(len(x), -1).mean(1) / 6.0,
    }


def image_statistics(cache: Cache, rows: Sequence[int] | None = None,
                     chunk_size: int = 512) -> pd.DataFrame:
    """Per-image statistics that *measure* image shift (grey levels 0..255).

    Columns: ``row, domain, split, mean, std, p05, p95, contrast`` (p95 - p05), ``gradient``
    (mean Sobel gradient magnitude: edges and sharpness; blur lowers it), ``highpass_std`` (std
    of the image minus its 3x3 local mean: texture + noise), ``noise`` (Immerkaer's estimate of
    the pixel-noise sigma, insensitive to smooth anatomy) and, when the cache has lung masks,
    ``lung_mean`` / ``outside_mean`` (mean grey level inside and outside the lungs) and
    ``lung_fraction`` (share of the image covered by lung: collimation, inspiration, framing).
    """
    rows = np.arange(len(cache)) if rows is None else np.asarray(rows, dtype=np.int64)
    parts = []
    for start in range(0, len(rows), chunk_size):
        r = rows[start:start + chunk_size]
        img = _read(cache.images, r)
        stats = _batch_statistics(img)
        if cache.lung_masks is not None:
            lung = _read(cache.lung_masks, r).astype(bool)
            n_in = lung.reshape(len(r), -1).sum(1)
            n_out = lung[0].size - n_in
            s_in = (img * lung).reshape(len(r), -1).sum(1, dtype=np.float64)
            s_all = img.reshape(len(r), -1).sum(1, dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                stats["lung_mean"] = np.where(n_in > 0, s_in / np.maximum(n_in, 1), np.nan)
                stats["outside_mean"] = np.where(n_out > 0, (s_all - s_in) / np.maximum(n_out, 1),
                                                 np.nan)
            stats["lung_fraction"] = n_in / lung[0].size
        parts.append(pd.DataFrame(stats))
    cols = ["mean", "std", "p05", "p95", "contrast", "gradient", "highpass_std", "noise"]
    body = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    m = cache.manifest.iloc[rows]
    head = pd.DataFrame({"row": rows, "domain": m["domain"].astype(str).to_numpy(),
                         "split": m["split"].astype(str).to_numpy()})
    out = pd.concat([head, body.reset_index(drop=True)], axis=1)
    out.attrs["synthetic"] = cache.synthetic
    return out


# --------------------------------------------------------------------------------------------
# removing the grey-level shift
# --------------------------------------------------------------------------------------------

def reference_quantiles(images: np.ndarray, masks: np.ndarray | None = None,
                        n_quantiles: int = 257) -> np.ndarray:
    """The pooled grey-level distribution of ``images`` (inside ``masks`` when given) as
    ``n_quantiles`` quantiles: the reference :func:`match_histograms` maps other images onto."""
    px = np.asarray(images)
    px = px[np.asarray(masks, dtype=bool)] if masks is not None else px.ravel()
    if px.size == 0:
        raise ValueError("no pixels to build a reference from (empty images or masks)")
    return np.quantile(px.astype(np.float64), np.linspace(0, 1, n_quantiles))


def match_histograms(images: np.ndarray, reference: np.ndarray,
                     masks: np.ndarray | None = None, fill: float | None = None) -> np.ndarray:
    """Map each image's grey levels onto ``reference`` (from :func:`reference_quantiles`) by
    quantile matching: a pixel at the q-th quantile of its own image gets the reference's q-th
    quantile. The contrast curve, exposure and window of a hospital are gone afterwards; noise,
    blur, resolution and shapes are not (the mapping is monotone per image).

    images : uint8 [n, S, S]. masks : optional [n, S, S]; then only the pixels inside are
    matched (their own distribution) and those outside are set to ``fill`` (default: the
    reference median), which removes borders, markers and text as well.
    Returns uint8 [n, S, S].
    """
    img = np.asarray(images)
    if img.ndim != 3 or img.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [n, S, S], got {img.dtype} {img.shape}")
    ref = np.asarray(reference, dtype=np.float64)
    if ref.ndim != 1 or ref.size < 2 or np.any(np.diff(ref) < 0):
        raise ValueError("reference must be sorted quantiles (use reference_quantiles)")
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
        if masks.shape != img.shape:
            raise ValueError(f"masks {masks.shape} and images {img.shape} differ in shape")
    fill = float(np.median(ref) if fill is None else fill)
    n = len(img)
    if n == 0:
        return img.copy()
    inside = masks if masks is not None else np.ones(img.shape, bool)
    # one 256-bin histogram per image, all at once (image k's grey level v -> bin 256 k + v)
    code = img.astype(np.int64) + 256 * np.arange(n)[:, None, None]
    counts = np.bincount(code[inside], minlength=256 * n).reshape(n, 256).astype(np.float64)
    total = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        # the quantile at the middle of each grey level's run of pixels
        mid = (np.cumsum(counts, 1) - counts / 2) / total
    lut = np.interp(np.nan_to_num(mid, nan=0.5).ravel(), np.linspace(0, 1, ref.size), ref)
    lut = np.clip(np.round(lut), 0, 255).astype(np.uint8).reshape(n, 256)
    out = lut[np.arange(n)[:, None, None], img]
    return np.where(inside, out, np.uint8(round(fill))).astype(np.uint8)
