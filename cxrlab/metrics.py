"""Multi-label classification metrics with missing labels, tuned thresholds and intervals.

What this module computes, and the conventions it fixes once for the whole course:

* **Missing labels.** ``y_true`` holds 1 (positive), 0 (negative) or NaN ("not labelled", e.g.
  a label that a dataset does not define, or an uncertain CheXpert label that was set aside).
  NaN entries are *masked per label*: label k is scored on the rows where label k is known,
  and the other labels of those rows are not affected.
* **Which labels enter the macro means.** A label is *included* when, among its labelled rows,
  it has at least one positive **and** at least one negative. Without a positive, recall, F1
  and average precision are 0/0; without a negative, ROC AUC is undefined. To keep one set of
  labels behind every summary number, excluded labels are left out of *all* summaries
  (micro-F1 included) and reported in :attr:`MetricsResult.excluded` with the reason, and
  their per-label row still shows what is defined (for an all-positive label: F1 and AP).
* **Micro-F1** pools TP / FP / FN over the labelled entries of the included labels;
  **macro-F1**, **macro-AUC** and **mAP** are unweighted means over the included labels.
* **Scores are probabilities** (after the sigmoid). AUC and AP only depend on the ranking,
  but a threshold such as 0.5 only means something for probabilities; :func:`multilabel_metrics`
  refuses scores outside [0, 1] together with the default 0.5 threshold because those are
  almost certainly logits.
* **Threshold convention.** A label is predicted positive when ``score >= threshold``.
* **Thresholds come from the source validation split**, never from the set being evaluated:
  :func:`tune_thresholds` picks, per label, the threshold with the best F1 on the validation
  split (exactly, from the precision-recall curve; no coarse grid), and the fixed 0.5
  threshold is kept as the contrast that shows why tuning matters for rare labels.
* **Uncertainty.** :func:`bootstrap_ci` resamples images (or whole patients, with ``groups=``)
  with replacement and returns percentile intervals; :func:`summarise_seeds` gives a
  t-interval over training seeds. Values are fractions; :func:`format_ci` prints percentages.

Every number agrees with scikit-learn's ``f1_score``, ``roc_auc_score`` and
``average_precision_score`` where both are defined (see ``tests/test_metrics.py``); the own
implementation exists because it handles the NaN mask and runs the bootstrap as a few
vectorised array operations instead of thousands of scikit-learn calls.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "SUMMARY_METRICS",
    "MetricsResult",
    "multilabel_metrics",
    "tune_thresholds",
    "evaluate_tuned_and_fixed",
    "bootstrap_ci",
    "summarise_seeds",
    "format_ci",
]

#: the four summary numbers of the course tables, in table order
SUMMARY_METRICS = ("f1_micro", "f1_macro", "auc_macro", "map")

_REASON_NO_ROWS = "no labelled rows"
_REASON_NO_POS = "no positives among labelled rows (F1, AP and AUC undefined)"
_REASON_NO_NEG = "no negatives among labelled rows (AUC undefined)"


# ----------------------------------------------------------------------------- input checks
def _to_numpy(x, name: str) -> np.ndarray:
    """torch tensor / DataFrame / list -> float64 numpy array (a copy never shares memory)."""
    if hasattr(x, "detach"):  # torch tensor, possibly on GPU or requiring grad
        x = x.detach().float().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be numeric (numpy array, torch tensor or DataFrame): {e}") from e
    return arr


def _prepare(y_true, y_score, label_names) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if label_names is None and isinstance(y_true, pd.DataFrame):
        label_names = [str(c) for c in y_true.columns]
    yt = _to_numpy(y_true, "y_true")
    ys = _to_numpy(y_score, "y_score")
    if yt.ndim == 1:
        yt = yt[:, None]
    if ys.ndim == 1:
        ys = ys[:, None]
    if yt.ndim != 2 or ys.ndim != 2:
        raise ValueError(f"y_true and y_score must be 1-D or 2-D [images, labels]; got shapes "
                         f"{yt.shape} and {ys.shape}")
    if yt.shape != ys.shape:
        raise ValueError(f"y_true has shape {yt.shape} but y_score has shape {ys.shape}; "
                         "they must match (one column per label, one row per image)")
    if yt.shape[0] == 0:
        raise ValueError("no rows to evaluate (y_true is empty)")
    known = ~np.isnan(yt)
    bad = known & (yt != 0) & (yt != 1)
    if bad.any():
        vals = np.unique(yt[bad])[:5]
        raise ValueError(f"y_true may only contain 1, 0 or NaN (not labelled); found {vals.tolist()}. "
                         "Map uncertain labels (e.g. CheXpert -1) to 0, 1 or NaN before scoring.")
    if not np.isfinite(ys[known]).all():
        raise ValueError("y_score contains NaN or inf at labelled entries; check the model "
                         "outputs (a diverged training run gives NaN scores)")
    if label_names is None:
        label_names = [f"label_{k}" for k in range(yt.shape[1])]
    label_names = [str(n) for n in label_names]
    if len(label_names) != yt.shape[1]:
        raise ValueError(f"{len(label_names)} label_names for {yt.shape[1]} label columns")
    return yt, ys, label_names


def _prepare_thresholds(thresholds, n_labels: int, ys: np.ndarray, known: np.ndarray) -> np.ndarray:
    if thresholds is None:
        thr = np.full(n_labels, 0.5)
        s = ys[known]
        if s.size and (s.min() < 0 or s.max() > 1):
            raise ValueError(
                "y_score has values outside [0, 1] but the default threshold 0.5 is for "
                "probabilities. Pass probabilities (torch.sigmoid(logits)) or explicit thresholds "
                "from tune_thresholds() on the source validation split.")
        return thr
    if isinstance(thresholds, str):
        raise TypeError(f"thresholds={thresholds!r}: pass numbers. Tune them on the source validation "
                        "split with tune_thresholds(y_val, score_val) and pass the result here; "
                        "tuning on the evaluated set would leak its labels into the metric.")
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.ndim == 0:
        return np.full(n_labels, float(thr))
    if thr.shape != (n_labels,):
        raise ValueError(f"thresholds must be a number or one value per label ({n_labels}); "
                         f"got shape {thr.shape}")
    if np.isnan(thr).any():
        raise ValueError("thresholds contain NaN")
    return thr


# ------------------------------------------------------------------ per-label building blocks
def _tie_groups(sorted_scores: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted 1-D array."""
    if sorted_scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(np.diff(sorted_scores) != 0) + 1
    return np.concatenate([[0], change]).astype(np.int64)


