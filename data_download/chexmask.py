#!/usr/bin/env python
"""Download CheXmask lung masks (PhysioNet) for NIH, CheXpert and MIMIC, and add them to caches.

    python data_download/chexmask.py --out /data/chexmask                      # all three CSVs
    python data_download/chexmask.py --out /data/chexmask --datasets nih
    python data_download/chexmask.py --out /data/chexmask --verify-only
    # then, for each prepared cache:
    python -c "from cxrlab.data.chexmask import add_lung_masks; \\
               print(add_lung_masks('CACHE_DIR', '/data/chexmask/OriginalResolution/ChestX-Ray8.csv', 'nih'))"

Source: https://physionet.org/content/chexmask-cxr-segmentation-data/ (version 1.0.0). The
script reads PhysioNet's ``SHA256SUMS.txt`` of the release, fetches the
``OriginalResolution`` CSV of each requested data set (the masks at each image's own size,
which the cache's letterbox aligns with the cached image; the ``Preprocessed`` 1024 x 1024
versions would not line up) and verifies its SHA-256. Downloads resume after interruption.

PhysioNet decides who may download: if the project asks you to sign in or to accept its
licence, the script says so, lists the steps and stops; credentials are read from
``$PHYSIONET_USER`` (password asked for, or ``$PHYSIONET_PASSWORD``). CheXmask holds masks
only: the images still come from each data set's own source (see README.md here).

Exit status: 0 complete, 1 incomplete, 2 a download failed / no access.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path, PurePosixPath

from cxrlab.data.download import (PHYSIONET_USER_ENV, download_file, fetch_checksum_list,
                             format_steps, physionet_credentials)
from cxrlab.errors import CxrlabError

VERSION = "1.0.0"
PROJECT = f"https://physionet.org/content/chexmask-cxr-segmentation-data/{VERSION}/"
BASE_URL = f"https://physionet.org/files/chexmask-cxr-segmentation-data/{VERSION}/"
#: data set -> stem of its CheXmask CSV
STEMS = {"nih": "ChestX-Ray8", "chexpert": "CheXpert", "mimic": "MIMIC-CXR-JPG"}
REQUIRED_COLUMNS = ("Left Lung", "Right Lung", "Height", "Width", "Dice RCA (Mean)")

STEPS = (
    f"Open {PROJECT} and sign in to PhysioNet (create an account at "
    "https://physionet.org/register/ if needed)",
    "Read the 'Access' section: accept the licence / sign the data use agreement it asks for; "
    "if it requires credentialed access or training, complete those first "
    "(https://physionet.org/settings/credentialing/)",
    f"export {PHYSIONET_USER_ENV}=<your login>   (the password is asked for)",
    "python data_download/chexmask.py --out /data/chexmask",
    "Or download OriginalResolution/<data set>.csv by hand from the project's 'Files' section "
    "into /data/chexmask/OriginalResolution/ and run this script with --verify-only",
)


def pick_file(sums: dict[str, str], stem: str) -> str | None:
    """The path in SHA256SUMS.txt of ``OriginalResolution/<stem>.csv`` (or ``.csv.gz``)."""
    for path in sums:
        p = PurePosixPath(path)
        if "OriginalResolution" in p.parts and p.name.lower() in (f"{stem.lower()}.csv",
                                                                   f"{stem.lower()}.csv.gz"):
            return path
    return None


def local_file(out: Path, stem: str) -> Path | None:
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        hits = sorted(out.glob(f"**/OriginalResolution/{name}"))
        if hits:
            return hits[0]
    return None


def verify(out: Path, datasets) -> int:
    import pandas as pd

    problems = []
    for ds in datasets:
        f = local_file(out, STEMS[ds])
        if f is None:
            problems.append(f"{ds}: {out / 'OriginalResolution' / (STEMS[ds] + '.csv')}")
            continue
        cols = [c.strip() for c in pd.read_csv(f, nrows=0).columns]
        lacking = [c for c in REQUIRED_COLUMNS if c not in cols]
        if lacking:
            problems.append(f"{ds}: {f} lacks the CheXmask column(s) {lacking}")
        else:
            print(f"chexmask: {ds}: {f}")
    if problems:
        print(f"chexmask: {out} is not complete yet. Missing:")
        for p in problems:
            print(f"  - {p}")
        return 1
    print("chexmask: complete. Add the masks to a prepared cache with "
          "cxrlab.data.chexmask.add_lung_masks(CACHE_DIR, CSV, DATASET)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the CSVs (created)")
    p.add_argument("--datasets", default="nih,chexpert,mimic",
                   help="which CSVs: any of nih, chexpert, mimic (comma-separated)")
    p.add_argument("--verify-only", action="store_true")
    p.add_argument("--base-url", default=BASE_URL, help=argparse.SUPPRESS)
    p.add_argument("--retries", type=int, default=5)
    args = p.parse_args(argv)
    out = Path(args.out).expanduser()
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = sorted(set(datasets) - set(STEMS))
    if unknown:
        print(f"chexmask: unknown data set(s) {unknown}; choose from {list(STEMS)}", file=sys.stderr)
        return 2
    if not args.verify_only:
        base = args.base_url.rstrip("/") + "/"
        hint = format_steps("Steps to get access:", STEPS)
        kw = dict(auth=physionet_credentials(), retries=args.retries, manual_hint=hint)
        try:
            sums = fetch_checksum_list(base + "SHA256SUMS.txt", out / "SHA256SUMS.txt", **kw)
            for ds in datasets:
                rel = pick_file(sums, STEMS[ds])
                if rel is None:
                    print(f"chexmask: OriginalResolution/{STEMS[ds]}.csv is not listed in "
                          f"{base}SHA256SUMS.txt; the release layout changed: download it by "
                          f"hand from {PROJECT}", file=sys.stderr)
                    return 2
                download_file(base + rel, out / rel, sha256=sums[rel], desc=PurePosixPath(rel).name,
                              **kw)
        except CxrlabError as e:  # DownloadError, or credentials refused over http://
            print(f"chexmask: {e}", file=sys.stderr)
            return 2
    return verify(out, datasets)


if __name__ == "__main__":
    sys.exit(main())
