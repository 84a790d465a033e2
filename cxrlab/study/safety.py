"""Guards that keep a study's finished results: never replaced by fewer without ``--overwrite``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from cxrlab.study.config import StudyError


def check_not_fewer(out: Path, unit_names: Sequence[str], name: str, overwrite: bool) -> None:
    """Refuse to write a study into ``out`` when its tables hold units this run would drop.

    A re-run with another method list, backbones or seeds would rewrite ``results.csv``,
    ``metrics.json``, ``README.md`` and the figures with fewer rows; that needs ``--overwrite``
    (``overwrite=True`` in Python). Units this run computes as well are kept and resumed.
    """
    f = Path(out) / "metrics.json"
    if overwrite or not f.exists():
        return
    try:
        old = json.loads(f.read_text())
    except (OSError, ValueError):
        raise StudyError(f"{f} is unreadable (truncated or not JSON): it belonged to a study. "
                         "Choose another --out, or pass --overwrite to replace it") from None
    old_units = [u.get("unit") for u in old.get("units", []) if isinstance(u, dict)]
    dropped = sorted(set(old_units) - set(unit_names))
    if dropped:
        raise StudyError(
            f"{Path(out).name}/ holds the study {old.get('name')!r} with {len(old_units)} units; "
            f"this run ({name!r}, {len(unit_names)} units) would drop {len(dropped)} of them from "
            f"results.csv, metrics.json and README.md (e.g. {dropped[0]}). Choose another --out, "
            "run the same methods/backbones/seeds, or pass --overwrite to replace them")


#: files a finished study folder holds (written last, after every unit)
STUDY_FILES = ("metrics.json", "results.csv", "per_label.csv", "summary.csv", "README.md")


def study_inventory(path: Path) -> str:
    """What a (possibly unfinished or damaged) study folder holds, in one line."""
    path = Path(path)
    present, missing = [], []
    for name in STUDY_FILES:
        f = path / name
        if not f.exists():
            missing.append(name)
        elif f.stat().st_size == 0:
            present.append(f"{name} (empty)")
        elif name.endswith(".csv"):
            with open(f, "rb") as fh:
                lines = sum(1 for _ in fh)
            present.append(f"{name} ({max(lines - 1, 0)} rows)")
        else:
            present.append(name)
    units = sorted(p.parent.name for p in (path / "units").glob("*/metrics.json"))
    parts = [f"present: {', '.join(present) or 'nothing'}",
             f"missing: {', '.join(missing) or 'nothing'}",
             f"{len(units)} finished unit(s) in units/"]
    return "; ".join(parts)


def rerun_hint(path: Path) -> str:
    return (f"re-run `cxrlab run CONFIG --out {path}` with the study's config: finished units "
            "are kept and the tables are written again")
