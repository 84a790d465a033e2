"""Bench group ``cache``: why the course preprocesses once, and how well preparing scales.

Figures (each ratio is measured against its baseline in the same run, on the same files):

* ``cache_vs_decode_ratio``: images/s of one training "epoch" read from the cache (shuffled
  batches gathered from the uint8 memory map into ``[B, 1, S, S]`` tensors) divided by images/s
  of the same epoch decoded from the original PNG files (decode + letterbox to ``S`` + the same
  batching), the same images in the same order. Target: >= 10.
* ``prepare_parallel_speedup``: wall time of ``prepare(workers=1)`` / ``prepare(workers=all
  cores)`` on the same NIH-layout tree (480 images, files in the page cache, best of two). Target: >= 1.7 on 2 cores.
* ``decode_images_per_s``, ``cache_images_per_s``, ``prepare_images_per_s`` (all cores): the
  raw rates behind the ratios.
* ``cpu_parallel_ceiling``: the same 1-vs-all-cores ratio for a trivially parallel pure-CPU
  job, measured in the same run: what the machine can give at that moment. On a shared box
  whose cores are busy with other work this is near 1, and so is any speedup; read
  ``prepare_parallel_speedup`` against it.

The files are written by :mod:`cxrlab.data.readers.toy` into a temporary NIH layout: 1024 px
noisy grey PNGs (NIH's size; quick mode: 512 px), so decoding costs what it costs on real data.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


#: every figure this group can report (BENCHMARKS.md documents each)
KEYS = (
    "cache_vs_decode_ratio",
    "decode_images_per_s",
    "cache_images_per_s",
    "prepare_parallel_speedup",
    "prepare_images_per_s",
    "prepare_workers",
    "cpu_parallel_ceiling",
)


def _write_tree(root: Path, n: int, size: int) -> Path:
    from cxrlab.data.readers import toy

    rows = [dict(image=f"{i // 2 + 1:08d}_{i % 2:03d}.png", patient=i // 2 + 1,
                 findings="Effusion" if i % 5 == 0 else "No Finding",
                 list="test" if (i // 2) % 5 == 0 else "train_val") for i in range(n)]
    return toy.nih_tree(root, rows, size=(size, size))


def _batches(order: np.ndarray, batch: int):
    for s in range(0, len(order), batch):
        yield np.sort(order[s:s + batch])


def _decode_epoch(root: Path, manifest, order, size: int, batch: int) -> float:
    import torch

    from cxrlab.data.readers import get_reader
    from cxrlab.data.resize import letterbox

    reader = get_reader("nih")
    rows = manifest.to_dict("records")
    t0 = time.perf_counter()
    for idx in _batches(order, batch):
        imgs = np.stack([letterbox(reader.load_image(root, rows[i]), size) for i in idx])
        x = torch.from_numpy(imgs)[:, None]
        assert x.shape[1:] == (1, size, size)
    return time.perf_counter() - t0


def _cache_epoch(cache, order, batch: int) -> float:
    import torch

    images = cache.images
    t0 = time.perf_counter()
    for idx in _batches(order, batch):
        x = torch.from_numpy(np.ascontiguousarray(images[idx]))[:, None]
        assert x.ndim == 4
    return time.perf_counter() - t0


def _spin(n: int) -> int:
    s = 0
    for i in range(n):
        s += i * i
    return s


def _parallel_ceiling(cores: int, n: int) -> float:
    """1-process / ``cores``-process wall time of ``2 * cores`` equal pure-Python tasks."""
    from cxrlab.data.prepare import _pool_context

    tasks = [n] * (2 * cores)
    t0 = time.perf_counter()
    for t in tasks:
        _spin(t)
    serial = time.perf_counter() - t0
    with _pool_context().Pool(cores) as pool:
        pool.map(_spin, [1] * cores)        # started before the clock: the ceiling of the work
        t0 = time.perf_counter()
        pool.map(_spin, tasks, chunksize=1)
        parallel = time.perf_counter() - t0
    return serial / parallel


def run(quick: bool = False) -> dict[str, float]:
    from cxrlab.data.prepare import available_cores, prepare

    n, src, size, batch = (48, 512, 224, 16) if quick else (480, 1024, 224, 32)
    cores = available_cores()
    with tempfile.TemporaryDirectory(prefix="cxrlab-bench-cache-") as tmp:
        tmp = Path(tmp)
        root = _write_tree(tmp / "raw", n, src)
        for f in root.rglob("*.png"):   # both arms read the files from the page cache
            f.read_bytes()
        # warm-up (imports, first file-system touches) so that neither timed run pays for it
        prepare("nih", root, tmp / "warm", image_size=size, workers=1, limit=4, verbose=False)
        t_serial = t_parallel = float("inf")
        for rep in range(1 if quick else 2):   # best of two, arms alternating, against noise
            t0 = time.perf_counter()
            prepare("nih", root, tmp / f"serial{rep}", image_size=size, workers=1, verbose=False)
            t_serial = min(t_serial, time.perf_counter() - t0)
            t0 = time.perf_counter()
            cache = prepare("nih", root, tmp / f"parallel{rep}", image_size=size, workers=cores,
                            verbose=False)
            t_parallel = min(t_parallel, time.perf_counter() - t0)
        if len(cache) != n:
            raise RuntimeError(f"bench cache has {len(cache)} of {n} images")

        order = np.random.default_rng(0).permutation(n)
        t_decode = _decode_epoch(root, cache.manifest, order, size, batch)
        # the cache epoch is milliseconds: best of several repeats against timer noise
        t_cache = min(_cache_epoch(cache, order, batch) for _ in range(5))
        del cache
    return {
        "cache_vs_decode_ratio": round(t_decode / t_cache, 1),
        "decode_images_per_s": round(n / t_decode, 1),
        "cache_images_per_s": round(n / t_cache, 1),
        "prepare_parallel_speedup": round(t_serial / t_parallel, 2),
        "prepare_images_per_s": round(n / t_parallel, 1),
        "prepare_workers": float(cores),
        "cpu_parallel_ceiling": round(
            _parallel_ceiling(cores, 1_000_000 if quick else 6_000_000), 2),
    }
