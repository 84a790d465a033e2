"""Figures for the course. Every function returns a :class:`matplotlib.figure.Figure` and never
calls ``plt.show()``: a notebook displays the returned figure, a script saves it with
:func:`save_figure`. Figures of synthetic data say SYNTHETIC in their title.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlab.io import atomic_path
from cxrlab.labels import NIH14, lesion_mask_for

# a colour per domain, stable across figures (tab10 order)
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf"]

SHORT = {"Atelectasis": "Atel", "Cardiomegaly": "Cardio", "Consolidation": "Consol",
         "Edema": "Edema", "Effusion": "Effus", "Emphysema": "Emphys", "Fibrosis": "Fibro",
         "Hernia": "Hernia", "Infiltration": "Infil", "Mass": "Mass", "Nodule": "Nodule",
         "Pleural_Thickening": "PlThick", "Pneumonia": "Pneum", "Pneumothorax": "PTX"}


def _red_cmap():
    from matplotlib.colors import ListedColormap

    return ListedColormap(["red"])


_RED = _red_cmap()


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _colors(names: Sequence[str]) -> dict[str, str]:
    return {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(names)}


def _synthetic_tag(obj) -> str:
    if isinstance(obj, (pd.DataFrame, pd.Series)):
        synthetic = obj.attrs.get("synthetic", False)
    elif isinstance(obj, dict):
        synthetic = obj.get("synthetic", False)
    else:
        synthetic = getattr(obj, "synthetic", False)
    return "SYNTHETIC: " if synthetic else ""


def save_figure(fig, path: str | os.PathLike, dpi: int = 100, close: bool = False) -> Path:
    """Save ``fig`` atomically (PNG unless the suffix says otherwise); returns the path."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    if not path.suffix:
        path = path.with_suffix(".png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    if close:
        _plt().close(fig)
    return path


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------

def _positive_labels(cache, row: int, labels: Sequence[str]) -> list[str]:
    m = cache.manifest.iloc[row]
    return [lab for lab in labels if lab in m.index and m[lab] == 1]


def _gallery_rows(cache, per_domain: int, domains, seed: int, split) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    doms = cache.domains if domains is None else (
        [domains] if isinstance(domains, str) else list(domains))
    grid = []
    for d in doms:
        r = cache.select(split=split, domain=d)
        if len(r) > per_domain:
            r = np.sort(rng.choice(r, size=per_domain, replace=False))
        grid.append([int(x) for x in r])
    return grid


def plot_gallery(cache, rows: Sequence[int] | None = None, per_domain: int = 4, *,
                 domains: Sequence[str] | None = None, show_masks: bool = True,
                 labels: Sequence[str] = NIH14, seed: int = 0, split: str | None = None,
                 ncols: int = 6, panel_size: float = 1.9):
    """A grid of images: one row per domain (``per_domain`` images each, seeded sample), or the
    explicit cache ``rows``. With ``show_masks`` the lung mask is drawn as a cyan contour and the
    lesions as a red overlay. Each title: the domain and the positive labels among ``labels``.
    """
    plt = _plt()
    if rows is not None:
        flat = [int(r) for r in rows]
        if not flat:
            raise ValueError("rows is empty: nothing to show")
        ncols = min(ncols, len(flat))
        grid = [flat[i:i + ncols] for i in range(0, len(flat), ncols)]
    else:
        grid = _gallery_rows(cache, per_domain, domains, seed, split)
        ncols = max(len(g) for g in grid)
        if ncols == 0:
            raise ValueError("the requested domains/split hold no images")
    nrows = len(grid)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows + 0.5),
                             squeeze=False)
    lung_all, lesion_all = cache.lung_masks, cache.lesion_masks
    for i, line in enumerate(grid):
        for j in range(ncols):
            ax = axes[i, j]
            ax.set_axis_off()
            if j >= len(line):
                continue
            r = line[j]
            ax.imshow(np.asarray(cache.images[r]), cmap="gray", vmin=0, vmax=255,
                      interpolation="nearest")
            if show_masks and lesion_all is not None:
                les = lesion_mask_for(np.asarray(lesion_all[r]))
                if les.any():
                    ax.imshow(np.ma.masked_where(les == 0, les), cmap=_RED, alpha=0.45,
                              vmin=0, vmax=1, interpolation="nearest")
            if show_masks and lung_all is not None:
                lung = np.asarray(lung_all[r])
                if lung.any() and not lung.all():
                    ax.contour(lung, levels=[0.5], colors="cyan", linewidths=0.8)
            pos = _positive_labels(cache, r, labels)
            text = ", ".join(SHORT.get(p, p) for p in pos) or "no finding"
            dom = str(cache.manifest["domain"].iloc[r])
            ax.set_title(textwrap.fill(f"{dom}: {text}", 26), fontsize=7)
    what = "lung contour (cyan), lesions (red)" if show_masks else "images"
    fig.suptitle(f"{_synthetic_tag(cache)}{'hospitals' if cache.synthetic else 'images'} - "
                 f"{what}", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# image statistics
# --------------------------------------------------------------------------------------------

def plot_intensity_histograms(df: pd.DataFrame, ax=None, log: bool = False):
    """Lines of :func:`cxrlab.shift.intensity_histograms` output, one per domain."""
    plt = _plt()
    need = {"domain", "bin_center", "density"}
    if not need <= set(df.columns):
        raise ValueError(f"expected columns {sorted(need)} (from cxrlab.shift.intensity_histograms)"
                         f", got {list(df.columns)}")
    fig = ax.figure if ax is not None else plt.figure(figsize=(6.5, 3.6))
    ax = ax or fig.add_subplot(111)
    doms = list(dict.fromkeys(df["domain"]))
    col = _colors(doms)
    for d in doms:
        g = df[df["domain"] == d]
        ax.plot(g["bin_center"], g["density"], label=f"{d} (n={int(g['n_images'].iloc[0])})"
                if "n_images" in g else d, color=col[d], lw=1.6)
    if log:
        ax.set_yscale("log")
    region = df.attrs.get("region", "all")
    ax.set_xlabel("grey level (0-255)")
    ax.set_ylabel("fraction of pixels")
    ax.set_xlim(0, 255)
    where = {"all": "all pixels", "lung": "inside the lungs", "outside": "outside the lungs"}
    ax.set_title(f"{_synthetic_tag(df)}intensity histogram per hospital ({where.get(region, region)})",
                 fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_image_statistics(stats: pd.DataFrame,
                          columns: Sequence[str] = ("mean", "contrast", "noise", "gradient")):
    """Box plots of :func:`cxrlab.shift.image_statistics` columns, one box per domain."""
    plt = _plt()
    missing = [c for c in list(columns) + ["domain"] if c not in stats.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the statistics table; have {list(stats.columns)}")
    doms = list(dict.fromkeys(stats["domain"]))
    col = _colors(doms)
    fig, axes = plt.subplots(1, len(columns), figsize=(2.6 * len(columns), 3.2), squeeze=False)
    for ax, c in zip(axes[0], columns):
        data = [stats.loc[stats["domain"] == d, c].dropna().to_numpy() for d in doms]
        bp = ax.boxplot(data, patch_artist=True, widths=0.6, showfliers=False)
        for patch, d in zip(bp["boxes"], doms):
            patch.set_facecolor(col[d])
            patch.set_alpha(0.6)
        ax.set_xticks(range(1, len(doms) + 1))
        ax.set_xticklabels(doms, rotation=35, ha="right", fontsize=8)
        ax.set_title(c, fontsize=9)
    fig.suptitle(f"{_synthetic_tag(stats)}image statistics per hospital (grey levels)", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# domain classifier and AUC gap
# --------------------------------------------------------------------------------------------

def plot_domain_confusion(result, normalize: bool = True, ax=None):
    """Confusion matrix of a :class:`cxrlab.shift.DomainClassifierResult` (rows: true hospital).
    Cells show the row fraction (or the count) and the count."""
    plt = _plt()
    cm = result.confusion.to_numpy().astype(float)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    fig = ax.figure if ax is not None else plt.figure(figsize=(4.6, 4.0))
    ax = ax or fig.add_subplot(111)
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    doms = list(result.domains)
    ax.set_xticks(range(len(doms)))
    ax.set_yticks(range(len(doms)))
    ax.set_xticklabels(doms, rotation=35, ha="right", fontsize=8)
    ax.set_yticklabels(doms, fontsize=8)
    ax.set_xlabel("predicted hospital")
    ax.set_ylabel("true hospital")
    for i in range(len(doms)):
        for j in range(len(doms)):
            txt = f"{shown[i, j]:.2f}\n({int(cm[i, j])})" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                    color="white" if shown[i, j] > 0.6 * (shown.max() or 1) else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(f"{_synthetic_tag(result)}domain classifier ({result.method})\n"
                 f"accuracy {result.accuracy:.2f} vs chance {result.chance:.2f}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_auc_gap(df: pd.DataFrame, labels: Sequence[str] | None = None, ax=None):
    """Grouped bars of :func:`cxrlab.shift.source_target_gap`: AUC per label (and macro) for the
    source test split and every target test split. The dashed line is chance (0.5)."""
    plt = _plt()
    if "auc_macro" not in df.columns or "domain" not in df.columns:
        raise ValueError("expected a table from cxrlab.shift.source_target_gap "
                         "(columns domain, auc_macro, auc_<label>)")
    labels = list(labels) if labels is not None else [
        c[4:] for c in df.columns if c.startswith("auc_") and c != "auc_macro"]
    cols = [f"auc_{lab}" for lab in labels] + ["auc_macro"]
    names = [SHORT.get(lab, lab) for lab in labels] + ["macro"]
    doms = list(df["domain"])
    col = _colors(doms)
    fig = ax.figure if ax is not None else plt.figure(figsize=(max(6.0, 1.1 * len(cols) + 2), 3.8))
    ax = ax or fig.add_subplot(111)
    width = 0.8 / max(len(doms), 1)
    x = np.arange(len(cols))
    for k, (_, row) in enumerate(df.iterrows()):
        role = row.get("role", "")
        lab = f"{row['domain']} ({role})" if role else row["domain"]
        ax.bar(x + (k - (len(doms) - 1) / 2) * width, [row[c] for c in cols], width,
               label=lab, color=col[row["domain"]], alpha=0.9 if role == "source" else 0.7)
    ax.axhline(0.5, color="k", ls="--", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylim(0.3, 1.0)
    ax.set_ylabel("ROC AUC")
    src = df.attrs.get("source", df["domain"].iloc[0])
    ax.set_title(f"{_synthetic_tag(df)}trained at '{src}', tested at every hospital\n"
                 f"({_where_scored(df)})", fontsize=10)
    ax.legend(fontsize=7, frameon=False, ncol=min(len(doms), 4), loc="upper center",
              bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    return fig


def _where_scored(df: pd.DataFrame) -> str:
    ts = df.attrs.get("target_split", "test")
    return ("source: test split; targets: every image" if ts == "all"
            else f"source: test split; targets: {ts} split")


def plot_gap_comparison(gaps: dict[str, pd.DataFrame], label: str = "Pneumothorax", ax=None):
    """Bars of one label's AUC per domain for several :func:`source_target_gap` tables (e.g.
    ``{"shortcut off": df0, "shortcut on": df1}``): does the source-to-target drop grow?"""
    plt = _plt()
    fig = ax.figure if ax is not None else plt.figure(figsize=(6.0, 3.6))
    ax = ax or fig.add_subplot(111)
    runs = list(gaps)
    doms = list(dict.fromkeys(d for g in gaps.values() for d in g["domain"]))
    width = 0.8 / max(len(runs), 1)
    x = np.arange(len(doms))
    tag = ""
    for k, name in enumerate(runs):
        g = gaps[name].set_index("domain")
        col = f"auc_{label}"
        if col not in g.columns:
            raise KeyError(f"{label!r} was not evaluated in run {name!r}")
        tag = tag or _synthetic_tag(gaps[name])
        vals = [g[col].get(d, np.nan) for d in doms]
        ax.bar(x + (k - (len(runs) - 1) / 2) * width, vals, width, label=name,
               color=_PALETTE[k % len(_PALETTE)], alpha=0.8)
    ax.axhline(0.5, color="k", ls="--", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(doms, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0.3, 1.0)
    ax.set_ylabel(f"{label} AUC")
    first = next(iter(gaps.values()))
    ax.set_title(f"{tag}{label}: source vs targets\n({_where_scored(first)})", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# population and label shift
# --------------------------------------------------------------------------------------------

def prevalence_table(summary) -> pd.DataFrame:
    """Normalise the ways a prevalence can be given into one wide table (rows: labels,
    columns: domains, values: fraction positive; NaN = label not defined by that domain).

    Accepts: a :func:`cxrlab.shift.shift_summary` table (``prev_<label>`` columns, one row per
    domain); a dict with a ``"prevalence"`` table (from ``manifest_summary``); a long table
    with ``domain, label, prevalence`` columns; or an already wide labels x domains table.
    """
    if isinstance(summary, dict):
        if "prevalence" not in summary:
            raise KeyError(f"a summary dict needs a 'prevalence' entry; it has {list(summary)}")
        summary = summary["prevalence"]
    if hasattr(summary, "prevalence") and not isinstance(summary, pd.DataFrame):
        summary = summary.prevalence
    if not isinstance(summary, pd.DataFrame):
        raise TypeError(f"cannot read a prevalence table from {type(summary).__name__}")
    df = summary
    prev_cols = [c for c in df.columns if str(c).startswith("prev_")]
    if prev_cols:
        if "domain" in df.columns:
            df = df.set_index("domain")
        out = df[prev_cols].T
        out.index = [c[5:] for c in prev_cols]
        return out.astype(float)
    if {"domain", "label", "prevalence"} <= set(df.columns):
        return df.pivot(index="label", columns="domain", values="prevalence").astype(float)
    num = df.select_dtypes("number")
    if num.shape[1] == 0:
        raise ValueError("no numeric prevalence columns in the summary")
    return num.astype(float)


def plot_label_shift(summary, labels: Sequence[str] | None = None, ax=None,
                     title: str | None = None):
    """Prevalence per label, side by side for each domain, n/a where a domain does not define
    the label at all (a *label definition* difference, not a prevalence difference).

    ``summary``: anything :func:`prevalence_table` reads (a ``manifest_summary`` result, a
    :func:`cxrlab.shift.shift_summary` table, a long or wide prevalence table). Drawn by
    :func:`cxrlab.data.summary.plot_prevalence`, so real and synthetic data look the same.
    """
    from cxrlab.data.summary import ManifestSummary, plot_prevalence

    tab = prevalence_table(summary)
    if labels is not None:
        tab = tab.reindex(list(labels))
    tab.columns.name = None
    wrapped = ManifestSummary(prevalence=tab, counts=pd.DataFrame(),
                              demographics=pd.DataFrame(), by=getattr(summary, "by", "domain"))
    return plot_prevalence(wrapped, ax=ax, title=title or (
        f"{_synthetic_tag(summary)}label prevalence per domain"))


def plot_demographics(data, by: str = "domain", bins: int = 20, title: str | None = None):
    """Age distribution, % female and view shares per domain, drawn by
    :func:`cxrlab.data.summary.plot_demographics`, with a title that says SYNTHETIC when the
    data are. ``data``: a manifest-shaped DataFrame (``domain, age, sex, view``; e.g. from
    ``load_shipped_metadata``) or a :class:`~cxrlab.data.cache.Cache` (age needs the rows, not a
    summary, to draw its distribution)."""
    from cxrlab.data.summary import plot_demographics as _plot

    fig = _plot(data, by=by, bins=bins)
    fig.suptitle(title or f"{_synthetic_tag(data)}population per {by}", fontsize=10)
    fig.tight_layout()
    return fig
