"""SIIM-ACR Pneumothorax Segmentation (DICOM + run-length masks) in its official layout.

Expected under ``root`` (the competition download)::

    train-rle.csv                      ImageId, EncodedPixels   (stage 1; or stage_2_train.csv)
    dicom-images-train/<study>/<series>/<ImageId>.dcm          (found anywhere under root)

* **Labels.** Every image is labelled for Pneumothorax only: an ``EncodedPixels`` of ``-1``
  is a negative image, anything else a positive one. The other 20 canonical labels are NaN.
* **Masks.** An image with several pneumothorax regions has *several rows*, one RLE each;
  the lesion mask is their union. (torchxrayvision's SIIM class keeps only the last row's
  mask, so multi-region images lose regions.)
* **RLE format** (the competition's ``mask_functions.py``): pixels are numbered
  *column-major* (down the first column, then the next), and the pairs are
  ``(gap, length)``: each start is counted from the end of the previous run, not from pixel 0.
  :func:`decode_rle` implements exactly this; ``encode_rle`` is its inverse. The stage-2
  table (``stage_2_train.csv``) uses *absolute* 1-based starts instead; the reader detects the
  format from the strings themselves (:func:`detect_rle_format`; ``--opt rle=absolute`` or
  ``relative`` forces one) and decodes either right.
* **Patient, age, sex, view** come from each DICOM header (PatientID, PatientAge, PatientSex,
  ViewPosition); images whose DICOM is missing or unreadable keep their row with the ImageId
  as patient id, and :func:`cxrlab.data.prepare.prepare` lists them as skipped.
* **Splits.** The competition's test labels are not part of the release, so the labelled
  images are split patient-wise by a seeded hash: ``val_fraction`` (10 %) / ``test_fraction``
  (20 %) of patients. DICOMs without a row in the RLE table (the unlabelled test images) are
  not included.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.readers._base import (DataLayoutError, check_choice, clean_upper, find_file,
                                       finish_manifest,
                                       normalise_views,
                                       parse_age, parse_sex, patient_split, read_table,
                                       require_root)
from cxrlab.data.readers._image import dicom_header, load_dicom
from cxrlab.errors import MissingInputError
from cxrlab.progress import progress

NAME = "siim"
HAS_LESION_MASKS = True
#: the lesion-mask label the masks belong to
MASK_LABEL = "Pneumothorax"
RLE_FILES = ("train-rle.csv", "train-rle.csv.gz", "stage_2_train.csv", "stage_2_train.csv.gz",
             "siim-pneumothorax-train-rle.csv.gz")
NEGATIVE = "-1"
RLE_FORMATS = ("relative", "absolute")


def _rle_numbers(rle: str) -> np.ndarray:
    try:
        nums = np.asarray(str(rle).split(), dtype=np.int64)
    except ValueError:
        raise DataLayoutError(f"siim: not a run-length string: {str(rle)[:60]!r}") from None
    if len(nums) % 2:
        raise DataLayoutError(f"siim: run-length string has an odd number of values ({len(nums)})")
    return nums


def decode_rle(rle: str, height: int, width: int, fmt: str = "relative") -> np.ndarray:
    """One SIIM run-length string -> uint8 0/1 mask [height, width] (``-1`` -> empty mask).

    ``fmt="relative"`` (stage 1, ``train-rle.csv``): pairs ``(gap, length)``, each start counted
    from the end of the previous run. ``fmt="absolute"`` (stage 2, ``stage_2_train.csv``): pairs
    ``(start, length)`` with 1-based starts counted from pixel 1 (the standard Kaggle RLE).
    Pixels are column-major in both."""
    if fmt not in RLE_FORMATS:
        raise DataLayoutError(f"siim: unknown RLE format {fmt!r}; use one of {RLE_FORMATS}")
    flat = np.zeros(height * width, dtype=np.uint8)
    rle = str(rle).strip()
    if rle in ("", NEGATIVE):
        return flat.reshape(height, width)
    nums = _rle_numbers(rle)
    pos = 0
    for first, length in zip(nums[0::2], nums[1::2]):
        start = pos + first if fmt == "relative" else first - 1
        if first < 0 or length < 0 or start < 0 or start + length > flat.size:
            other = "absolute" if fmt == "relative" else "relative"
            raise DataLayoutError(f"siim: run-length string runs outside a {height} x {width} "
                                  f"image when read as {fmt}; is the image size right, or is the "
                                  f"table {other} (--opt rle={other})?")
        flat[start:start + length] = 1
        pos = start + length
    # column-major: flat index = x * height + y
    return flat.reshape(width, height).T.copy()


def detect_rle_format(rles, filename: str = "") -> str:
    """``"absolute"`` or ``"relative"`` for a table's run-length strings.

    In an absolute table the starts of every multi-run string increase (each run begins after
    the previous one ends); in a relative one the later values are gaps, almost always smaller
    than the first start. One string whose starts do not increase rules absolute out. A table
    without multi-run strings is judged by its file name (``stage_2_*`` = absolute)."""
    increasing = 0
    for rle in rles:
        rle = str(rle).strip()
        if rle in ("", NEGATIVE, "nan"):
            continue
        nums = _rle_numbers(rle)
        starts, lengths = nums[0::2], nums[1::2]
        if len(starts) < 2:
            continue
        if np.all(starts[1:] >= starts[:-1] + lengths[:-1]):
            increasing += 1
        else:
            return "relative"
    if increasing:
        return "absolute"
    return "absolute" if "stage_2" in Path(filename).name else "relative"


def encode_rle(mask: np.ndarray, fmt: str = "relative") -> str:
    """Inverse of :func:`decode_rle` (column-major; relative or absolute 1-based starts);
    ``-1`` for an empty mask."""
    flat = (np.asarray(mask).T.reshape(-1) > 0).astype(np.int8)
    if not flat.any():
        return NEGATIVE
    padded = np.concatenate([[0], flat, [0]])
    change = np.flatnonzero(np.diff(padded))
    starts, ends = change[0::2], change[1::2]
    if fmt == "absolute":
        return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends))
    gaps = starts - np.concatenate([[0], ends[:-1]])
    return " ".join(f"{g} {e - s}" for g, s, e in zip(gaps, starts, ends))


def _index_dicoms(root: Path) -> dict[str, str]:
    index: dict[str, str] = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.lower().endswith(".dcm"):
                index.setdefault(f[:-4], os.path.relpath(os.path.join(dirpath, f), root))
    return index


def parse_rle_table(table: pd.DataFrame) -> pd.DataFrame:
    """RLE rows -> one row per image: ``image_id``, ``Pneumothorax`` (1/0), ``has_mask``,
    ``n_masks`` and ``_rle`` (the tuple of its run-length strings)."""
    t = table.assign(ImageId=table["ImageId"].astype(str).str.strip(),
                     EncodedPixels=table["EncodedPixels"].astype(str).str.strip())
    groups = t.groupby("ImageId", sort=False)["EncodedPixels"]
    rles = groups.agg(lambda s: tuple(x for x in s if x not in ("", NEGATIVE, "nan")))
    out = pd.DataFrame({"image_id": rles.index.astype(str), "_rle": rles.to_numpy()})
    out["n_masks"] = out["_rle"].map(len).astype(int)
    out["has_mask"] = out["n_masks"] > 0
    out[MASK_LABEL] = out["has_mask"].astype(np.float32)
    return out


def read_manifest(root, *, views=None, val_fraction: float = 0.1, test_fraction: float = 0.2,
                  seed: int = 0, read_headers: bool = True, domain: str = NAME,
                  rle: str = "auto") -> pd.DataFrame:
    """One row per image of the RLE table (several rows of one image become one).

    ``rle``: ``"auto"`` (default: :func:`detect_rle_format`), ``"relative"`` (stage 1) or
    ``"absolute"`` (stage 2)."""
    root = require_root(root, NAME)
    views = normalise_views(views)
    check_choice("rle", rle, ("auto",) + RLE_FORMATS)
    table_file = find_file(root, RLE_FILES, NAME, "the mask table train-rle.csv")
    table = read_table(table_file, ("ImageId", "EncodedPixels"), NAME, dtype=str,
                       keep_default_na=False)
    df = parse_rle_table(table)
    fmt = detect_rle_format(table["EncodedPixels"], table_file.name) if rle == "auto" else rle
    df["_rle_format"] = fmt
    index = _index_dicoms(root)
    df["path"] = [index.get(i, "") for i in df["image_id"]]
    heads = []
    for rel in progress(df["path"], desc="siim: DICOM headers", total=len(df)):
        h = {}
        if rel and read_headers:
            try:
                h = dicom_header(root / rel)
            except Exception:  # noqa: BLE001 - unreadable header: prepare lists the file
                h = {}
        heads.append(h)
    hd = pd.DataFrame(heads, index=df.index,
                      columns=["PatientID", "PatientAge", "PatientSex", "ViewPosition"])
    df["patient_id"] = hd["PatientID"].where(hd["PatientID"].notna(), df["image_id"]).astype(str)
    df["age"] = parse_age(hd["PatientAge"]).to_numpy()
    df["sex"] = parse_sex(hd["PatientSex"]).to_numpy()
    df["view"] = clean_upper(hd["ViewPosition"]).to_numpy(dtype=object)
    df["domain"] = domain
    df["split"] = patient_split(df["patient_id"], val_fraction=val_fraction,
                                test_fraction=test_fraction, seed=seed)
    if views is not None:
        df = df[df["view"].isin(views)]
    return finish_manifest(df, NAME)


def load_image(root, row, size_hint: int | None = None) -> np.ndarray:
    """The DICOM's pixels (modality LUT applied, MONOCHROME1 inverted); uint8 for SIIM."""
    if not row["path"]:
        raise MissingInputError(f"no DICOM named {row['image_id']}.dcm anywhere under {root}")
    return load_dicom(Path(root) / row["path"])


def load_masks(root, row, shape: tuple[int, int]) -> np.ndarray:
    """Union of all the image's run-length masks, uint8 0/1 of ``shape`` (the DICOM's size)."""
    h, w = shape
    mask = np.zeros((h, w), dtype=np.uint8)
    for rle in row["_rle"]:
        mask |= decode_rle(rle, h, w, row.get("_rle_format", "relative"))
    return mask
