"""Figures of a study (:mod:`cxrlab.study`): each takes the study's summary table
(:func:`cxrlab.study.summarise`) or per-label table and returns a matplotlib Figure; nothing is
shown or saved here (use :func:`cxrlab.style.save_figure`). Error bars are the 95 % intervals
of the table (bootstrap over patients for one seed, t-interval over seeds for several).
Figures of synthetic data say SYNTHETIC in their title.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from cxrlab.style import PALETTE as _COLORS, SHORT, color_of
from cxrlab.study.tables import _model_order, method_order, setting_names

_METRIC = {"f1_micro": "F1 micro", "f1_macro": "F1 macro", "auc_macro": "AUC macro",
           "map": "mAP"}


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _tag(df: pd.DataFrame) -> str:
    syn = df.attrs.get("synthetic")
    if syn is None:
        syn = bool(df["synthetic"].any()) if "synthetic" in df.columns and len(df) else False
    return "SYNTHETIC: " if syn else ""


def _check(summary: pd.DataFrame) -> None:
    need = {"method", "backbone", "domain", "role", "label_space", "threshold", "metric", "value",
            "ci_lo", "ci_hi"}
    missing = need - set(summary.columns)
    if missing:
        raise ValueError(f"expected a study summary (cxrlab.study.summarise); missing columns "
                         f"{sorted(missing)}")


def _domains(summary: pd.DataFrame) -> list[str]:
    """Evaluation sets, in-domain first."""
    d = summary.drop_duplicates("domain")[["domain", "role"]]
    return list(d.loc[d["role"] == "in-domain", "domain"]) + list(
        d.loc[d["role"] != "in-domain", "domain"])


def _models(summary: pd.DataFrame) -> list[str]:
    return _model_order(summary["backbone"].unique())


def _methods(summary: pd.DataFrame) -> list[str]:
    return method_order(summary)


def _bars(ax, x, vals, lo, hi, width, color, label, hatch=None, alpha=0.85):
    vals, lo, hi = (np.asarray(a, dtype=float) for a in (vals, lo, hi))
    err = np.vstack([np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)])
    err = np.where(np.isnan(err), 0, err)
    ax.bar(x, vals, width, color=color, label=label, hatch=hatch, alpha=alpha,
           edgecolor="white" if hatch is None else color, linewidth=0.5)
    ax.errorbar(x, vals, yerr=err, fmt="none", ecolor="black", elinewidth=0.7, capsize=1.5)


def _lookup(sel: pd.DataFrame, **where) -> tuple[float, float, float]:
    m = np.ones(len(sel), dtype=bool)
    for k, v in where.items():
        m &= (sel[k] == v).to_numpy()
    r = sel[m]
    if r.empty:
        return np.nan, np.nan, np.nan
    r = r.iloc[0]
    return float(r["value"]), float(r["ci_lo"]), float(r["ci_hi"])


#: one hatch per method where bars of several methods share a backbone's colour
_HATCHES = [None, "//", "..", "xx", "\\\\"]


def _model_name(b: str) -> str:
    from cxrlab.models import display_name

    return display_name(b)


def plot_in_vs_out(summary: pd.DataFrame, metric: str = "auc_macro", label_space: str = "shared7",
                   threshold: str = "tuned_source_val"):
    """One panel per method: ``metric`` at the source's test split (in-domain) and at every
    target (out-of-domain), one bar per backbone, with 95 % intervals."""
    plt = _plt()
    _check(summary)
    sel = summary[(summary["metric"] == metric) & (summary["label_space"] == label_space)
                  & (summary["threshold"] == threshold)]
    if sel.empty:
        raise KeyError(f"no {metric} results for label space {label_space!r} / {threshold!r}")
    methods, models, doms = _methods(sel), _models(sel), _domains(sel)
    fig, axes = plt.subplots(1, len(methods), figsize=(3.6 * len(methods) + 0.6, 3.4),
                             squeeze=False, sharey=True)
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(doms))
    for ax, m in zip(axes[0], methods):
        for k, b in enumerate(models):
            v = [_lookup(sel, method=m, backbone=b, domain=d) for d in doms]
            _bars(ax, x + (k - (len(models) - 1) / 2) * width, [a[0] for a in v],
                  [a[1] for a in v], [a[2] for a in v], width, color_of(b), _model_name(b))
        if metric.startswith("auc"):
            ax.axhline(0.5, color="k", ls="--", lw=0.7)
        ax.axvspan(-0.5, 0.5, color="0.92", zorder=0)  # the in-domain set
        ax.set_xticks(x)
        ax.set_xticklabels(doms, rotation=25, ha="right", fontsize=8)
        ax.set_title(_setting(sel, m), fontsize=9)
    axes[0, 0].set_ylabel(f"{_METRIC.get(metric, metric)} ({label_space})")
    lo = 0.3 if metric.startswith("auc") else 0.0
    axes[0, 0].set_ylim(lo, 1.0)
    axes[0, -1].legend(fontsize=7, frameon=False, loc="upper right")
    thr = "" if _threshold_free(metric) else f", thresholds {threshold}"
    fig.suptitle(f"{_tag(summary)}in-domain (grey) vs out-of-domain, {label_space}{thr}; "
                 f"bars: 95% intervals", fontsize=9)
    fig.tight_layout()
    return fig


def _threshold_free(metric: str) -> bool:
    """AUC and mAP rank images: no threshold enters them, so no title should name one."""
    return metric.startswith("auc") or metric in ("map", "mAP")


def _setting(summary: pd.DataFrame, m: str) -> str:
    return setting_names(summary).get(m, m)


def _short(summary: pd.DataFrame, m: str) -> str:
    """A few characters for arm ``m``: the method's short name from the registry (the arm's own
    name when it is a variant of the method)."""
    from cxrlab.methods import ALGORITHMS

    alg = (dict(zip(summary["method"], summary["algorithm"])).get(m, m)
           if "algorithm" in summary.columns else m)
    cls = ALGORITHMS.get(alg)
    return cls.short_name if cls is not None and alg == m else m


def plot_thresholds(summary: pd.DataFrame, metric: str = "f1_macro", label_space: str = "shared7",
                    method: str | None = None):
    """F1 with the fixed 0.5 threshold (hatched) vs thresholds tuned on the source validation
    split (solid), per evaluation set and backbone, for one method (default: the first)."""
    plt = _plt()
    _check(summary)
    method = method or _methods(summary)[0]
    sel = summary[(summary["metric"] == metric) & (summary["label_space"] == label_space)
                  & (summary["method"] == method)]
    if sel.empty:
        raise KeyError(f"no {metric} results for {method!r} in label space {label_space!r}")
    models, doms = _models(sel), _domains(sel)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.6 * len(doms) + 1.5), 3.4))
    n = 2 * len(models)
    width = 0.84 / n
    x = np.arange(len(doms))
    for k, b in enumerate(models):
        for j, (thr, hatch) in enumerate((("fixed0.5", "///"), ("tuned_source_val", None))):
            v = [_lookup(sel, backbone=b, domain=d, threshold=thr) for d in doms]
            pos = x + (2 * k + j - (n - 1) / 2) * width
            _bars(ax, pos, [a[0] for a in v], [a[1] for a in v], [a[2] for a in v], width,
                  color_of(b), f"{_model_name(b)}, {'0.5' if j == 0 else 'tuned'}", hatch,
                  alpha=0.45 if j == 0 else 0.9)
    ax.axvspan(-0.5, 0.5, color="0.92", zorder=0)
    ax.set_xticks(x)
    ax.set_xticklabels(doms, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"{_METRIC.get(metric, metric)} ({label_space})")
    ax.set_ylim(0, 1.0)
    ax.legend(fontsize=7, frameon=False, ncol=len(models), loc="upper right")
    ax.set_title(f"{_tag(summary)}{_setting(sel, method)}: fixed 0.5 (hatched) vs tuned on source "
                 f"validation (solid)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_label_spaces(summary: pd.DataFrame, domain: str | None = None,
                      threshold: str = "fixed0.5",
                      metrics: Sequence[str] = ("f1_macro", "auc_macro"),
                      spaces: Sequence[str] = ("shared7", "nih14")):
    """The 14-label pitfall: the same predictions scored on the shared labels and on all 14,
    per method and backbone, at one evaluation set (default: the first target)."""
    plt = _plt()
    _check(summary)
    if domain is None:
        doms = _domains(summary)
        domain = next((d for d in doms if (summary.loc[summary["domain"] == d, "role"]
                                           == "out-of-domain").any()), doms[0])
    sel = summary[(summary["domain"] == domain) & (summary["threshold"] == threshold)
                  & summary["label_space"].isin(spaces)]
    if sel.empty:
        raise KeyError(f"no results for domain {domain!r} in label spaces {list(spaces)}")
    pairs = [(m, b) for m in _methods(sel) for b in _models(sel)
             if ((sel["method"] == m) & (sel["backbone"] == b)).any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4.0, 0.9 * len(pairs) + 1.5) * len(metrics)
                                                      / 1.4, 3.6), squeeze=False)
    x = np.arange(len(pairs))
    width = 0.8 / len(spaces)
    for ax, metric in zip(axes[0], metrics):
        for k, sp in enumerate(spaces):
            v = [_lookup(sel, method=m, backbone=b, label_space=sp, metric=metric) for m, b in pairs]
            _bars(ax, x + (k - (len(spaces) - 1) / 2) * width, [a[0] for a in v],
                  [a[1] for a in v], [a[2] for a in v], width, _COLORS[(k + 3) % 10], sp)
        if metric.startswith("auc"):
            ax.axhline(0.5, color="k", ls="--", lw=0.7)
        ax.set_xticks(x)
        ax.set_xticklabels([f"{_model_name(b)}\n{_short(sel, m)}" for m, b in pairs],
                           fontsize=7)
        ax.set_ylabel(_METRIC.get(metric, metric))
        ax.set_ylim(0, 1.0)
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle(f"{_tag(summary)}the same predictions at {domain}, scored on "
                 f"{' vs '.join(spaces)}" + ("" if all(_threshold_free(m) for m in metrics)
                                      else f" (F1 at threshold {threshold})"), fontsize=9)
    fig.tight_layout()
    return fig


def plot_per_label(per_label: pd.DataFrame, domain: str | None = None, method: str | None = None,
                   threshold_kind: str = "tuned_source_val", metric: str = "auc", seed: int | None = None):
    """Per-label ``metric`` (auc, ap or f1) at one evaluation set, one bar per backbone; labels
    the source never annotates are shaded and marked: their scores are chance by construction."""
    plt = _plt()
    need = {"method", "backbone", "domain", "label", metric, "source_defined", "threshold_kind"}
    if not need <= set(per_label.columns):
        raise ValueError(f"expected a study per-label table with columns {sorted(need)}")
    if domain is None:
        out = per_label.loc[per_label["role"] == "out-of-domain", "domain"]
        domain = str(out.iloc[0]) if len(out) else str(per_label["domain"].iloc[0])
    method = method or _methods(per_label)[0]
    sel = per_label[(per_label["domain"] == domain) & (per_label["method"] == method)
                    & (per_label["threshold_kind"] == threshold_kind)]
    if seed is not None:
        sel = sel[sel["seed"] == seed]
    if sel.empty:
        raise KeyError(f"no per-label rows for {method!r} at {domain!r}")
    labels = list(dict.fromkeys(sel["label"]))
    models = _models(sel)
    undefined = set(sel.loc[~sel["source_defined"].astype(bool), "label"])
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(labels) + 1.5), 3.4))
    x = np.arange(len(labels))
    width = 0.8 / max(len(models), 1)
    for j, lab in enumerate(labels):
        if lab in undefined:
            ax.axvspan(j - 0.5, j + 0.5, color="0.85", zorder=0)
    for k, b in enumerate(models):
        g = sel[sel["backbone"] == b].groupby("label")[metric].mean()
        ax.bar(x + (k - (len(models) - 1) / 2) * width, [g.get(lab, np.nan) for lab in labels],
               width, color=color_of(b), label=_model_name(b), alpha=0.85)
    if metric == "auc":
        ax.axhline(0.5, color="k", ls="--", lw=0.7)
    ax.set_xticks(x)
    ax.set_xticklabels([SHORT.get(lab, lab) + ("*" if lab in undefined else "") for lab in labels],
                       rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.0)
    ax.set_ylabel(f"{metric.upper()} per label")
    ax.legend(fontsize=7, frameon=False, loc="upper right")
    note = "; * grey = never labelled at the source (cannot be learnt)" if undefined else ""
    ax.set_title(f"{_tag(per_label)}{_setting(per_label, method)} at {domain}{note}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_study_comparison(summary: pd.DataFrame, metric: str = "auc_macro",
                          threshold: str = "tuned_source_val", label_space: str | None = None):
    """One panel per study (``study`` column): ``metric`` per evaluation set, one bar per
    (method, backbone); the fair label space (shared7 when present)."""
    plt = _plt()
    _check(summary)
    studies = list(dict.fromkeys(summary["study"]))
    fig, axes = plt.subplots(len(studies), 1, figsize=(10.0, 2.9 * len(studies)), squeeze=False)
    for ax, st in zip(axes[:, 0], studies):
        s = summary[summary["study"] == st]
        space = label_space or ("shared7" if (s["label_space"] == "shared7").any()
                                else s["label_space"].iloc[0])
        sel = s[(s["metric"] == metric) & (s["threshold"] == threshold) & (s["label_space"] == space)]
        doms = _domains(sel)
        pairs = [(m, b) for m in _methods(sel) for b in _models(sel)
                 if ((sel["method"] == m) & (sel["backbone"] == b)).any()]
        width = 0.8 / max(len(pairs), 1)
        x = np.arange(len(doms))
        for k, (m, b) in enumerate(pairs):
            v = [_lookup(sel, method=m, backbone=b, domain=d) for d in doms]
            _bars(ax, x + (k - (len(pairs) - 1) / 2) * width, [a[0] for a in v],
                  [a[1] for a in v], [a[2] for a in v], width, color_of(b),
                  f"{_setting(summary, m)}, {_model_name(b)}",
                  hatch=_HATCHES[_methods(sel).index(m) % len(_HATCHES)])
        if metric.startswith("auc"):
            ax.axhline(0.5, color="k", ls="--", lw=0.7)
            ax.set_ylim(0.3, 1.0)
        ax.set_xticks(x)
        ax.set_xticklabels(doms, fontsize=8)
        ax.set_ylabel(f"{_METRIC.get(metric, metric)} ({space})", fontsize=8)
        ax.set_title(st, fontsize=9)
        ax.legend(fontsize=6, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ masking methods (seed 002)
def plot_masks(images: np.ndarray, masks: dict, titles: Sequence[str] | None = None,
               synthetic: bool = True):
    """The same images with each kind of mask over them: one row per image, one column per
    mask kind (``masks``: kind -> uint8 [n, S, S], e.g. from
    :func:`cxrlab.methods.mask_guided.compute_allowed`); the allowed region in colour, the
    rest dimmed. Returns the Figure."""
    plt = _plt()
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[:, 0]
    n, kinds = len(images), list(masks)
    for k, m in masks.items():
        if np.asarray(m).reshape(-1, *images.shape[-2:]).shape[0] != n:
            raise ValueError(f"mask {k!r} has {len(m)} images, the images {n}")
    fig, axes = plt.subplots(n, len(kinds) + 1, figsize=(1.9 * (len(kinds) + 1), 1.9 * n),
                             squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i], cmap="gray", vmin=0, vmax=255)
        axes[i, 0].set_ylabel(titles[i] if titles is not None else f"image {i}", fontsize=8)
        for j, k in enumerate(kinds):
            m = np.asarray(masks[k]).reshape(n, *images.shape[-2:])[i] != 0
            ax = axes[i, j + 1]
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
            ax.imshow(np.ma.masked_where(m, np.ones_like(m, float)), cmap="gray_r", alpha=0.55,
                      vmin=0, vmax=1)
            ax.imshow(np.ma.masked_where(~m, np.ones_like(m, float)), cmap="autumn", alpha=0.35)
            ax.set_title(f"{k}\n{100 * m.mean():.0f}% of image" if i == 0 else
                         f"{100 * m.mean():.0f}%", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(("SYNTHETIC: " if synthetic else "") + "allowed regions (coloured) per mask kind",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_lambda_curve(results: pd.DataFrame, lambdas: dict, metric: str = "auc_macro",
                      label_space: str | None = None, threshold: str = "tuned_source_val"):
    """The lambda trade-off: AUROC (mean and 95 % interval over seeds) against lambda, one line
    per evaluation set (the in-domain source test dashed). ``lambdas``: arm name -> its lambda
    (0 for the ERM arm, drawn at the left edge of the log axis). Returns the Figure."""
    from cxrlab.study.tables import _auc_rows, summarise

    plt = _plt()
    sel = _auc_rows(results, metric, label_space, threshold)
    missing = [a for a in lambdas if a not in set(sel["method"])]
    if missing:
        from cxrlab.errors import UnknownNameError

        raise UnknownNameError(f"arm(s) {missing} not in these results; arms: {method_order(sel)}")
    summ = summarise(sel[sel["method"].isin(list(lambdas))])
    pos = sorted(v for v in lambdas.values() if v > 0)
    if not pos:
        raise ValueError("lambdas needs at least one arm with lambda > 0")
    zero_at = pos[0] / 10
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, d in enumerate(_domains(summ)):
        g = summ[summ["domain"] == d].copy()
        g["lam"] = [lambdas[a] or zero_at for a in g["method"]]
        g = g.sort_values("lam")
        ind = g["role"].iloc[0] == "in-domain"
        ax.errorbar(g["lam"], 100 * g["value"],
                    yerr=[100 * (g["value"] - g["ci_lo"]), 100 * (g["ci_hi"] - g["value"])],
                    marker="o", capsize=3, ls="--" if ind else "-",
                    color=color_of(d), label=f"{d}{' (in-domain)' if ind else ''}")
    ax.set_xscale("log")
    ticks = [zero_at] + pos
    ax.set_xticks(ticks)
    ax.set_xticklabels(["0 (ERM)"] + [f"{v:g}" for v in pos])
    ax.set_xlabel("lambda")
    ax.set_ylabel(f"{_METRIC.get(metric, metric)} (%)")
    n = int(summ["n_seeds"].max())
    ax.set_title(f"{_tag(results)}lambda trade-off (mean ± 95% interval, {n} seed"
                 f"{'s' if n > 1 else ''})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
