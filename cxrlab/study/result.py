"""What a finished study holds, and reading it back from its folder."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cxrlab.errors import MissingInputError
from cxrlab.study.config import StudyError
from cxrlab.study.tables import seed000_table, summarise

#: the ``kind`` of a study folder's metrics.json
STUDY_KIND = "cxrlab-study"


@dataclass
class StudyResult:
    """What a study produced (also read back from disk by :func:`load_study`).

    ``results``: long table (:data:`RESULT_COLUMNS`), ``per_label``: one row per unit,
    evaluation set, threshold kind and label; ``units``: per-unit timings and whether it was
    computed or found complete; ``grid``: every unit's name; ``missing``: the units of the grid
    not stored yet (a partial study: other shards still running, or a crash); ``data``: the sets (role, images, patients).
    """

    name: str
    out: Path
    config: dict
    profile: str
    synthetic: bool
    results: pd.DataFrame
    per_label: pd.DataFrame
    units: pd.DataFrame
    data: pd.DataFrame
    source_undefined: list = field(default_factory=list)
    protocol: str = ""
    figures: dict = field(default_factory=dict)
    #: every unit of the study's grid, and those not stored yet (other shards, a crash)
    grid: list = field(default_factory=list)
    missing: list = field(default_factory=list)

    def summary(self, **kw) -> pd.DataFrame:
        return summarise(self.results, **kw)

    def seed000_table(self, **kw) -> pd.DataFrame:
        return seed000_table(self.results, **kw)

    @property
    def tag(self) -> str:
        return "SYNTHETIC" if self.synthetic else "real data"


def load_study(path) -> StudyResult:
    """A finished study read back from its folder (``metrics.json``, ``results.csv``, ...)."""
    path = Path(path).expanduser()
    f = path / "metrics.json"
    if not f.exists():
        raise MissingInputError(f"{path} holds no study (metrics.json is missing); run "
                                "`cxrlab run CONFIG --out DIR` first")
    from cxrlab.study.safety import rerun_hint, study_inventory

    try:
        meta = json.loads(f.read_text())
    except ValueError:
        raise StudyError(f"{f} is truncated or corrupt (not JSON); {study_inventory(path)}. "
                         f"{rerun_hint(path)}") from None
    if not isinstance(meta, dict) or meta.get("kind") != STUDY_KIND:
        raise StudyError(f"{path}/metrics.json is not a cxrlab study summary")
    tables = {}
    for name in ("results.csv", "per_label.csv"):
        try:
            tables[name] = pd.read_csv(path / name)
        except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError) as e:
            raise StudyError(f"{path / name} is missing or unreadable ({type(e).__name__}); "
                             f"{study_inventory(path)}. {rerun_hint(path)}") from None
        if tables[name].empty:
            raise StudyError(f"{path / name} has no rows (header only); {study_inventory(path)}. "
                             f"{rerun_hint(path)}")
    missing = [k for k in ("name", "synthetic", "config", "profile", "units", "data")
               if k not in meta]
    if missing:
        raise StudyError(f"{f} lacks {missing} (truncated or edited); {study_inventory(path)}. "
                         f"{rerun_hint(path)}")
    results = tables["results.csv"]
    results.attrs["synthetic"] = bool(meta["synthetic"])
    per_label = tables["per_label.csv"]
    per_label.attrs["synthetic"] = bool(meta["synthetic"])
    return StudyResult(name=meta["name"], out=path, config=meta["config"], profile=meta["profile"],
                       synthetic=bool(meta["synthetic"]), results=results, per_label=per_label,
                       units=pd.DataFrame(meta["units"]), data=pd.DataFrame(meta["data"]),
                       source_undefined=meta.get("source_undefined_labels", []),
                       protocol=meta.get("protocol", ""),
                       grid=list(meta.get("grid") or [u.get("unit") for u in meta["units"]]),
                       missing=list(meta.get("missing_units") or []))
