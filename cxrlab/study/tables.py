"""A study's tables: summaries over seeds, seed 000's layout, and the published numbers."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlab import metrics as M
from cxrlab.errors import MissingInputError, UnknownNameError, UsageError
from cxrlab.study.config import THRESHOLDS

# Method and backbone names shown in tables come from their registries (the arm's ``display``,
# stored in the results' "setting" column; cxrlab.models.display_name), never from lists here.
METRIC_NAMES = {"f1_micro": "F1 micro", "f1_macro": "F1 macro", "auc_macro": "AUC macro",
                "map": "mAP"}
RESULT_COLUMNS = ("study", "method", "algorithm", "setting", "backbone", "model", "seed", "domain", "role",
                  "label_space", "threshold", "metric", "value", "ci_lo", "ci_hi", "n_images",
                  "n_labels", "synthetic")


def summarise(results: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per (method, backbone, domain, label space, threshold, metric) over seeds.

    One seed: the value and its bootstrap interval (``interval = "bootstrap"``). Several
    seeds: the mean and a t-interval over seeds, clipped to [0, 1] (``interval = "seeds"``;
    the per-seed bootstrap half-widths are averaged into ``boot_halfwidth``).
    """
    keys = ["study", "method", "algorithm", "setting", "backbone", "model", "domain", "role", "label_space",
            "threshold", "metric"]
    keys = [k for k in keys if k in results.columns]
    out = []
    for key, grp in results.groupby(keys, sort=False, dropna=False):
        rec = dict(zip(keys, key))
        vals = grp["value"].to_numpy(dtype=float)
        rec["n_seeds"] = int(grp["seed"].nunique()) if "seed" in grp else len(grp)
        half = np.nanmean((grp["ci_hi"] - grp["ci_lo"]).to_numpy(dtype=float) / 2) \
            if grp["ci_hi"].notna().any() else float("nan")
        if len(vals) == 1:
            rec.update(value=float(vals[0]), ci_lo=float(grp["ci_lo"].iloc[0]),
                       ci_hi=float(grp["ci_hi"].iloc[0]), interval="bootstrap")
        else:
            s = M.summarise_seeds([{"m": v} for v in vals], metrics=["m"], level=level).iloc[0]
            # every metric lives in [0, 1]: a t-interval of few seeds can overshoot, clip it
            rec.update(value=float(s["mean"]), ci_lo=max(0.0, float(s["lo"])),
                       ci_hi=min(1.0, float(s["hi"])), interval="seeds")
        rec["boot_halfwidth"] = float(half)
        rec["synthetic"] = bool(grp["synthetic"].iloc[0]) if "synthetic" in grp else False
        out.append(rec)
    df = pd.DataFrame(out)
    df.attrs["synthetic"] = bool(results.attrs.get("synthetic", df["synthetic"].any()
                                                   if len(df) else False))
    return df


def metric_table(summary: pd.DataFrame, metric: str = "auc_macro", label_space: str = "shared7",
                 threshold: str = "tuned_source_val", interval: bool = False,
                 percent: bool = True) -> pd.DataFrame:
    """One row per (setting, model), one column per evaluation set (the source's test split
    first): ``metric`` from :func:`summarise`, in % by default; ``interval=True`` writes each
    cell as ``"91.2 [89.4, 93.0]"``. ``attrs["synthetic"]`` is carried over."""
    sel = summary[(summary["metric"] == metric) & (summary["label_space"] == label_space)
                  & (summary["threshold"] == threshold)]
    if sel.empty:
        raise UnknownNameError(f"no {metric!r} results for label space {label_space!r} and "
                               f"threshold {threshold!r}; have metrics "
                               f"{sorted(summary['metric'].unique())}")
    k = 100.0 if percent else 1.0
    doms = list(dict.fromkeys(sel.sort_values("role", key=lambda r: r != "in-domain")["domain"]))
    rows = {}
    for (setting, model), g in sel.groupby(["setting", "model"], sort=False):
        g = g.set_index("domain")
        rows[(setting, model)] = {
            d: (f"{k * g.at[d, 'value']:.1f} [{k * g.at[d, 'ci_lo']:.1f}, {k * g.at[d, 'ci_hi']:.1f}]"
                if interval else round(k * float(g.at[d, "value"]), 1)) if d in g.index else None
            for d in doms}
    out = pd.DataFrame.from_dict(rows, orient="index")[doms]
    out.index = pd.MultiIndex.from_tuples(out.index, names=["setting", "model"])
    if out.index.get_level_values(0).nunique() == 1:
        out = out.droplevel(0)
    out.attrs["synthetic"] = bool(summary.attrs.get("synthetic", False))
    return out


