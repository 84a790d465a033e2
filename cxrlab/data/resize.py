"""Turning an original radiograph into a cache image: uint8, square, aspect preserved.

The course's one resize (documented so that every cache, synthetic or real, means the same):

1. **Intensity to uint8.** 8-bit images are kept as they are. Deeper images (16-bit PNG,
   DICOM) are windowed (after the scaling of step 2, on the downscaled float image: the same
   window at a fraction of the cost): DICOM pixels first go through the modality LUT (RescaleSlope /
   RescaleIntercept), MONOCHROME1 images are inverted so that bone is bright everywhere, then
   the 0.5th..99.5th percentile range is mapped linearly onto 0..255 (robust to a few hot or
   dead pixels and to burnt-in labels).
2. **Letterbox.** The longer side is scaled to ``S`` with an antialiased filter (PIL LANCZOS
   with ``reducing_gap=2``: a box pre-reduction followed by Lanczos, i.e. no aliasing however
   big the image), the shorter side is scaled by the same factor and padded with zeros,
   centred. Nothing is cropped and nothing is stretched: a 2500 x 3000 radiograph and a
   1024 x 1024 one keep their anatomy's proportions.
3. **Masks** go through the same geometry with nearest-neighbour sampling (a mask stays 0/1).

:func:`letterbox_geometry` gives the numbers (scale and offsets) so that boxes or points can be
mapped into cache coordinates the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

#: percentile window used for images deeper than 8 bits
WINDOW_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Geometry:
    """Where an ``height x width`` image lands inside the ``size x size`` letterbox."""

    size: int
    scale: float
    new_height: int
    new_width: int
    top: int
    left: int

    def map_xy(self, x, y):
        """Original pixel coordinates -> cache pixel coordinates."""
        return np.asarray(x) * self.scale + self.left, np.asarray(y) * self.scale + self.top


def letterbox_geometry(height: int, width: int, size: int) -> Geometry:
    if height <= 0 or width <= 0:
        raise ValueError(f"image has an empty side ({height} x {width})")
    if size <= 0:
        raise ValueError(f"target size must be positive, got {size}")
    scale = size / max(height, width)
    nh = min(size, max(1, int(round(height * scale))))
    nw = min(size, max(1, int(round(width * scale))))
    return Geometry(size, scale, nh, nw, (size - nh) // 2, (size - nw) // 2)


def to_uint8(image: np.ndarray,
             percentiles: tuple[float, float] = WINDOW_PERCENTILES) -> np.ndarray:
    """A 2-D image as uint8: 8-bit kept, deeper or float images percentile-windowed."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] in (3, 4):  # colour PNG/JPEG of a grey image
        a = a[..., :3].mean(axis=-1) if a.dtype != np.uint8 else \
            np.asarray(Image.fromarray(a[..., :3]).convert("L"))
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    a = a.astype(np.float32)
    finite = np.isfinite(a)
    if not finite.all():
        a = np.where(finite, a, np.nan)
    lo, hi = np.nanpercentile(a, percentiles)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError("image has no finite pixels")
    if hi <= lo:
        hi = lo + 1.0
    out = np.clip((a - lo) * (255.0 / (hi - lo)), 0, 255)
    return np.nan_to_num(np.rint(out), nan=0).astype(np.uint8)


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``size x size``: longer side scaled to ``size`` (antialiased), zero-padded centred.

    Images deeper than 8 bits are scaled first (in float32) and windowed afterwards: the
    percentile window of a 3000 px 16-bit PadChest image cost about a second per image at full
    resolution; on the downscaled image it is a few milliseconds (``cxrlab bench --only
    resize``)."""
    a = np.asarray(image)
    if a.ndim == 2 and a.dtype not in (np.uint8, bool) and a.size:
        f = a.astype(np.float32, copy=False)
        if np.isfinite(f).all():
            g = letterbox_geometry(*f.shape, size)
            pil = Image.fromarray(f, mode="F")
            if (g.new_height, g.new_width) != f.shape:
                pil = pil.resize((g.new_width, g.new_height), Image.Resampling.LANCZOS,
                                 reducing_gap=2.0)
            out = np.zeros((size, size), dtype=np.uint8)
            out[g.top:g.top + g.new_height, g.left:g.left + g.new_width] = \
                to_uint8(np.asarray(pil, dtype=np.float32))
            return out
    img = to_uint8(image)
    g = letterbox_geometry(*img.shape, size)
    out = np.zeros((size, size), dtype=np.uint8)
    pil = Image.fromarray(img)
    if (g.new_height, g.new_width) != img.shape:
        pil = pil.resize((g.new_width, g.new_height), Image.Resampling.LANCZOS, reducing_gap=2.0)
    out[g.top:g.top + g.new_height, g.left:g.left + g.new_width] = np.asarray(pil)
    return out


def letterbox_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A label mask (any integer dtype) through the same geometry, nearest-neighbour."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {m.shape}")
    g = letterbox_geometry(*m.shape, size)
    # nearest: sample the source pixel whose centre is closest to each target pixel centre
    rows = np.minimum(((np.arange(g.new_height) + 0.5) / g.scale).astype(np.int64), m.shape[0] - 1)
    cols = np.minimum(((np.arange(g.new_width) + 0.5) / g.scale).astype(np.int64), m.shape[1] - 1)
    out = np.zeros((size, size), dtype=m.dtype)
    out[g.top:g.top + g.new_height, g.left:g.left + g.new_width] = m[rows[:, None], cols[None, :]]
    return out
