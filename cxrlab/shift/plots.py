"""Figures of the shift measurements (:mod:`cxrlab.shift`): intensity histograms, image
statistics, the domain classifier's confusion matrix and the source-to-target AUC gap. Style
comes from :mod:`cxrlab.style`."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from cxrlab.style import RUN_SHADES, SHORT, color_of, colors, pyplot, synthetic_tag


def plot_intensity_histograms(df: pd.DataFrame, ax=None, log: bool = False):
    """Lines of :func:`cxrlab.shift.intensity_histograms` output, one per domain."""
    plt = pyplot()
    need = {"domain", "bin_center", "density"}
    if not need <= set(df.columns):
        raise ValueError(f"expected columns {sorted(need)} (from cxrlab.shift.intensity_histograms)"
                         f", got {list(df.columns)}")
    fig = ax.figure if ax is not None else plt.figure(figsize=(6.5, 3.6))
    ax = ax or fig.add_subplot(111)
    doms = list(dict.fromkeys(df["domain"]))
    col = colors(doms)
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
    ax.set_title(f"{synthetic_tag(df)}intensity histogram per hospital ({where.get(region, region)})",
                 fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_image_statistics(stats: pd.DataFrame,
                          columns: Sequence[str] = ("mean", "contrast", "noise", "gradient")):
    """Box plots of :func:`cxrlab.shift.image_statistics` columns, one box per domain."""
    plt = pyplot()
    missing = [c for c in list(columns) + ["domain"] if c not in stats.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the statistics table; have {list(stats.columns)}")
    doms = list(dict.fromkeys(stats["domain"]))
    col = colors(doms)
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
    fig.suptitle(f"{synthetic_tag(stats)}image statistics per hospital (grey levels)", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# domain classifier and AUC gap
# --------------------------------------------------------------------------------------------


def plot_domain_confusion(result, normalize: bool = True, ax=None):
    """Confusion matrix of a :class:`cxrlab.shift.DomainClassifierResult` (rows: true hospital).
    Cells show the row fraction (or the count) and the count."""
    plt = pyplot()
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
    view = getattr(result, "pixels", "all")
    what = result.method if view == "all" else f"{result.method}, {view} pixels"
    ax.set_title(f"{synthetic_tag(result)}domain classifier ({what})\n"
                 f"accuracy {result.accuracy:.2f} vs chance {result.chance:.2f}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_auc_gap(df: pd.DataFrame, labels: Sequence[str] | None = None, ax=None):
    """Grouped bars of :func:`cxrlab.shift.source_target_gap`: AUC per label (and macro) for the
    source test split and every target test split. The dashed line is chance (0.5)."""
    plt = pyplot()
    if "auc_macro" not in df.columns or "domain" not in df.columns:
        raise ValueError("expected a table from cxrlab.shift.source_target_gap "
                         "(columns domain, auc_macro, auc_<label>)")
    labels = list(labels) if labels is not None else [
        c[4:] for c in df.columns if c.startswith("auc_") and c != "auc_macro"]
    cols = [f"auc_{lab}" for lab in labels] + ["auc_macro"]
    names = [SHORT.get(lab, lab) for lab in labels] + ["macro"]
    doms = list(df["domain"])
    col = colors(doms)
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
    ax.set_title(f"{synthetic_tag(df)}trained at '{src}', tested at every hospital\n"
                 f"({_where_scored(df)})", fontsize=10)
    ax.legend(fontsize=7, frameon=False, ncol=min(len(doms), 4), loc="upper center",
              bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    return fig


def _where_scored(df: pd.DataFrame) -> str:
    ts = df.attrs.get("target_split", "test")
    return ("source: test split; targets: every image" if ts == "all"
            else f"source: test split; targets: {ts} split")


def _color_ticks(ax, names) -> None:
    """Colour each x tick label with its hospital's colour (the course's one palette)."""
    for tick, name in zip(ax.get_xticklabels(), names):
        tick.set_color(color_of(name))


def _auc_per_hospital_axes(ax, x, doms, label: str, top: float) -> None:
    """Chance line, hospital tick labels in their colours and AUC axis labels of the bar charts
    of one label's AUC per hospital."""
    ax.axhline(0.5, color="k", ls="--", lw=0.8, label="chance (0.5)")
    ax.set_xticks(x)
    ax.set_xticklabels(doms, rotation=20, ha="right", fontsize=8)
    _color_ticks(ax, doms)
    ax.set_ylim(0.3, top)
    ax.set_xlabel("hospital")
    ax.set_ylabel(f"{label} ROC AUC")


def plot_gap_comparison(gaps: dict[str, pd.DataFrame], label: str = "Pneumothorax", ax=None):
    """Bars of one label's AUC per domain for several :func:`source_target_gap` tables (e.g.
    ``{"shortcut off": df0, "shortcut on": df1}``): does the source-to-target drop grow?
    Runs get a neutral light/dark pair (:data:`cxrlab.style.RUN_SHADES`); hospital names are
    written in their hospital's colour."""
    plt = pyplot()
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
        tag = tag or synthetic_tag(gaps[name])
        vals = [g[col].get(d, np.nan) for d in doms]
        ax.bar(x + (k - (len(runs) - 1) / 2) * width, vals, width, label=name,
               color=RUN_SHADES[k % len(RUN_SHADES)], edgecolor="black", lw=0.5)
    _auc_per_hospital_axes(ax, x, doms, label, top=1.0)
    first = next(iter(gaps.values()))
    ax.set_title(f"{tag}{label}: source vs targets\n({_where_scored(first)})", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_seeded_gap(gap, labels: Sequence[str] | None = None, run: str | None = None, ax=None):
    """Grouped bars of a :class:`cxrlab.shift.SeededGap`: the AUC per label (and macro) at every
    hospital, mean over seeds, with its interval (seeds and patients) as an error bar; bars in
    the hospitals' colours, chance (0.5) dashed."""
    plt = pyplot()
    tab = gap.table(run)
    labels = list(labels) if labels is not None else list(gap.labels) + ["macro"]
    doms = list(gap.domains)
    fig = ax.figure if ax is not None else plt.figure(figsize=(max(6.5, 1.2 * len(labels) + 2), 4.0))
    ax = ax or fig.add_subplot(111)
    width = 0.8 / max(len(doms), 1)
    x = np.arange(len(labels))
    for k, d in enumerate(doms):
        t = tab[tab["domain"] == d].set_index("label").reindex(labels)
        err = np.vstack([t["auc"] - t["lo"], t["hi"] - t["auc"]])
        role = "source" if d == gap.source else "target"
        ax.bar(x + (k - (len(doms) - 1) / 2) * width, t["auc"], width, yerr=err, capsize=2,
               label=f"{d} ({role})", color=color_of(d), alpha=0.9 if role == "source" else 0.75,
               error_kw={"lw": 0.8})
    ax.axhline(0.5, color="k", ls="--", lw=0.8, label="chance (0.5)")
    ax.set_xticks(x)
    ax.set_xticklabels([SHORT.get(lab, lab) for lab in labels], fontsize=8)
    ax.set_xlabel("finding (macro = mean over findings)")
    ax.set_ylim(0.3, 1.02)
    ax.set_ylabel("ROC AUC")
    ax.set_title(f"{synthetic_tag(gap)}trained at '{gap.source}', tested at every hospital: "
                 f"mean of {len(gap.seeds)} seeds, {int(round(100 * gap.level))} % interval\n"
                 f"(seeds and patients; source: test split; targets: "
                 f"{'every image' if gap.target_split == 'all' else gap.target_split + ' split'})",
                 fontsize=10)
    ax.legend(fontsize=7, frameon=False, ncol=min(len(doms) + 1, 5), loc="upper center",
              bbox_to_anchor=(0.5, -0.14))
    fig.tight_layout()
    return fig


def plot_seeded_comparison(gap, label: str = "Pneumothorax", ax=None):
    """One label's AUC per hospital for every run of a :class:`cxrlab.shift.SeededGap` (e.g.
    shortcut off / on), mean over seeds with intervals; runs in a neutral light/dark pair,
    hospital names in their colours, chance dashed."""
    plt = pyplot()
    fig = ax.figure if ax is not None else plt.figure(figsize=(6.4, 3.8))
    ax = ax or fig.add_subplot(111)
    doms = list(gap.domains)
    width = 0.8 / max(len(gap.runs), 1)
    x = np.arange(len(doms))
    for k, run in enumerate(gap.runs):
        ivs = [gap.score(d, label, run) for d in doms]
        vals = np.array([iv.value for iv in ivs])
        err = np.vstack([vals - [iv.lo for iv in ivs], [iv.hi for iv in ivs] - vals])
        ax.bar(x + (k - (len(gap.runs) - 1) / 2) * width, vals, width, yerr=err, capsize=3,
               label=run, color=RUN_SHADES[k % len(RUN_SHADES)], edgecolor="black", lw=0.5,
               error_kw={"lw": 0.9})
    _auc_per_hospital_axes(ax, x, doms, label, top=1.02)
    ax.set_title(f"{synthetic_tag(gap)}{label} AUC per hospital: mean of {len(gap.seeds)} seeds, "
                 f"{int(round(100 * gap.level))} % interval", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# population and label shift
# --------------------------------------------------------------------------------------------