def variant_gain(summaries: Mapping[str, pd.DataFrame], metric: str = "auc_macro",
                 label_space: str = "shared7", threshold: str = "tuned_source_val",
                 domains: Sequence[str] | None = None) -> pd.DataFrame:
    """Two runs of the same study that differ in one thing (e.g. ``{"stand-in": pretrained,
    "random init": random}``), side by side: per model and evaluation set, each variant's
    ``metric`` in % and ``gain`` = first minus second, in % points."""
    if len(summaries) != 2:
        raise UsageError(f"variant_gain compares two variants, got {list(summaries)}")
    (a, sa), (b, sb) = summaries.items()
    ta, tb = (metric_table(x, metric, label_space, threshold) for x in (sa, sb))
    doms = list(domains) if domains is not None else list(ta.columns)
    missing = [d for d in doms if d not in ta.columns or d not in tb.columns]
    if missing:
        raise UnknownNameError(f"evaluation sets {missing} are not in both runs; have "
                               f"{list(ta.columns)}")
    cols = {}
    for d in doms:
        cols[(d, a)] = ta[d]
        cols[(d, b)] = tb[d]
        cols[(d, "gain")] = (ta[d] - tb[d]).round(1)
    out = pd.DataFrame(cols)
    out.attrs.update(variants=(a, b), metric=metric,
                     synthetic=bool(sa.attrs.get("synthetic", False)))
    return out


def drop_table(summary: pd.DataFrame, metric: str = "auc_macro", label_space: str = "shared7",
               threshold: str = "tuned_source_val", level: float = 0.95) -> pd.DataFrame:
    """In-domain minus out-of-domain, per (setting, model, target), in % points, with an
    interval: ``drop``, ``drop_lo``, ``drop_hi`` and ``beyond_interval`` (the interval lies
    above 0: the model loses more than the sampling noise of the two test sets explains).

    The source's test patients and a target's are independent samples, so the variance of the
    difference is the sum of the two variances; each is read from its own interval (half-width
    / z, a normal reading of the bootstrap or seed interval). Rows for the mean over targets
    (``TARGETS_MEAN``) use the mean of the targets' values and of their variances / n."""
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    sel = summary[(summary["metric"] == metric) & (summary["label_space"] == label_space)
                  & (summary["threshold"] == threshold)]
    if sel.empty:
        raise UnknownNameError(f"no {metric!r} results for label space {label_space!r} and "
                               f"threshold {threshold!r}")
    out = []
    for (setting, model), g in sel.groupby(["setting", "model"], sort=False):
        src = g[g["role"] == "in-domain"]
        if src.empty:
            continue
        s = src.iloc[0]
        s_var = ((s["ci_hi"] - s["ci_lo"]) / (2 * z)) ** 2
        tg = g[g["role"] == "out-of-domain"]
        vals, vars_ = [], []
        for t in tg.itertuples():
            t_var = ((t.ci_hi - t.ci_lo) / (2 * z)) ** 2
            vals.append(t.value)
            vars_.append(t_var)
            out.append(_drop_row(setting, model, t.domain, s["value"], t.value, s_var + t_var, z))
        if len(vals) > 1:
            mean_var = float(np.sum(vars_)) / len(vars_) ** 2
            out.append(_drop_row(setting, model, TARGETS_MEAN, s["value"], float(np.mean(vals)),
                                 s_var + mean_var, z))
    df = pd.DataFrame(out)
    df.attrs.update(metric=metric, label_space=label_space, threshold=threshold,
                    synthetic=bool(summary.attrs.get("synthetic", False)))
    return df


