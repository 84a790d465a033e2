"""Shared pieces of the real-data readers: clear errors, table loading, seeded patient splits.

Every reader returns a *manifest*: one row per image, in the shape of a cache manifest
(``image_id, patient_id, split, domain, age, sex, view, path`` and one float column per
canonical label in :data:`cxrlab.labels.ALL_LABELS`: 1 positive, 0 negative, NaN missing).
A label that the data set does not define is NaN in every row, never 0. Columns whose name
starts with ``_`` are private to the reader (e.g. SIIM's run-length strings) and are dropped
before a manifest is written into a cache.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from cxrlab.data.cache import check_patient_splits
from cxrlab.errors import CxrlabError, MissingInputError, NotAFolderError, UsageError
from cxrlab.labels import ALL_LABELS, defined_labels

MANIFEST_COLUMNS = ("image_id", "patient_id", "split", "domain", "age", "sex", "view", "path")
FRONTAL_VIEWS = ("PA", "AP")

#: where the download instructions live (written by the data_download helper scripts)
DOWNLOAD_HINT = "see data_download/README.md in the course repository for how to get it"


class DataLayoutError(CxrlabError, ValueError):
    """A data set's files are there but do not look like the official release."""


def require_root(root: str | os.PathLike, dataset: str) -> Path:
    """The data set's root folder as a Path, or a FileNotFoundError that says what to do."""
    root = Path(root).expanduser()
    if not root.exists():
        raise MissingInputError(
            f"{dataset}: the data folder {root} does not exist; pass --root the folder that "
            f"holds the data set as downloaded ({DOWNLOAD_HINT})")
    if not root.is_dir():
        raise NotAFolderError(f"{dataset}: --root {root} is a file; pass the folder that "
                                 "holds the data set")
    return root


def find_file(root: Path, candidates: Sequence[str], dataset: str, what: str) -> Path:
    """The first of ``candidates`` (paths relative to ``root``, globs allowed) that exists."""
    for cand in candidates:
        if any(ch in cand for ch in "*?["):
            hits = sorted(root.glob(cand))
            if hits:
                return hits[0]
        elif (root / cand).is_file():
            return root / cand
    raise MissingInputError(
        f"{dataset}: {what} not found; expected {' or '.join(repr(c) for c in candidates)} "
        f"under {root}. Download the official release ({DOWNLOAD_HINT}) and pass its top "
        "folder as --root")


def read_table(path: Path, required: Iterable[str], dataset: str, **kwargs) -> pd.DataFrame:
    """Read a CSV (gzipped or not), strip whitespace from column names, check required columns."""
    try:
        df = pd.read_csv(path, low_memory=False, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError,
            EOFError) as e:
        raise DataLayoutError(f"{dataset}: cannot parse {path} as CSV ({e}); the file may be "
                              "truncated: download it again") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataLayoutError(
            f"{dataset}: {path.name} lacks the column(s) {missing} "
            f"(it has {list(df.columns)[:20]}); is it the official file of the right version?")
    return df


def check_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise UsageError(f"unknown {name}={value!r}; choose one of {list(choices)}")


def normalise_views(views, known: Sequence[str] | None = None) -> tuple[str, ...] | None:
    """``None`` (all views), a string ("PA" or "PA,AP") or a list -> upper-case tuple."""
    if views is None:
        return None
    if isinstance(views, str):
        views = [v for v in views.replace(";", ",").split(",")]
    out = tuple(str(v).strip().upper() for v in views if str(v).strip())
    if not out:
        raise UsageError("views is empty; pass None for all views or e.g. ('PA', 'AP')")
    if known is not None:
        unknown = sorted(set(out) - set(known))
        if unknown:
            raise UsageError(f"unknown view(s) {unknown}; this data set has {sorted(known)}")
    return out


def unit_hash(keys: Iterable, seed: int = 0) -> np.ndarray:
    """A number in [0, 1) per key, fixed by (seed, key) alone: same on every machine and run,
    independent of row order (unlike a shuffled permutation)."""
    out = []
    for k in keys:
        h = hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=8).digest()
        out.append(int.from_bytes(h, "little") / 2.0 ** 64)
    return np.asarray(out, dtype=np.float64)


