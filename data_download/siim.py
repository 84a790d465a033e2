#!/usr/bin/env python
"""Get SIIM-ACR Pneumothorax Segmentation (Kaggle; account and terms) and check its layout.

The competition's own training images were served from a Google Cloud DICOM store that is no
longer open, so the course uses the community copy on Kaggle that preserves the original
layout. This script prints the steps, runs your Kaggle client if asked, unpacks the archive
safely and verifies the result:

    python data_download/siim.py --root /data/siim                     # steps + check
    python data_download/siim.py --root /data/siim --kaggle            # kaggle client + unpack
    python data_download/siim.py --root /data/siim --archive ~/siim.zip

Expected result (what ``cxrlab data prepare siim --root ROOT`` reads)::

    ROOT/train-rle.csv                        ImageId, EncodedPixels ("-1" = no pneumothorax)
    ROOT/dicom-images-train/<study>/<series>/<ImageId>.dcm

Some copies nest these one folder down (``pneumothorax/`` or ``siim/``); the check then says
which folder to pass as ``--root``. Exit status: 0 complete, 1 incomplete, 2 a step failed.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from cxrlab.data.download import archive_or_kaggle_main, report_completeness

KAGGLE_DATASET = "jesperdramsch/siim-acr-pneumothorax-segmentation-data"
RLE_NAMES = ("train-rle.csv", "stage_2_train.csv")

STEPS = (
    "Create a Kaggle account (https://www.kaggle.com) and an API token: Settings -> API -> "
    "Create New Token, saved as ~/.kaggle/kaggle.json",
    "pip install kaggle   (the official Kaggle client)",
    f"Open https://www.kaggle.com/datasets/{KAGGLE_DATASET} and accept its terms if asked "
    "(the images are NIH ChestX-ray14 images: NIH's citation terms apply)",
    "python data_download/siim.py --root ROOT --kaggle   (or download the zip in a browser and "
    "pass it with --archive)",
    "Then: cxrlab data prepare siim --root ROOT --out CACHE_DIR",
)


def find_dataset_folder(root: Path) -> Path | None:
    """The folder holding the RLE table: ROOT, or one / two levels below it."""
    for depth in ("", "*/", "*/*/"):
        for name in RLE_NAMES:
            hits = sorted(root.glob(depth + name))
            if hits:
                return hits[0].parent
    return None


def verify(root: Path) -> int:
    import pandas as pd

    folder = find_dataset_folder(root)
    if folder is None:
        print(f"siim: no {' or '.join(RLE_NAMES)} under {root} (searched two folders deep)")
        return 1
    if folder != root:
        print(f"siim: the data set is in {folder}; pass that folder as --root to "
              "`cxrlab data prepare siim`")
    rle = next(folder / n for n in RLE_NAMES if (folder / n).is_file())
    table = pd.read_csv(rle)
    table.columns = [c.strip() for c in table.columns]   # the file says " EncodedPixels"
    ids = set(table["ImageId"].astype(str).str.strip())
    dicoms = set()
    for dirpath, _, files in os.walk(folder):
        dicoms |= {f[:-4] for f in files if f.endswith(".dcm")}
    missing = sorted(ids - dicoms)
    positives = table.loc[table["EncodedPixels"].astype(str).str.strip() != "-1", "ImageId"].nunique()
    print(f"siim: {len(ids)} labelled images in {rle.name} ({positives} with pneumothorax), "
          f"{len(ids) - len(missing)} of them have their DICOM under {folder}")
    problems = [f"{len(missing)} DICOMs, e.g. {missing[0]}.dcm (expected under "
                f"{folder / 'dicom-images-train'})"] if missing else []
    return report_completeness("siim", folder, problems)


def main(argv: list[str] | None = None) -> int:
    return archive_or_kaggle_main("siim", __doc__.split("\n\n")[0], KAGGLE_DATASET,
                                  "SIIM-ACR comes from Kaggle (account and API token).", STEPS, find_dataset_folder, verify, argv)


if __name__ == "__main__":
    sys.exit(main())
