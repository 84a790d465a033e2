"""CheXmask lung masks for real caches (NIH ChestX-ray14, CheXpert, MIMIC-CXR-JPG).

CheXmask (Gaggion et al., PhysioNet ``chexmask-cxr-segmentation-data``) publishes, for every
image of several public data sets, HybridGNet segmentations of both lungs and the heart as
one CSV per data set. What this module relies on (checked against the CheXmask README, its
data dictionary and the decoding code in the CheXmask repository, ``DataPostprocessing/
utils.py``):

* Columns: an image id column whose name depends on the data set (``Image Index`` for
  ChestX-ray8/NIH, ``Path`` for CheXpert, ``dicom_id`` for MIMIC-CXR-JPG), then
  ``Dice RCA (Mean)``, ``Dice RCA (Max)`` (a per-image quality estimate), ``Landmarks``,
  ``Left Lung``, ``Right Lung``, ``Heart`` (run-length encoded masks), ``Height``, ``Width``.
* RLE: space-separated pairs ``start length``; ``start`` is **1-based**, positions count
  through the flattened ``Height x Width`` mask in **row-major** (C) order. (SIIM-ACR's
  RLE, by contrast, is column-major and relative: do not mix the two decoders.)
* Use the ``OriginalResolution`` CSVs: their masks have the original image's size, so the
  cache's aspect-preserving letterbox (:mod:`cxrlab.data.resize`) puts them exactly over the
  cached image, even for CheXpert-small whose JPEGs were downscaled with the same aspect.
  The ``Preprocessed`` CSVs are 1024 x 1024 padded squares and would not line up.
* Quality: the CheXmask README recommends using only masks with ``Dice RCA (Mean) >= 0.7``;
  :data:`MIN_DICE_RCA` is that threshold and the default of :func:`add_lung_masks`.

:func:`add_lung_masks` streams a CheXmask CSV (they are large: MIMIC's holds about 240,000
rows) and writes ``lung_masks.npy`` into an existing cache. Decoding samples only the pixels
the letterbox needs, so a 3000 x 2500 mask costs as much as a 224 x 224 one. Images without a
usable mask get an all-zero mask *and* ``has_lung_mask = 0`` in the manifest, so that code
using lung masks can skip them instead of treating them as "no lung anywhere".
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from cxrlab.data.cache import Cache, CacheError
from cxrlab.data.resize import letterbox_geometry
from cxrlab.errors import MissingInputError, OutputExistsError, UnknownNameError, UsageError
from cxrlab.io import atomic_to_csv, atomic_write_json, check_free_space
from cxrlab.progress import progress

#: recommended minimum ``Dice RCA (Mean)`` (CheXmask README, "Usage Guidelines")
MIN_DICE_RCA = 0.7

#: data set -> accepted names of the CheXmask image id column (first one is the documented one)
ID_COLUMNS = {
    "nih": ("Image Index", "ImageID", "image_id"),
    "chexpert": ("Path", "ImageID", "image_id"),
    "mimic": ("dicom_id", "ImageID", "image_id"),
}
#: data set -> stem of its CheXmask CSV (``OriginalResolution/<stem>.csv[.gz]``)
CSV_STEMS = {"nih": "ChestX-Ray8", "chexpert": "CheXpert", "mimic": "MIMIC-CXR-JPG"}
_MASK_COLUMNS = {"Left Lung": "left_lung", "Right Lung": "right_lung", "Heart": "heart",
                 "Height": "height", "Width": "width", "Dice RCA (Mean)": "dice_rca_mean"}
_CHEXPERT_KEY = re.compile(r"(patient\d+/study\d+/[^/]+?)(?:\.(?:jpg|jpeg|png))?$", re.I)


# ----------------------------------------------------------------------------- RLE
def _runs(rle: str | float | None) -> tuple[np.ndarray, np.ndarray]:
    """0-based starts and lengths of a CheXmask RLE string (empty for NaN / "" / "-1")."""
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    s = str(rle).strip()
    if not s or s == "-1":
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nums = np.array(s.split(), dtype=np.int64)
    if nums.size % 2:
        raise UsageError(f"RLE has an odd number of values ({nums.size}); expected "
                         "'start length' pairs")
    starts, lengths = nums[0::2] - 1, nums[1::2]
    if starts.size and (starts.min() < 0 or lengths.min() < 0):
        raise UsageError("RLE has a start below 1 or a negative length; is it 1-based?")
    return starts, lengths


def decode_rle(rle: str | float | None, height: int, width: int) -> np.ndarray:
    """CheXmask RLE (1-based ``start length`` pairs, row-major) -> uint8 0/1 mask [H, W].

    An empty / NaN RLE gives an all-zero mask. Runs past the end of the image are an error
    (the RLE belongs to another size).
    """
    height, width = int(height), int(width)
    starts, lengths = _runs(rle)
    n = height * width
    if starts.size and int((starts + lengths).max()) > n:
        raise UsageError(f"RLE runs past the end of a {height} x {width} mask; wrong Height/Width?")
    edges = np.zeros(n + 1, dtype=np.int32)
    np.add.at(edges, starts, 1)
    np.add.at(edges, starts + lengths, -1)
    return (np.cumsum(edges[:-1]) > 0).astype(np.uint8).reshape(height, width)


def encode_rle(mask: np.ndarray) -> str:
    """uint8/bool mask [H, W] -> CheXmask RLE string (1-based, row-major); "" when empty."""
    flat = np.concatenate([[0], (np.asarray(mask).ravel() != 0).astype(np.int8), [0]])
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts, ends = change[0::2], change[1::2]
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, ends))


def sample_rle(rle: str | float | None, height: int, width: int, rows: np.ndarray,
               cols: np.ndarray) -> np.ndarray:
    """The mask decoded only at pixels ``rows x cols`` (a grid), without building it whole:
    ``decode_rle(rle, h, w)[rows[:, None], cols[None, :]]`` at a fraction of the cost."""
    starts, lengths = _runs(rle)
    out_shape = (len(rows), len(cols))
    if not starts.size:
        return np.zeros(out_shape, np.uint8)
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], starts[order] + lengths[order]
    # merge overlapping/adjacent runs so that "the last run starting before p" decides
    keep = np.ones(starts.size, bool)
    run_end = np.maximum.accumulate(ends)
    keep[1:] = starts[1:] > run_end[:-1]
    group = np.cumsum(keep) - 1
    m_starts = starts[keep]
    m_ends = np.zeros(m_starts.size, np.int64)
    np.maximum.at(m_ends, group, ends)
    p = (np.asarray(rows, np.int64)[:, None] * int(width) + np.asarray(cols, np.int64)[None, :])
    idx = np.searchsorted(m_starts, p, side="right") - 1
    inside = (idx >= 0) & (p < m_ends[np.clip(idx, 0, None)])
    return inside.astype(np.uint8)


def letterbox_rle(rle: str | float | None, height: int, width: int, size: int) -> np.ndarray:
    """A CheXmask RLE mask of an ``height x width`` image, letterboxed to ``size x size``
    exactly as :func:`cxrlab.data.resize.letterbox_mask` would (nearest neighbour, centred)."""
    g = letterbox_geometry(int(height), int(width), size)
    rows = np.minimum(((np.arange(g.new_height) + 0.5) / g.scale).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(g.new_width) + 0.5) / g.scale).astype(np.int64), width - 1)
    out = np.zeros((size, size), np.uint8)
    out[g.top:g.top + g.new_height, g.left:g.left + g.new_width] = \
        sample_rle(rle, height, width, rows, cols)
    return out


# ----------------------------------------------------------------------------- ids
def image_key(value, dataset: str) -> str:
    """The id under which an image is matched between CheXmask and a cache manifest.

    NIH: the file name without extension (``00000001_000``). CheXpert:
    ``patientNNNNN/studyN/viewN_frontal`` (so that ``CheXpert-v1.0/train/...`` and
    ``CheXpert-v1.0-small/train/...`` meet). MIMIC: the ``dicom_id`` (a JPEG's stem).
    """
    s = str(value).strip().replace("\\", "/")
    if dataset == "chexpert":
        m = _CHEXPERT_KEY.search(s)
        return m.group(1) if m else s
    if dataset in ("nih", "mimic"):
        name = PurePosixPath(s).name
        return name.rsplit(".", 1)[0] if "." in name else name
    raise UnknownNameError(f"CheXmask has no masks for data set {dataset!r}; choose one of "
                   f"{sorted(ID_COLUMNS)}")


def _id_column(columns: Iterable[str], dataset: str, path) -> str:
    cols = list(columns)
    for c in ID_COLUMNS[dataset]:
        if c in cols:
            return c
    raise UsageError(f"{path}: no image id column for {dataset} (looked for "
                     f"{list(ID_COLUMNS[dataset])}; the file has {cols[:12]}). Is it the CheXmask "
                     f"CSV of {CSV_STEMS[dataset]}?")


def _chunks(csv_path, dataset: str, chunksize: int) -> Iterator[tuple[str, pd.DataFrame]]:
    if dataset not in ID_COLUMNS:
        raise UnknownNameError(f"CheXmask has no masks for data set {dataset!r}; choose one of "
                       f"{sorted(ID_COLUMNS)}")
    path = Path(csv_path)
    if not path.exists():
        raise MissingInputError(f"CheXmask CSV {path} not found; download it with "
                                "`python data_download/chexmask.py --out DIR` (see "
                                "data_download/README.md)")
    header = pd.read_csv(path, nrows=0)
    header.columns = [str(c).strip() for c in header.columns]
    idcol = _id_column(header.columns, dataset, path)
    missing = [c for c in ("Left Lung", "Right Lung", "Height", "Width") if c not in header.columns]
    if missing:
        raise UsageError(f"{path}: CheXmask columns {missing} are missing (it has "
                         f"{list(header.columns)[:12]})")
    usecols = [idcol] + [c for c in _MASK_COLUMNS if c in header.columns]
    reader = pd.read_csv(path, usecols=lambda c: str(c).strip() in usecols, chunksize=chunksize,
                         dtype={idcol: str}, low_memory=False)
    for chunk in reader:
        chunk.columns = [str(c).strip() for c in chunk.columns]
        yield idcol, chunk


def read_chexmask(csv_path, dataset: str, ids: Iterable[str] | None = None,
                  min_dice: float | None = None, chunksize: int = 5000) -> pd.DataFrame:
    """A CheXmask CSV as a DataFrame indexed by :func:`image_key` (the data set's image id).

    Columns: ``left_lung``, ``right_lung``, ``heart`` (RLE strings), ``height``, ``width``,
    ``dice_rca_mean``. ``ids`` (optional) keeps only those images (any id form accepted by
    :func:`image_key`); ``min_dice`` drops masks with a lower ``Dice RCA (Mean)``. The whole
    result lives in memory (RLE strings are long): for writing masks into a cache use
    :func:`add_lung_masks`, which streams.
    """
    wanted = None if ids is None else {image_key(i, dataset) for i in ids}
    parts = []
    for idcol, chunk in _chunks(csv_path, dataset, chunksize):
        keys = chunk[idcol].map(lambda v: image_key(v, dataset))
        keep = np.ones(len(chunk), bool) if wanted is None else keys.isin(wanted).to_numpy()
        if min_dice is not None and "Dice RCA (Mean)" in chunk.columns:
            keep &= (chunk["Dice RCA (Mean)"].astype(float) >= min_dice).to_numpy()
        sub = chunk.loc[keep].rename(columns=_MASK_COLUMNS).drop(columns=[idcol])
        sub.index = pd.Index(keys[keep].to_numpy(), name="image_key")
        parts.append(sub)
    out = pd.concat(parts) if parts else pd.DataFrame(columns=list(_MASK_COLUMNS.values()))
    return out[~out.index.duplicated(keep="first")]


def lung_mask(row, size: int | None = None) -> np.ndarray:
    """Both lungs of one :func:`read_chexmask` row: full size, or letterboxed to ``size``."""
    h, w = int(row["height"]), int(row["width"])
    if size is None:
        return decode_rle(row["left_lung"], h, w) | decode_rle(row["right_lung"], h, w)
    return letterbox_rle(row["left_lung"], h, w, size) | letterbox_rle(row["right_lung"], h, w, size)


# ----------------------------------------------------------------------------- into a cache
def _manifest_keys(manifest: pd.DataFrame, dataset: str) -> dict[str, int]:
    """key -> cache row, from ``image_id`` (and ``path`` as a second chance)."""
    out: dict[str, int] = {}
    for col in ("image_id", "path"):
        if col not in manifest.columns:
            continue
        for row, v in enumerate(manifest[col].astype(str)):
            if v and v != "nan":
                out.setdefault(image_key(v, dataset), row)
    return out


def add_lung_masks(cache_dir, chexmask_csv, dataset: str, *, min_dice: float | None = MIN_DICE_RCA,
                   overwrite: bool = False, chunksize: int = 2000) -> dict:
    """Write CheXmask lung masks (left | right lung) into an existing cache.

    * Every cache row is matched to CheXmask by :func:`image_key` of its ``image_id`` (or
      ``path``); its mask is letterboxed to the cache's size like the image was.
    * Rows without a CheXmask entry, with an empty mask, or with ``Dice RCA (Mean) <
      min_dice`` get an all-zero mask and ``has_lung_mask = 0``.
    * ``lung_masks.npy`` is written beside the images (via a ``.partial`` file renamed at
      the end; an interrupted run resumes), the manifest gains ``has_lung_mask`` and
      ``lung_mask_dice``, and meta.json records ``has_lung_masks``, the source and how many
      images have none. Manifest and meta are replaced atomically.

    Returns a report: ``{"n", "with_mask", "no_entry", "low_quality", "empty"}``.
    """
    cache = Cache(cache_dir)
    path = cache.path
    if cache.synthetic:
        raise CacheError(f"{path} is a synthetic cache: its lung masks come with the phantoms; "
                         "CheXmask is for real NIH / CheXpert / MIMIC images")
    if (cache.meta.get("has_lung_masks") or cache.lung_masks is not None) and not overwrite:
        raise OutputExistsError(f"{path} already has lung masks ({cache.meta.get('lung_mask_source')}); "
                              "pass overwrite=True to replace them")
    n, size = len(cache), cache.image_size
    keys = _manifest_keys(cache.manifest, dataset)
    partial = path / "lung_masks.partial.npy"
    state_file = path / "lung_masks.partial-state.npy"
    dice_file = path / "lung_masks.partial-dice.npy"
    resume = partial.exists() and state_file.exists() and dice_file.exists()
    if resume:
        masks = np.load(partial, mmap_mode="r+")
        state = np.load(state_file, mmap_mode="r+")
        dice = np.load(dice_file, mmap_mode="r+")
        resume = masks.shape == (n, size, size) and state.shape == (n,) and dice.shape == (n,)
    if not resume:
        check_free_space(path, n * size * size + 5 * n, f"lung masks of {n} images")
        masks = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(n, size, size))
        state = np.lib.format.open_memmap(state_file, mode="w+", dtype=np.uint8, shape=(n,))
        dice = np.lib.format.open_memmap(dice_file, mode="w+", dtype=np.float32, shape=(n,))
        dice[:] = np.nan
    # state: 0 = no CheXmask row seen, 1 = mask written, 2 = below min_dice, 3 = empty mask
    square_1024 = seen = 0
    bar = progress(total=n, desc=f"CheXmask -> {path.name}", unit="img")
    for idcol, chunk in _chunks(chexmask_csv, dataset, chunksize):
        rows = [keys.get(image_key(v, dataset), -1) for v in chunk[idcol]]
        has_dice = "Dice RCA (Mean)" in chunk.columns
        dices = chunk["Dice RCA (Mean)"].astype(float) if has_dice else [np.nan] * len(chunk)
        for r, left, right, h, w, d in zip(rows, chunk["Left Lung"], chunk["Right Lung"],
                                           chunk["Height"], chunk["Width"], dices):
            if r < 0 or state[r] != 0:
                continue
            h, w = int(h), int(w)
            seen += 1
            square_1024 += (h == 1024 and w == 1024)
            dice[r] = d
            if min_dice is not None and has_dice and not d >= min_dice:
                state[r] = 2
            else:
                m = letterbox_rle(left, h, w, size) | letterbox_rle(right, h, w, size)
                masks[r] = m
                state[r] = 1 if m.any() else 3
            bar.update(1)
        masks.flush()
        state.flush()
        dice.flush()
    bar.close()
    if dataset != "nih" and seen >= 20 and square_1024 / seen > 0.9:
        warnings.warn(f"{chexmask_csv}: nearly all masks are 1024 x 1024: this looks like a "
                      "CheXmask 'Preprocessed' CSV, whose padded squares do not line up with "
                      "the images; use the 'OriginalResolution' CSV", stacklevel=2)
    st = np.asarray(state).copy()
    dv = np.asarray(dice).copy()
    report = {"n": n, "with_mask": int((st == 1).sum()), "no_entry": int((st == 0).sum()),
              "low_quality": int((st == 2).sum()), "empty": int((st == 3).sum())}
    del masks, state, dice
    os.replace(partial, path / "lung_masks.npy")
    manifest = cache.manifest.copy()
    manifest["has_lung_mask"] = (st == 1).astype(np.int8)
    manifest["lung_mask_dice"] = dv
    atomic_to_csv(manifest, path / "manifest.csv")
    meta = json.loads((path / "meta.json").read_text())
    meta["arrays"] = sorted(set(meta.get("arrays", [])) | {"lung_masks"})
    meta["has_lung_masks"] = True
    meta["lung_mask_source"] = {"name": "CheXmask", "csv": Path(chexmask_csv).name,
                                "min_dice_rca": min_dice}
    meta["lung_masks_missing"] = n - report["with_mask"]
    atomic_write_json(path / "meta.json", meta)
    state_file.unlink(missing_ok=True)
    dice_file.unlink(missing_ok=True)
    if report["with_mask"] < n:
        warnings.warn(f"{path}: {n - report['with_mask']} of {n} images have no usable CheXmask "
                      f"lung mask ({report['no_entry']} not in the CSV, {report['low_quality']} "
                      f"below Dice RCA {min_dice}, {report['empty']} empty); they are marked "
                      "has_lung_mask = 0", stacklevel=2)
    return report


def lung_masks_from_duplicates(cache_dir, donor, *, threshold: float = 0.98,
                               overwrite: bool = False) -> dict:
    """Give a cache lung masks copied from another cache that holds the *same images* with
    masks: SIIM-ACR from NIH ChestX-ray14 + CheXmask.

    SIIM-ACR's images are NIH ChestX-ray14 images renamed with DICOM UIDs, and CheXmask has no
    SIIM masks. So each image of ``cache_dir`` is matched by content to ``donor`` (a cache of
    the same image size, with lung masks, e.g. an NIH cache after :func:`add_lung_masks`) with
    the thumbnail fingerprint of :func:`cxrlab.data.protocols.match_duplicates`, and takes its
    match's mask. Both caches letterbox the same square 1024-px originals to the same size, so
    the masks line up. Rows without a match above ``threshold``, or whose match has no usable
    mask (``has_lung_mask = 0`` in the donor), get an all-zero mask and ``has_lung_mask = 0``.

    Returns ``{"n", "with_mask", "no_match", "donor_without_mask"}``.
    """
    from cxrlab.data.protocols.resolve import match_duplicates
    from cxrlab.io import atomic_to_csv, atomic_write_json

    cache = Cache(cache_dir)
    donor = donor if isinstance(donor, Cache) else Cache(donor)
    path = cache.path
    if donor.lung_masks is None:
        raise CacheError(f"{donor.path} has no lung masks to copy; add them first "
                         "(cxrlab.data.chexmask.add_lung_masks)")
    if donor.image_size != cache.image_size:
        raise CacheError(f"{path} has {cache.image_size}-px images but {donor.path} has "
                         f"{donor.image_size}-px ones; prepare both at the same size")
    if cache.lung_masks is not None and not overwrite:
        raise FileExistsError(f"{path} already has lung masks; pass overwrite=True to replace them")
    rows = np.arange(len(cache))
    has = (donor.manifest["has_lung_mask"].to_numpy(dtype=bool) if "has_lung_mask" in
           donor.manifest.columns else np.asarray(donor.lung_masks).reshape(len(donor), -1).any(1))
    match, sim = match_duplicates(cache, rows, donor, np.arange(len(donor)), threshold)
    usable = (match >= 0) & has[np.maximum(match, 0)]
    masks = np.zeros((len(cache), cache.image_size, cache.image_size), np.uint8)
    if usable.any():
        src = match[usable]
        order = np.argsort(src)
        got = np.asarray(donor.lung_masks[src[order]])
        masks[np.flatnonzero(usable)[order]] = got
    tmp = path / "lung_masks.partial.npy"
    np.save(tmp, masks)
    os.replace(tmp, path / "lung_masks.npy")
    manifest = cache.manifest.copy()
    manifest["has_lung_mask"] = usable.astype(np.int8)
    manifest["lung_mask_match_similarity"] = sim
    atomic_to_csv(manifest, path / "manifest.csv")
    meta = json.loads((path / "meta.json").read_text())
    meta["arrays"] = sorted(set(meta.get("arrays", [])) | {"lung_masks"})
    meta["has_lung_masks"] = True
    meta["lung_mask_source"] = {"name": "duplicates", "donor": str(donor.path),
                                "donor_source": donor.meta.get("lung_mask_source"),
                                "threshold": float(threshold)}
    report = {"n": len(cache), "with_mask": int(usable.sum()), "no_match": int((match < 0).sum()),
              "donor_without_mask": int(((match >= 0) & ~usable).sum())}
    meta["lung_masks_missing"] = report["n"] - report["with_mask"]
    atomic_write_json(path / "meta.json", meta)
    return report
