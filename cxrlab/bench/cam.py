"""Bench: class activation maps for a batch in one pass vs one call per image.

Both arms compute Grad-CAM maps of the same B images, each for its own label, with
:func:`cxrlab.explain.cam_maps` on the same random-init ``tiny_cnn`` BCE model at 64 px:

* ``batched``: one call, one forward and one backward pass over the whole batch;
* ``loop``: B calls of one image each (what a notebook that loops over images does).

``cam_batched_vs_loop_ratio`` = wall time of ``loop`` / ``batched`` (best of the repeats), on
CPU. ``cam_batched_vs_loop_max_abs_diff`` checks that both arms give the same maps.
"""
from __future__ import annotations

import time

import numpy as np
import torch


#: every figure this group can report (BENCHMARKS.md documents each)
KEYS = (
    "cam_batched_vs_loop_ratio",
    "cam_batched_seconds_per_image",
    "cam_batched_vs_loop_max_abs_diff",
)


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(quick: bool = False) -> dict:
    from cxrlab.explain import cam_maps
    from cxrlab.methods.registry import create_algorithm
    from cxrlab.models import create_backbone

    B, repeats = (32, 2) if quick else (128, 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alg = create_algorithm("bce_finetune", create_backbone("tiny_cnn", image_size=64), 7)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (B, 1, 64, 64), dtype=torch.uint8, generator=g)
        targets = (np.arange(B) % 7).tolist()
        cam_maps(alg, x[:2], targets[:2])  # warm-up
        out = {}
        t_batched = _best(lambda: out.__setitem__("b", cam_maps(alg, x, targets)), repeats)
        t_loop = _best(lambda: out.__setitem__("l", np.concatenate(
            [cam_maps(alg, x[i:i + 1], targets[i]) for i in range(B)])), repeats)
    finally:
        torch.set_num_threads(threads)
    return {"cam_batched_vs_loop_ratio": round(t_loop / t_batched, 2),
            "cam_batched_seconds_per_image": round(t_batched / B, 5),
            "cam_batched_vs_loop_max_abs_diff": float(np.abs(out["b"] - out["l"]).max())}
