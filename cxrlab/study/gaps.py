"""The generalisation gap of a study in one table: a metric at the source (in-domain test), at
each target, and source minus target (:func:`~cxrlab.study.tables.drop_table`'s numbers), each
as mean ± half-width of its 95 % interval, for reports."""
from __future__ import annotations

import math

import pandas as pd

from cxrlab.errors import UnknownNameError
from cxrlab.study.tables import (METRIC_NAMES, drop_table, method_order, setting_names,
                                 summarise)


def _pm(mean: float, lo: float, hi: float, digits: int) -> str:
    """``83.5 ± 1.2`` (percent); no interval: the mean alone."""
    if any(isinstance(x, float) and math.isnan(x) for x in (lo, hi)):
        return f"{100 * mean:.{digits}f}"
    return f"{100 * mean:.{digits}f} ± {100 * (hi - lo) / 2:.{digits}f}"


def fair_label_space(results: pd.DataFrame) -> str:
    """``shared7`` when the results hold it, else their first label space."""
    spaces = list(dict.fromkeys(results["label_space"]))
    return "shared7" if "shared7" in spaces else spaces[0]


def gap_table(results: pd.DataFrame, metric: str = "auc_macro", label_space: str | None = None,
              threshold: str = "tuned_source_val", digits: int = 1,
              level: float = 0.95) -> pd.DataFrame:
    """One row per (arm, backbone): ``metric`` at the source's test split and at every target
    as mean ± half the 95 % interval (t over seeds; one seed: the bootstrap interval over
    patients), and ``gap <target>`` = source - target with its interval from
    :func:`~cxrlab.study.tables.drop_table` (the two test sets are independent samples: the
    variances add). In %. A ``data`` column says SYNTHETIC or real data on every row;
    ``table.attrs["caption"]`` says what the numbers are.
    """
    if results.empty:
        raise UnknownNameError("no results to tabulate (no unit of the study is finished)")
    space = label_space or fair_label_space(results)
    summ = results if "n_seeds" in results.columns else summarise(results, level=level)
    sel = summ[(summ["metric"] == metric) & (summ["threshold"] == threshold)
               & (summ["label_space"] == space)]
    if sel.empty:
        raise UnknownNameError(f"no {metric} results for label space {space!r}, threshold "
                               f"{threshold!r}; metrics: {sorted(summ['metric'].unique())}")
    roles = dict(zip(sel["domain"], sel["role"]))
    sources = [d for d, r in roles.items() if r == "in-domain"]
    targets = [d for d, r in roles.items() if r == "out-of-domain"]
    if not sources:
        raise UnknownNameError(f"no in-domain (source test) results among {sorted(roles)}")
    src = sources[0]
    drops = drop_table(sel, metric=metric, label_space=space, threshold=threshold, level=level)
    synthetic = bool(results.attrs.get("synthetic", bool(summ["synthetic"].any())))
    tag = "SYNTHETIC" if synthetic else "real data"
    names = setting_names(sel)
    from cxrlab.models import display_name, table_order

    rows = []
    for m in method_order(sel):
        for b in table_order(sel.loc[sel["method"] == m, "backbone"].unique()):
            s = sel[(sel["method"] == m) & (sel["backbone"] == b)].set_index("domain")
            rec = {"data": tag, "setting": names[m], "model": display_name(b),
                   "seeds": int(s["n_seeds"].max())}
            for d in [src] + targets:
                rec[f"{d} ({'source test' if d == src else 'target'})"] = (
                    _pm(s.loc[d, "value"], s.loc[d, "ci_lo"], s.loc[d, "ci_hi"], digits)
                    if d in s.index else "n/a")
            dr = drops[(drops["setting"] == names[m]) & (drops["model"] == display_name(b))]
            for d in targets:
                r = dr[dr["target"] == d]
                rec[f"gap {d}"] = "n/a" if r.empty else _pm(
                    r["drop"].iloc[0] / 100, r["drop_lo"].iloc[0] / 100, r["drop_hi"].iloc[0] / 100,
                    digits)
            rows.append(rec)
    table = pd.DataFrame(rows)
    n = int(table["seeds"].max())
    how = (f"mean ± 95 % t-interval over {n} seeds" if n > 1 else
           "value ± 95 % bootstrap interval over patients (1 seed)")
    table.attrs.update(
        synthetic=synthetic, source=src, targets=targets, label_space=space,
        caption=f"ours ({tag}): {METRIC_NAMES.get(metric, metric)} in % at the source test split "
                f"and each target, and the gap source − target; label space {space}, threshold "
                f"{threshold}; {how}; the gap's interval treats the two test sets as "
                "independent samples (variances add)")
    return table
