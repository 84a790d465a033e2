"""Speed of the SupCon loss: vectorised vs the per-anchor loop written from the formula.

Keys (milliseconds for one forward + backward on the CPU; V=2 views, D=128, 14 labels):

* ``supcon_loss_ms_b1024`` -- :class:`cxrlab.losses.supcon.SupConLoss`, batch 1024.
* ``supcon_loop_ms_b{n}`` and ``supcon_loss_ms_b{n}`` -- the loop
  (:func:`cxrlab.losses.supcon_reference.supcon_loss_loop`) and the vectorised loss on the
  same inputs, with n = 1024 (full run) or n = 128 (``quick``: the loop is quadratic in
  Python and takes seconds at 1024);
* ``supcon_vectorised_speedup_b{n}`` -- loop time / vectorised time, same run, same inputs.
* ``supcon_loss_ms_b1024_cuda`` -- the vectorised loss on the GPU, when there is one.
"""
from __future__ import annotations

import statistics
import time

import torch

from cxrlab.losses.supcon import SupConLoss
from cxrlab.losses.supcon_reference import supcon_loss_loop

V, D, C = 2, 128, 14


#: every figure this group can report (BENCHMARKS.md documents each)  # _b128: --quick only; _cuda: with a GPU
KEYS = (
    "supcon_loss_ms_b1024",
    "supcon_loop_ms_b1024",
    "supcon_vectorised_speedup_b1024",
    "supcon_loss_ms_b128",
    "supcon_loop_ms_b128",
    "supcon_vectorised_speedup_b128",
    "supcon_loss_ms_b1024_cuda",
)


def _inputs(B: int, device="cpu", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(B, V, D, generator=g).to(device)
    labels = (torch.rand(B, C, generator=g) < 0.12).float().to(device)  # ~NIH-like sparsity
    return f, labels


def _time_ms(fn, f, labels, reps: int, warmup: int = 1) -> float:
    sync = torch.cuda.synchronize if f.is_cuda else (lambda: None)
    times = []
    for i in range(warmup + reps):
        x = f.detach().clone().requires_grad_(True)
        sync()
        t0 = time.perf_counter()
        fn(x, labels).backward()
        sync()
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def run(quick: bool = False) -> dict[str, float]:
    loss = SupConLoss(temperature=0.1, base_temperature=0.07, positives="any")
    out: dict[str, float] = {}
    f, lab = _inputs(1024)
    out["supcon_loss_ms_b1024"] = round(_time_ms(loss, f, lab, reps=3 if quick else 10), 2)
    n = 128 if quick else 1024
    f, lab = _inputs(n, seed=1)
    vec = out["supcon_loss_ms_b1024"] if n == 1024 else round(_time_ms(loss, f, lab, reps=5), 2)
    loop = _time_ms(supcon_loss_loop, f, lab, reps=1, warmup=0 if n == 1024 else 1)
    out[f"supcon_loss_ms_b{n}"] = vec
    out[f"supcon_loop_ms_b{n}"] = round(loop, 1)
    out[f"supcon_vectorised_speedup_b{n}"] = round(loop / max(vec, 1e-9), 1)
    if torch.cuda.is_available():
        f, lab = _inputs(1024, device="cuda")
        out["supcon_loss_ms_b1024_cuda"] = round(_time_ms(loss, f, lab, reps=3 if quick else 20,
                                                          warmup=2), 3)
    return out