def _rank_metrics_weighted(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC and average precision of one label for many weightings at once.

    ``y`` [n] in {0,1}, ``s`` [n] scores, ``w`` [R, n] non-negative row weights (R bootstrap
    replicates; a weight of 3 means "this image was drawn three times"). Returns (auc [R],
    ap [R]), NaN where undefined. With ``w`` all ones this is exactly scikit-learn's
    ``roc_auc_score`` (ties count 1/2) and ``average_precision_score`` (step-wise, ties grouped).

    Both only need, for every *positive* p, the weight of negatives scored below / equal to it
    and the weight of positives scored at least as high: one cumulative sum over the sorted
    negatives and one over the sorted positives, looked up at positions (``searchsorted``)
    that do not depend on the weights.
    """
    pos = y == 1
    sp, sn = s[pos], s[~pos]
    wp, wn = w[:, pos], w[:, ~pos]  # [R, n_pos], [R, n_neg]
    R = w.shape[0]
    on = np.argsort(sn, kind="mergesort")
    sn_sorted = sn[on]
    cn = np.zeros((R, sn.size + 1))
    np.cumsum(wn[:, on], axis=1, out=cn[:, 1:])  # cn[:, k] = weight of the k lowest negatives
    below = cn[:, np.searchsorted(sn_sorted, sp, "left")]  # negatives scored < s_p
    tied = cn[:, np.searchsorted(sn_sorted, sp, "right")] - below  # negatives scored == s_p
    tot_p, tot_n = wp.sum(1), cn[:, -1]
    op = np.argsort(sp, kind="mergesort")
    sp_sorted = sp[op]
    cp = np.zeros((R, sp.size + 1))
    np.cumsum(wp[:, op], axis=1, out=cp[:, 1:])
    tp_ge = tot_p[:, None] - cp[:, np.searchsorted(sp_sorted, sp, "left")]  # positives >= s_p
    fp_ge = tot_n[:, None] - below  # negatives >= s_p
    with np.errstate(invalid="ignore", divide="ignore"):
        # AUC: a positive beats every negative scored lower, ties count one half
        auc = (wp * (below + 0.5 * tied)).sum(1) / (tot_p * tot_n)
        # AP: sum over positives of (recall step) x (precision at the positive's score)
        prec = np.where(tp_ge > 0, tp_ge / np.maximum(tp_ge + fp_ge, 1e-300), 0.0)
        ap = (wp * prec).sum(1) / tot_p
    auc = np.where((tot_p > 0) & (tot_n > 0), auc, np.nan)
    ap = np.where(tot_p > 0, ap, np.nan)
    return auc, ap


def _f1(tp, fp, fn):
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), np.nan)


def _status(n_lab: int, n_pos: int) -> str:
    if n_lab == 0:
        return _REASON_NO_ROWS
    if n_pos == 0:
        return _REASON_NO_POS
    if n_pos == n_lab:
        return _REASON_NO_NEG
    return ""


# ------------------------------------------------------------------------------- the result
@dataclass
class MetricsResult:
    """Summary numbers (fractions in [0, 1]) plus the per-label table.

    Dict-like: ``res["f1_micro"]``, ``res.keys()``, ``dict(res)``; :meth:`as_dict` gives the
    scalars only (JSON-friendly). ``per_label`` has one row per label with ``label,
    n_labelled, n_pos, prevalence, auc, ap, f1, threshold, precision, recall, tp, fp, fn,
    included, reason``. ``excluded`` maps each left-out label to the reason.
    """

    f1_micro: float
    f1_macro: float
    auc_macro: float
    map: float
    precision_micro: float
    recall_micro: float
    n_images: int
    n_labels: int
    n_included: int
    per_label: pd.DataFrame = field(repr=False)
    excluded: dict = field(default_factory=dict)
    thresholds: np.ndarray = field(default=None, repr=False)

    _SCALARS = ("f1_micro", "f1_macro", "auc_macro", "map", "precision_micro", "recall_micro",
                "n_images", "n_labels", "n_included")

    def as_dict(self) -> dict:
        """The scalar numbers plus ``excluded`` (label -> reason), ready for ``json.dump``."""
        d = {k: (float(getattr(self, k)) if k.startswith(("f1", "auc", "map", "prec", "rec"))
                 else int(getattr(self, k))) for k in self._SCALARS}
        d["excluded"] = dict(self.excluded)
        return d

    def keys(self):
        return list(self._SCALARS) + ["per_label", "excluded", "thresholds"]

    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(f"{key!r}; available: {self.keys()}")
        return getattr(self, key)

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self.keys())

    def __contains__(self, key) -> bool:
        return key in self.keys()

    def summary(self, percent: bool = True) -> str:
        """One line, e.g. ``F1 micro 27.8 | F1 macro 7.3 | AUC macro 71.7 | mAP 18.8 (7/7 labels)``."""
        f = 100.0 if percent else 1.0
        s = (f"F1 micro {f * self.f1_micro:.1f} | F1 macro {f * self.f1_macro:.1f} | "
             f"AUC macro {f * self.auc_macro:.1f} | mAP {f * self.map:.1f} "
             f"({self.n_included}/{self.n_labels} labels)")
        if self.excluded:
            s += "; excluded: " + ", ".join(f"{k} ({v.split(' (')[0]})" for k, v in self.excluded.items())
        return s


# ------------------------------------------------------------------------------ main entry
def multilabel_metrics(y_true, y_score, thresholds=None, label_names: Sequence[str] | None = None
                       ) -> MetricsResult:
    """Score multi-label predictions: micro/macro F1, macro ROC AUC, mAP and a per-label table.

    Parameters
    ----------
    y_true : [n, L] array / tensor / DataFrame of 1, 0 or NaN (NaN = not labelled, masked).
    y_score : [n, L] probabilities (apply the sigmoid to logits first).
    thresholds : None (0.5 for every label), a number, or one threshold per label -- normally
        ``tune_thresholds(y_val, score_val)`` computed on the *source validation* split.
    label_names : names for the per-label table (default: DataFrame columns or ``label_k``).

    A label enters the summaries only if its labelled rows hold at least one positive and one
    negative (see the module docstring); excluded labels are listed in ``result.excluded``.
    If no label qualifies, every summary number is NaN.
    """
    yt, ys, names = _prepare(y_true, y_score, label_names)
    known = ~np.isnan(yt)
    thr = _prepare_thresholds(thresholds, yt.shape[1], ys, known)

    rows = []
    for k, name in enumerate(names):
        m = known[:, k]
        y, s = yt[m, k], ys[m, k]
        n_lab, n_pos = int(m.sum()), int(y.sum())
        pred = s >= thr[k]
        tp = int((pred & (y == 1)).sum())
        fp = int((pred & (y == 0)).sum())
        fn = n_pos - tp
        if n_lab:
            auc, ap = _rank_metrics_weighted(y, s, np.ones((1, n_lab)))
            auc, ap = float(auc[0]), float(ap[0])
        else:
            auc = ap = float("nan")
        reason = _status(n_lab, n_pos)
        rows.append(dict(
            label=name, n_labelled=n_lab, n_pos=n_pos,
            prevalence=n_pos / n_lab if n_lab else float("nan"),
            auc=auc, ap=ap, f1=float(_f1(tp, fp, fn)) if n_pos else float("nan"),
            threshold=float(thr[k]),
            precision=tp / (tp + fp) if tp + fp else float("nan"),
            recall=tp / n_pos if n_pos else float("nan"),
            tp=tp, fp=fp, fn=fn, included=reason == "", reason=reason))
    table = pd.DataFrame(rows)
    inc = table[table["included"]]
    TP, FP, FN = (int(inc[c].sum()) for c in ("tp", "fp", "fn"))
    nan = float("nan")
    return MetricsResult(
        f1_micro=float(_f1(TP, FP, FN)) if len(inc) else nan,
        f1_macro=float(inc["f1"].mean()) if len(inc) else nan,
        auc_macro=float(inc["auc"].mean()) if len(inc) else nan,
        map=float(inc["ap"].mean()) if len(inc) else nan,
        precision_micro=TP / (TP + FP) if TP + FP else nan,
        recall_micro=TP / (TP + FN) if TP + FN else nan,
        n_images=int(yt.shape[0]), n_labels=len(names), n_included=int(len(inc)),
        per_label=table,
        excluded={r.label: r.reason for r in table.itertuples() if not r.included},
        thresholds=thr,
    )


# ----------------------------------------------------------------------------- thresholds
def _best_f1_threshold(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """Exact F1-optimal threshold of one label (``predict = s >= t``); returns (t, F1).

    Every distinct score is a candidate cut; the F1 of "predict the top k tie groups" comes
    from cumulative sums (the precision-recall curve). The returned threshold is the midpoint
    between the chosen cut and the next lower distinct score, so that it gives the same
    predictions on this set and does not sit exactly on a validation score. Among equal F1
    the highest threshold (fewest positive calls) wins.
    """
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    starts = _tie_groups(s_sorted)
    tp = np.cumsum(np.add.reduceat(y_sorted, starts))
    npred = np.append(starts[1:], s_sorted.size)  # rows predicted positive at each cut
    f1 = 2 * tp / (npred + y_sorted.sum())
    g = int(np.argmax(f1))
    cut = s_sorted[starts[g]]
    if g + 1 < starts.size:
        nxt = s_sorted[starts[g + 1]]
        mid = 0.5 * (cut + nxt)
        t = mid if nxt < mid <= cut else cut
    else:
        t = cut
    return float(t), float(f1[g])


def tune_thresholds(y_true_val, y_score_val, grid: Iterable[float] | None = None,
                    label_names: Sequence[str] | None = None, fallback: float = 0.5,
                    return_table: bool = False):
    """Per-label F1-optimal thresholds on the **source validation** split.

    ``y_true_val`` may contain NaN (masked per label). ``grid=None`` searches every distinct
    validation score exactly (the precision-recall curve); a ``grid`` of candidate values
    restricts the search to it (useful to show how a coarse grid loses F1). A label with no
    labelled positive in the validation split cannot be tuned: it gets ``fallback`` (0.5) and
    a warning names it. Returns an array [L]; with ``return_table=True`` also a DataFrame
    ``label, threshold, f1_val, n_labelled, n_pos, tuned``.
    """
    yt, ys, names = _prepare(y_true_val, y_score_val, label_names)
    grid_arr = None if grid is None else np.sort(np.asarray(list(grid), dtype=np.float64))
    if grid_arr is not None and grid_arr.size == 0:
        raise ValueError("grid is empty; pass candidate thresholds or grid=None for the exact search")
    thr = np.full(yt.shape[1], float(fallback))
    rows, untuned = [], []
    for k, name in enumerate(names):
        m = ~np.isnan(yt[:, k])
        y, s = yt[m, k], ys[m, k]
        n_pos = int(y.sum())
        if n_pos == 0:
            untuned.append(name)
            rows.append(dict(label=name, threshold=float(fallback), f1_val=float("nan"),
                             n_labelled=int(m.sum()), n_pos=0, tuned=False))
            continue
        if grid_arr is None:
            t, f = _best_f1_threshold(y, s)
        else:
            pred = s[None, :] >= grid_arr[:, None]  # [G, n]
            tp = (pred & (y[None] == 1)).sum(1)
            f1s = 2 * tp / (pred.sum(1) + n_pos)
            g = int(np.flatnonzero(f1s == f1s.max())[-1])  # highest threshold among the best
            t, f = float(grid_arr[g]), float(f1s[g])
        thr[k] = t
        rows.append(dict(label=name, threshold=t, f1_val=f, n_labelled=int(m.sum()), n_pos=n_pos,
                         tuned=True))
    if untuned:
        warnings.warn(f"tune_thresholds: no labelled positives in the validation split for "
                      f"{untuned}; using threshold {fallback} for them", stacklevel=2)
    if return_table:
        return thr, pd.DataFrame(rows)
    return thr


def evaluate_tuned_and_fixed(y_true_val, y_score_val, y_true, y_score,
                             label_names: Sequence[str] | None = None) -> dict[str, MetricsResult]:
    """The course's standard pair: thresholds tuned on source validation vs the fixed 0.5.

    Returns ``{"tuned": MetricsResult, "fixed_0.5": MetricsResult}`` for the evaluated set
    (``y_true``, ``y_score``: a source test split or a target hospital). Only the validation
    split chooses thresholds.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untuned labels also show up as excluded/low F1 below
        thr = tune_thresholds(y_true_val, y_score_val, label_names=label_names)
    return {"tuned": multilabel_metrics(y_true, y_score, thr, label_names),
            "fixed_0.5": multilabel_metrics(y_true, y_score, 0.5, label_names)}


# ------------------------------------------------------------------------------- bootstrap
def _replicate_metrics(yt: np.ndarray, ys: np.ndarray, thr: np.ndarray, w: np.ndarray,
                       labels: np.ndarray) -> dict[str, np.ndarray]:
    """All summary metrics for R weightings ``w`` [R, n] of the rows, over ``labels``."""
    R = w.shape[0]
    L = labels.size
    auc, ap, f1 = (np.full((R, L), np.nan) for _ in range(3))
    TP = np.zeros(R)
    FP = np.zeros(R)
    FN = np.zeros(R)
    for j, k in enumerate(labels):
        m = ~np.isnan(yt[:, k])
        if m.all():
            y, s, wk = yt[:, k], ys[:, k], w
        else:
            y, s, wk = yt[m, k], ys[m, k], w[:, m]
        auc[:, j], ap[:, j] = _rank_metrics_weighted(y, s, wk)
        pred = (s >= thr[k]).astype(np.float64)
        tp, fp, fn = (wk @ np.stack([pred * y, pred * (1 - y), (1 - pred) * y], 1)).T
        ok = ~np.isnan(auc[:, j])  # label defined in this replicate (>=1 pos and >=1 neg)
        f1[:, j] = np.where(ok, _f1(tp, fp, fn), np.nan)
        TP += np.where(ok, tp, 0)
        FP += np.where(ok, fp, 0)
        FN += np.where(ok, fn, 0)
    ap = np.where(np.isnan(auc), np.nan, ap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicate rows -> NaN
        out = {"f1_micro": _f1(TP, FP, FN), "f1_macro": np.nanmean(f1, 1),
               "auc_macro": np.nanmean(auc, 1), "map": np.nanmean(ap, 1),
               "precision_micro": np.where(TP + FP > 0, TP / np.maximum(TP + FP, 1e-300), np.nan),
               "recall_micro": np.where(TP + FN > 0, TP / np.maximum(TP + FN, 1e-300), np.nan)}
    for j, k in enumerate(labels):
        out[f"auc:{k}"] = auc[:, j]
        out[f"ap:{k}"] = ap[:, j]
        out[f"f1:{k}"] = f1[:, j]
    return out


def replicate_weights(n: int, n_boot: int, seed: int = 0, groups=None, chunk: int = 100):
    """Bootstrap replicates as row weights, ``chunk`` replicates at a time: each yielded array
    is [r, n] with how often each row is drawn. Without ``groups`` rows are drawn with
    replacement; with ``groups`` (one id per row, e.g. the patient) whole groups are drawn and
    every row of a drawn group counts as often as its group. The same ``seed`` gives the same
    replicates, so two models scored on the same rows are resampled identically."""
    rng = np.random.default_rng(seed)
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != (n,):
            raise ValueError(f"groups must give one id per row ({n}); got shape {g.shape}")
        _, gidx = np.unique(g, return_inverse=True)
        n_groups = int(gidx.max()) + 1
    for start in range(0, n_boot, chunk):
        r = min(chunk, n_boot - start)
        if groups is None:
            yield rng.multinomial(n, np.full(n, 1.0 / n), size=r).astype(np.float64)
        else:
            wg = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=r)
            yield wg[:, gidx].astype(np.float64)


def bootstrap_ci(y_true, y_score, thresholds=None, n_boot: int = 1000, seed: int = 0,
                 metrics: Sequence[str] = SUMMARY_METRICS, level: float = 0.95,
                 groups=None, label_names: Sequence[str] | None = None,
                 per_label: bool = False, chunk: int = 100) -> pd.DataFrame:
    """Percentile bootstrap intervals for the summary metrics.

    Each replicate draws n images with replacement (or, with ``groups`` = one patient id per
    row, draws patients with replacement and keeps all their images -- the honest choice when
    a patient has several images). The labels are those included in the point estimate; a
    label that loses all its positives or negatives in a replicate is left out of that
    replicate's macro means. A replicate is a vector of row counts, so all replicates share
    one sort per label and run as array operations (chunks of ``chunk`` replicates).

    ``metrics`` may name ``f1_micro, f1_macro, auc_macro, map, precision_micro,
    recall_micro``; ``per_label=True`` adds ``auc:<label>``, ``ap:<label>`` and
    ``f1:<label>`` rows. Returns a DataFrame with ``metric, estimate`` (on the full data),
    ``mean`` (bootstrap mean), ``sd``, ``lo``, ``hi``, ``n_boot``, ``level``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2 (1000 is usual); got {n_boot}")
    point = multilabel_metrics(y_true, y_score, thresholds, label_names)
    yt, ys, names = _prepare(y_true, y_score, label_names)
    thr = point.thresholds
    labels = np.flatnonzero(point.per_label["included"].to_numpy())
    known_metrics = {"f1_micro", "f1_macro", "auc_macro", "map", "precision_micro", "recall_micro"}
    unknown = sorted(set(metrics) - known_metrics)
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; choose from {sorted(known_metrics)}")
    draws: dict[str, list] = {}
    for w in replicate_weights(yt.shape[0], n_boot, seed, groups, chunk):
        for key, val in _replicate_metrics(yt, ys, thr, w, labels).items():
            draws.setdefault(key, []).append(val)
    draws = {k: np.concatenate(v) for k, v in draws.items()}

    names_out = list(metrics)
    estimates = {m: float(point[m]) for m in metrics}
    if per_label:
        tab = point.per_label
        for k in labels:
            for kind in ("auc", "ap", "f1"):
                key = f"{kind}:{k}"
                out_key = f"{kind}:{names[k]}"
                draws[out_key] = draws.pop(key)
                estimates[out_key] = float(tab.loc[k, kind])
                names_out.append(out_key)
    a = (1 - level) / 2
    rows = []
    for m in names_out:
        v = draws[m]
        v = v[~np.isnan(v)]
        lo, hi = (np.quantile(v, [a, 1 - a]) if v.size else (np.nan, np.nan))
        rows.append(dict(metric=m, estimate=estimates[m], mean=float(v.mean()) if v.size else np.nan,
                         sd=float(v.std(ddof=1)) if v.size > 1 else np.nan,
                         lo=float(lo), hi=float(hi), n_boot=int(v.size), level=level))
    return pd.DataFrame(rows)


def bootstrap_difference(y_true, score_a, score_b, metric: str = "auc_macro", thresholds_a=None,
                         thresholds_b=None, n_boot: int = 1000, seed: int = 0,
                         level: float = 0.95, groups=None, chunk: int = 100) -> dict:
    """Paired percentile bootstrap of ``metric(a) - metric(b)`` for two models scored on the
    **same** images: every replicate draws one set of patients (``groups``) or images and scores
    both models on it, so what the two share (which patients were hard) cancels, and the
    interval is narrower than the two separate intervals suggest.

    Both macro averages use the labels included in *both* point estimates. Returns ``{"diff",
    "lo", "hi", "a", "b", "n_boot", "level", "metric"}`` (fractions, like the metrics)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2 (1000 is usual); got {n_boot}")
    known = {"f1_micro", "f1_macro", "auc_macro", "map"}
    if metric not in known:
        raise KeyError(f"unknown metric {metric!r}; choose from {sorted(known)}")
    if np.shape(score_a) != np.shape(score_b):
        raise ValueError(f"the two models must score the same images: {np.shape(score_a)} vs "
                         f"{np.shape(score_b)}")
    pa = multilabel_metrics(y_true, score_a, thresholds_a)
    pb = multilabel_metrics(y_true, score_b, thresholds_b)
    yt, ya, _ = _prepare(y_true, score_a, None)
    _, yb, _ = _prepare(y_true, score_b, None)
    both = pa.per_label["included"].to_numpy() & pb.per_label["included"].to_numpy()
    labels = np.flatnonzero(both)
    point_a = _replicate_metrics(yt, ya, pa.thresholds, np.ones((1, len(yt))), labels)[metric][0]
    point_b = _replicate_metrics(yt, yb, pb.thresholds, np.ones((1, len(yt))), labels)[metric][0]
    diffs = [_replicate_metrics(yt, ya, pa.thresholds, w, labels)[metric]
             - _replicate_metrics(yt, yb, pb.thresholds, w, labels)[metric]
             for w in replicate_weights(yt.shape[0], n_boot, seed, groups, chunk)]
    d = np.concatenate(diffs)
    d = d[~np.isnan(d)]
    q = (1 - level) / 2
    lo, hi = np.quantile(d, [q, 1 - q]) if d.size else (np.nan, np.nan)
    return {"metric": metric, "diff": float(point_a - point_b), "lo": float(lo), "hi": float(hi),
            "a": float(point_a), "b": float(point_b), "n_boot": int(d.size), "level": level}


# ------------------------------------------------------------------------- across seeds
def summarise_seeds(results: Sequence[Mapping], metrics: Sequence[str] | None = None,
                    level: float = 0.95) -> pd.DataFrame:
    """Mean and t-interval across training seeds.

    ``results``: one mapping per seed (e.g. ``MetricsResult.as_dict()``). ``metrics``: which
    keys (default: :data:`SUMMARY_METRICS` present in all results). Returns ``metric, mean,
    sd, lo, hi, n`` with ``lo/hi = mean -+ t_{n-1} * sd / sqrt(n)``; NaN interval for one seed.
    """
    from scipy import stats

    if not results:
        raise ValueError("summarise_seeds needs at least one result")
    if metrics is None:
        metrics = [m for m in SUMMARY_METRICS if all(m in r for r in results)]
    rows = []
    for m in metrics:
        v = np.array([float(r[m]) for r in results], dtype=np.float64)
        v = v[~np.isnan(v)]
        n = v.size
        mean = float(v.mean()) if n else float("nan")
        sd = float(v.std(ddof=1)) if n > 1 else float("nan")
        half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)) if n > 1 else float("nan")
        rows.append(dict(metric=m, mean=mean, sd=sd, lo=mean - half, hi=mean + half, n=n))
    return pd.DataFrame(rows)