def _drop_row(setting, model, target, source_value, target_value, var, z) -> dict:
    drop = 100 * (source_value - target_value)
    half = 100 * z * float(np.sqrt(var))
    return {"setting": setting, "model": model, "target": target,
            "source": round(100 * source_value, 1), "value": round(100 * target_value, 1),
            "drop": drop, "drop_lo": drop - half, "drop_hi": drop + half,
            "beyond_interval": bool(drop - half > 0)}


def _model_order(backbones) -> list[str]:
    from cxrlab.models import table_order

    return table_order(backbones)


def method_order(results: pd.DataFrame) -> list[str]:
    """The arms of a study's table in the order the study config lists them (the order in
    which they first appear in its results)."""
    return list(dict.fromkeys(results["method"]))


def setting_names(results: pd.DataFrame) -> dict[str, str]:
    """Arm name -> its display name, from the results' "setting" column."""
    if "setting" not in results.columns:
        return {m: m for m in results["method"].unique()}
    return dict(zip(results["method"], results["setting"]))


def _default_domain(results: pd.DataFrame) -> str:
    out = results.loc[results["role"] == "out-of-domain", "domain"]
    if len(out):
        return str(out.iloc[0])
    return str(results["domain"].iloc[0])


def seed000_table(results: pd.DataFrame, label_space: str = "shared7", domain: str | None = None,
                  threshold: str = "tuned_source_val", digits: int = 1,
                  numeric: bool = False) -> pd.DataFrame:
    """Results in seed 000's layout: rows setting x model, columns F1 micro, F1 macro,
    AUC macro, mAP as ``"mean [lo, hi]"`` percentages (bootstrap over patients for one seed,
    t-interval over seeds for several).

    ``results``: a study's long table (or its :func:`summarise`). ``domain``: an evaluation set
    (default: the first out-of-domain one). ``numeric=True`` gives the mean values in percent
    instead of strings. ``table.attrs["caption"]`` says what the numbers are, SYNTHETIC included.
    """
    summ = results if "n_seeds" in results.columns else summarise(results)
    synthetic = bool(results.attrs.get("synthetic", summ["synthetic"].any() if len(summ) else False))
    domain = domain or _default_domain(summ)
    sel = summ[(summ["domain"] == domain) & (summ["label_space"] == label_space)
               & (summ["threshold"] == threshold)]
    if sel.empty:
        raise UnknownNameError(f"no results for domain={domain!r}, label_space={label_space!r}, "
                       f"threshold={threshold!r}; available: domains "
                       f"{sorted(summ['domain'].unique())}, label spaces "
                       f"{sorted(summ['label_space'].unique())}, thresholds {list(THRESHOLDS)}")
    rows = []
    from cxrlab.models import display_name

    names = setting_names(sel)
    for m in method_order(sel):
        for b in _model_order(sel.loc[sel["method"] == m, "backbone"].unique()):
            g = sel[(sel["method"] == m) & (sel["backbone"] == b)].set_index("metric")
            rec = {"setting": names[m], "model": display_name(b)}
            for metric, col in METRIC_NAMES.items():
                if metric not in g.index:
                    rec[col] = np.nan if numeric else "n/a"
                    continue
                r = g.loc[metric]
                rec[col] = (round(100 * r["value"], digits) if numeric
                            else M.format_ci(r["value"], r["ci_lo"], r["ci_hi"], digits=digits))
            rows.append(rec)
    table = pd.DataFrame(rows)
    n_seeds = int(sel["n_seeds"].max())
    interval = ("value [95% bootstrap interval over patients], 1 seed" if n_seeds == 1
                else f"mean over {n_seeds} seeds [95% t-interval over seeds]")
    role = sel["role"].iloc[0]
    tag = "SYNTHETIC" if synthetic else "real data"
    table.attrs["synthetic"] = synthetic
    table.attrs["caption"] = (f"ours ({tag}): evaluated on {domain} ({role}), label space "
                              f"{label_space}, threshold {threshold}; % as {interval}")
    return table


