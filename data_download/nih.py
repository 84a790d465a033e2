#!/usr/bin/env python
"""Download NIH ChestX-ray14 (public, about 42 GB) into the layout the cxrlab NIH reader expects.

    python data_download/nih.py --out /data/nih                 # all 12 archives (resumable)
    python data_download/nih.py --out /data/nih --only 1        # the first archive (4,999 images)
    python data_download/nih.py --out /data/nih --verify-only   # just check the folder

Result (``--out``)::

    images/00000001_000.png ...      112,120 PNGs, 1024 x 1024, 8-bit
    Data_Entry_2017_v2020.csv        labels and demographics
    BBox_List_2017.csv               984 boxes
    train_val_list.txt, test_list.txt  the official patient-wise split

What happens:

* The 12 archives come from the NIH Box links of the official ``batch_download_zips.py``. Each
  is fetched into ``--archives-dir`` (default ``OUT/archives``) as ``images_NNN.tar.gz.part``;
  an interrupted run resumes where it stopped (HTTP Range). Each finished archive is checked
  against the MD5 NIH publishes (FAQ_CHESTXRAY.pdf, question 7), unpacked safely into ``OUT``
  (a marker file records it, so a re-run skips it) and deleted unless ``--keep-archives``.
* ``Data_Entry_2017_v2020.csv`` and ``BBox_List_2017.csv``: the NIH Box folder offers no stable
  direct link for them, so when they are missing they are copied from the identical copies that
  the ``torchxrayvision`` package ships (a course dependency; no network needed).
* ``train_val_list.txt`` / ``test_list.txt`` have no direct link and no bundled copy: the
  script says where to download them by hand.

Without network access the script stops with a message saying where to put hand-downloaded
archives (they are then verified and unpacked). Exit status: 0 complete, 1 incomplete,
2 a download failed.
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import shutil
import sys
from pathlib import Path

from cxrlab.data.download import (DownloadError, Expect, UnsafeArchiveError, check_layout,
                                  count_matches, download_file, extract_tar, is_extracted,
                                  read_checksum_file, report_completeness)

#: the Box folder of the data set (metadata files, FAQ, README): download by hand from here
BOX_FOLDER = "https://nihcc.app.box.com/v/ChestXray-NIHCC"
#: Kaggle mirror with the same files (account + `kaggle` CLI needed)
KAGGLE_MIRROR = "https://www.kaggle.com/datasets/nih-chest-xrays/data"

#: (archive name, official direct link, MD5 from NIH's FAQ_CHESTXRAY.pdf Q07, size in bytes).
#: The sizes are the Content-Length the Box links announced when a third party measured them;
#: they only drive the progress bar and a warning: the MD5 decides.
ARCHIVES: tuple[tuple[str, str, str, int], ...] = (
    ("images_001.tar.gz", "https://nihcc.box.com/shared/static/vfk49d74nhbxq3nqjg0900w5nvkorp5c.gz",
     "fe8ed0a6961412fddcbb3603c11b3698", 2008470987),
    ("images_002.tar.gz", "https://nihcc.box.com/shared/static/i28rlmbvmfjbl8p2n3ril0pptcmcu9d1.gz",
     "ab07a2d7cbe6f65ddd97b4ed7bde10bf", 3952623504),
    ("images_003.tar.gz", "https://nihcc.box.com/shared/static/f1t00wrtdk94satdfb9olcolqx20z2jp.gz",
     "2301d03bde4c246388bad3876965d574", 3929234850),
    ("images_004.tar.gz", "https://nihcc.box.com/shared/static/0aowwzs5lhjrceb3qp67ahp0rd1l1etg.gz",
     "9f1b7f5aae01b13f4bc8e2c44a4b8ef6", 3838903983),
    ("images_005.tar.gz", "https://nihcc.box.com/shared/static/v5e3goj22zr6h8tzualxfsqlqaygfbsn.gz",
     "1861f3cd0ef7734df8104f2b0309023b", 3935496531),
    ("images_006.tar.gz", "https://nihcc.box.com/shared/static/asi7ikud9jwnkrnkj99jnpfkjdes7l6l.gz",
     "456b53a8b351afd92a35bc41444c58c8", 3986301172),
    ("images_007.tar.gz", "https://nihcc.box.com/shared/static/jn1b4mw4n6lnh74ovmcjb8y48h8xj07n.gz",
     "1075121ea20a137b87f290d6a4a5965e", 4016328426),
    ("images_008.tar.gz", "https://nihcc.box.com/shared/static/tvpxmn7qyrgl0w8wfh9kqfjskv6nmm1j.gz",
     "b61f34cec3aa69f295fbb593cbd9d443", 4018347353),
    ("images_009.tar.gz", "https://nihcc.box.com/shared/static/upyy3ml7qdumlgk2rfcvlb9k6gvqq2pj.gz",
     "442a3caa61ae9b64e61c561294d1e183", 4111327929),
    ("images_010.tar.gz", "https://nihcc.box.com/shared/static/l6nilvfa9cg3s28tqv1qc1olm3gnz54p.gz",
     "09ec81c4c31e32858ad8cf965c494b74", 4181556296),
    ("images_011.tar.gz", "https://nihcc.box.com/shared/static/hhq8fkdgvcari67vfhs7ppg2w6ni4jze.gz",
     "499aefc67207a5a97692424cf5dbeed5", 4187084020),
    ("images_012.tar.gz", "https://nihcc.box.com/shared/static/ioqwiy20ihqwyr8pf4c24eazhh281pbu.gz",
     "dc9fda1757c2de0032b63347a7d2895c", 2914187733),
)
N_IMAGES = 112_120

#: metadata file -> name of torchxrayvision's bundled gzip copy (None: download by hand)
METADATA = {
    "Data_Entry_2017_v2020.csv": "Data_Entry_2017_v2020.csv.gz",
    "BBox_List_2017.csv": "BBox_List_2017.csv.gz",
    "train_val_list.txt": None,
    "test_list.txt": None,
}


def expectations(n_archives: int = len(ARCHIVES)) -> list[Expect]:
    """What a finished ``--out`` folder holds (all 112,120 images when all archives are wanted)."""
    return [
        Expect("images/*.png", "NIH images (from images_NNN.tar.gz)",
               N_IMAGES if n_archives == len(ARCHIVES) else 1),
        Expect("Data_Entry_2017_v2020.csv", "label table Data_Entry_2017_v2020.csv"),
        Expect("train_val_list.txt", f"official split list train_val_list.txt ({BOX_FOLDER})"),
        Expect("test_list.txt", f"official split list test_list.txt ({BOX_FOLDER})"),
        Expect("BBox_List_2017.csv", "bounding boxes BBox_List_2017.csv"),
    ]


def parse_only(spec: str | None) -> list[int]:
    """"1,3,5-7" -> [1, 3, 5, 6, 7] (archive numbers, 1-based)."""
    if not spec:
        return list(range(1, len(ARCHIVES) + 1))
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise SystemExit(f"nih: --only takes archive numbers like '1,3,5-7', got {spec!r}")
        out.extend(range(a, b + 1))
    bad = [i for i in out if not 1 <= i <= len(ARCHIVES)]
    if bad:
        raise SystemExit(f"nih: archive number(s) {bad} do not exist; there are 1..{len(ARCHIVES)}")
    return sorted(set(out))


def bundled_metadata(name: str) -> Path | None:
    """torchxrayvision's bundled copy of a NIH metadata file, found without importing it."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / name
    return path if path.is_file() else None


