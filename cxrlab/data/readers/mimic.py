"""MIMIC-CXR-JPG (v2.0.0 / v2.1.0) in its official PhysioNet layout.

Expected under ``root`` (``physionet.org/files/mimic-cxr-jpg/2.x.0/`` as downloaded)::

    mimic-cxr-2.0.0-split.csv.gz       dicom_id, study_id, subject_id, split (train/validate/test)
    mimic-cxr-2.0.0-metadata.csv.gz    dicom_id, subject_id, study_id, ViewPosition, Rows, ...
    mimic-cxr-2.0.0-chexpert.csv.gz    subject_id, study_id, 14 CheXpert labels (1/0/-1/blank)
    files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg ...

Uncompressed ``.csv`` copies are accepted too.

* **Splits: the official ones** (``validate`` -> ``val``), which are patient-wise.
  torchxrayvision's MIMIC class ignores them; we do not.
* **Labels:** the CheXpert-labeler table, joined on (subject_id, study_id): every image of a
  study gets the study's labels. ``uncertain`` / ``blank`` policies as for CheXpert
  (:func:`cxrlab.data.readers.chexpert.apply_label_policies`). A study with no row in the
  label table gets NaN for every label (unknown), not zeros.
* **Views** come from the metadata's ``ViewPosition`` (PA, AP, LATERAL, LL, ...; blank ->
  ``UNKNOWN``). ``frontal_only=True`` (default) keeps PA and AP.
* **Age and sex** are not part of MIMIC-CXR-JPG. If MIMIC-IV's ``patients.csv(.gz)``
  (subject_id, gender, anchor_age) is given (``patients_csv=``) or lies in ``root``, they are
  joined in (age = ``anchor_age``, the age in the patient's anchor year: an approximation);
  otherwise they are NaN.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.readers._base import (DataLayoutError, FRONTAL_VIEWS, clean_upper, find_file,
                                       finish_manifest,
                                       normalise_views, parse_age, parse_sex, read_table,
                                       require_root)
from cxrlab.data.readers._image import load_raster
from cxrlab.data.readers.chexpert import apply_label_policies
from cxrlab.errors import MissingInputError
from cxrlab.labels import LABEL_MAP

NAME = "mimic"
HAS_LESION_MASKS = False
SPLIT_FILES = ("mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv",
               "mimic-cxr-2.*-split.csv*")
META_FILES = ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-metadata.csv",
              "mimic-cxr-2.*-metadata.csv*")
LABEL_FILES = ("mimic-cxr-2.0.0-chexpert.csv.gz", "mimic-cxr-2.0.0-chexpert.csv",
               "mimic-cxr-2.*-chexpert.csv*")
PATIENT_FILES = ("patients.csv.gz", "patients.csv")
SPLIT_NAMES = {"train": "train", "validate": "val", "val": "val", "test": "test"}


def image_path(subject_id, study_id, dicom_id) -> str:
    """files/pXX/p<subject>/s<study>/<dicom_id>.jpg (XX = first two digits of the subject)."""
    s = str(subject_id)
    return f"files/p{s[:2]}/p{s}/s{study_id}/{dicom_id}.jpg"


def read_manifest(root, *, uncertain="ignore", blank: str = "zeros", frontal_only: bool = True,
                  views=None, patients_csv=None, domain: str = NAME) -> pd.DataFrame:
    """One row per image of the official split file (frontal only by default)."""
    root = require_root(root, NAME)
    views = normalise_views(views)
    split = read_table(find_file(root, SPLIT_FILES, NAME, "the official split table"),
                       ("dicom_id", "study_id", "subject_id", "split"), NAME)
    meta = read_table(find_file(root, META_FILES, NAME, "the metadata table"),
                      ("dicom_id", "ViewPosition"), NAME)
    labels = read_table(find_file(root, LABEL_FILES, NAME, "the CheXpert label table"),
                        ("subject_id", "study_id") + tuple(LABEL_MAP["mimic"]), NAME)
    bad = sorted(set(split["split"].astype(str)) - set(SPLIT_NAMES))
    if bad:
        raise DataLayoutError(f"mimic: unknown split value(s) {bad} in the split table; "
                              f"expected {sorted(SPLIT_NAMES)}")
    df = split[["dicom_id", "study_id", "subject_id", "split"]].copy()
    df["dicom_id"] = df["dicom_id"].astype(str)
    meta = meta.assign(dicom_id=meta["dicom_id"].astype(str)).drop_duplicates("dicom_id")
    df = df.merge(meta[["dicom_id", "ViewPosition"]], on="dicom_id", how="left")
    lab = labels.drop_duplicates(["subject_id", "study_id"]).reset_index(drop=True)
    canon = apply_label_policies(lab, LABEL_MAP["mimic"], uncertain, blank)
    canon[["subject_id", "study_id"]] = lab[["subject_id", "study_id"]]
    df = df.merge(canon, on=["subject_id", "study_id"], how="left")  # no label row -> NaN

    view = clean_upper(df["ViewPosition"])
    out = pd.DataFrame({
        "image_id": df["dicom_id"],
        "patient_id": df["subject_id"].astype(str),
        "split": df["split"].astype(str).map(SPLIT_NAMES),
        "domain": domain,
        "view": view.to_numpy(dtype=object),
        "path": [image_path(a, b, c) for a, b, c in
                 zip(df["subject_id"], df["study_id"], df["dicom_id"])],
        "study_id": df["study_id"].astype(str),
    })
    for label in LABEL_MAP["mimic"].values():
        out[label] = df[label].to_numpy(dtype=np.float32)

    pfile = Path(patients_csv) if patients_csv is not None else None
    if pfile is None:
        hits = [root / p for p in PATIENT_FILES if (root / p).is_file()]
        pfile = hits[0] if hits else None
    if pfile is not None:
        if not pfile.is_file():
            raise MissingInputError(f"mimic: patients_csv {pfile} does not exist (it is MIMIC-IV's "
                                    "hosp/patients.csv.gz)")
        pat = read_table(pfile, ("subject_id", "gender", "anchor_age"), NAME)
        pat = pat.assign(patient_id=pat["subject_id"].astype(str)).drop_duplicates("patient_id")
        pat = pat.set_index("patient_id")
        out["age"] = parse_age(out["patient_id"].map(pat["anchor_age"])).to_numpy()
        out["sex"] = parse_sex(out["patient_id"].map(pat["gender"])).to_numpy()
    else:
        out["age"] = np.nan
        out["sex"] = np.nan
    if frontal_only:
        out = out[out["view"].isin(FRONTAL_VIEWS)]
    if views is not None:
        out = out[out["view"].isin(views)]
    return finish_manifest(out, NAME)


def load_image(root, row, size_hint: int | None = None) -> np.ndarray:
    """The JPEG as uint8 [H, W] (decoded at reduced scale when ``size_hint`` allows)."""
    return load_raster(Path(root) / row["path"], draft_size=size_hint)
