"""The preprocessed cache: every data source (synthetic or real) ends up in this one layout.

A cache is a folder::

    meta.json         format, version, image size, counts, label columns, synthetic or not
    manifest.csv      one row per image; row i describes images[i]
    images.npy        uint8 [N, S, S] (NumPy .npy, opened as a memory map)
    lung_masks.npy    uint8 [N, S, S], 1 inside either lung (optional)
    lesion_masks.npy  uint16 [N, S, S], bit k set where NIH14 label k has a lesion (optional)
    progress.npy      bool [N]: rows written so far (only while a cache is being written)

Manifest columns: ``index, image_id, patient_id, split, domain, age, sex, view, path`` and one
float column per canonical label (1 positive, 0 negative, NaN missing / not defined by the
source). Epochs read the memory maps, never PNG/JPEG again.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlab.errors import (CxrlabError, NotAFolderError, OutputExistsError, UnknownNameError,
                           UsageError)
from cxrlab.io import atomic_to_csv, atomic_write_json, check_free_space
from cxrlab.labels import ALL_LABELS, get_label_space

FORMAT = "cxrlab-cache"
VERSION = 1
META_COLUMNS = ("index", "image_id", "patient_id", "split", "domain", "age", "sex", "view", "path")
SPLITS = ("train", "val", "test")


class CacheError(CxrlabError, RuntimeError):
    """A cache folder is missing, incomplete or inconsistent."""


def check_patient_splits(manifest: pd.DataFrame) -> None:
    """Refuse a manifest in which one patient appears in two splits (within one domain)."""
    if not {"patient_id", "split"} <= set(manifest.columns):
        raise CacheError("manifest needs 'patient_id' and 'split' columns")
    keys = ["patient_id"] + (["domain"] if "domain" in manifest.columns else [])
    n_splits = manifest.groupby(keys, dropna=False)["split"].nunique()
    leaked = n_splits[n_splits > 1]
    if len(leaked):
        examples = [k if isinstance(k, str) else "/".join(map(str, k)) for k in leaked.index[:5]]
        raise CacheError(
            f"{len(leaked)} patient(s) appear in more than one split (e.g. {examples}); "
            "splits must be patient-level, or test images leak into training"
        )


class CacheWriter:
    """Write a cache in chunks (constant memory), resumable after a crash.

    >>> w = CacheWriter(out, n=1000, image_size=64, lung_masks=True)
    >>> w.write(0, images[:256], lung_masks=lung[:256])        # any order, any chunk size
    >>> w.finalize(manifest, meta={"synthetic": True})          # atomically publishes the cache

    With ``resume=True`` an unfinished cache of the same shape is reopened and
    :attr:`done` tells which rows are already written.
    """

    def __init__(self, out_dir: str | os.PathLike, n: int, image_size: int, *,
                 lung_masks: bool = False, lesion_masks: bool = False, resume: bool = False):
        self.out = Path(out_dir)
        if self.out.exists() and not self.out.is_dir():
            raise NotAFolderError(f"output path {self.out} exists and is a file; "
                                     "pass a folder (it will be created)")
        if n < 0:
            raise UsageError(f"number of images must be >= 0, got {n}")
        if image_size < 32:
            raise UsageError(f"image size must be at least 32 px, got {image_size}")
        self.out.mkdir(parents=True, exist_ok=True)
        self.n, self.size = int(n), int(image_size)
        shape = (self.n, self.size, self.size)
        if (self.out / "meta.json").exists():
            if not resume:
                raise OutputExistsError(f"{self.out} already holds a finished cache; "
                                      "choose another folder or delete it first")
            (self.out / "meta.json").unlink()  # reopening: unpublish until finalize
        self.arrays: dict[str, np.memmap] = {}
        want = {"images": np.uint8}
        if lung_masks:
            want["lung_masks"] = np.uint8
        if lesion_masks:
            want["lesion_masks"] = np.uint16
        progress_file = self.out / "progress.npy"
        reuse = resume and progress_file.exists() and all(
            (self.out / f"{k}.npy").exists() for k in want)
        if reuse:
            for k, dt in want.items():
                arr = np.load(self.out / f"{k}.npy", mmap_mode="r+")
                if arr.shape != shape or arr.dtype != dt:
                    reuse = False
                    break
                self.arrays[k] = arr
        if reuse:
            self.done = np.load(progress_file, mmap_mode="r+")
            if self.done.shape != (self.n,):
                reuse = False
        if not reuse:
            need = sum(self.n * self.size * self.size * np.dtype(dt).itemsize
                       for dt in want.values()) + self.n
            existing = sum((self.out / f"{k}.npy").stat().st_size for k in want
                           if (self.out / f"{k}.npy").exists())
            check_free_space(self.out, need - existing, f"a cache of {self.n} images at "
                                                        f"{self.size} px")
            self.arrays = {k: np.lib.format.open_memmap(self.out / f"{k}.npy", mode="w+",
                                                        dtype=dt, shape=shape)
                           for k, dt in want.items()}
            self.done = np.lib.format.open_memmap(progress_file, mode="w+", dtype=bool,
                                                  shape=(self.n,))
        self.resumed = reuse

    def write(self, start: int, images: np.ndarray, *, lung_masks: np.ndarray | None = None,
              lesion_masks: np.ndarray | None = None, rows: Sequence[int] | None = None) -> None:
        """Write a chunk at rows ``start:start+len(images)`` (or at the explicit ``rows``)."""
        idx = np.arange(start, start + len(images)) if rows is None else np.asarray(rows)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"rows {idx.min()}..{idx.max()} outside a cache of {self.n} images")
        for key, arr in (("images", images), ("lung_masks", lung_masks),
                         ("lesion_masks", lesion_masks)):
            if arr is None:
                continue
            if key not in self.arrays:
                raise UsageError(f"this cache was opened without {key}")
            if arr.shape[1:] != (self.size, self.size):
                raise UsageError(f"{key} chunk has shape {arr.shape}, expected "
                                 f"[n, {self.size}, {self.size}]")
            self.arrays[key][idx] = arr
        self.done[idx] = True

    def flush(self) -> None:
        for a in self.arrays.values():
            a.flush()
        self.done.flush()

    def finalize(self, manifest: pd.DataFrame, meta: dict | None = None,
                 require_complete: bool = True) -> "Cache":
        """Validate the manifest, write it and meta.json atomically, and return the open cache."""
        self.flush()
        if len(manifest) != self.n:
            raise CacheError(f"manifest has {len(manifest)} rows for {self.n} images")
        if require_complete and not bool(np.all(self.done)):
            missing = int((~np.asarray(self.done)).sum())
            raise CacheError(f"{missing} of {self.n} rows were never written")
        manifest = manifest.reset_index(drop=True).copy()
        manifest["index"] = np.arange(self.n)
        for col in META_COLUMNS:
            if col not in manifest.columns:
                manifest[col] = np.nan if col == "age" else ""
        bad_splits = set(manifest["split"].dropna().unique()) - set(SPLITS)
        if bad_splits:
            raise CacheError(f"unknown split name(s) {sorted(bad_splits)}; use {SPLITS}")
        check_patient_splits(manifest)
        label_cols = [c for c in ALL_LABELS if c in manifest.columns]
        ordered = list(META_COLUMNS) + label_cols + [c for c in manifest.columns
                                                     if c not in META_COLUMNS and c not in label_cols]
        manifest = manifest[ordered]
        atomic_to_csv(manifest, self.out / "manifest.csv")
        full_meta = {
            "format": FORMAT, "version": VERSION, "n": self.n, "image_size": self.size,
            "label_columns": label_cols, "arrays": sorted(self.arrays),
            "synthetic": False,
        }
        full_meta.update(meta or {})
        del self.arrays
        (self.out / "progress.npy").unlink(missing_ok=True)
        atomic_write_json(self.out / "meta.json", full_meta)
        return Cache(self.out)


@dataclass
class Cache:
    """A finished cache, opened read-only (arrays are memory maps; nothing is loaded up front)."""

    path: Path

    def __post_init__(self):
        self.path = Path(self.path)
        if not self.path.exists():
            raise CacheError(f"no cache at {self.path}; create one with `cxrlab data synth --out "
                             f"{self.path}` or `cxrlab data prepare ... --out {self.path}`")
        meta_file = self.path / "meta.json"
        if not meta_file.exists():
            hint = (" (it looks unfinished: re-run the same command to resume)"
                    if (self.path / "progress.npy").exists()
                    or (self.path / ".prepare").exists() else "")  # .prepare: cxrlab data prepare
            raise CacheError(f"{self.path} is not a cxrlab cache: meta.json is missing{hint}")
        try:
            self.meta = json.loads(meta_file.read_text())
        except ValueError as e:
            raise CacheError(f"{meta_file} is corrupt (not JSON: {e}); re-create the cache "
                             f"(cxrlab data synth/prepare --out {self.path} --overwrite)") from None
        if not isinstance(self.meta, dict):
            raise CacheError(f"{meta_file} is corrupt (not a JSON object); re-create the cache "
                             f"(cxrlab data synth/prepare --out {self.path} --overwrite)")
        if self.meta.get("format") != FORMAT:
            raise CacheError(f"{meta_file} is not a cxrlab cache (format={self.meta.get('format')!r})")
        if self.meta.get("version") != VERSION:
            raise CacheError(f"{self.path} was written by cache format version "
                             f"{self.meta.get('version')}, this cxrlab reads {VERSION}; "
                             "re-create the cache")
        try:
            self.manifest = pd.read_csv(self.path / "manifest.csv", low_memory=False,
                                        dtype={"patient_id": str, "image_id": str})
        except FileNotFoundError:
            raise CacheError(f"{self.path}/manifest.csv is missing; re-create the cache") from None
        self._arrays: dict[str, np.ndarray] = {}
        if len(self.manifest) != self.meta["n"]:
            raise CacheError(f"{self.path}: manifest has {len(self.manifest)} rows, meta says "
                             f"{self.meta['n']}; re-create the cache")

    def _recreate_hint(self) -> str:
        src = self.meta.get("source")
        if src and not self.synthetic:
            return (f"re-create it: `cxrlab data prepare {src} --root RAW --out {self.path} "
                    "--overwrite`")
        return f"re-create it: `cxrlab data synth --out {self.path} --overwrite`"

    def _array(self, name: str) -> np.ndarray | None:
        if name not in self._arrays:
            f = self.path / f"{name}.npy"
            if not f.exists():
                if name == "images":
                    raise CacheError(f"{f} is missing; {self._recreate_hint()}")
                self._arrays[name] = None
                return None
            try:
                arr = np.load(f, mmap_mode="r")
            except (ValueError, OSError, EOFError) as e:  # zeroed header, truncated file...
                why = ("no valid .npy header" if "pickle" in str(e)   # numpy's hint misleads
                       else str(e).splitlines()[0][:120])
                raise CacheError(f"{f} is unreadable ({why}): the file is truncated or corrupt; "
                                 f"{self._recreate_hint()}") from None
            want = (len(self), self.image_size, self.image_size)
            if arr.shape != want:
                raise CacheError(f"{f} has shape {arr.shape}, but meta.json says {want} "
                                 f"(n, size, size): it belongs to another cache or was cut "
                                 f"short; {self._recreate_hint()}")
            self._arrays[name] = arr
        return self._arrays[name]

    @property
    def images(self) -> np.ndarray:
        return self._array("images")

    @property
    def lung_masks(self) -> np.ndarray | None:
        return self._array("lung_masks")

    @property
    def lesion_masks(self) -> np.ndarray | None:
        return self._array("lesion_masks")

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def synthetic(self) -> bool:
        return bool(self.meta.get("synthetic", False))

    @property
    def domains(self) -> list[str]:
        return sorted(self.manifest["domain"].astype(str).unique())

    def __len__(self) -> int:
        return int(self.meta["n"])

    def labels(self, space: str | Sequence[str] = "nih14",
               rows: np.ndarray | None = None) -> np.ndarray:
        """float32 [N, L] labels of ``space``; NaN where the source does not define a label."""
        names = get_label_space(space)
        m = self.manifest if rows is None else self.manifest.iloc[rows]
        out = np.full((len(m), len(names)), np.nan, dtype=np.float32)
        for j, name in enumerate(names):
            if name in m.columns:
                out[:, j] = m[name].to_numpy(dtype=np.float32)
        return out

    def select(self, split: str | None = None, domain: str | Sequence[str] | None = None,
               query: str | None = None) -> np.ndarray:
        """Row indices for a split and/or domain(s) (and an optional filter query, see
        :mod:`cxrlab.data.protocols.query`)."""
        m = self.manifest
        keep = np.ones(len(m), dtype=bool)
        if split is not None:
            if split not in SPLITS:
                raise UnknownNameError(f"unknown split {split!r}; choose one of {SPLITS}")
            keep &= (m["split"] == split).to_numpy()
        if domain is not None:
            doms = [domain] if isinstance(domain, str) else list(domain)
            unknown = sorted(set(doms) - set(self.domains))
            if unknown:
                raise UnknownNameError(f"unknown domain(s) {unknown} in {self.path}; it has {self.domains}")
            keep &= m["domain"].isin(doms).to_numpy()
        if query:  # the protocols' safe filter grammar, never pandas eval (no code runs)
            from cxrlab.data.protocols.query import evaluate_query

            keep &= evaluate_query(query, m)
        return np.flatnonzero(keep)

    def __repr__(self) -> str:
        kind = "synthetic" if self.synthetic else "real"
        return (f"Cache({str(self.path)!r}, {len(self)} {kind} images at {self.image_size} px, "
                f"domains={self.domains})")


def open_cache(path: str | os.PathLike) -> Cache:
    return Cache(Path(path))
