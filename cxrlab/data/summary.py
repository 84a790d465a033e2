"""What is in a manifest: label prevalence and demographics per domain (or any column).

Works on any manifest: a cache's (``cache.manifest`` or the cache itself), a reader's, or the
real shipped metadata (:func:`cxrlab.data.metadata.load_shipped_metadata`).

>>> s = manifest_summary(pd.concat([load_shipped_metadata("nih"),
...                                 load_shipped_metadata("chexpert")]), labels="shared7")
>>> s.prevalence          # label x domain, positives / labelled images
>>> s.demographics        # domain x (images, patients, age, % female, views)

Prevalence is NaN-aware: it is positives / *labelled* images, and ``n_labelled`` says how many
images that is. A label a domain does not define shows as NaN with ``n_labelled = 0``, which is
the honest answer ("unknown"), not 0 %.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlab.labels import ALL_LABELS, get_label_space
from cxrlab.style import color_of

AGE_QUANTILES = (0.25, 0.5, 0.75)


def _as_manifest(manifest) -> pd.DataFrame:
    m = getattr(manifest, "manifest", manifest)
    if not isinstance(m, pd.DataFrame):
        raise TypeError(f"expected a manifest DataFrame or a Cache, got {type(manifest).__name__}")
    return m


def _labels(m: pd.DataFrame, labels) -> list[str]:
    if labels is None:
        return [c for c in ALL_LABELS if c in m.columns]
    names = list(get_label_space(labels))
    absent = [c for c in names if c not in m.columns]
    if absent and len(absent) == len(names):
        raise KeyError(f"none of the labels {names} is a column of this manifest")
    return names


def _groups(m: pd.DataFrame, by):
    if by is None:
        return [("all", m)]
    cols = [by] if isinstance(by, str) else list(by)
    missing = [c for c in cols if c not in m.columns]
    if missing:
        raise KeyError(f"cannot group by {missing}: the manifest's columns are {list(m.columns)}")
    out = []
    for key, g in m.groupby(cols if len(cols) > 1 else cols[0], dropna=False, sort=True):
        name = "/".join(map(str, key)) if isinstance(key, tuple) else str(key)
        out.append((name, g))
    return out


def prevalence_table(manifest, labels: str | Sequence[str] | None = None,
                     by: str | Sequence[str] | None = "domain") -> pd.DataFrame:
    """Long table: one row per (group, label) with ``positives``, ``negatives``, ``n_labelled``,
    ``n_missing`` and ``prevalence`` (= positives / n_labelled, NaN when nothing is labelled)."""
    m = _as_manifest(manifest)
    names = _labels(m, labels)
    rows = []
    for group, g in _groups(m, by):
        for label in names:
            v = (g[label].to_numpy(dtype=np.float64) if label in g.columns
                 else np.full(len(g), np.nan))
            known = ~np.isnan(v)
            pos = int((v[known] > 0.5).sum())
            n = int(known.sum())
            rows.append({"group": group, "label": label, "positives": pos,
                         "negatives": n - pos, "n_labelled": n, "n_missing": int(len(g) - n),
                         "prevalence": pos / n if n else np.nan})
    return pd.DataFrame(rows)


def demographics_table(manifest, by: str | Sequence[str] | None = "domain") -> pd.DataFrame:
    """One row per group: images, patients, images per patient, age mean/sd/quartiles,
    % female (of images with a known sex), % with unknown age/sex, split sizes and the share
    of each view (``view_PA`` ...)."""
    m = _as_manifest(manifest)
    views = sorted(m["view"].dropna().astype(str).unique()) if "view" in m.columns else []
    rows = []
    for group, g in _groups(m, by):
        r: dict = {"group": group, "n_images": len(g)}
        if "patient_id" in g.columns:
            n_pat = g["patient_id"].nunique()
            r["n_patients"] = n_pat
            r["images_per_patient"] = len(g) / n_pat if n_pat else np.nan
        if "age" in g.columns:
            age = pd.to_numeric(g["age"], errors="coerce")
            r["age_mean"] = age.mean()
            r["age_sd"] = age.std()
            for q in AGE_QUANTILES:
                r[f"age_q{int(q * 100)}"] = age.quantile(q)
            r["pct_age_unknown"] = 100 * age.isna().mean() if len(g) else np.nan
        if "sex" in g.columns:
            sex = g["sex"].astype("string").str.upper()
            known = sex.isin(["M", "F"])
            r["pct_female"] = 100 * (sex[known] == "F").mean() if known.any() else np.nan
            r["pct_sex_unknown"] = 100 * (~known).mean() if len(g) else np.nan
        if "split" in g.columns:
            for s in ("train", "val", "test"):
                r[f"n_{s}"] = int((g["split"] == s).sum())
        if views:
            vc = g["view"].astype(str).value_counts(normalize=True)
            for v in views:
                r[f"view_{v}"] = float(vc.get(v, 0.0))
        rows.append(r)
    return pd.DataFrame(rows).set_index("group")


@dataclass
class ManifestSummary:
    """``prevalence`` (label x group, fraction), ``counts`` (long table behind it, with
    positives and n_labelled) and ``demographics`` (group x statistic)."""

    prevalence: pd.DataFrame
    counts: pd.DataFrame
    demographics: pd.DataFrame
    by: str | Sequence[str] | None

    def as_dict(self) -> dict:
        return {"prevalence": self.prevalence, "counts": self.counts,
                "demographics": self.demographics}

    def __getitem__(self, key: str) -> pd.DataFrame:
        return self.as_dict()[key]

    def _repr_html_(self) -> str:
        fmt = self.prevalence.style.format("{:.1%}", na_rep="n/a").to_html()
        demo = self.demographics.T.to_html(float_format=lambda x: f"{x:.2f}", na_rep="n/a")
        return (f"<h4>Prevalence (positives / labelled; n/a = not labelled)</h4>{fmt}"
                f"<h4>Demographics</h4>{demo}")

    def __repr__(self) -> str:
        with pd.option_context("display.float_format", "{:.3f}".format):
            return (f"Prevalence (positives / labelled):\n{self.prevalence}\n\n"
                    f"Demographics:\n{self.demographics.T}")


def manifest_summary(manifest, labels: str | Sequence[str] | None = None,
                     by: str | Sequence[str] | None = "domain") -> ManifestSummary:
    """Per-label prevalence and a demographic table of a manifest, per ``by`` group.

    ``labels``: a label space name ("nih14", "chexpert14", "shared7"), a list of labels, or
    None for every canonical label column present. ``by``: a column (default ``"domain"``), a
    list of columns, or None for one group ``"all"``.
    """
    counts = prevalence_table(manifest, labels, by)
    order = list(dict.fromkeys(counts["label"]))
    prev = counts.pivot(index="label", columns="group", values="prevalence").reindex(order)
    prev.columns.name = None
    return ManifestSummary(prevalence=prev, counts=counts,
                           demographics=demographics_table(manifest, by), by=by)


def plot_prevalence(summary: ManifestSummary, ax=None, title: str | None = None):
    """Grouped horizontal bars: one bar per group and label; undefined labels are marked n/a."""
    import matplotlib.pyplot as plt

    prev = summary.prevalence
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(prev) + 1.2))
    else:
        fig = ax.figure
    groups = list(prev.columns)
    h = 0.8 / max(1, len(groups))
    y = np.arange(len(prev))
    for j, g in enumerate(groups):
        vals = prev[g].to_numpy(dtype=float)
        ax.barh(y + (j - (len(groups) - 1) / 2) * h, np.nan_to_num(vals), height=h, label=g,
                color=color_of(g))
        for yi, v in zip(y, vals):
            if np.isnan(v):
                ax.text(0.002, yi + (j - (len(groups) - 1) / 2) * h, "n/a", va="center",
                        fontsize=7, color="grey")
    ax.set_yticks(y, prev.index)
    ax.invert_yaxis()
    ax.set_xlabel("prevalence (positives / labelled images)")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.legend(title=summary.by if isinstance(summary.by, str) else None, fontsize=8)
    ax.set_title(title or "Label prevalence")
    fig.tight_layout()
    return fig


def plot_demographics(manifest, by: str | None = "domain", bins: int = 20):
    """Three panels per manifest: age histogram (density), % female, view shares per group."""
    import matplotlib.pyplot as plt

    m = _as_manifest(manifest)
    groups = _groups(m, by)
    demo = demographics_table(m, by)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    edges = np.linspace(0, 100, bins + 1)
    for name, g in groups:
        age = pd.to_numeric(g.get("age", pd.Series(dtype=float)), errors="coerce").dropna()
        if len(age):
            axes[0].hist(age, bins=edges, density=True, histtype="step", lw=2, label=name,
                         color=color_of(name))
    axes[0].set(xlabel="age (years)", ylabel="density", title="Age")
    axes[0].legend(fontsize=8)
    if "pct_female" in demo.columns:
        axes[1].bar(demo.index.astype(str), demo["pct_female"].fillna(0),
                    color=[color_of(g) for g in demo.index.astype(str)])
    axes[1].set(ylabel="% female (known sex)", title="Sex", ylim=(0, 100))
    view_cols = [c for c in demo.columns if c.startswith("view_")]
    bottom = np.zeros(len(demo))
    for c in view_cols:
        axes[2].bar(demo.index.astype(str), demo[c], bottom=bottom, label=c[5:])
        bottom += demo[c].to_numpy()
    axes[2].set(ylabel="share of images", title="View", ylim=(0, 1))
    if view_cols:
        axes[2].legend(fontsize=8)
    for ax in axes[1:]:
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig
