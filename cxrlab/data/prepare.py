"""`cxrlab data prepare`: a real data set, as downloaded -> the course's one cache format.

::

    cxrlab data prepare nih --root /data/ChestX-ray14 --out ~/.cxrlab/data/nih --size 224

What happens:

1. The data set's reader (:mod:`cxrlab.data.readers`) builds the manifest from the official
   tables: labels harmonised, official or patient-wise splits, patient leakage refused
   (:func:`cxrlab.data.cache.check_patient_splits`) *before* any image is decoded.
2. Worker processes (all cores by default) decode each original file and letterbox it to
   ``S x S`` uint8 (:mod:`cxrlab.data.resize`); masks (SIIM) go through the same geometry.
   The parent writes the results into a staging cache in ``OUT/.prepare/``. A progress bar
   shows images per second.
3. **Resume.** Every finished row is recorded on disk as it is written. Re-running the same
   command after a crash or Ctrl-C decodes only the rows not done yet (and a re-run after
   success returns the finished cache at once). A different data set, size or option in the
   same ``OUT`` is refused rather than mixed in (``overwrite=True`` starts over).
4. **Failures are listed, never silently dropped.** A missing file or one that cannot be
   decoded is skipped, counted, and listed in ``OUT/skipped.csv`` (image_id, path, split,
   reason = missing | corrupt, error). The cache holds only the good rows (so every manifest
   row has an image), ``meta.json`` records ``n_skipped``, ``OUT/prepare_log.json`` the counts,
   options and timing, and the last line printed says ``N written, K skipped (see skipped.csv)``.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.cache import Cache, CacheError, CacheWriter, check_patient_splits
from cxrlab.data.readers import get_reader
from cxrlab.data.readers._base import unit_hash
from cxrlab.data.readers._image import ImageLoadError
from cxrlab.data.resize import letterbox, letterbox_mask
from cxrlab.errors import NotAFolderError, OutputExistsError, RunError, UsageError
from cxrlab.io import atomic_to_csv, atomic_write_json
from cxrlab.labels import lesion_bit
from cxrlab.progress import progress

STAGING = ".prepare"
PENDING, OK, MISSING, CORRUPT = 0, 1, 2, 3
REASONS = {MISSING: "missing", CORRUPT: "corrupt"}
RESIZE_NOTE = ("letterbox: longer side scaled to image_size (PIL LANCZOS, reducing_gap=2), "
               "shorter side zero-padded centred; >8-bit images windowed 0.5-99.5 percentile; "
               "masks nearest-neighbour")


# ----------------------------------------------------------------------------- worker side
def _original_shape(root, row, raw: np.ndarray) -> tuple[int, int]:
    """(height, width) of the original file: JPEGs may have been decoded at a reduced scale."""
    path = str(row.get("path", ""))
    if path.lower().endswith((".jpg", ".jpeg")):
        from PIL import Image

        with Image.open(Path(root) / path) as im:
            return im.size[1], im.size[0]
    return raw.shape[0], raw.shape[1]


def _process_chunk(task):
    """Decode + letterbox one chunk of rows (runs in a worker process)."""
    dataset, root, size, items = task
    reader = get_reader(dataset)
    with_masks = getattr(reader, "HAS_LESION_MASKS", False)
    n = len(items)
    images = np.zeros((n, size, size), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=np.uint16) if with_masks else None
    status = np.full(n, OK, dtype=np.int8)
    shapes = np.zeros((n, 2), dtype=np.int32)
    errors: list[tuple[int, str]] = []
    bit = np.uint16(1 << lesion_bit(reader.MASK_LABEL)) if with_masks else None
    for j, (_, row) in enumerate(items):
        try:
            raw = reader.load_image(root, row, size_hint=2 * size)
            shapes[j] = _original_shape(root, row, raw)
            images[j] = letterbox(raw, size)
            if with_masks:
                m = reader.load_masks(root, row, raw.shape[:2])
                masks[j] = letterbox_mask(m, size).astype(np.uint16) * bit
        except FileNotFoundError as e:
            status[j] = MISSING
            errors.append((j, str(e)))
        except Exception as e:  # noqa: BLE001 - any undecodable file is listed, not fatal
            status[j] = CORRUPT
            msg = str(e) if isinstance(e, ImageLoadError) else f"{type(e).__name__}: {e}"
            errors.append((j, msg))
    return [i for i, _ in items], images, masks, status, shapes, errors


# ----------------------------------------------------------------------------- parent side
def _jsonable(options: dict) -> dict:
    return json.loads(json.dumps(options, default=lambda o: list(o) if isinstance(o, (tuple, set))
                                 else str(o), sort_keys=True))


def _fingerprint(dataset: str, size: int, options: dict, limit, manifest: pd.DataFrame) -> str:
    h = hashlib.sha256(json.dumps([dataset, size, options, limit], sort_keys=True).encode())
    for col in ("image_id", "path", "split"):
        h.update("\n".join(manifest[col].astype(str)).encode())
    return h.hexdigest()[:16]


def _limit_rows(manifest: pd.DataFrame, limit: int | None, seed: int = 0) -> pd.DataFrame:
    """About ``limit`` images, whole patients, with every split in proportion to its share of
    the full data set (patients in a seeded order within each split). Ordering all patients by
    the hash that also assigns test/val would put those splits first."""
    if limit is None or limit >= len(manifest):
        return manifest
    if limit < 1:
        raise UsageError(f"limit must be a positive number of images, got {limit}")
    n = len(manifest)
    keep = []
    for split, idx in manifest.groupby("split", sort=True).indices.items():
        target = max(1, int(round(limit * len(idx) / n)))
        sub = manifest.iloc[idx]
        pids = sub["patient_id"].astype(str)
        sizes = pids.value_counts()
        order = pd.DataFrame({"pid": sizes.index, "size": sizes.to_numpy(),
                              "u": unit_hash(pd.Series(sizes.index), seed + 1)})
        order = order.sort_values(["u", "pid"])
        before = order["size"].cumsum() - order["size"]       # images taken before this patient
        chosen = set(order.loc[before < target, "pid"])
        keep.append(idx[pids.isin(chosen).to_numpy()])
    rows = np.sort(np.concatenate(keep))
    return manifest.iloc[rows].reset_index(drop=True)


def _clear_cache_files(out: Path) -> None:
    for name in ("meta.json", "manifest.csv", "images.npy", "lung_masks.npy", "lesion_masks.npy",
                 "progress.npy", "skipped.csv", "prepare_log.json"):
        (out / name).unlink(missing_ok=True)
    if (out / STAGING).is_dir():
        shutil.rmtree(out / STAGING)


def _open_state(stage: Path, n: int, fp: str, overwrite: bool, out: Path):
    state_file = stage / "state.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
        if state.get("fingerprint") != fp:
            if not overwrite:
                raise OutputExistsError(
                    f"{out} holds an unfinished prepare of different input (another data set, "
                    f"size, option or limit: {state.get('description')}); re-run that command "
                    "to finish it, choose another --out, or delete the folder")
            shutil.rmtree(stage)
    stage.mkdir(parents=True, exist_ok=True)
    return state_file


def _memmap(path: Path, dtype, shape, fresh: bool):
    if not fresh and path.exists():
        arr = np.load(path, mmap_mode="r+")
        if arr.shape == shape and arr.dtype == dtype:
            return arr
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def _chunks(rows: np.ndarray, size: int):
    for s in range(0, len(rows), size):
        yield rows[s:s + size]


def available_cores() -> int:
    """Cores this process may run on (respects taskset / container CPU sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _pool_context():
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")  # workers start in ms and inherit the imports
    return mp.get_context()


def prepare(dataset: str, root, out, image_size: int = 224, workers: int | None = None,
            limit: int | None = None, *, chunk_size: int | None = None, overwrite: bool = False,
            verbose: bool = True, **reader_options) -> Cache:
    """Read ``dataset`` from ``root`` (official layout) and write a cache to ``out``.

    ``workers``: processes (None -> every core this process may use, 1 -> in this process).
    ``chunk_size``: images per task (None -> up to 32, small enough to keep every worker
    busy). ``limit``: about that many images (whole patients in a seeded order, every split in
    proportion to its share of the data set): for a first try. ``reader_options`` go to the reader (e.g.
    ``views="PA"`` for NIH, ``uncertain="ones"`` for CheXpert/MIMIC). Returns the finished
    :class:`Cache`.
    """
    t0 = time.perf_counter()
    reader = get_reader(dataset)
    root, out = Path(root), Path(out)
    if out.exists() and not out.is_dir():
        raise NotAFolderError(f"--out {out} is a file; pass a folder (it will be created)")
    workers = available_cores() if workers is None else int(workers)
    if workers < 1:
        raise UsageError(f"workers must be >= 1, got {workers}")
    if chunk_size is not None and chunk_size < 1:
        raise UsageError(f"chunk_size must be >= 1, got {chunk_size}")

    _check_reader_options(dataset, reader, reader_options)
    manifest = reader.read_manifest(root, **reader_options)
    manifest = _limit_rows(manifest, limit)
    if not len(manifest):
        raise UsageError(f"{dataset}: the reader found no images with these options "
                         f"({reader_options or 'defaults'}); nothing to prepare")
    check_patient_splits(manifest)
    options = _jsonable(reader_options)
    fp = _fingerprint(dataset, image_size, options, limit, manifest)
    description = f"{dataset} size={image_size} limit={limit} options={options}"
    n = len(manifest)

    retry = False
    if (out / "meta.json").exists():
        try:
            meta = json.loads((out / "meta.json").read_text())
        except ValueError:
            raise CacheError(f"{out / 'meta.json'} is corrupt (not JSON); delete {out} (or pass "
                             "--overwrite) and prepare again") from None
        if meta.get("prepare", {}).get("fingerprint") == fp and not overwrite:
            n_skipped = int(meta.get("n_skipped") or 0)
            retry = n_skipped > 0 and _skipped_now_readable(dataset, root, image_size, manifest,
                                                            out)
            if not retry:
                if (out / STAGING).is_dir():
                    shutil.rmtree(out / STAGING)
                cache = Cache(out)
                extra = (f"; {n_skipped} rows are still skipped (missing or unreadable, see "
                         f"{out / 'skipped.csv'}): add or fix those files and re-run"
                         if n_skipped else "")
                _say(verbose, f"{out} is already prepared ({len(cache)} images){extra}; nothing "
                              "to do")
                return cache
            _say(verbose, f"{out}: retrying the {n_skipped} skipped rows (some of their files "
                          "are readable now); the images already prepared are kept")
            _seed_stage(out, out / STAGING, manifest, fp, description, image_size,
                        bool(getattr(reader, "HAS_LESION_MASKS", False)))
        elif not overwrite:
            what = meta.get("source") or ("synthetic" if meta.get("synthetic") else "unknown")
            raise OutputExistsError(f"{out} already holds a cache ({what}, other input); choose "
                                  "another --out or delete it")
        else:
            _clear_cache_files(out)

    stage = out / STAGING
    state_file = _open_state(stage, n, fp, overwrite, out)
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    with_masks = bool(getattr(reader, "HAS_LESION_MASKS", False))
    moved = state.get("phase") == "moved"
    if not moved:
        writer = CacheWriter(stage, n, image_size, lesion_masks=with_masks, resume=True)
        fresh = not writer.resumed
        status = _memmap(stage / "status.npy", np.int8, (n,), fresh)
        shapes = _memmap(stage / "shapes.npy", np.int32, (n, 2), fresh)
        if fresh:
            status[:] = PENDING
            (stage / "errors.jsonl").unlink(missing_ok=True)
        atomic_write_json(state_file, {"fingerprint": fp, "description": description,
                                       "phase": "decode", "n": n})
        pending = np.flatnonzero(np.asarray(status) == PENDING)
        if len(pending) < n:
            _say(verbose, f"resuming {out}: {n - len(pending)} of {n} images already done")
        _decode(dataset, root, image_size, manifest, pending, writer, status, shapes, stage,
                workers, chunk_size)
    else:
        status = np.load(stage / "status.npy", mmap_mode="r")
        shapes = np.load(stage / "shapes.npy", mmap_mode="r")

    # ---- the log of skipped rows (always written, possibly empty)
    status = np.asarray(status)
    errors = _read_errors(stage / "errors.jsonl")
    bad = np.flatnonzero(status != OK)
    skipped = manifest.iloc[bad][["image_id", "path", "split"]].copy()
    skipped["reason"] = [REASONS.get(int(s), "unknown") for s in status[bad]]
    skipped["error"] = [errors.get(int(i), "") for i in bad]
    out.mkdir(parents=True, exist_ok=True)
    atomic_to_csv(skipped, out / "skipped.csv")
    good = np.flatnonzero(status == OK)
    if not len(good):
        raise RunError(f"{dataset}: none of the {n} images could be read (see "
                           f"{out / 'skipped.csv'}); is --root the right folder?")

    final = manifest.iloc[good].drop(columns=[c for c in manifest.columns if c.startswith("_")])
    final = final.reset_index(drop=True)
    final["orig_height"] = np.asarray(shapes)[good, 0]
    final["orig_width"] = np.asarray(shapes)[good, 1]
    meta = {"synthetic": False, "source": dataset, "reader_options": options,
            "resize": RESIZE_NOTE, "n_skipped": int(len(bad)),
            "prepare": {"fingerprint": fp, "description": description, "limit": limit}}
    if retry:  # unpublish the old cache only now: its good rows are in the staging arrays
        (out / "meta.json").unlink(missing_ok=True)
    cache = _publish(stage, out, state_file, n, good, image_size, with_masks, final, meta, moved)

    counts = skipped["reason"].value_counts().to_dict()
    log = {"dataset": dataset, "root": str(root), "image_size": image_size, "workers": workers,
           "reader_options": options, "limit": limit, "n_listed": n, "n_written": len(good),
           "n_skipped": int(len(bad)), "skipped_by_reason": counts,
           "seconds": round(time.perf_counter() - t0, 2)}
    atomic_write_json(out / "prepare_log.json", log)
    shutil.rmtree(stage, ignore_errors=True)
    _say(verbose, f"{dataset}: {len(good)} written, {len(bad)} skipped (see skipped.csv) -> {out}")
    return cache


def _check_reader_options(dataset: str, reader, options: dict) -> None:
    """Refuse an option the reader does not take (``--opt colour=red``), naming the ones it does."""
    import inspect

    params = inspect.signature(reader.read_manifest).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    known = [k for k, p in params.items() if k != "root" and p.kind is not p.VAR_POSITIONAL]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UsageError(f"{dataset}: unknown reader option(s) {unknown} (--opt KEY=VALUE); "
                         f"the {dataset} reader takes {known}")


def _skipped_now_readable(dataset, root, size, manifest, out: Path) -> bool:
    """True when at least one row listed in ``out/skipped.csv`` decodes now (files added or
    fixed since): only those rows are tried, in this process."""
    try:
        skipped = pd.read_csv(out / "skipped.csv", dtype=str)
    except (OSError, ValueError):
        return True   # no usable list: retry all rows that are not in the cache
    ids = set(skipped.get("image_id", pd.Series(dtype=str)).astype(str))
    rows = np.flatnonzero(manifest["image_id"].astype(str).isin(ids).to_numpy())
    if not len(rows):
        return False
    keep = ["image_id", "path"] + [c for c in manifest.columns if c.startswith("_")]
    records = manifest[keep].to_dict("records")
    _, _, _, st, _, _ = _process_chunk((dataset, str(root), size,
                                        [(int(i), records[i]) for i in rows]))
    return bool((st == OK).any())


def _seed_stage(out: Path, stage: Path, manifest, fp: str, description: str, size: int,
                with_masks: bool) -> None:
    """A staging cache holding the finished rows of ``out`` at their manifest positions (status
    OK) and every other row pending, so that the normal resume decodes only the skipped ones."""
    if stage.is_dir():
        shutil.rmtree(stage)
    old = Cache(out)
    n = len(manifest)
    pos = pd.Series(np.arange(n), index=manifest["image_id"].astype(str))
    at = pos.reindex(old.manifest["image_id"].astype(str)).to_numpy()
    if np.isnan(at.astype(float)).any():
        raise CacheError(f"{out} holds images that are not in the manifest any more; pass "
                         "--overwrite to prepare it again")
    at = at.astype(np.int64)
    writer = CacheWriter(stage, n, size, lesion_masks=with_masks, resume=False)
    status = np.lib.format.open_memmap(stage / "status.npy", mode="w+", dtype=np.int8, shape=(n,))
    shapes = np.lib.format.open_memmap(stage / "shapes.npy", mode="w+", dtype=np.int32,
                                       shape=(n, 2))
    status[:] = PENDING
    src_images = np.load(out / "images.npy", mmap_mode="r")
    src_masks = np.load(out / "lesion_masks.npy", mmap_mode="r") if with_masks else None
    for s in range(0, len(at), 1024):
        rows = at[s:s + 1024]
        writer.write(0, np.asarray(src_images[s:s + 1024]), rows=rows,
                     lesion_masks=None if src_masks is None else np.asarray(src_masks[s:s + 1024]))
    status[at] = OK
    m = old.manifest
    if {"orig_height", "orig_width"} <= set(m.columns):
        shapes[at, 0] = m["orig_height"].to_numpy()
        shapes[at, 1] = m["orig_width"].to_numpy()
    writer.flush()
    status.flush()
    shapes.flush()
    del writer, status, shapes, src_images, src_masks
    atomic_write_json(stage / "state.json", {"fingerprint": fp, "description": description,
                                             "phase": "decode", "n": n})


def _say(verbose: bool, msg: str) -> None:
    if verbose:
        print(msg, flush=True)


def _read_errors(path: Path) -> dict[int, str]:
    out: dict[int, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            out[int(rec["row"])] = rec["error"]
    return out


def _decode(dataset, root, size, manifest, pending, writer, status, shapes, stage, workers,
            chunk_size) -> None:
    if not len(pending):
        return
    if chunk_size is None:  # >= 4 tasks per worker for balance, <= 32 images per task
        chunk_size = int(np.clip(len(pending) // (4 * workers), 1, 32))
    keep = ["image_id", "path"] + [c for c in manifest.columns if c.startswith("_")]
    records = manifest[keep].to_dict("records")
    tasks = ((dataset, str(root), size, [(int(i), records[i]) for i in rows])
             for rows in _chunks(pending, chunk_size))
    n_chunks = -(-len(pending) // chunk_size)
    workers = min(workers, n_chunks)
    bar = progress(total=len(pending), desc=f"{dataset}: decode + resize", unit="img")
    errlog = open(stage / "errors.jsonl", "a")
    last_flush = time.monotonic()
    results = _run_tasks(tasks, workers)
    try:
        for idx, images, masks, st, sh, errs in results:
            idx = np.asarray(idx)
            ok = st == OK
            if ok.any():
                writer.write(0, images[ok], rows=idx[ok],
                             lesion_masks=None if masks is None else masks[ok])
            for j, msg in errs:
                errlog.write(json.dumps({"row": int(idx[j]), "error": msg}) + "\n")
            errlog.flush()
            shapes[idx] = sh
            status[idx] = st
            bar.update(len(idx))
            if time.monotonic() - last_flush > 5:
                writer.flush()
                status.flush()
                last_flush = time.monotonic()
    finally:
        if hasattr(results, "close"):
            results.close()  # stops the worker pool at once on an error or Ctrl-C
        bar.close()
        errlog.close()
        writer.flush()
        status.flush()
        shapes.flush()


def _run_tasks(tasks, workers: int):
    """Yield ``_process_chunk`` results: in this process for ``workers == 1``, else from a pool
    with at most ``4 * workers`` chunks in flight (memory stays bounded however large the data
    set; results arrive in completion order, and the parent writes each where it belongs)."""
    if workers == 1:
        for task in tasks:
            yield _process_chunk(task)
        return
    import itertools
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(workers, mp_context=_pool_context())
    try:
        it = iter(tasks)
        running = {pool.submit(_process_chunk, t) for t in itertools.islice(it, 4 * workers)}
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
                nxt = next(it, None)
                if nxt is not None:
                    running.add(pool.submit(_process_chunk, nxt))
    except BrokenProcessPool as e:
        raise RunError("a worker process died (out of memory? try fewer --workers); the "
                           "images written so far are kept: re-run the same command to "
                           "resume") from e
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _publish(stage, out, state_file, n, good, size, with_masks, final, meta, moved) -> Cache:
    """Turn the staging arrays into the finished cache in ``out`` (only the good rows)."""
    arrays = ["images"] + (["lesion_masks"] if with_masks else [])
    if len(good) == n:
        # every row is good: move the arrays instead of copying them (instant, no extra disk)
        if not moved:
            for name in arrays + ["progress"]:
                os.replace(stage / f"{name}.npy", out / f"{name}.npy")
            state = json.loads(state_file.read_text())
            state["phase"] = "moved"
            atomic_write_json(state_file, state)
        writer = CacheWriter(out, n, size, lesion_masks=with_masks, resume=True)
        if not writer.resumed:
            raise RunError(f"the staged arrays of {out} were lost; delete {out} and re-run")
        return writer.finalize(final, meta=meta)
    # some rows were skipped: copy the good ones into a compact cache, chunk by chunk
    src = {name: np.load(stage / f"{name}.npy", mmap_mode="r") for name in arrays}
    writer = CacheWriter(out, len(good), size, lesion_masks=with_masks, resume=False)
    step = 1024
    for s in range(0, len(good), step):
        rows = good[s:s + step]
        writer.write(s, np.asarray(src["images"][rows]),
                     lesion_masks=np.asarray(src["lesion_masks"][rows]) if with_masks else None)
    del src
    return writer.finalize(final, meta=meta)