def fetch_metadata(out: Path, log=print) -> None:
    for name, bundled in METADATA.items():
        target = out / name
        if target.exists():
            continue
        src = bundled_metadata(bundled) if bundled else None
        if src is not None:
            tmp = target.with_name(target.name + ".tmp")
            with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            tmp.replace(target)
            log(f"nih: {name}: copied from torchxrayvision's bundled copy ({src.name})")
        else:
            log(f"nih: {name} is missing: download it by hand from {BOX_FOLDER} "
                f"(or the Kaggle mirror {KAGGLE_MIRROR}) and put it at {target}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the data set (created)")
    p.add_argument("--only", default=None, help="archive numbers, e.g. '1' or '1,2,5-7'")
    p.add_argument("--archives-dir", default=None,
                   help="where the .tar.gz files go while downloading (default OUT/archives)")
    p.add_argument("--keep-archives", action="store_true",
                   help="keep each .tar.gz after unpacking it (default: delete, saves 42 GB)")
    p.add_argument("--checksums", default=None,
                   help="an md5sum-style file ('HEX  images_001.tar.gz' per line) overriding the "
                        "built-in MD5s (e.g. for a mirror)")
    p.add_argument("--mirror", default=None,
                   help="base URL of a mirror holding images_001.tar.gz ... (instead of NIH Box)")
    p.add_argument("--verify-only", action="store_true", help="only check the folder")
    p.add_argument("--retries", type=int, default=5)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a retry")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out).expanduser()
    numbers = parse_only(args.only)
    if not args.verify_only:
        out.mkdir(parents=True, exist_ok=True)
        archives_dir = Path(args.archives_dir).expanduser() if args.archives_dir else out / "archives"
        sums = read_checksum_file(args.checksums) if args.checksums else {}
        for i in numbers:
            name, url, md5, size = ARCHIVES[i - 1]
            archive = archives_dir / name
            if is_extracted(archive, out):
                print(f"nih: {name} already unpacked, skipping")
                continue
            if args.mirror:
                url = args.mirror.rstrip("/") + "/" + name
            md5 = sums.get(name, md5 if not args.checksums else None)
            if md5 is None:
                print(f"nih: no checksum for {name} in {args.checksums}; refusing to use an "
                      "unverified archive", file=sys.stderr)
                return 2
            hint = (f"The archives are listed at {BOX_FOLDER} (folder 'images'); save "
                    f"{name} as {archive} (or use --archives-dir).")
            try:
                download_file(url, archive, md5=md5, size=None if args.mirror else size,
                              retries=args.retries, timeout=args.timeout, manual_hint=hint,
                              desc=name)
                extract_tar(archive, out)
            except (DownloadError, UnsafeArchiveError) as e:
                print(f"nih: {e}", file=sys.stderr)
                return 2
            if not args.keep_archives:
                archive.unlink()
            print(f"nih: {name} verified and unpacked")
        fetch_metadata(out)
    problems = check_layout(out, expectations(len(numbers)))
    n_png = count_matches(out, "images/*.png")
    print(f"nih: {n_png} of {N_IMAGES} images present in {out / 'images'}")
    return report_completeness("nih", out, problems)


if __name__ == "__main__":
    sys.exit(main())
