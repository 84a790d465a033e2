"""Write the synthetic hospitals into the one cache format (:mod:`cxrlab.data.cache`).

Streams block by block (constant memory: 100,000 images at 224 px need well under 2 GiB of
RAM; the arrays go straight into memory-mapped ``.npy`` files), resumes after a crash, and
splits each hospital's *patients* 70/10/20 into train/val/test.
"""
from __future__ import annotations

import dataclasses
import json
import mmap
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlab.data.cache import Cache, CacheWriter
from cxrlab.errors import NotAFolderError, OutputExistsError, UsageError
from cxrlab.labels import NIH14
from cxrlab.progress import progress

from .generator import BLOCK, GENERATOR_VERSION, block_meta, check_request, render_block
from .hospitals import HOSPITALS, get_hospital

_CACHE_FILES = ("meta.json", "manifest.csv", "images.npy", "lung_masks.npy",
                "lesion_masks.npy", "progress.npy")
_REQUEST = "synth_request.json"


def write_synthetic_cache(out: str | os.PathLike, hospitals: Sequence[str] | None = None,
                          n_per_hospital: int = 400, image_size: int = 64, seed: int = 0,
                          shortcut: bool = False, overwrite: bool = False,
                          chunk_size: int = 512) -> Cache:
    """Draw ``n_per_hospital`` images from each hospital into a cache folder ``out``.

    ``hospitals``: names from :data:`HOSPITALS` (default: all, source first).
    ``shortcut``: burn in the source's shortcut marker (see :class:`HospitalSpec`).
    ``chunk_size``: images generated and written at once, rounded up to whole blocks of
    :data:`BLOCK` (the cache is the same for every chunk size). An unfinished cache of the
    same request is resumed; a finished one is refused unless ``overwrite=True``.
    Returns the opened :class:`~cxrlab.data.cache.Cache` (``meta["synthetic"]`` is True).
    """
    names = list(HOSPITALS) if hospitals is None else list(hospitals)
    if isinstance(hospitals, str):
        names = [hospitals]
    specs = [get_hospital(h) for h in names]
    if len(set(names)) != len(names):
        raise UsageError(f"hospital names repeat in {names}")
    if not specs:
        raise UsageError("no hospitals given; pass at least one of " + ", ".join(HOSPITALS))
    check_request(n_per_hospital, image_size, seed)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise UsageError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotAFolderError(f"cannot write a cache to {out}: it is a file, not a folder; "
                                 "pass a folder path (it will be created)")
    request = {"generator_version": GENERATOR_VERSION, "hospitals": names, "n_per_hospital": int(n_per_hospital),
               "image_size": int(image_size), "seed": int(seed), "shortcut": bool(shortcut),
               "params": {s.name: _jsonable(dataclasses.asdict(s)) for s in specs}}
    if (out / "meta.json").exists():
        if not overwrite:
            raise OutputExistsError(f"{out} already holds a cache; pass overwrite=True "
                                  "(`cxrlab data synth --overwrite`) to replace it, or choose "
                                  "another folder")
    resume = not overwrite and _same_request(out, request)
    if overwrite or not resume:
        for f in _CACHE_FILES + (_REQUEST,):
            (out / f).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / _REQUEST).write_text(json.dumps(request, sort_keys=True))

    n = int(n_per_hospital)
    writer = CacheWriter(out, n=n * len(specs), image_size=int(image_size), lung_masks=True,
                         lesion_masks=True, resume=resume)
    per_chunk = max(1, -(-int(chunk_size) // BLOCK))
    n_blocks = -(-n // BLOCK)
    jobs = [(h, b0) for h in range(len(specs)) for b0 in range(0, n_blocks, per_chunk)]
    frames = []
    for h, b0 in progress(jobs, desc="synthetic hospitals"):
        spec = specs[h]
        for b in range(b0, min(n_blocks, b0 + per_chunk)):
            count = min(BLOCK, n - b * BLOCK)
            start = h * n + b * BLOCK
            if writer.resumed and bool(np.all(writer.done[start:start + count])):
                labels, _, meta = block_meta(spec, int(seed), b, count, bool(shortcut))
            else:
                batch = render_block(spec, int(seed), b, count, int(image_size), bool(shortcut))
                writer.write(start, batch.images, lung_masks=batch.lung_masks,
                             lesion_masks=batch.lesion_masks)
                labels, meta = batch.labels, batch.meta
            frame = meta.copy()
            for k, name in enumerate(NIH14):
                frame[name] = labels[:, k].astype(np.float64)
            frames.append(frame)
        writer.flush()
        _release_pages(writer)
    manifest = pd.concat(frames, ignore_index=True)
    manifest["path"] = ""
    meta = {"synthetic": True, "source": "cxrlab.data.synthetic", "hospitals": names,
            "seed": int(seed), "shortcut": bool(shortcut), "n_per_hospital": n,
            "label_space": "nih14", "hospital_params": request["params"],
            "generator_version": GENERATOR_VERSION, "image_size": int(image_size)}
    cache = writer.finalize(manifest, meta=meta)
    (out / _REQUEST).unlink(missing_ok=True)
    return cache


def ensure_synthetic_cache(out: str | os.PathLike, hospitals: Sequence[str] | None = None,
                           n_per_hospital: int = 400, image_size: int = 64, seed: int = 0,
                           shortcut: bool = False, chunk_size: int = 512,
                           verbose: bool = False) -> Cache:
    """The synthetic hospitals in ``out``: reused when they are up to date, written otherwise.

    What notebooks and scripts call instead of :func:`write_synthetic_cache`: a finished cache
    drawn with the same request (hospitals, size, seed, shortcut) *and* by the same generator
    (:data:`GENERATOR_VERSION` and every hospital parameter) is opened as it is; an
    unfinished one of the same request is resumed; anything else (stale after a generator
    change, or another request) is redrawn in place.
    """
    out = Path(out)
    if synthetic_cache_matches(out, hospitals, n_per_hospital, image_size, seed, shortcut):
        return Cache(out)
    stale = (out / "meta.json").exists()
    if verbose:
        print(("redrawing the stale" if stale else "drawing the") + f" synthetic hospitals in {out}")
    return write_synthetic_cache(out, hospitals=hospitals, n_per_hospital=n_per_hospital,
                                 image_size=image_size, seed=seed, shortcut=shortcut,
                                 overwrite=stale, chunk_size=chunk_size)


def synthetic_cache_matches(out: str | os.PathLike, hospitals: Sequence[str] | None = None,
                            n_per_hospital: int = 400, image_size: int = 64, seed: int = 0,
                            shortcut: bool = False) -> bool:
    """True when ``out`` holds a finished synthetic cache of exactly this request, drawn by
    this generator version with today's hospital parameters."""
    from cxrlab.data.cache import CacheError

    names = [hospitals] if isinstance(hospitals, str) else (
        list(HOSPITALS) if hospitals is None else list(hospitals))
    try:
        cache = Cache(out)
    except (CacheError, OSError, ValueError):
        return False
    want = {"synthetic": True, "generator_version": GENERATOR_VERSION, "hospitals": names,
            "n_per_hospital": int(n_per_hospital), "seed": int(seed), "shortcut": bool(shortcut),
            "hospital_params": {h: _jsonable(dataclasses.asdict(get_hospital(h))) for h in names}}
    meta = cache.meta
    return cache.image_size == int(image_size) and all(meta.get(k) == v for k, v in want.items())


def _release_pages(writer: CacheWriter) -> None:
    """Drop the written (and flushed) pages from this process's memory.

    The arrays are memory maps of the cache files; pages stay resident after writing until
    the kernel needs them back. Telling it we are done keeps the resident memory of a
    100,000-image run at the size of one block instead of the size of the cache.
    """
    for arr in list(writer.arrays.values()) + [writer.done]:
        mm = getattr(arr, "_mmap", None)
        if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            try:
                mm.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):  # pragma: no cover - platform without it
                pass


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


def _same_request(out: Path, request: dict) -> bool:
    f = out / _REQUEST
    if not f.exists() or not (out / "progress.npy").exists():
        return False
    try:
        return json.loads(f.read_text()) == json.loads(json.dumps(request, sort_keys=True))
    except (OSError, ValueError):
        return False


def cache_shortcut_masks(cache: Cache, rows: Sequence[int], dilate: int = 1) -> np.ndarray:
    """Shortcut (chest-drain) masks of synthetic cache rows: uint8 [len(rows), S, S].

    Redrawn from the cache's own request (hospitals, seed, size, shortcut) by
    :func:`~cxrlab.data.synthetic.generator.shortcut_masks`; all zeros for a cache written
    without ``shortcut=True``. Raises ValueError for a cache that is not synthetic or was drawn
    by another generator version (its drains could differ)."""
    from .generator import shortcut_masks

    meta = cache.meta
    if not meta.get("synthetic"):
        raise ValueError(f"{cache.path}: not a synthetic "
                         "cache; only synthetic images have a known shortcut region")
    if meta.get("generator_version") != GENERATOR_VERSION:
        raise ValueError(f"cache drawn by generator version {meta.get('generator_version')}, "
                         f"this is {GENERATOR_VERSION}: redraw it (ensure_synthetic_cache)")
    rows = np.asarray(rows, dtype=np.int64).ravel()
    n, size = int(meta["n_per_hospital"]), int(cache.image_size)
    if rows.size and (rows.min() < 0 or rows.max() >= n * len(meta["hospitals"])):
        raise IndexError(f"rows must lie in 0..{n * len(meta['hospitals']) - 1}")
    out = np.zeros((len(rows), size, size), np.uint8)
    h, within = rows // n, rows % n
    b, q = within // BLOCK, within % BLOCK
    for key in sorted(set(zip(h.tolist(), b.tolist()))):
        sel = np.flatnonzero((h == key[0]) & (b == key[1]))
        spec = get_hospital(meta["hospitals"][key[0]])
        count = min(BLOCK, n - key[1] * BLOCK)
        masks = shortcut_masks(spec, int(meta["seed"]), key[1], count, size,
                               bool(meta["shortcut"]), dilate=dilate)
        out[sel] = masks[q[sel]]
    return out
