"""NIH ChestX-ray14 in its official layout.

Expected under ``root`` (the folder the NIH Box download was unpacked into)::

    Data_Entry_2017_v2020.csv     (or the older Data_Entry_2017.csv)
    train_val_list.txt            official patient-wise list of train+val images
    test_list.txt                 official patient-wise list of test images
    images/00000001_000.png ...   from images_01.tar.gz .. images_12.tar.gz (1024 x 1024 PNG)

The Kaggle mirror's ``images_001/images/*.png`` folders are found too. The tables must be
directly in ``root``: point ``--root`` at the folder that holds them.

Choices (and how they differ from torchxrayvision's ``NIH_Dataset``):

* **All views by default** (PA and AP); ``views=("PA",)`` keeps PA only. torchxrayvision keeps
  PA only unless told otherwise, which silently removes the sicker, bed-bound AP patients.
* **All images per patient** (torchxrayvision defaults to one image per patient). Splits are
  patient-wise, so several images per patient cost nothing in honesty; evaluation code that
  wants one image per patient can subsample the manifest.
* **Splits:** ``test_list.txt`` -> ``test``; ``train_val_list.txt`` -> ``train`` / ``val`` by a
  seeded hash of the patient id (``val_fraction`` of patients, default 10 %). The official
  lists are patient-wise; :func:`check_patient_splits` verifies it.
* **Labels:** the 14 findings of ``Finding Labels`` (``|``-joined; "No Finding" = none) as 1/0.
  The CheXpert-only labels (No_Finding, Lung_Opacity, ...) are NaN: NIH does not define them.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.readers._base import (DataLayoutError, check_choice, clean_upper, find_file,
                                       finish_manifest, map_unique,
                                       normalise_views, parse_age, parse_sex, patient_split,
                                       read_table, require_root)
from cxrlab.data.readers._image import load_raster
from cxrlab.labels import NIH14

NAME = "nih"
HAS_LESION_MASKS = False
TABLE_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017_v2020.csv.gz", "Data_Entry_2017.csv",
               "Data_Entry_2017.csv.gz")
TABLE_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender",
                 "View Position")
VIEWS = ("PA", "AP")


def parse_data_entry(table: pd.DataFrame, domain: str = NAME) -> pd.DataFrame:
    """The rows of ``Data_Entry_2017*.csv`` as manifest columns (no split, no path yet).

    Shared with :func:`cxrlab.data.metadata.load_shipped_metadata`, so that the metadata
    torchxrayvision ships is parsed exactly like a downloaded copy.
    """
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise DataLayoutError(f"nih: Data_Entry table lacks column(s) {missing}")
    # ~800 distinct combinations among 112k rows: parse each combination once
    codes, combos = pd.factorize(table["Finding Labels"].fillna("").astype(str))
    known = set(NIH14) | {"No Finding", ""}
    onehot = np.zeros((len(combos), len(NIH14)), dtype=np.float32)
    for i, combo in enumerate(combos):
        names = {x.strip() for x in str(combo).split("|")}
        unknown = sorted(names - known)
        if unknown:
            raise DataLayoutError(f"nih: unknown finding name(s) {unknown} in 'Finding Labels' "
                                  f"({combo!r}); expected {list(NIH14)} or 'No Finding'")
        onehot[i] = [name in names for name in NIH14]
    out = pd.DataFrame({
        "image_id": table["Image Index"].astype(str).str.strip(),
        "patient_id": map_unique(table["Patient ID"], _patient_id).to_numpy(dtype=object),
        "domain": domain,
        "age": parse_age(table["Patient Age"]).to_numpy(),
        "sex": parse_sex(table["Patient Gender"]).to_numpy(),
        "view": clean_upper(table["View Position"]).to_numpy(),
    })
    for j, label in enumerate(NIH14):
        out[label] = onehot[codes, j]
    if "Follow-up #" in table.columns:
        out["follow_up"] = pd.to_numeric(table["Follow-up #"], errors="coerce").to_numpy()
    return out


def _patient_id(s: pd.Series) -> pd.Series:
    """Patient ID 1, "1" or "00000001" -> "1" (the number, as the image names encode it)."""
    num = pd.to_numeric(s, errors="coerce")
    return pd.Series([str(int(n)) if pd.notna(n) else str(v).strip()
                      for n, v in zip(num, s)], dtype=object)


def _read_list(path: Path) -> set[str]:
    names = [ln.strip() for ln in path.read_text().splitlines()]
    return {n for n in names if n}


def _index_images(root: Path) -> dict[str, str]:
    """file name -> path relative to root, for every PNG in images/ or images_*/(images/)."""
    index: dict[str, str] = {}
    folders = [root / "images"] + sorted(p for p in root.glob("images_*") if p.is_dir())
    for folder in folders:
        for sub in (folder, folder / "images"):
            if not sub.is_dir():
                continue
            with os.scandir(sub) as it:
                for entry in it:
                    if entry.name.lower().endswith(".png"):
                        index.setdefault(entry.name, os.path.relpath(entry.path, root))
    return index


def read_manifest(root, *, views=None, val_fraction: float = 0.1, seed: int = 0,
                  domain: str = NAME, split: str = "official") -> pd.DataFrame:
    """One row per image listed in the official train_val / test lists.

    Images that are listed but not on disk keep their row (with the path they were expected
    at): :func:`cxrlab.data.prepare.prepare` counts and lists them as missing.

    ``split="official"`` uses the two list files; ``split="hash"`` ignores them and splits all
    rows patient-wise (10 % val, 20 % test), for copies that lack the lists.
    """
    root = require_root(root, NAME)
    check_choice("split", split, ("official", "hash"))
    views = normalise_views(views, VIEWS)
    table_file = find_file(root, TABLE_FILES, NAME, "the label table Data_Entry_2017_v2020.csv")
    table = read_table(table_file, TABLE_COLUMNS, NAME)
    df = parse_data_entry(table, domain=domain)
    if split == "official":
        train_val = _read_list(find_file(root, ("train_val_list.txt",), NAME,
                                         "the official split list train_val_list.txt (without "
                                         "the list files pass --opt split=hash for a "
                                         "patient-wise split)"))
        test = _read_list(find_file(root, ("test_list.txt",), NAME,
                                    "the official split list test_list.txt (without the list "
                                    "files pass --opt split=hash for a patient-wise split)"))
        both = sorted(train_val & test)
        if both:
            raise DataLayoutError(f"nih: {len(both)} image(s) are in both train_val_list.txt and "
                                  f"test_list.txt (e.g. {both[:3]}); the lists are corrupt")
        unknown = sorted((train_val | test) - set(df["image_id"]))
        if unknown:
            raise DataLayoutError(f"nih: {len(unknown)} listed image(s) are not in "
                                  f"{table_file.name} (e.g. {unknown[:3]})")
        in_test = df["image_id"].isin(test).to_numpy()
        in_tv = df["image_id"].isin(train_val).to_numpy()
        df = df[in_test | in_tv].reset_index(drop=True)
        in_test = df["image_id"].isin(test).to_numpy()
        tv_split = patient_split(df["patient_id"], val_fraction=val_fraction, seed=seed)
        df["split"] = np.where(in_test, "test", tv_split)
    else:
        df["split"] = patient_split(df["patient_id"], val_fraction=val_fraction,
                                    test_fraction=0.2, seed=seed)
    if views is not None:
        df = df[df["view"].isin(views)].reset_index(drop=True)
    index = _index_images(root)
    df["path"] = [index.get(n, f"images/{n}") for n in df["image_id"]]
    return finish_manifest(df, NAME)


def load_image(root, row, size_hint: int | None = None) -> np.ndarray:
    """The original 8-bit PNG (1024 x 1024 in the official release) as uint8 [H, W]."""
    return load_raster(Path(root) / row["path"], draft_size=size_hint)
