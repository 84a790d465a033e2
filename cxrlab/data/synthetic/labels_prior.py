"""Label vectors whose prevalence and co-occurrence follow the real NIH ChestX-ray14 metadata.

The NIH table that torchxrayvision ships (``Data_Entry_2017_v2020.csv.gz``, 112,120 images)
lists, per image, its findings as a ``|``-joined string (``"Effusion|Infiltration"``) or
``"No Finding"``. :func:`build_label_prior` counts every distinct combination once; the result
is committed as ``nih_label_combos.csv`` (836 rows), so the package needs no download.

Sampling a label vector = sampling one *combination* (a row) with probability proportional to
its count. That keeps the real co-occurrence (effusion with atelectasis, edema with
cardiomegaly ...) instead of drawing 14 independent coins. A hospital changes prevalence by
*reweighting* combinations: each combination's weight is multiplied by the hospital's factor
for every label it contains (and by a factor for "No Finding"), so a hospital with twice the
cardiomegaly mostly gets more of the combinations that real cardiomegaly patients have.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from cxrlab.labels import NIH14

#: The committed combination table (columns ``labels``, ``count``).
PRIOR_CSV = Path(__file__).with_name("nih_label_combos.csv")
NO_FINDING = "No Finding"


def nih_table_path() -> Path:
    """Where torchxrayvision keeps the NIH metadata table (found without importing torch)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("torchxrayvision is not installed; it ships the NIH metadata "
                                "table that build_label_prior() reads (pip install torchxrayvision)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "Data_Entry_2017_v2020.csv.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the torchxrayvision install")
    return path


def _canonical_combo(text: str) -> str:
    """Sort the names of a ``|``-joined finding string into NIH14 order (``"No Finding"`` stays)."""
    names = [x.strip() for x in str(text).split("|") if x.strip()]
    if names == [NO_FINDING]:
        return NO_FINDING
    unknown = sorted(set(names) - set(NIH14))
    if unknown:
        raise ValueError(f"unknown NIH finding name(s) {unknown} in {text!r}")
    return "|".join(sorted(set(names), key=NIH14.index))


def build_label_prior(table: str | Path | pd.DataFrame | None = None,
                      out: str | Path | None = None) -> pd.DataFrame:
    """Count label combinations in the NIH metadata; optionally write them as CSV.

    ``table``: the NIH ``Data_Entry`` CSV (path or DataFrame with a ``Finding Labels`` column);
    default: the copy torchxrayvision ships. Returns a DataFrame ``labels, count`` sorted by
    count (descending) then name, which is what ``nih_label_combos.csv`` holds.
    """
    if table is None:
        table = nih_table_path()
    df = table if isinstance(table, pd.DataFrame) else pd.read_csv(table)
    if "Finding Labels" not in df.columns:
        raise KeyError("the NIH table needs a 'Finding Labels' column")
    combos = df["Finding Labels"].map(_canonical_combo)
    counts = combos.value_counts().rename_axis("labels").reset_index(name="count")
    counts = counts.sort_values(["count", "labels"], ascending=[False, True]).reset_index(drop=True)
    if out is not None:
        from cxrlab.io import atomic_to_csv

        atomic_to_csv(counts, out)
    return counts



class LabelPrior:
    """The combination table as arrays: ``combos`` bool [K, 14] (NIH14 order), ``counts`` [K]."""

    def __init__(self, table: pd.DataFrame):
        self.table = table.reset_index(drop=True)
        k = len(self.table)
        self.combos = np.zeros((k, len(NIH14)), dtype=bool)
        for i, text in enumerate(self.table["labels"]):
            if text != NO_FINDING:
                for name in text.split("|"):
                    self.combos[i, NIH14.index(name)] = True
        self.counts = self.table["count"].to_numpy(dtype=np.float64)
        self.no_finding = ~self.combos.any(axis=1)

    def weights(self, prevalence_factor: Mapping[str, float] | None = None,
                no_finding_factor: float = 1.0) -> np.ndarray:
        """Sampling probabilities of the combinations after a hospital's reweighting.

        ``prevalence_factor``: label -> multiplier applied to every combination that contains
        the label (factors multiply for combinations with several such labels);
        ``no_finding_factor`` multiplies the weight of the "No Finding" row.
        """
        w = self.counts.copy()
        for name, factor in (prevalence_factor or {}).items():
            if name not in NIH14:
                raise KeyError(f"unknown label name {name!r} in a prevalence factor; "
                               f"known labels are {list(NIH14)}")
            if not factor >= 0:
                raise ValueError(f"prevalence factor for {name} must be >= 0, got {factor}")
            w[self.combos[:, NIH14.index(name)]] *= factor
        w[self.no_finding] *= no_finding_factor
        if w.sum() <= 0:
            raise ValueError("prevalence factors leave no combination with positive weight")
        return w / w.sum()

    def prevalence(self, prevalence_factor: Mapping[str, float] | None = None,
                   no_finding_factor: float = 1.0) -> pd.Series:
        """Expected prevalence of each label (and of "No Finding") under the given reweighting."""
        p = self.weights(prevalence_factor, no_finding_factor)
        prev = p @ self.combos.astype(np.float64)
        return pd.Series(np.append(prev, p[self.no_finding].sum()),
                         index=list(NIH14) + [NO_FINDING], name="prevalence")

    def sample(self, rng: np.random.Generator, n: int, p: np.ndarray | None = None) -> np.ndarray:
        """Draw ``n`` label vectors (float32 [n, 14], 0/1) with combination probabilities ``p``."""
        if n < 0:
            raise ValueError(f"number of label vectors must be >= 0, got {n}")
        p = self.counts / self.counts.sum() if p is None else p
        rows = rng.choice(len(p), size=n, p=p)
        return self.combos[rows].astype(np.float32)


@functools.lru_cache(maxsize=1)
def load_label_prior() -> LabelPrior:
    """The committed NIH combination table (``nih_label_combos.csv``), parsed once."""
    if not PRIOR_CSV.exists():
        raise FileNotFoundError(f"{PRIOR_CSV} is missing; rebuild it with "
                                "cxrlab.data.synthetic.labels_prior.build_label_prior(out=...)")
    return LabelPrior(pd.read_csv(PRIOR_CSV, keep_default_na=False))


def nih_demographics(table: str | Path | pd.DataFrame | None = None) -> dict[str, float]:
    """Age / sex / view summary of the NIH table (what the ``target_nih`` hospital imitates)."""
    if table is None:
        table = nih_table_path()
    df = table if isinstance(table, pd.DataFrame) else pd.read_csv(table)
    age = df["Patient Age"].astype(float)
    per_patient = df.groupby("Patient ID").size()
    return {
        "age_mean": float(age.mean()), "age_sd": float(age.std()),
        "p_male": float((df["Patient Gender"] == "M").mean()),
        "p_ap": float((df["View Position"] == "AP").mean()),
        "images_per_patient": float(per_patient.mean()),
    }
