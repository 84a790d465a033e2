"""Bench group ``resize``: windowing a 16-bit radiograph after downscaling (PadChest).

Figures (the ratio is measured against its baseline in the same run, on the same file):

* ``resize16_window_after_speedup``: seconds per image of decode + window the full-resolution
  16-bit image + letterbox (what `prepare` did before: the 0.5..99.5 percentile window over
  ~8 M pixels dominated) divided by seconds per image of decode + letterbox in float + window
  the downscaled image (:func:`cxrlab.data.resize.letterbox` now). Same file, same output size.
* ``resize16_ms_per_image`` / ``resize16_window_first_ms_per_image``: the raw times behind it.
* ``resize16_mean_abs_diff``: mean absolute difference (grey levels) between the two outputs.

The file is a 2800 x 2800 16-bit PNG (PadChest's typical size; quick mode: 1024 px) of smooth
anatomy-like shading plus noise, written to a temporary folder.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


#: every figure this group can report (BENCHMARKS.md documents each)
KEYS = (
    "resize16_window_after_speedup",
    "resize16_ms_per_image",
    "resize16_window_first_ms_per_image",
    "resize16_mean_abs_diff",
)


def _window_first(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    from cxrlab.data.resize import letterbox_geometry, to_uint8

    img = to_uint8(image)
    g = letterbox_geometry(*img.shape, size)
    out = np.zeros((size, size), np.uint8)
    pil = Image.fromarray(img).resize((g.new_width, g.new_height), Image.Resampling.LANCZOS,
                                      reducing_gap=2.0)
    out[g.top:g.top + g.new_height, g.left:g.left + g.new_width] = np.asarray(pil)
    return out


def run(quick: bool = False) -> dict[str, float]:
    from PIL import Image

    from cxrlab.data.readers._image import load_raster
    from cxrlab.data.resize import letterbox

    side, size, reps = (1024, 224, 2) if quick else (2800, 224, 5)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side]
    img = (20000 + 15000 * np.sin(xx / (side / 9)) * np.cos(yy / (side / 7))
           + rng.normal(0, 800, (side, side))).clip(0, 65535).astype(np.uint16)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "padchest_like.png"
        Image.fromarray(img).save(path)
        times = {"first": [], "after": []}
        for _ in range(reps):                      # interleaved, best of reps
            for key, fn in (("first", _window_first), ("after", letterbox)):
                t0 = time.perf_counter()
                out = fn(load_raster(path, draft_size=2 * size), size)
                times[key].append(time.perf_counter() - t0)
                if key == "first":
                    a = out
                else:
                    b = out
    first, after = min(times["first"]), min(times["after"])
    return {"resize16_window_after_speedup": round(first / after, 2),
            "resize16_ms_per_image": round(1000 * after, 1),
            "resize16_window_first_ms_per_image": round(1000 * first, 1),
            "resize16_mean_abs_diff": round(float(np.abs(a.astype(int) - b.astype(int)).mean()), 2)}
