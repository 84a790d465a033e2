"""Embeddings of a frozen backbone, computed once and cached on disk.

A linear probe on a frozen backbone only ever needs each image's embedding. Computing it in
every epoch (what the seed project did: ten epochs = ten forward passes over every image) wastes
nine of them. :func:`extract_embeddings` runs one forward pass per image and stores the result
under a key that changes whenever anything that determines the numbers changes:

* the backbone (name, where its weights came from, and a fingerprint of the actual tensors, so
  a fine-tuned backbone never reuses the embeddings of its starting point),
* the data (cache folder, its meta.json and image file, the rows asked for, their order),
* the input pipeline (normalisation, image size) and the numeric precision.

Speed: ``torch.inference_mode``; images travel to the device as uint8 (4x less than float) and
are normalised there; on CUDA channels_last and bf16 autocast; the next batch is read from the
memory map while the current one runs.
"""
from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cxrlab.data.cache import Cache, open_cache
from cxrlab.engine.accel import autocast_context, effective_precision
from cxrlab.io import atomic_torch_save
from cxrlab.progress import progress

KEY_VERSION = 1


def default_cache_dir() -> Path:
    """``<profile checkpoint_dir>/embeddings`` (override with ``cache_dir=`` or
    ``CXRLAB_CHECKPOINT_DIR``)."""
    from cxrlab.profiles import get_profile

    return Path(get_profile().checkpoint_dir) / "embeddings"


def cache_fingerprint(cache: Cache) -> str:
    """Identifies a data cache's content cheaply: meta.json, image count, and the image file's
    size and modification time (a cache re-written in place gets a new fingerprint)."""
    h = hashlib.sha256()
    h.update((cache.path / "meta.json").read_bytes())
    h.update(str(len(cache)).encode())
    img = cache.path / "images.npy"
    if img.exists():
        st = img.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def embedding_key(backbone, cache: Cache, rows: np.ndarray,
                  precision: str = "fp32") -> tuple[str, dict]:
    """(key, fields): the fields that determine the embeddings, and a hash of them."""
    rows = np.asarray(rows, dtype=np.int64)
    fields = {
        "version": KEY_VERSION,
        "backbone": backbone.name,
        "weights_id": backbone.weights_id,
        "weights_fingerprint": backbone.fingerprint(),
        "cache": str(Path(cache.path).resolve()),
        "cache_fingerprint": cache_fingerprint(cache),
        "rows": hashlib.sha256(rows.tobytes()).hexdigest()[:16],
        "n": int(len(rows)),
        "normalization": backbone.normalization_id,
        "image_size": int(cache.image_size),
        "precision": precision,
    }
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]
    return key, fields


def read_images(images: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """uint8 [b, 1, S, S] for ``rows`` (in that order), read from the memory map in file order."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows),) + images.shape[1:], dtype=images.dtype)
    out[order] = images[rows[order]]
    return torch.from_numpy(out)[:, None]


def _device_of(module: torch.nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.inference_mode()
def compute_embeddings(backbone, cache: Cache, rows: np.ndarray, batch_size: int = 256,
                       device: str = "cpu", precision: str = "fp32", desc: str | None = None
                       ) -> torch.Tensor:
    """One forward pass per image, no disk cache: float32 CPU tensor [n, D] in ``rows`` order.
    The backbone is put in eval mode on ``device`` and given back as it was."""
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    was_training, home = backbone.training, _device_of(backbone)
    cuda = str(device).startswith("cuda")
    backbone.eval().to(device)
    if cuda:
        backbone.to(memory_format=torch.channels_last)
    out = torch.empty((n, backbone.num_features), dtype=torch.float32)
    starts = list(range(0, n, batch_size))
    try:
        with ThreadPoolExecutor(max_workers=1) as pool, autocast_context(torch.device(device), precision):
            nxt = pool.submit(read_images, cache.images, rows[0:batch_size]) if n else None
            for start in progress(starts, desc=desc or f"embed {backbone.name}",
                                  total=len(starts), unit="batch"):
                x = nxt.result()
                if start + batch_size < n:  # read the next batch while this one runs
                    nxt = pool.submit(read_images, cache.images,
                                      rows[start + batch_size:start + 2 * batch_size])
                if cuda:
                    x = x.pin_memory().to(device, non_blocking=True)
                x = backbone.normalize(x)
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                out[start:start + len(x)] = backbone(x).float().cpu()
    finally:
        backbone.to(home).train(was_training)
    return out


def extract_embeddings(backbone, cache, rows: Sequence[int] | None = None, batch_size: int = 256,
                       device: str = "auto", precision: str = "fp32",
                       cache_dir: str | Path | None | bool = None, return_info: bool = False):
    """Embeddings [n, D] (float32, CPU) of ``rows`` of a data cache, from disk when computed before.

    Parameters
    ----------
    backbone : a :class:`~cxrlab.models.Backbone` (frozen: its weights are fingerprinted).
    cache : a :class:`~cxrlab.data.cache.Cache` or its folder.
    rows : cache rows, in the order wanted (``None``: all).
    device : ``"auto"``, ``"cpu"``, ``"cuda"`` ...; precision: ``"fp32"`` or ``"bf16"``
        (bf16 autocast on CUDA only).
    cache_dir : where ``<backbone>-<key>.pt`` files live; ``None``: :func:`default_cache_dir`;
        ``False``: compute and store nothing.
    return_info : also return ``{"hit": bool, "path": str | None, "seconds": float, "key": str,
        "fields": dict}``.
    """
    from cxrlab.profiles import resolve_device

    cache = cache if isinstance(cache, Cache) else open_cache(cache)
    rows = np.arange(len(cache), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1:
        raise ValueError(f"rows must be a 1-d sequence of cache rows, got shape {rows.shape}")
    if len(rows) and (rows.min() < 0 or rows.max() >= len(cache)):
        raise IndexError(f"rows {rows.min()}..{rows.max()} outside a cache of {len(cache)} images")
    device = resolve_device(device)
    prec = effective_precision(torch.device(device), precision)
    t0 = time.perf_counter()
    key, fields = embedding_key(backbone, cache, rows, prec)
    path = None
    if cache_dir is not False:
        folder = Path(cache_dir if cache_dir is not None else default_cache_dir())
        path = folder / f"{backbone.name}-{key}.pt"
        if path.exists():
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - truncated/corrupt: many types; recompute
                import warnings

                warnings.warn(f"embedding cache {path} is unreadable ({type(e).__name__}); "
                              "recomputing it", stacklevel=2)
                obj = None
            emb = obj.get("embeddings") if isinstance(obj, dict) else None
            if (isinstance(emb, torch.Tensor) and obj.get("fields") == fields
                    and tuple(emb.shape) == (len(rows), backbone.num_features)):
                info = {"hit": True, "path": str(path), "key": key, "fields": fields,
                        "seconds": time.perf_counter() - t0}
                return (emb, info) if return_info else emb
            # a stale or foreign file under our key: recompute and overwrite it
    emb = compute_embeddings(backbone, cache, rows, batch_size=batch_size, device=device,
                             precision=prec)
    if path is not None:
        atomic_torch_save({"embeddings": emb, "fields": fields}, path)
    info = {"hit": False, "path": None if path is None else str(path), "key": key,
            "fields": fields, "seconds": time.perf_counter() - t0}
    return (emb, info) if return_info else emb
