"""PadChest (BIMCV, Hospital San Juan, Alicante) in its official layout.

Expected under ``root``::

    PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv(.gz)
    0/<ImageID>.png  1/...  54/...      16-bit PNGs, folder = the table's ImageDir
                                        (a flat folder of all PNGs, in root or root/images/,
                                        is found too)

* **Labels.** ``Labels`` is a list of terms from the report, e.g. ``['pleural effusion',
  'cardiomegaly']``; :data:`cxrlab.labels.LABEL_MAP` ``["padchest"]`` maps the terms to the
  canonical labels (several subtypes -> one label, e.g. laminar / lobar atelectasis ->
  Atelectasis). A mapped finding not in the list is 0, like NIH's text-mined labels; labels
  PadChest has no term for (Lung_Opacity, Support_Devices, ...) are NaN. Rows labelled
  ``exclude`` (images the PadChest authors flagged as unsuitable) are dropped; rows without a
  label list, or with an empty one (``['']``), are kept with every label NaN. ``label_source`` says whether a physician or the
  authors' RNN labelled the report (``MethodLabel``).
* **Views** from ``Projection``: PA, AP, ``AP_SUPINE`` (PadChest's AP_horizontal: bed-bound
  patients), LATERAL, COSTAL (rib views). ``frontal_only=True`` (default) keeps PA, AP and
  AP_SUPINE.
* **Age** = study year - birth year; **sex** from ``PatientSex_DICOM``.
* **Splits:** no official split; seeded patient-wise hash, ``val_fraction`` 10 %,
  ``test_fraction`` 20 %.
* **Pixels:** 16-bit PNGs, percentile-windowed to uint8 by the cache (:mod:`cxrlab.data.resize`).
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.readers._base import (DataLayoutError, find_file, finish_manifest, map_unique,
                                       normalise_views, parse_sex, patient_split, read_table,
                                       require_root)
from cxrlab.data.readers._image import load_raster
from cxrlab.labels import LABEL_MAP

NAME = "padchest"
HAS_LESION_MASKS = False
TABLE_FILES = ("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
               "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
               "PADCHEST_chest_x_ray_images_labels_160K*.csv*")
TABLE_COLUMNS = ("ImageID", "ImageDir", "StudyDate_DICOM", "PatientID", "PatientBirth",
                 "PatientSex_DICOM", "Projection", "Labels")
VIEW_NAMES = {"PA": "PA", "AP": "AP", "AP_HORIZONTAL": "AP_SUPINE", "L": "LATERAL",
              "COSTAL": "COSTAL"}
FRONTAL = ("PA", "AP", "AP_SUPINE")


def read_padchest_table(path: Path) -> pd.DataFrame:
    """The columns the reader uses (the full table has 35, among them the reports' text)."""
    wanted = set(TABLE_COLUMNS) | {"MethodLabel"}
    return read_table(path, TABLE_COLUMNS, NAME, usecols=lambda c: str(c).strip() in wanted)


def _terms(text) -> frozenset | None:
    """"['pleural effusion', ' cardiomegaly']" -> {"pleural effusion", "cardiomegaly"}."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    try:
        items = ast.literal_eval(str(text))
    except (ValueError, SyntaxError):
        raise DataLayoutError(f"padchest: cannot parse Labels value {str(text)[:80]!r}") from None
    terms = frozenset(str(x).strip().lower() for x in items if str(x).strip())
    return terms or None  # "['']" or "[]": the report was not labelled -> every label missing


def parse_table(table: pd.DataFrame, *, frontal_only: bool = True,
                domain: str = NAME) -> pd.DataFrame:
    """Rows of the PadChest table as manifest columns (no split; ``path`` = ImageDir/ImageID)."""
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise DataLayoutError(f"padchest: table lacks column(s) {missing}")
    codes, combos = pd.factorize(table["Labels"], use_na_sentinel=True)
    parsed = [_terms(c) for c in combos]
    exclude = np.array([t is not None and "exclude" in t for t in parsed] + [False])[codes]
    mapping = LABEL_MAP["padchest"]
    canon = sorted(set(mapping.values()))
    onehot = np.full((len(combos) + 1, len(canon)), np.nan, dtype=np.float32)  # last row: NaN
    for i, terms in enumerate(parsed):
        if terms is not None:
            hit = {mapping[t] for t in terms if t in mapping}
            onehot[i] = [lab in hit for lab in canon]
    lab = onehot[codes]  # code -1 (no list) -> the NaN row
    study_year = pd.to_numeric(table["StudyDate_DICOM"].astype(str).str[:4], errors="coerce")
    age = study_year - pd.to_numeric(table["PatientBirth"], errors="coerce")
    view = map_unique(table["Projection"],
                      lambda s: s.astype(str).str.strip().str.upper().map(VIEW_NAMES)
                      .fillna("UNKNOWN"))
    folder = pd.to_numeric(table["ImageDir"], errors="coerce")
    out = pd.DataFrame({
        "image_id": table["ImageID"].astype(str).str.strip().to_numpy(),
        "patient_id": table["PatientID"].astype(str).str.strip().to_numpy(),
        "domain": domain,
        "age": age.where((age >= 0) & (age <= 120)).to_numpy(dtype=float),
        "sex": parse_sex(table["PatientSex_DICOM"]).to_numpy(),
        "view": view.to_numpy(dtype=object),
        "path": [f"{int(d)}/{i}" if pd.notna(d) else str(i)
                 for d, i in zip(folder, table["ImageID"].astype(str).str.strip())],
    })
    for j, name in enumerate(canon):
        out[name] = lab[:, j]
    if "MethodLabel" in table.columns:
        out["label_source"] = table["MethodLabel"].astype(str).to_numpy()
    keep = ~exclude
    if frontal_only:
        keep &= out["view"].isin(FRONTAL).to_numpy()
    return out[keep].reset_index(drop=True)


def _index_images(root: Path) -> dict[str, str]:
    """file name -> path relative to root, for PNGs in root, root/images and root/<number>/."""
    index: dict[str, str] = {}
    folders = [root, root / "images"] + sorted(p for p in root.iterdir()
                                               if p.is_dir() and p.name.isdigit())
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.lower().endswith(".png"):
                    index.setdefault(entry.name, os.path.relpath(entry.path, root))
    return index


def read_manifest(root, *, frontal_only: bool = True, views=None, val_fraction: float = 0.1,
                  test_fraction: float = 0.2, seed: int = 0, domain: str = NAME) -> pd.DataFrame:
    """One row per image of the PadChest table (frontal only by default)."""
    root = require_root(root, NAME)
    views = normalise_views(views)
    table = read_padchest_table(find_file(root, TABLE_FILES, NAME,
                                          "the label table PADCHEST_..._160K_01.02.19.csv"))
    df = parse_table(table, frontal_only=frontal_only, domain=domain)
    if views is not None:
        df = df[df["view"].isin(views)].reset_index(drop=True)
    index = _index_images(root)
    df["path"] = [index.get(name, expected) for name, expected in zip(df["image_id"], df["path"])]
    df["split"] = patient_split(df["patient_id"], val_fraction=val_fraction,
                                test_fraction=test_fraction, seed=seed)
    return finish_manifest(df, NAME)


def load_image(root, row, size_hint: int | None = None) -> np.ndarray:
    """The PNG (16-bit in the release) as a 2-D array; the cache windows it to uint8."""
    return load_raster(Path(root) / row["path"], draft_size=size_hint)