def _published(rows, columns, caption: str, citation: str) -> pd.DataFrame:
    """A table of published numbers, with its caption and citation (never synthetic)."""
    t = pd.DataFrame(rows, columns=columns)
    t.attrs.update(caption=caption, citation=citation, synthetic=False)
    return t


def published_seed000_table() -> pd.DataFrame:
    """Seed 000's published numbers (course project slides; REFERENCE.md section 1): MIMIC-CXR
    -> NIH ChestX-ray14, 14 NIH labels, frozen ImageNet backbones, linear probe, batch 128,
    10 epochs; threshold not stated (0.5 presumably); no confidence intervals; %."""
    rows = [
        ("BCE linear probe", "ViT-B/16", 27.84, 7.25, 71.70, 18.82),
        ("BCE linear probe", "EfficientNet-B0", 26.13, 5.21, 64.94, 15.50),
        ("BCE linear probe", "ResNet-50", 19.70, 4.74, 67.83, 16.32),
        ("SupCon + linear probe", "ViT-B/16", 30.06, 9.41, 74.63, 21.79),
        ("SupCon + linear probe", "EfficientNet-B0", 29.14, 7.60, 67.82, 17.47),
        ("SupCon + linear probe", "ResNet-50", 27.95, 6.87, 69.68, 18.22),
    ]
    return _published(
        rows, ["setting", "model", "F1 micro", "F1 macro", "AUC macro", "mAP"],
        caption="published (student project slides, MIMIC→NIH, 14 labels, threshold 0.5 presumably, "
                "no CIs)",
        citation="Bansal, Hong, Kang, Kim: 'Robust Domain-Generalizable AI for Chest X-Ray "
                 "Disease Classification', CSCI 461 student project slides")


def published_cohen2020_table() -> pd.DataFrame:
    """Cross-domain AUROC with NIH ChestX-ray14 as the target (Cohen et al., MIDL 2020;
    DenseNet-121, 3 seeds; values read off the paper's heat-map, +-0.02)."""
    rows = [("Effusion", .84, .85, .89), ("Edema", .87, .87, .82),
            ("Cardiomegaly", .72, .79, .92), ("Consolidation", .69, .75, .76),
            ("Atelectasis", .69, .72, .77), ("Pneumothorax", .64, .67, .78),
            ("Pneumonia", .61, .60, .63)]
    return _published(
        rows, ["label", "train MIMIC (CheXpert labeler)", "train CheXpert", "train NIH (in-domain)"],
        caption="published AUROC on NIH ChestX-ray14 (Cohen et al. 2020; DenseNet-121, 3 seeds; "
                "read off the paper's heat-map, ±0.02)",
        citation="J. P. Cohen, M. Hashir, R. Brooks, H. Bertrand: 'On the limits of cross-domain "
                 "generalization in automated X-ray prediction', MIDL 2020")


