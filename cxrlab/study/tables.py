"""A study's tables: summaries over seeds, seed 000's layout, and the published numbers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab import metrics as M
from cxrlab.errors import UnknownNameError
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
        caption="published (seed 000 slides, MIMIC→NIH, 14 labels, threshold 0.5 presumably, "
                "no CIs)",
        citation="Bansal, Hong, Kang, Kim: 'Robust Domain-Generalizable AI for Chest X-Ray "
                 "Disease Classification', CSCI 461 course project slides (seed 000)")


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
