#!/usr/bin/env python
"""Download the parts of MIMIC-CXR-JPG the course uses (PhysioNet, credentialed access).

    export PHYSIONET_USER=your_physionet_login     # the password is asked for (or PHYSIONET_PASSWORD)
    python data_download/mimic.py --out /data/mimic-cxr-jpg                 # tables + frontal JPGs
    python data_download/mimic.py --out /data/mimic-cxr-jpg --tables-only   # the CSVs only
    python data_download/mimic.py --out /data/mimic-cxr-jpg --max-patients 2000 --split test
    python data_download/mimic.py --out /data/mimic-cxr-jpg --verify-only

What it fetches from https://physionet.org/files/mimic-cxr-jpg/2.1.0/ :

1. ``SHA256SUMS.txt`` (PhysioNet's checksum list of the release), then the tables
   ``mimic-cxr-2.0.0-{metadata,chexpert,negbio,split}.csv.gz`` and
   ``mimic-cxr-2.1.0-test-set-labeled.csv``, each verified against it;
2. the JPEGs of the *frontal* images (``ViewPosition`` PA or AP in the metadata; lateral views
   are not used by the course), optionally only some patients (``--max-patients``, chosen in a
   fixed order so that the same command always means the same images) or splits (``--split``),
   each verified against its SHA-256 and written under ``files/pXX/pSUBJECT/sSTUDY/``.

Everything resumes: a finished file is skipped (only files that passed their checksum get
their final name), a half-downloaded one continues. The full frontal set is about 240,000
images (several hundred GB); start with ``--max-patients``.

Without credentials the script prints the steps to get access and stops. Exit status: 0
complete, 1 incomplete, 2 a download failed / no access.
"""
from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from cxrlab.data.download import (PHYSIONET_PASSWORD_ENV, PHYSIONET_USER_ENV, DownloadError, Expect,
                             NoNetworkError, check_layout, download_file, fetch_checksum_list,
                             format_steps, physionet_credentials, report_completeness)
from cxrlab.errors import CxrlabError
from cxrlab.progress import progress

VERSION = "2.1.0"
PROJECT = "https://physionet.org/content/mimic-cxr-jpg/"
BASE_URL = f"https://physionet.org/files/mimic-cxr-jpg/{VERSION}/"
TABLES = ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-chexpert.csv.gz",
          "mimic-cxr-2.0.0-negbio.csv.gz", "mimic-cxr-2.0.0-split.csv.gz",
          "mimic-cxr-2.1.0-test-set-labeled.csv")
FRONTAL = ("PA", "AP")

ACCESS_STEPS = (
    "Create a PhysioNet account: https://physionet.org/register/",
    "Apply for credentialed access (identity and a reference): "
    "https://physionet.org/settings/credentialing/",
    "Complete the required training 'CITI Data or Specimens Only Research' and upload the "
    "certificate: https://physionet.org/settings/training/",
    f"Sign the data use agreement on the project page: {PROJECT}{VERSION}/ (bottom of the page, "
    "'Files' section)",
    f"Then run:  export {PHYSIONET_USER_ENV}=<your login>; "
    "python data_download/mimic.py --out /data/mimic-cxr-jpg   "
    f"(the password is asked for, or set {PHYSIONET_PASSWORD_ENV})",
    "Alternative with wget (same files): wget -r -N -c -np -nH --cut-dirs=3 --user <login> "
    f"--ask-password {BASE_URL}mimic-cxr-2.0.0-metadata.csv.gz  (and so on)",
)


def image_path(subject_id, study_id, dicom_id) -> str:
    """The release's relative path of one JPEG: files/p10/p10000032/s50414267/<dicom_id>.jpg."""
    sid = str(int(subject_id))
    return f"files/p{sid[:2]}/p{sid}/s{int(study_id)}/{dicom_id}.jpg"


