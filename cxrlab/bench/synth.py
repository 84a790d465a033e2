"""Speed of the synthetic hospitals: images per second on one core, at 64 and 224 px.

Targets (issue): at least 2,000 images/s at 64 px and 150 images/s at 224 px. The generator
is pure NumPy and single-threaded by design; BLAS/OpenMP pools are pinned to one thread while
measuring so that the figure means "one core" on any machine. Each figure is the best of a
few repeats (other processes on a shared machine only ever make a run slower).
"""
from __future__ import annotations

import time


def _rate(size: int, n: int, repeats: int) -> float:
    from cxrlab.data.synthetic import generate

    generate("source", 8, size, seed=123)          # warm up: vessel bank, label prior
    best = float("inf")
    for r in range(repeats):
        for hospital in ("source",):
            t0 = time.perf_counter()
            generate(hospital, n, size, seed=r)
            best = min(best, time.perf_counter() - t0)
    return n / best


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
