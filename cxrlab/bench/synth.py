"""Speed of the synthetic hospitals: images per second on one core, at 64 and 224 px.

Targets (issue): at least 2,000 images/s at 64 px and 150 images/s at 224 px. The generator
is pure NumPy and single-threaded by design; BLAS/OpenMP pools are pinned to one thread while
measuring so that the figure means "one core" on any machine. Each figure is the best of a
few repeats (other processes on a shared machine only ever make a run slower).
"""
from __future__ import annotations

import time


#: every figure this group can report (BENCHMARKS.md documents each)
KEYS = (
    "synth_img_per_s_64",
    "synth_img_per_s_224",
)


def _rate(size: int, n: int, repeats: int) -> float:
    """Images per second over all hospitals (shortcut on: every part of the generator runs)."""
    from cxrlab.data.synthetic import HOSPITALS, generate

    for hospital in HOSPITALS:                       # warm up: vessel banks, label prior
        generate(hospital, 4, size, seed=123, shortcut=True)
    per = max(1, n // len(HOSPITALS))
    best = float("inf")
    for r in range(repeats):
        t0 = time.perf_counter()
        for hospital in HOSPITALS:
            generate(hospital, per, size, seed=r, shortcut=True)
        best = min(best, time.perf_counter() - t0)
    return per * len(HOSPITALS) / best


def run(quick: bool = False) -> dict[str, float]:
    """``{"synth_img_per_s_64": ..., "synth_img_per_s_224": ...}`` measured on one thread."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        threadpool_limits = None
    import contextlib

    ctx = threadpool_limits(1) if threadpool_limits else contextlib.nullcontext()
    with ctx:
        if quick:
            r64, r224 = _rate(64, 256, 1), _rate(224, 32, 1)
        else:
            r64, r224 = _rate(64, 1024, 3), _rate(224, 256, 3)
    return {"synth_img_per_s_64": round(r64, 1), "synth_img_per_s_224": round(r224, 1)}