def patient_split(patient_ids: pd.Series, val_fraction: float = 0.1, test_fraction: float = 0.0,
                  seed: int = 0) -> np.ndarray:
    """Assign every *patient* to train / val / test by a seeded hash of the patient id.

    All images of a patient share its split, so no patient leaks between splits. Fractions are
    of patients, not images.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UsageError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be "
                         "in [0, 1) and sum to less than 1")
    pids = patient_ids.astype(str)
    uniq = pd.unique(pids).tolist()
    u = unit_hash(uniq, seed)
    split = np.where(u < test_fraction, "test",
                     np.where(u < test_fraction + val_fraction, "val", "train"))
    lookup = dict(zip(uniq, split))
    return pids.map(lookup).to_numpy(dtype=object)


def map_unique(values: pd.Series, func) -> pd.Series:
    """Apply a Series -> Series function to the *distinct* values only (ages, sexes and views
    repeat a lot: 100x faster on the 223k-row CheXpert table). Missing stays missing."""
    codes, uniq = pd.factorize(pd.Series(values), use_na_sentinel=True)
    mapped = func(pd.Series(uniq, dtype=object)).to_numpy(dtype=object)
    out = np.empty(len(codes), dtype=object)
    out[:] = np.nan
    ok = codes >= 0
    out[ok] = mapped[codes[ok]]
    return pd.Series(out, index=getattr(values, "index", None))


def _parse_age(s: pd.Series) -> pd.Series:
    s = s.astype("string").str.strip().str.upper()
    num = pd.to_numeric(s.str.extract(r"^(\d+(?:\.\d+)?)", expand=False), errors="coerce")
    unit = s.str.extract(r"\d\s*([YMWD])$", expand=False)
    factor = unit.map({"Y": 1.0, "M": 1 / 12, "W": 1 / 52, "D": 1 / 365}).astype(float).fillna(1.0)
    return num.astype(float) * factor.to_numpy()


def parse_age(values: pd.Series) -> pd.Series:
    """Ages as float years; accepts 57, "057Y" (DICOM/old NIH), "6M"; implausible (>120) -> NaN."""
    values = pd.Series(values)
    if pd.api.types.is_numeric_dtype(values):
        age = values.astype(float)
    else:
        age = map_unique(values, _parse_age).astype(float)
    return age.where((age >= 0) & (age <= 120)).astype(float)


def _parse_sex(s: pd.Series) -> pd.Series:
    s = s.astype("string").str.strip().str.upper().str[:1]
    return s.where(s.isin(["M", "F"])).astype(object)


def parse_sex(values: pd.Series) -> pd.Series:
    """"M"/"F" (from M, F, Male, Female, any case); anything else (Unknown, O, blank) -> NaN."""
    return map_unique(values, _parse_sex)


def clean_upper(values: pd.Series, missing: str = "UNKNOWN") -> pd.Series:
    """Stripped upper-case strings (views), ``missing`` for blank / NaN."""
    def f(s):
        s = s.astype("string").str.strip().str.upper()
        return s.where(s != "", missing).astype(object)
    out = map_unique(values, f)
    return out.where(out.notna(), missing)


def empty_labels(n: int) -> pd.DataFrame:
    return pd.DataFrame(np.full((n, len(ALL_LABELS)), np.nan, dtype=np.float32),
                        columns=list(ALL_LABELS))


def finish_manifest(df: pd.DataFrame, dataset: str, check_splits: bool = True) -> pd.DataFrame:
    """Order the columns, fill labels the data set does not define with NaN, validate splits."""
    df = df.reset_index(drop=True)
    for col in MANIFEST_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    for col in ALL_LABELS:
        if col not in df.columns:
            df[col] = np.nan
    undefined = [c for c in ALL_LABELS if c not in defined_labels(dataset)]
    if undefined:
        df[undefined] = np.nan  # never a silent 0 for a label the data set does not define
    df[list(ALL_LABELS)] = df[list(ALL_LABELS)].astype(np.float32)
    for col in ("image_id", "patient_id", "domain", "path"):
        df[col] = df[col].astype(str)
    df["age"] = df["age"].astype(float)
    rest = [c for c in df.columns if c not in MANIFEST_COLUMNS and c not in ALL_LABELS]
    df = df[list(MANIFEST_COLUMNS) + list(ALL_LABELS) + rest]
    if df["image_id"].duplicated().any():
        dup = df.loc[df["image_id"].duplicated(), "image_id"].head(5).tolist()
        raise DataLayoutError(f"{dataset}: image ids appear twice in the tables (e.g. {dup})")
    if check_splits:
        check_patient_splits(df)
    return df
