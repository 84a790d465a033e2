"""The `cxrlab` command line (a stable contract; notebooks and `make demo` call the same code)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _cmd_info(args) -> int:
    from cxrlab.info import info_dict

    d = info_dict(args.profile)
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        width = max(len(k) for k in d)
        for k, v in d.items():
            print(f"{k:<{width}}  {v}")
    return 0


def _cmd_synth(args) -> int:
    from cxrlab.data.synthetic import write_synthetic_cache
    from cxrlab.profiles import get_profile

    prof = get_profile(args.profile)
    hospitals = args.hospitals.split(",") if args.hospitals else None
    cache = write_synthetic_cache(
        args.out, hospitals=hospitals,
        n_per_hospital=args.n if args.n is not None else prof.n_per_hospital,
        image_size=args.size if args.size is not None else prof.image_size,
        seed=args.seed, shortcut=args.shortcut, overwrite=args.overwrite,
    )
    print(cache)
    return 0


def _cmd_prepare(args) -> int:
    from cxrlab.data.prepare import prepare
    from cxrlab.errors import UsageError

    options = {}
    for item in args.opt or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--opt wants KEY=VALUE, got {item!r} (e.g. --opt uncertain=ones)")
        options[key.strip()] = _parse_value(value.strip())
    prepare(args.dataset, root=args.root, out=args.out, image_size=args.size,
            workers=args.workers, limit=args.limit, overwrite=args.overwrite, **options)
    return 0


def _parse_value(text: str):
    """'0.1' -> 0.1, '3' -> 3, 'true' -> True, 'PA,AP' -> ['PA', 'AP'], else the string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if low.lstrip("+-") in ("nan", "inf", "infinity"):
        return text  # a word, not a float: e.g. --opt blank=nan is the policy named "nan"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return [x for x in text.split(",") if x] if "," in text else text


def _cmd_lungmasks(args) -> int:
    from cxrlab.data.chexmask import add_lung_masks

    report = add_lung_masks(args.cache, args.chexmask, args.dataset, min_dice=args.min_dice,
                            overwrite=args.overwrite)
    print(json.dumps(report, indent=2, default=str))
    return 0


def _cmd_bench(args) -> int:
    from cxrlab.bench import main as bench_main

    bench_main(args.only.split(",") if args.only else None, quick=args.quick, out=args.out)
    return 0


def _cmd_run(args) -> int:
    from cxrlab.errors import UsageError
    from cxrlab.study import run_study
    from cxrlab.study.shards import parse_shard

    shard = parse_shard(args.shard)
    seeds = parse_int_list(args.seeds, "--seeds") if args.seeds else None
    if Path(args.config).is_dir():
        raise UsageError(f"{args.config} is a folder; pass a study config YAML file (e.g. "
                         "configs/study_ci.yaml); to see a finished study use `cxrlab report DIR`")
    run_study(args.config, out=args.out, profile=args.profile, seeds=seeds,
              overwrite=args.overwrite, shard=shard)
    return 0