def select_images(out: Path, views=FRONTAL, splits=None, max_patients: int | None = None) -> list[str]:
    """Relative paths of the wanted JPEGs, from the downloaded metadata and split tables."""
    import pandas as pd

    meta = pd.read_csv(out / "mimic-cxr-2.0.0-metadata.csv.gz",
                       usecols=["dicom_id", "subject_id", "study_id", "ViewPosition"])
    meta = meta[meta["ViewPosition"].astype(str).str.upper().isin(views)]
    if splits:
        sp = pd.read_csv(out / "mimic-cxr-2.0.0-split.csv.gz", usecols=["dicom_id", "split"])
        meta = meta.merge(sp, on="dicom_id", how="inner")
        meta = meta[meta["split"].isin(splits)]
    if max_patients is not None:
        keep = sorted(meta["subject_id"].unique())[:max_patients]
        meta = meta[meta["subject_id"].isin(keep)]
    meta = meta.sort_values(["subject_id", "study_id", "dicom_id"])
    return [image_path(a, b, c) for a, b, c in
            zip(meta["subject_id"], meta["study_id"], meta["dicom_id"])]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the release (created)")
    p.add_argument("--tables-only", action="store_true", help="only the CSV tables")
    p.add_argument("--split", default=None,
                   help="only these official splits, e.g. 'test' or 'train,validate'")
    p.add_argument("--max-patients", type=int, default=None,
                   help="only the first N patients (by subject_id) with frontal images")
    p.add_argument("--views", default="PA,AP", help="ViewPosition values to fetch (default PA,AP)")
    p.add_argument("--workers", type=int, default=4, help="parallel downloads")
    p.add_argument("--verify-existing", action="store_true",
                   help="re-hash JPEGs already on disk (slow; by default a file with its final "
                        "name is trusted: it was only renamed after passing its checksum)")
    p.add_argument("--verify-only", action="store_true", help="only check the folder")
    p.add_argument("--base-url", default=BASE_URL, help=argparse.SUPPRESS)
    p.add_argument("--retries", type=int, default=5)
    p.add_argument("--allow-unverified", action="store_true",
                   help="also fetch tables that SHA256SUMS.txt does not list (unverified)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out).expanduser()
    views = tuple(v.strip().upper() for v in args.views.split(",") if v.strip())
    splits = [s.strip() for s in args.split.split(",")] if args.split else None
    base = args.base_url.rstrip("/") + "/"
    if not args.verify_only:
        auth = physionet_credentials()
        if auth is None:
            print(format_steps("mimic: MIMIC-CXR-JPG needs a credentialed PhysioNet account. "
                               f"No credentials found (${PHYSIONET_USER_ENV} is not set). Steps:",
                               ACCESS_STEPS), file=sys.stderr)
            return 2
        hint = (f"If access is denied: sign the data use agreement at {PROJECT}{VERSION}/ "
                f"and check ${PHYSIONET_USER_ENV} / your password.")
        kw = dict(auth=auth, retries=args.retries, manual_hint=hint)
        try:
            sums = fetch_checksum_list(base + "SHA256SUMS.txt", out / "SHA256SUMS.txt", **kw)
            unlisted = [name for name in TABLES if name not in sums]
            if unlisted and not args.allow_unverified:
                print(f"mimic: {len(unlisted)} tables are not in SHA256SUMS.txt ({', '.join(unlisted)}) "
                      "and cannot be verified; refusing to fetch them. Pass --allow-unverified to "
                      "fetch them anyway (their integrity is then not checked)", file=sys.stderr)
                return 2
            for name in TABLES:
                if name in unlisted:
                    print(f"mimic: WARNING: {name} is not in SHA256SUMS.txt; fetched unverified "
                          "(--allow-unverified)", file=sys.stderr)
                download_file(base + name, out / name, sha256=sums.get(name), **kw)
            print(f"mimic: tables verified in {out}")
            if not args.tables_only:
                wanted = select_images(out, views, splits, args.max_patients)
                todo = [rel for rel in wanted
                        if args.verify_existing or not (out / rel).exists()]
                print(f"mimic: {len(wanted)} frontal images selected, {len(todo)} to fetch")
                missing_sum = [rel for rel in todo if rel not in sums]
                if missing_sum:
                    print(f"mimic: {len(missing_sum)} selected files are not in SHA256SUMS.txt "
                          f"(e.g. {missing_sum[0]}); refusing to fetch unverifiable files",
                          file=sys.stderr)
                    return 2
                failures = _fetch_all(base, out, todo, sums, kw, args.workers)
                if failures:
                    print(f"mimic: {len(failures)} downloads failed, e.g.\n  {failures[0]}\n"
                          "Run the same command again to resume.", file=sys.stderr)
                    return 2
        except CxrlabError as e:  # DownloadError, or credentials refused over http://
            print(f"mimic: {e}", file=sys.stderr)
            return 2
    return verify(out, views, splits, args.max_patients, tables_only=args.tables_only)


def _fetch_all(base, out, rels, sums, kw, workers) -> list[str]:
    failures: list[str] = []

    def one(rel):
        download_file(base + rel, out / rel, sha256=sums[rel], desc=Path(rel).name, **kw)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(one, rel): rel for rel in rels}
        for fut in progress(as_completed(futures), total=len(futures), desc="mimic images",
                            unit="img"):
            try:
                fut.result()
            except DownloadError as e:
                if isinstance(e, NoNetworkError) or "access denied" in str(e):
                    for f in futures:
                        f.cancel()
                    raise
                failures.append(f"{futures[fut]}: {e}")
    return failures


def verify(out: Path, views=FRONTAL, splits=None, max_patients=None, tables_only=False) -> int:
    """Print what is missing from ``out``; 0 when complete."""
    problems = check_layout(out, [Expect(n, f"table {n}") for n in TABLES[:4]])
    if not problems and not tables_only:
        wanted = select_images(out, views, splits, max_patients)
        missing = [rel for rel in wanted if not (out / rel).exists()]
        print(f"mimic: {len(wanted) - len(missing)} of {len(wanted)} selected images present")
        if missing:
            problems.append(f"{len(missing)} JPEGs, e.g. {out / missing[0]}")
    return report_completeness("mimic", out, problems)


if __name__ == "__main__":
    sys.exit(main())
