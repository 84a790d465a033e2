"""Scoring one trained model on every evaluation set, thresholds from source validation only."""
from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlab import metrics as M
from cxrlab.labels import get_label_space
from cxrlab.study.config import _space_key


def evaluate_predictions(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                         label_names: Sequence[str], label_spaces: Sequence,
                         roles: Mapping[str, str], groups: Mapping[str, np.ndarray | None] | None = None,
                         n_boot: int = 200, seed: int = 0,
                         source_defined: Mapping[str, bool] | None = None):
    """Score one trained model on every evaluation set.

    ``scores`` / ``labels``: set name -> [n, L] probabilities / labels (NaN = missing) in
    ``label_names`` order; they must contain ``"val"`` (the *source validation* split), which
    alone chooses the tuned thresholds, and the evaluation sets named in ``roles`` (name ->
    ``"in-domain"`` or ``"out-of-domain"``). ``groups``: bootstrap units per set (patient ids);
    the resamples depend on ``seed`` only, so every method of a study is scored on the same
    resampled patients. Returns ``(rows, per_label, thresholds)``: long
    result rows (one per set, label space, threshold kind and metric, with bootstrap interval),
    a per-label table (both threshold kinds), and the tuned thresholds table.
    """
    names = list(label_names)
    if "val" not in scores or "val" not in labels:
        raise ValueError("evaluate_predictions needs the source validation split under 'val': "
                         "thresholds are tuned there and nowhere else")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # labels without validation positives -> 0.5, listed
        thr, thr_table = M.tune_thresholds(labels["val"], scores["val"], label_names=names,
                                           return_table=True)
    thresholds = {"fixed0.5": np.full(len(names), 0.5), "tuned_source_val": thr}
    defined = dict(source_defined or {lab: True for lab in names})
    rows, per_label = [], []
    for set_name, role in roles.items():
        y, s = labels[set_name], scores[set_name]
        g = None if groups is None else groups.get(set_name)
        for kind, t in thresholds.items():
            full = M.multilabel_metrics(y, s, t, names)
            tab = full.per_label.copy()
            tab.insert(0, "domain", set_name)
            tab.insert(1, "role", role)
            tab.insert(2, "threshold_kind", kind)
            tab["source_defined"] = [defined.get(lab, True) for lab in tab["label"]]
            per_label.append(tab)
            for space in label_spaces:
                lab_space = get_label_space(space)
                cols = [names.index(lab) for lab in lab_space if lab in names]
                sub_names = [names[c] for c in cols]
                point = M.multilabel_metrics(y[:, cols], s[:, cols], t[cols], sub_names)
                ci = None
                if n_boot and point.n_included:
                    ci = M.bootstrap_ci(y[:, cols], s[:, cols], t[cols], n_boot=n_boot,
                                        seed=seed, groups=g, label_names=sub_names)
                    ci = ci.set_index("metric")
                for metric in M.SUMMARY_METRICS:
                    lo = hi = float("nan")
                    if ci is not None:
                        lo, hi = float(ci.loc[metric, "lo"]), float(ci.loc[metric, "hi"])
                    rows.append({"domain": set_name, "role": role, "label_space": _space_key(space),
                                 "threshold": kind, "metric": metric, "value": float(point[metric]),
                                 "ci_lo": lo, "ci_hi": hi, "n_images": int(point.n_images),
                                 "n_labels": int(point.n_included)})
    return rows, pd.concat(per_label, ignore_index=True), thr_table
