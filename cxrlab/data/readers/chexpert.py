"""CheXpert v1.0 and CheXpert-v1.0-small in their official layout.

Expected under ``root`` (either the folder *holding* ``CheXpert-v1.0-small/`` or
``CheXpert-v1.0/``, or that folder itself)::

    CheXpert-v1.0-small/train.csv      223,414 rows: Path, Sex, Age, Frontal/Lateral, AP/PA,
    CheXpert-v1.0-small/valid.csv      234 rows      No Finding + 13 findings (1 / 0 / -1 / blank)
    CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg ...
    CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg ...

The full-resolution ``CheXpert-v1.0`` has the same tables and tree with larger JPEGs.

**Splits.** The official hidden test set is not public, so ``valid.csv`` (234 images labelled
by a consensus of three radiologists, no uncertain labels) becomes ``test``, and ``train.csv``
is split patient-wise into ``train`` / ``val`` by a seeded hash of the patient id
(``val_fraction`` of patients, default 10 %).

**Views.** ``frontal_only=True`` (default) keeps frontal images (view = the ``AP/PA`` column,
or ``FRONTAL`` for the frontal images whose ``AP/PA`` says LL/RL or is blank: kept, not lateral);
with ``frontal_only=False`` laterals are kept with view ``LATERAL``. ``views=("PA",)`` filters
further.

**Label values.** The CheXpert labeler writes 1 (positive), 0 (negative), -1 (uncertain: the
report hedges, e.g. "may represent atelectasis") and blank (the report does not mention the
finding). Two policies decide what reaches the cache:

* ``uncertain`` (for -1): ``"ignore"`` (default; -1 -> NaN, the label is masked out of the loss
  and of the metrics for that image: "U-Ignore" of the CheXpert paper), ``"zeros"``
  (U-Zeros), ``"ones"`` (U-Ones). A dict ``{label: policy}`` sets it per canonical label
  (others use ``"ignore"``), e.g. U-Ones for Atelectasis and Edema as the paper recommends.
* ``blank`` (not mentioned): ``"zeros"`` (default) or ``"nan"``. We treat "not mentioned" as
  negative because that is what it almost always means in a radiology report (a reader lists
  what is there), because the CheXpert authors trained that way, and because NIH's and
  MIMIC's labels mean the same (a finding that is not mined is negative there too), so
  prevalences stay comparable across sites. torchxrayvision instead keeps blanks as NaN;
  ``blank="nan"`` reproduces that (and then most labels are known for few images). A label
  the data set does not define at all (e.g. Hernia) is NaN whatever the policy.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from cxrlab.data.readers._base import (DataLayoutError, check_choice, clean_upper, find_file,
                                       finish_manifest, normalise_views, parse_age, parse_sex,
                                       patient_split, read_table, require_root)
from cxrlab.data.readers._image import load_raster
from cxrlab.errors import UsageError
from cxrlab.labels import LABEL_MAP

NAME = "chexpert"
HAS_LESION_MASKS = False
RAW_LABELS = tuple(LABEL_MAP["chexpert"])
TABLE_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA") + RAW_LABELS
UNCERTAIN_POLICIES = ("ignore", "zeros", "ones")
BLANK_POLICIES = ("zeros", "nan")
FOLDERS = ("CheXpert-v1.0-small", "CheXpert-v1.0")


def apply_label_policies(raw: pd.DataFrame, label_map: dict[str, str], uncertain="ignore",
                         blank: str = "zeros") -> pd.DataFrame:
    """Raw CheXpert-labeler columns (1 / 0 / -1 / blank) -> canonical float columns (1/0/NaN).

    Used by the CheXpert and the MIMIC-CXR readers (MIMIC's labels come from the same labeler).
    """
    check_choice("blank", blank, BLANK_POLICIES)
    canon = list(label_map.values())
    if isinstance(uncertain, str):
        check_choice("uncertain", uncertain, UNCERTAIN_POLICIES)
        per_label = {c: uncertain for c in canon}
    elif isinstance(uncertain, dict):
        unknown = sorted(set(uncertain) - set(canon))
        if unknown:
            raise UsageError(f"uncertain policy given for unknown label(s) {unknown}; "
                             f"labels are {canon}")
        for v in uncertain.values():
            check_choice("uncertain", v, UNCERTAIN_POLICIES)
        per_label = {c: uncertain.get(c, "ignore") for c in canon}
    else:
        raise UsageError(f"uncertain must be one of {list(UNCERTAIN_POLICIES)} or a dict "
                         f"label -> policy, got {uncertain!r}")
    out = {}
    for raw_name, label in label_map.items():
        v = pd.to_numeric(raw[raw_name], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isnan(v) & ~np.isin(v, (1.0, 0.0, -1.0))
        if bad.any():
            raise DataLayoutError(f"column {raw_name!r} holds values other than 1, 0, -1 or "
                                  f"blank (e.g. {v[bad][:3].tolist()})")
        if blank == "zeros":
            v = np.where(np.isnan(v), 0.0, v)
        v = np.where(v == -1, {"ignore": np.nan, "zeros": 0.0, "ones": 1.0}[per_label[label]], v)
        out[label] = v.astype(np.float32)
    return pd.DataFrame(out, index=raw.index)


def parse_table(table: pd.DataFrame, *, uncertain="ignore", blank: str = "zeros",
                frontal_only: bool = True, domain: str = NAME) -> pd.DataFrame:
    """Rows of ``train.csv`` / ``valid.csv`` as manifest columns (no split; ``path`` is the
    CSV's own ``Path``). Shared with :func:`cxrlab.data.metadata.load_shipped_metadata`."""
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise DataLayoutError(f"chexpert: table lacks column(s) {missing}")
    frontal = (clean_upper(table["Frontal/Lateral"]) == "FRONTAL").to_numpy()
    if frontal_only:
        table = table[frontal]
        frontal = frontal[frontal]
    table = table.reset_index(drop=True)
    path = table["Path"].astype(str).str.strip()
    # .../patient00001/study1/view1_frontal.jpg -> image id "patient00001/study1/view1_frontal"
    tails = [p.rsplit("/", 3)[-3:] for p in path.tolist()]
    bad = [p for p, t in zip(path.tolist(), tails)
           if len(t) != 3 or not t[0].startswith("patient") or not t[1].startswith("study")]
    if bad:
        raise DataLayoutError(f"chexpert: Path values not of the form "
                              f".../patientNNNNN/studyN/viewN_frontal.jpg, e.g. {bad[:3]}")
    patient = pd.Series([t[0] for t in tails])
    image_id = pd.Series([f"{t[0]}/{t[1]}/{t[2].rsplit('.', 1)[0]}" for t in tails])
    ap_pa = clean_upper(table["AP/PA"])
    out = pd.DataFrame({
        "image_id": image_id.to_numpy(),
        "patient_id": patient.to_numpy(),
        "domain": domain,
        "age": parse_age(table["Age"]).to_numpy(),
        "sex": parse_sex(table["Sex"]).to_numpy(),
        # a frontal image whose AP/PA says LL/RL (or nothing) is still frontal: "FRONTAL", so
        # that no lateral filter (LL/RL are lateral names elsewhere) drops it
        "view": np.where(frontal, np.where(ap_pa.isin(["AP", "PA"]).to_numpy(),
                                           ap_pa.to_numpy(dtype=object), "FRONTAL"), "LATERAL"),
        "path": path.to_numpy(),
    })
    labels = apply_label_policies(table, LABEL_MAP["chexpert"], uncertain, blank)
    return pd.concat([out, labels.reset_index(drop=True)], axis=1)


def _dataset_folder(root: Path) -> Path:
    for name in FOLDERS:
        if (root / name / "train.csv").is_file() or (root / name / "valid.csv").is_file():
            return root / name
    if (root / "train.csv").is_file() or (root / "valid.csv").is_file():
        return root
    find_file(root, [f"{n}/train.csv" for n in FOLDERS] + ["train.csv"], NAME,
              "the label table train.csv")
    raise AssertionError("unreachable")


def _relative_paths(csv_paths: pd.Series, folder: Path, root: Path) -> list[str]:
    """The CSV's Path ('CheXpert-v1.0-small/train/...') relative to ``root``."""
    prefix = PurePosixPath(folder.relative_to(root)) if folder != root else PurePosixPath("")
    out = []
    for p in csv_paths:
        parts = PurePosixPath(p).parts
        if parts and re.match(r"CheXpert-v1\.0", parts[0]):
            parts = parts[1:]
        out.append(str(prefix.joinpath(*parts)))
    return out


def read_manifest(root, *, uncertain="ignore", blank: str = "zeros", frontal_only: bool = True,
                  views=None, val_fraction: float = 0.1, seed: int = 0,
                  domain: str = NAME) -> pd.DataFrame:
    """One row per image of train.csv (-> train/val) and valid.csv (-> test)."""
    root = require_root(root, NAME)
    views = normalise_views(views)
    check_choice("blank", blank, BLANK_POLICIES)
    folder = _dataset_folder(root)
    parts = []
    for csv_name, split in (("train.csv", None), ("valid.csv", "test")):
        csv = find_file(folder, (csv_name,), NAME, f"the label table {csv_name}")
        df = parse_table(read_table(csv, TABLE_COLUMNS, NAME), uncertain=uncertain, blank=blank,
                         frontal_only=frontal_only, domain=domain)
        df["split"] = (patient_split(df["patient_id"], val_fraction=val_fraction, seed=seed)
                       if split is None else split)
        parts.append(df)
    df = pd.concat(parts, ignore_index=True)
    df["path"] = _relative_paths(df["path"], folder, root)
    if views is not None:
        df = df[df["view"].isin(views)].reset_index(drop=True)
    return finish_manifest(df, NAME)


def load_image(root, row, size_hint: int | None = None) -> np.ndarray:
    """The JPEG as uint8 [H, W] (decoded at reduced scale when ``size_hint`` allows)."""
    return load_raster(Path(root) / row["path"], draft_size=size_hint)