def masked_auc_macro(y_true, y_score) -> float:
    """Mean ROC AUC over the labels that have both classes among their labelled (non-NaN)
    entries; NaN when no label qualifies. A quick model-selection score (the probe's epochs, the
    shift measurements); :func:`multilabel_metrics` reports the full set."""
    from scipy.stats import rankdata

    y_true, y_score = np.asarray(y_true, dtype=float), np.asarray(y_score, dtype=float)
    if y_true.ndim == 1:
        y_true, y_score = y_true[:, None], y_score[:, None]
    aucs = []
    for j in range(y_true.shape[1]):
        m = ~np.isnan(y_true[:, j])
        t = y_true[m, j] == 1
        n1 = int(t.sum())
        n0 = t.size - n1
        if n1 and n0:  # Mann-Whitney U with mid-ranks for ties: sklearn's roc_auc_score
            r = rankdata(y_score[m, j])
            aucs.append((r[t].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
    return float(np.mean(aucs)) if aucs else float("nan")


def format_ci(mean: float, lo: float, hi: float, percent: bool = True, digits: int = 1) -> str:
    """``format_ci(0.278, 0.251, 0.302)`` -> ``"27.8 [25.1, 30.2]"`` (percent by default)."""
    f = 100.0 if percent else 1.0

    def fmt(x):
        return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{f * x:.{digits}f}"

    if lo is None or hi is None or any(isinstance(x, float) and math.isnan(x) for x in (lo, hi)):
        return fmt(mean)
    return f"{fmt(mean)} [{fmt(lo)}, {fmt(hi)}]"
