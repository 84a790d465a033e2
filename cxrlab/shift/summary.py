"""One table per cache: population, prevalence and image statistics per hospital."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from cxrlab.data.cache import Cache
from cxrlab.labels import SHARED7, get_label_space
from cxrlab.shift.images import _sample_rows, image_statistics


def shift_summary(cache: Cache, labels: Sequence[str] = SHARED7,
                  rows_per_domain: int | None = 200, seed: int = 0) -> pd.DataFrame:
    """One row per domain: how the hospitals differ, in numbers.

    Columns: ``n`` images, ``n_patients``, ``age_mean``, ``female_pct``, ``ap_pct`` (share of
    portable AP views), ``prev_<label>`` (share positive among labelled images, NaN when the
    domain does not define the label) and image statistics averaged over up to
    ``rows_per_domain`` images: ``intensity_mean``, ``contrast``, ``noise``, ``gradient``.
    """
    labels = get_label_space(labels)
    m = cache.manifest
    out = []
    for dom in cache.domains:
        g = m[m["domain"].astype(str) == dom]
        age = pd.to_numeric(g["age"], errors="coerce")
        row = {"domain": dom, "n": len(g), "n_patients": int(g["patient_id"].nunique()),
               "age_mean": float(age.mean()) if age.notna().any() else float("nan"),
               "female_pct": 100.0 * float((g["sex"].astype(str) == "F").mean()),
               "ap_pct": 100.0 * float((g["view"].astype(str) == "AP").mean())}
        for lab in labels:
            v = pd.to_numeric(g[lab], errors="coerce") if lab in g.columns else pd.Series(
                dtype=float)
            row[f"prev_{lab}"] = float(v.mean()) if v.notna().any() else float("nan")
        stats = image_statistics(cache, _sample_rows(cache, dom, rows_per_domain, seed))
        for src, dst in (("mean", "intensity_mean"), ("contrast", "contrast"),
                         ("noise", "noise"), ("gradient", "gradient")):
            row[dst] = float(stats[src].mean()) if len(stats) else float("nan")
        out.append(row)
    df = pd.DataFrame(out).set_index("domain")
    df.attrs["synthetic"] = cache.synthetic
    return df