def parse_int_list(text: str, what: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; anything else names ``what`` (a flag or variable) in the error."""
    from cxrlab.errors import UsageError

    try:
        values = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"{what}={text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not values:
        raise UsageError(f"{what}={text!r}: expected comma-separated integers, e.g. 0,1,2")
    return values


def _cmd_report(args) -> int:
    from cxrlab.study import report

    report(args.results_dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cxrlab", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="versions, device, profile, data and checkpoint folders")
    s.add_argument("--profile", default=None)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_info)

    data = sub.add_parser("data", help="write a data cache").add_subparsers(dest="data_cmd",
                                                                             required=True)
    s = data.add_parser("synth", help="write the synthetic hospitals as a cache")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, default=None, help="images per hospital (default: profile)")
    s.add_argument("--size", type=int, default=None, help="image size in px (default: profile)")
    s.add_argument("--hospitals", default=None, help="comma-separated hospital names")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--shortcut", action="store_true",
                   help="burn in a marker correlated with a label at the source only")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--profile", default=None)
    s.set_defaults(func=_cmd_synth)

    s = data.add_parser("prepare", help="turn a real data set into a cache")
    s.add_argument("dataset", choices=["nih", "chexpert", "mimic", "siim", "padchest"])
    s.add_argument("--root", required=True, help="folder holding the data set as downloaded")
    s.add_argument("--out", required=True)
    s.add_argument("--size", type=int, default=224)
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--limit", type=int, default=None,
                   help="about N images, whole patients, every split in proportion (for a try)")
    s.add_argument("--overwrite", action="store_true", help="replace a finished cache")
    s.add_argument("--opt", action="append", metavar="KEY=VALUE",
                   help="reader option, repeatable: e.g. --opt uncertain=ones --opt views=PA,AP")
    s.set_defaults(func=_cmd_prepare)

    s = data.add_parser("lungmasks", help="add CheXmask lung masks to a prepared real-data cache")
    s.add_argument("cache", help="cache folder written by `cxrlab data prepare`")
    s.add_argument("--chexmask", required=True, help="the CheXmask CSV for this data set")
    s.add_argument("--dataset", required=True, choices=["nih", "chexpert", "mimic"])
    s.add_argument("--min-dice", type=float, default=0.7,
                   help="drop masks whose CheXmask quality (Dice RCA mean) is below this")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=_cmd_lungmasks)

    s = sub.add_parser("run", help="run one study from a config file (resumable)")
    s.add_argument("config")
    s.add_argument("--out", required=True)
    s.add_argument("--profile", default=None)
    s.add_argument("--seeds", default=None, help="comma-separated integers, e.g. 0,1,2")
    s.add_argument("--overwrite", action="store_true",
                   help="recompute units of another configuration and allow replacing the "
                        "study's tables with fewer units")
    s.add_argument("--shard", default=None, metavar="I/N",
                   help="run only shard I of N (1 <= I <= N) of the study's units into the same "
                        "--out folder; several processes (a SLURM array) may share it")
    s.set_defaults(func=_cmd_run)

    s = sub.add_parser("report", help="tables and plots across studies")
    s.add_argument("results_dir")
    s.set_defaults(func=_cmd_report)

    s = sub.add_parser("bench", help="speed figures as JSON (ratios against same-run baselines)")
    s.add_argument("--only", default=None, help="comma-separated groups")
    s.add_argument("--quick", action="store_true", help="small workloads (seconds)")
    s.add_argument("--out", default=None, help="also write the JSON here")
    s.set_defaults(func=_cmd_bench)
    return p


#: OSError numbers the CLI turns into a one-line message: errno name -> what to do
_OS_FIXES = {
    "ENOSPC": "no space left on the device; free space there or choose another folder "
              "(--out, or CXRLAB_HOME for data and checkpoints)",
    "EDQUOT": "disk quota exceeded; free space or choose another folder (--out / CXRLAB_HOME)",
    "EACCES": "permission denied; choose a folder you can write (--out / CXRLAB_HOME) or fix "
              "its permissions",
    "EPERM": "operation not permitted; choose a folder you own (--out / CXRLAB_HOME)",
    "EROFS": "read-only file system; choose a writable folder (--out / CXRLAB_HOME)",
    "ENOENT": "no such file or folder; check the path",
    "ENOTDIR": "a part of the path is a file, not a folder; check the path",
    "EISDIR": "is a folder, not a file; pass the path of a file",
}


def os_error_message(e: OSError) -> str:
    """One line for an OSError: the path, what went wrong and what to do."""
    import errno

    name = errno.errorcode.get(e.errno or -1, "")
    path = e.filename if e.filename is not None else None
    if name in _OS_FIXES:
        where = f"{path}: " if path is not None else ""
        return f"{where}{_OS_FIXES[name]} ({e.strerror or name})"
    if path is None:
        return str(e)
    return f"{path}: {e.strerror or e} (check the path and its permissions)"


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: 0 done, 2 a reported error, 130 interrupted.

    Errors the package raises on purpose (:class:`cxrlab.errors.CxrlabError`) and operating
    system errors (disk full, permission denied, missing file) print one line; anything else is a
    bug and prints its traceback. ``CXRLAB_DEBUG=1`` shows the traceback of every error.
    """
    from cxrlab.errors import CxrlabError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        if os.environ.get("CXRLAB_DEBUG"):
            raise
        print("cxrlab: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except CxrlabError as e:
        if os.environ.get("CXRLAB_DEBUG"):
            raise
        msg = " ".join(str(e).split("\n")) if str(e) else type(e).__name__
        print(f"cxrlab: error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:
        if os.environ.get("CXRLAB_DEBUG"):
            raise
        print(f"cxrlab: error: {os_error_message(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
