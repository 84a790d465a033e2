#!/usr/bin/env python
"""Get CheXpert (Stanford; registration and a research-use agreement) and check its layout.

CheXpert cannot be fetched anonymously: each user registers and accepts the Stanford CheXpert
research use agreement, then receives a personal download link. This script prints those
steps, unpacks the archive you downloaded (safely, resumably) and verifies the result:

    python data_download/chexpert.py --root /data/chexpert                          # steps + check
    python data_download/chexpert.py --root /data/chexpert --archive ~/CheXpert-v1.0-small.zip
    python data_download/chexpert.py --root /data/chexpert --kaggle                 # mirror, see below

Expected result (what ``cxrlab data prepare chexpert --root ROOT`` reads)::

    ROOT/CheXpert-v1.0-small/train.csv   (or CheXpert-v1.0/..., or train.csv directly in ROOT,
    ROOT/CheXpert-v1.0-small/valid.csv    as the Kaggle mirror unpacks)
    ROOT/CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg ...

The check reads ``train.csv`` / ``valid.csv`` and reports every listed image that is missing.
Exit status: 0 complete, 1 incomplete, 2 a step failed.
"""
from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

from cxrlab.data.download import archive_or_kaggle_main, report_completeness

FOLDERS = ("CheXpert-v1.0-small", "CheXpert-v1.0")
KAGGLE_DATASET = "ashery/chexpert"   # community mirror of CheXpert-v1.0-small

STEPS = (
    "Open the CheXpert page of the Stanford AIMI shared datasets: "
    "https://stanfordaimi.azurewebsites.net/datasets/8cbd9ed4-2eb9-4565-affc-111cf4f7ebe2 "
    "(linked from https://stanfordmlgroup.github.io/competitions/chexpert/)",
    "Create an account / sign in and accept the Stanford University School of Medicine "
    "CheXpert Dataset Research Use Agreement",
    "Use the download link the site gives you (an Azure link; the site suggests `azcopy copy "
    "\"LINK\" . --recursive=true`). The course needs CheXpert-v1.0-small (about 11 GB; the "
    "full-resolution CheXpert-v1.0 works too, just slower to prepare)",
    "Unpack it into ROOT, or let this script do it: python data_download/chexpert.py --root "
    "ROOT --archive PATH/TO/CheXpert-v1.0-small.zip",
    "Alternative: the Kaggle mirror of CheXpert-v1.0-small (same research-use agreement applies):"
    " set up a Kaggle API token, then python data_download/chexpert.py --root ROOT --kaggle",
    "Then: cxrlab data prepare chexpert --root ROOT --out CACHE_DIR",
)


def find_dataset_folder(root: Path) -> Path | None:
    """The folder holding train.csv: ROOT/CheXpert-v1.0-small, ROOT/CheXpert-v1.0 or ROOT."""
    for name in FOLDERS:
        if (root / name / "train.csv").is_file():
            return root / name
    if (root / "train.csv").is_file():
        return root
    return None


def relative_image_path(csv_path: str) -> str:
    """The CSV's ``Path`` ("CheXpert-v1.0-small/train/patient1/...") relative to the folder."""
    parts = PurePosixPath(str(csv_path).strip()).parts
    if parts and parts[0].startswith("CheXpert-v1.0"):
        parts = parts[1:]
    return str(PurePosixPath(*parts))


def verify(root: Path) -> int:
    import pandas as pd

    folder = find_dataset_folder(root)
    if folder is None:
        print(f"chexpert: no train.csv under {root} (looked in "
              f"{', '.join(str(root / f) for f in FOLDERS)} and {root})")
        return 1
    problems = []
    n_total = n_missing = 0
    for name in ("train.csv", "valid.csv"):
        csv = folder / name
        if not csv.is_file():
            problems.append(f"table {csv}")
            continue
        paths = pd.read_csv(csv, usecols=["Path"])["Path"].map(relative_image_path)
        missing = [p for p in paths if not (folder / p).is_file()]
        n_total += len(paths)
        n_missing += len(missing)
        if missing:
            problems.append(f"{len(missing)} of {len(paths)} images listed in {name}, e.g. "
                            f"{folder / missing[0]}")
    print(f"chexpert: {n_total - n_missing} of {n_total} listed images present in {folder}")
    return report_completeness("chexpert", root, problems)


def main(argv: list[str] | None = None) -> int:
    return archive_or_kaggle_main("chexpert", __doc__.split("\n\n")[0], KAGGLE_DATASET,
                                  "CheXpert needs a (free) registration.", STEPS, find_dataset_folder, verify, argv)


if __name__ == "__main__":
    sys.exit(main())