def compare_with_published(ours: pd.DataFrame, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our seed-000-layout table and the published one stacked, with a ``source`` column that
    says which is which (published numbers: no intervals; ours: with intervals)."""
    published = published_seed000_table() if published is None else published
    pub = published.copy()
    for c in METRIC_NAMES.values():
        pub[c] = pub[c].map(lambda v: f"{v:.1f}")
    pub.insert(0, "source", published.attrs.get("caption", "published"))
    mine = ours.copy()
    mine.insert(0, "source", ours.attrs.get("caption", "ours"))
    t = pd.concat([pub, mine], ignore_index=True)
    t.attrs["synthetic"] = bool(ours.attrs.get("synthetic", False))
    return t


def unit_summary(path) -> dict:
    """The stored record of one unit (``units/<unit>/metrics.json``) without its result rows."""
    rec = json.loads((Path(path) / "metrics.json").read_text())
    rec.pop("rows", None)
    return rec


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """A GitHub Markdown table of ``df`` (no extra dependency)."""
    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, floatfmt)
        return str(v).replace("|", "\\|")

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------ seed 002 (masking methods)
#: seed 002's evaluation sets, in its tables' column order
SEED002_COLUMNS = ("CXR-P", "MIMIC", "CheXpert", "CheXpert-age", "ChestX-ray8")
_SEED002_CITATION = ("seed 002 (pneumothorax; ResNet-50; source CXR-P, a SIIM-ACR subset; "
                     "ERM vs ActDiff vs RRR), as summarised in REFERENCE.md section 1")


def published_seed002_table(table: str = "masks") -> pd.DataFrame:
    """Seed 002's published AUROC (%), one row per mask / method, columns
    :data:`SEED002_COLUMNS`; ``mean`` and ``halfwidth`` (of the 95 % interval) as numbers and a
    ``"83.5±1.2"`` string per column.

    ``table="masks"``: Tables 1, 2 and 5 together (10 seeds; CXR-P source): ERM, ActDiff and RRR
    with abnormality masks (Table 1), scaled-abnormality and lung-periphery masks (2 / 5).
    ``table="full"``: Table 3 (CXR-P Full, 8,540 train/val images, lung-periphery masks,
    3 seeds, no intervals published).
    """
    if table == "masks":
        rows = [
            ("ERM", "none", [(83.5, 1.2), (77.5, 2.2), (80.7, 1.5), (74.0, 1.6), (73.4, 1.1)]),
            ("ActDiff", "abnormality", [(78.6, 2.2), (68.7, 6.3), (71.6, 5.6), (68.1, 4.4), (69.8, 1.3)]),
            ("ActDiff", "scaled_abnormality", [(79.6, 2.2), (73.8, 2.8), (73.3, 3.9), (68.6, 2.5), (71.1, 2.2)]),
            ("ActDiff", "lung_periphery", [(82.8, 0.9), (77.6, 2.1), (80.2, 2.4), (72.6, 2.1), (73.1, 1.5)]),
            ("RRR", "abnormality", [(83.5, 1.4), (76.6, 3.0), (79.2, 2.0), (71.6, 2.3), (73.1, 1.6)]),
            ("RRR", "lung_periphery", [(83.2, 1.2), (77.6, 0.9), (81.1, 2.8), (73.0, 2.3), (72.8, 1.6)]),
        ]
        caption = "published AUROC % (seed 002, Tables 1, 2, 5; mean ± 95 % interval, 10 seeds)"
    elif table == "full":
        rows = [("ERM", "none", [(v, np.nan) for v in (90.6, 78.3, 82.5, 73.2, 76.1)]),
                ("ActDiff", "lung_periphery", [(v, np.nan) for v in (88.3, 81.2, 82.6, 74.2, 78.4)]),
                ("RRR", "lung_periphery", [(v, np.nan) for v in (89.6, 80.4, 82.8, 74.8, 76.6)])]
        caption = ("published AUROC % (seed 002, Table 3: CXR-P Full source, lung-periphery "
                   "masks, mean of 3 seeds, no intervals)")
    else:
        raise UnknownNameError(f"table must be 'masks' or 'full', got {table!r}")
    recs = []
    for method, mask, cells in rows:
        rec = {"method": method, "mask": mask}
        for col, (m, h) in zip(SEED002_COLUMNS, cells):
            rec[col] = f"{m:.1f}" if np.isnan(h) else f"{m:.1f}±{h:.1f}"
            rec[f"{col} mean"] = m
            rec[f"{col} halfwidth"] = h
        recs.append(rec)
    t = pd.DataFrame(recs)
    t.attrs.update(caption=caption, citation=_SEED002_CITATION, synthetic=False)
    return t


def _auc_rows(results: pd.DataFrame, metric: str, label_space: str | None, threshold: str):
    sel = results[(results["metric"] == metric) & (results["threshold"] == threshold)]
    if label_space is not None:
        sel = sel[sel["label_space"] == label_space]
    elif sel["label_space"].nunique() > 1:
        raise UnknownNameError(f"results hold several label spaces {sorted(sel['label_space'].unique())}; "
                       "pass label_space=")
    if sel.empty:
        raise UnknownNameError(f"no {metric} results (threshold {threshold!r}, label space "
                       f"{label_space!r}) in these results")
    return sel


def seed002_table(results: pd.DataFrame, metric: str = "auc_macro", label_space: str | None = None,
                  threshold: str = "tuned_source_val", arms: list[str] | None = None,
                  digits: int = 1) -> pd.DataFrame:
    """A study's results in seed 002's layout: one row per arm, one column per evaluation set
    (the in-domain source test first, then the targets), cells ``"mean±halfwidth"`` in % (mean
    over seeds and half the 95 % t-interval over seeds; one seed: the bootstrap interval),
    plus numeric ``"<set> mean"`` / ``"<set> halfwidth"`` columns.

    ``results``: a study's long results table (``StudyResult.results``). ``arms``: which arms,
    in which order (default: all, in the study's order).
    """
    sel = _auc_rows(results, metric, label_space, threshold)
    summ = summarise(sel)
    synthetic = bool(results.attrs.get("synthetic", summ["synthetic"].any()))
    domains = list(dict.fromkeys(
        list(summ.loc[summ["role"] == "in-domain", "domain"])
        + list(summ.loc[summ["role"] == "out-of-domain", "domain"])))
    names = setting_names(sel)
    order = arms or method_order(sel)
    unknown = [a for a in order if a not in names]
    if unknown:
        raise UnknownNameError(f"arm(s) {unknown} not in these results; arms: {method_order(sel)}")
    recs = []
    for arm in order:
        g = summ[summ["method"] == arm].set_index("domain")
        rec = {"arm": arm, "setting": names[arm], "n_seeds": int(g["n_seeds"].max())}
        for d in domains:
            if d not in g.index:
                rec[d], rec[f"{d} mean"], rec[f"{d} halfwidth"] = "n/a", np.nan, np.nan
                continue
            r = g.loc[d]
            m, h = 100 * r["value"], 100 * (r["ci_hi"] - r["ci_lo"]) / 2
            rec[d] = f"{m:.{digits}f}±{h:.{digits}f}"
            rec[f"{d} mean"], rec[f"{d} halfwidth"] = m, h
        recs.append(rec)
    t = pd.DataFrame(recs)
    n = int(t["n_seeds"].max()) if len(t) else 0
    tag = "SYNTHETIC" if synthetic else "real data"
    t.attrs.update(synthetic=synthetic, domains=domains,
                   caption=f"ours ({tag}): {METRIC_NAMES.get(metric, metric)} % as mean ± 95 % "
                           f"interval ({'t over ' + str(n) + ' seeds' if n > 1 else 'bootstrap, 1 seed'})")
    return t


#: the extra row of :func:`paired_difference`: each seed's mean over the out-of-domain sets
TARGETS_MEAN = "mean of targets"


def paired_difference(results: pd.DataFrame, arm: str, baseline: str, metric: str = "auc_macro",
                      label_space: str | None = None, threshold: str = "tuned_source_val",
                      level: float = 0.95) -> pd.DataFrame:
    """``arm`` minus ``baseline`` per evaluation set, in % points, paired by seed (the same
    seed draws the same initial weights and batch order): mean difference, its t-interval over
    seeds, the seeds, and ``beats`` = the interval lies above 0. Also the two arms' own
    intervals and ``separated`` = they do not overlap (the stricter reading). With several
    targets, a last row :data:`TARGETS_MEAN` compares each seed's mean over the targets."""
    sel = _auc_rows(results, metric, label_space, threshold)
    for a in (arm, baseline):
        if a not in set(sel["method"]):
            raise UnknownNameError(f"arm {a!r} not in these results; arms: {method_order(sel)}")
    piv = sel[sel["method"].isin([arm, baseline])].pivot_table(
        index=["domain", "seed"], columns="method", values="value").dropna()
    roles = dict(zip(sel["domain"], sel["role"]))
    targets = [d for d, r in roles.items() if r == "out-of-domain"]
    groups = list(piv.groupby(level=0, sort=False))
    if len(targets) > 1:  # each seed's mean over the targets, as one more "set"
        mean = piv[piv.index.get_level_values(0).isin(targets)].groupby(level=1).mean()
        groups.append((TARGETS_MEAN, mean))
        roles[TARGETS_MEAN] = "out-of-domain (mean)"
    out = []
    for d, g in groups:
        diff = 100 * (g[arm] - g[baseline]).to_numpy()
        a = M.summarise_seeds([{"m": v} for v in 100 * g[arm].to_numpy()], metrics=["m"],
                              level=level).iloc[0] if len(g) > 1 else None
        b = M.summarise_seeds([{"m": v} for v in 100 * g[baseline].to_numpy()], metrics=["m"],
                              level=level).iloc[0] if len(g) > 1 else None
        s = M.summarise_seeds([{"m": v} for v in diff], metrics=["m"], level=level).iloc[0] \
            if len(diff) > 1 else None
        rec = {"domain": d, "role": roles.get(d), "n_seeds": len(diff),
               "diff": float(diff.mean()),
               "diff_lo": float(s["lo"]) if s is not None else np.nan,
               "diff_hi": float(s["hi"]) if s is not None else np.nan}
        rec["beats"] = bool(rec["diff_lo"] > 0)
        rec["separated"] = bool(a is not None and float(a["lo"]) > float(b["hi"]))
        out.append(rec)
    t = pd.DataFrame(out)
    t.attrs.update(arm=arm, baseline=baseline, metric=metric)
    return t


def shortcut_reliance(out_dir, manifest: pd.DataFrame, column: str = "shortcut_marker",
                      sets: tuple[str, ...] | None = None, label: int = 0) -> pd.DataFrame:
    """How much each trained model's score follows a marker (e.g. the synthetic chest drain),
    read from a study's stored predictions (``out_dir/units/*/predictions.npz``).

    For every unit and evaluation set: among the images whose (first) label is ``label``
    (default the negatives, so the finding itself cannot explain the score), the AUROC of the
    model's score for telling images *with* the marker from those without. 0.5 = the score
    ignores the marker; near 1 = the marker alone raises the score (a shortcut). ``manifest``:
    the cache's manifest (``cache.manifest``), whose rows the stored ``<set>__rows`` index.
    NaN where a set has no image with (or without) the marker.
    """
    from sklearn.metrics import roc_auc_score

    if column not in manifest.columns:
        raise UnknownNameError(f"the manifest has no column {column!r} (columns: {list(manifest.columns)})")
    marker = manifest[column].to_numpy(dtype=float)
    files = sorted(Path(out_dir).glob("units/*/predictions.npz"))
    if not files:
        raise MissingInputError(f"no stored predictions under {out_dir}/units; run the study first")
    recs = []
    for f in files:
        meta = json.loads((f.parent / "metrics.json").read_text())
        z = np.load(f)
        names = [k[:-len("__scores")] for k in z.files if k.endswith("__scores")]
        for s in names:
            if sets is not None and s not in sets:
                continue
            y, sc, rows = z[f"{s}__labels"][:, 0], z[f"{s}__scores"][:, 0], z[f"{s}__rows"]
            keep = y == label
            m = marker[rows][keep]
            auc = (float(roc_auc_score(m, sc[keep])) if 0 < m.sum() < len(m) else float("nan"))
            recs.append({"method": meta["method"], "seed": meta["seed"], "set": s,
                         "n_marked": int(m.sum()), "n": int(keep.sum()), "marker_auc": auc})
    return pd.DataFrame(recs)
