"""Course parts that are not probe / fine-tune studies: the shift measurements of notebook 01
and the attention metrics of notebook 05, stored the way a study stores its units.

A *part kind* is a class registered with :func:`register_part`. It names its allowed settings
(``DEFAULTS``), its grid of units (model x method x seed, :class:`PartUnit`), what one unit
computes (``compute``: a per-unit table and its summary rows) and its report blocks. The generic
:func:`run_part` runs a part's grid resumably and shardably, like the study runner: one folder
per unit (``units/<unit>/table.csv``, then ``metrics.json`` last, both atomic, with the unit's
configuration hash), claims via :mod:`cxrlab.study.shards`, and the part's ``results.csv`` and
``metrics.json`` (kind :data:`PART_KIND`) rewritten from every stored unit under a lock.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from cxrlab.io import atomic_to_csv, atomic_write_json
from cxrlab.study.config import StudyError, check_backbones
from cxrlab.study.runner import Unit, config_hash, unit_is_complete

#: the ``kind`` of a part folder's metrics.json
PART_KIND = "cxrlab-part"
#: bump when what a part unit stores changes meaning (stored units then count as another config)
PART_VERSION = 2
#: part kind name -> class
PART_KINDS: dict[str, type["Part"]] = {}


def register_part(kind: str):
    """Class decorator: register a part kind under ``kind`` (the ``kind:`` of a course part)."""
    def deco(cls):
        cls.kind = kind
        PART_KINDS[kind] = cls
        return cls
    return deco


#: one (method, backbone, seed) unit of a part: the same record, and the same folder name, as a
#: study's units
PartUnit = Unit


def _close(name, known) -> str:
    import difflib

    c = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {c[0]!r}?)" if c else ""


class Part:
    """A registered part kind: settings checked on construction, before any data loads."""

    kind = "part"
    #: allowed settings and their defaults (``None``: the profile's)
    DEFAULTS: dict[str, Any] = {}
    #: methods a part of this kind may list
    METHODS: tuple[str, ...] = ()

    def __init__(self, name: str, settings: Mapping, profile, where: str = "course config"):
        self.name, self.profile = name, profile
        self.where = f"{where}: part {name!r}"
        unknown = sorted(set(settings) - set(self.DEFAULTS))
        if unknown:
            raise StudyError(f"{self.where} ({self.kind}): unknown key(s) "
                             + ", ".join(f"{u!r}{_close(u, self.DEFAULTS)}" for u in unknown)
                             + f"; allowed {sorted(self.DEFAULTS)}")
        self.s = {**self.DEFAULTS, **dict(settings)}
        self.s["backbones"] = list(self.s.get("backbones") or profile.backbones)
        self.s["seeds"] = [int(x) for x in (self.s.get("seeds") or profile.seeds)]
        check_backbones(self.s["backbones"], self.where)
        self.check()

    def check(self) -> None:
        for m in self.method_names():
            if m not in self.METHODS:
                raise StudyError(f"{self.where}: unknown method {m!r}{_close(m, self.METHODS)}; "
                                 f"a {self.kind} part measures {list(self.METHODS)}")
        syn = self.s.get("synthetic") or {}
        bad = sorted(set(syn) - {"n_per_hospital", "image_size", "seed"})
        if bad:
            raise StudyError(f"{self.where}: synthetic: unknown key(s) {bad}; allowed "
                             "['image_size', 'n_per_hospital', 'seed']")

    def method_names(self) -> list[str]:
        return list(self.s.get("methods") or ())

    def grid(self) -> list[PartUnit]:
        return [PartUnit(m, b, s) for m in self.method_names() for b in self.s["backbones"]
                for s in self.s["seeds"]]

    def synthetic(self) -> dict:
        syn = dict(self.s.get("synthetic") or {})
        return {"n_per_hospital": int(syn.get("n_per_hospital") or self.profile.n_per_hospital),
                "image_size": int(syn.get("image_size") or self.profile.image_size),
                "seed": int(syn.get("seed", 0))}

    def cache(self, shortcut: bool = False):
        from cxrlab.study.sets import synthetic_cache

        return synthetic_cache(self.profile.data_dir, shortcut=shortcut, verbose=False,
                               **self.synthetic())

    def unit_config(self, unit: PartUnit) -> dict:
        d = {"version": PART_VERSION, "kind": self.kind, "unit": unit.name,
             "settings": {k: v for k, v in self.s.items() if k not in ("methods", "backbones",
                                                                       "seeds")},
             "synthetic": self.synthetic(), "method": self.method_config(unit.method)}
        return json.loads(json.dumps(d, default=str))

    def method_config(self, method: str):
        return method

    def compute(self, unit: PartUnit) -> tuple[pd.DataFrame, list[dict]]:
        raise NotImplementedError

    def blocks(self, results: pd.DataFrame, folder: Path) -> list:
        raise NotImplementedError

    def headline(self, results: pd.DataFrame) -> str:
        raise NotImplementedError


# ----------------------------------------------------------------------------- running
def _is_complete(part: Part, out: Path, unit: PartUnit, overwrite: bool) -> bool:
    return unit_is_complete(out / "units" / unit.name, part.unit_config(unit), overwrite,
                            where=f"{out.name}/units/{unit.name}")


def _run_unit(part: Part, out: Path, unit: PartUnit, overwrite: bool) -> str:
    from cxrlab.study.shards import heartbeat, release, try_claim

    if _is_complete(part, out, unit, overwrite):
        return "complete (skipped)"
    lock = out / "units" / f"{unit.name}.lock"
    ok, _ = try_claim(lock)
    if not ok:
        return "held"
    try:
        with heartbeat(lock):
            if _is_complete(part, out, unit, overwrite):
                return "complete (other process)"
            t0 = time.perf_counter()
            table, rows = part.compute(unit)
            udir = out / "units" / unit.name
            udir.mkdir(parents=True, exist_ok=True)
            atomic_to_csv(table, udir / "table.csv", index=False)
            cfg = part.unit_config(unit)
            atomic_write_json(udir / "metrics.json", {  # last: marks the unit complete
                "unit": unit.name, "method": unit.method, "backbone": unit.backbone,
                "seed": unit.seed, "config": cfg, "config_hash": config_hash(cfg), "rows": rows,
                "seconds": round(time.perf_counter() - t0, 2)})
    finally:
        release(lock)
    return "computed"


@dataclass
class PartResult:
    """A part as far as it is stored: ``results`` (one row per unit and measured number)."""

    name: str
    kind: str
    out: Path
    results: pd.DataFrame
    grid: list[str]
    missing: list[str]
    status: dict = field(default_factory=dict)
    synthetic: bool = True


def run_part(part: Part, out, shard=None, overwrite: bool = False,
             verbose: bool = True) -> PartResult:
    """Run (or resume) ``part``'s units (``shard``: only its share) into ``out`` and write its
    tables from every stored unit."""
    from cxrlab.progress import progress
    from cxrlab.study.shards import Shard, exclusive, poll_s

    shard = shard or Shard()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    part.out = out
    grid = part.grid()
    mine = shard.select(grid)
    status = {}
    bar = progress(mine, desc=f"{part.name} ({part.kind})", unit="unit")
    for unit in bar:
        bar.set_postfix_str(unit.name)
        status[unit.name] = _run_unit(part, out, unit, overwrite)
        if verbose:
            print(f"{unit.name:<40} {status[unit.name]}")
    held = [u for u in mine if status[u.name] == "held"]
    while held:  # another process trains them: wait until stored, or take over a stale claim
        time.sleep(poll_s())
        for u in list(held):
            st = _run_unit(part, out, u, overwrite)
            if st != "held":
                status[u.name] = st
                held.remove(u)
    with exclusive(out / ".study.lock", f"writing the tables of part {part.name}"):
        res = gather_part(part, out)
        res.status = status
        atomic_to_csv(res.results, out / "results.csv", index=False)
        atomic_write_json(out / "metrics.json", {
            "kind": PART_KIND, "part_kind": part.kind, "name": part.name, "synthetic": True,
            "label": "SYNTHETIC", "profile": part.profile.name, "settings": part.s,
            "grid": res.grid, "missing_units": res.missing})
    return res


def gather_part(part: Part, out) -> PartResult:
    """Every stored unit of ``part``'s grid in ``out`` (missing ones listed)."""
    out = Path(out)
    rows, missing = [], []
    for unit in part.grid():
        f = out / "units" / unit.name / "metrics.json"
        if not _is_complete(part, out, unit, overwrite=False):
            missing.append(unit.name)
            continue
        rec = json.loads(f.read_text())
        for r in rec["rows"]:
            rows.append({"part": part.name, "method": unit.method, "backbone": unit.backbone,
                         "seed": unit.seed, **r, "synthetic": True})
    return PartResult(part.name, part.kind, out, pd.DataFrame(rows),
                      [u.name for u in part.grid()], missing)


def mean_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and t-interval over seeds (NaN interval for one value)."""
    from scipy import stats

    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, m - h, m + h


def pm(m: float, lo: float, hi: float, digits: int = 3) -> str:
    """``0.812 [0.790, 0.834]``, the mean alone without an interval, empty without a mean."""
    if not np.isfinite(m):
        return ""
    if not np.isfinite(lo):
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


from cxrlab.study import part_kinds as _kinds  # noqa: E402,F401  (registers shift, attention)
