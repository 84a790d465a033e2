"""Figures that describe data: a gallery of a cache's images with their lesion masks, label
prevalence per domain, and demographics. Style (colours, the SYNTHETIC tag, saving) comes from
:mod:`cxrlab.style`."""
from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlab.labels import NIH14, lesion_mask_for
from cxrlab.style import RED, SHORT, color_of, pyplot, synthetic_tag

#: the colour the galleries outline the shortcut (the chest drain) in
SHORTCUT_COLOR = "yellow"


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


def shortcut_outlines(cache, rows: Sequence[int]) -> np.ndarray | None:
    """Where the shortcut (the chest drain) lies in each of ``rows``: bool [n, S, S], or None
    when the cache has no shortcut (a real cache, or a synthetic one drawn without
    ``shortcut=True``). The masks are redrawn from the generator's own drain geometry
    (:func:`cxrlab.data.synthetic.writer.cache_shortcut_masks`), so they match the pixels."""
    meta = getattr(cache, "meta", {}) or {}
    if not (meta.get("synthetic") and meta.get("shortcut")):
        return None
    from cxrlab.data.synthetic.writer import cache_shortcut_masks

    return cache_shortcut_masks(cache, np.asarray(rows, dtype=np.int64), dilate=1) > 0


def plot_gallery(cache, rows: Sequence[int] | None = None, per_domain: int = 4, *,
                 domains: Sequence[str] | None = None, show_masks: bool = True,
                 labels: Sequence[str] = NIH14, seed: int = 0, split: str | None = None,
                 ncols: int = 6, panel_size: float = 1.9, show_shortcut: bool | None = None,
                 title: str | None = None):
    """A grid of images: one row per domain (``per_domain`` images each, seeded sample), or the
    explicit cache ``rows``. With ``show_masks`` the lung mask is drawn as a cyan contour and the
    lesions as a red overlay. Each title: the domain and the positive labels among ``labels``.
    Titles are written in the hospital's colour (:func:`cxrlab.style.color_of`).
    ``show_shortcut`` (default: whenever the cache was drawn with the shortcut) outlines the chest
    drain in yellow and adds "[drain]" to the title of the images that carry it. ``title``
    replaces the figure's title (laid out with the panels, so the two never overlap).
    """
    plt = pyplot()
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
    drains = {}
    if show_shortcut is not False:
        flat_rows = [r for line in grid for r in line]
        outl = shortcut_outlines(cache, flat_rows)
        if outl is None and show_shortcut:
            raise ValueError(f"{cache.path}: no shortcut to show (not a synthetic cache drawn with "
                             "shortcut=True); use show_shortcut=False")
        if outl is not None:
            drains = {r: m for r, m in zip(flat_rows, outl) if m.any()}
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
                    ax.imshow(np.ma.masked_where(les == 0, les), cmap=RED, alpha=0.45,
                              vmin=0, vmax=1, interpolation="nearest")
            if show_masks and lung_all is not None:
                lung = np.asarray(lung_all[r])
                if lung.any() and not lung.all():
                    ax.contour(lung, levels=[0.5], colors="cyan", linewidths=0.8)
            if r in drains:
                ax.contour(drains[r], levels=[0.5], colors=SHORTCUT_COLOR, linewidths=1.0)
            pos = _positive_labels(cache, r, labels)
            text = ", ".join(SHORT.get(p, p) for p in pos) or "no finding"
            if r in drains:
                text += " [drain]"
            dom = str(cache.manifest["domain"].iloc[r])
            ax.set_title(textwrap.fill(f"{dom}: {text}", 26), fontsize=8, color=color_of(dom))
    what = "lung contour (cyan), lesions (red)" if show_masks else "images"
    if drains:
        what += ", chest drain = the shortcut (yellow)"
    fig.suptitle(title or f"{synthetic_tag(cache)}{'hospitals' if cache.synthetic else 'images'}"
                 f" - {what}", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# image statistics
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
        f"{synthetic_tag(summary)}label prevalence per domain"))


def plot_demographics(data, by: str = "domain", bins: int = 20, title: str | None = None):
    """Age distribution, % female and view shares per domain, drawn by
    :func:`cxrlab.data.summary.plot_demographics`, with a title that says SYNTHETIC when the
    data are. ``data``: a manifest-shaped DataFrame (``domain, age, sex, view``; e.g. from
    ``load_shipped_metadata``) or a :class:`~cxrlab.data.cache.Cache` (age needs the rows, not a
    summary, to draw its distribution)."""
    from cxrlab.data.summary import plot_demographics as _plot

    fig = _plot(data, by=by, bins=bins)
    fig.suptitle(title or f"{synthetic_tag(data)}population per {by}", fontsize=10)
    fig.tight_layout()
    return fig
