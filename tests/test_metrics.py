"""cxrlab.metrics against scikit-learn, NaN masking, threshold tuning and intervals."""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from cxrlab.metrics import (
    bootstrap_ci,
    evaluate_tuned_and_fixed,
    format_ci,
    multilabel_metrics,
    summarise_seeds,
    tune_thresholds,
)


def _random(n=300, L=6, seed=0, ties=True, prevalence=(0.05, 0.4)):
    rng = np.random.default_rng(seed)
    prev = rng.uniform(*prevalence, size=L)
    y = (rng.random((n, L)) < prev).astype(float)
    s = np.clip(rng.normal(0.35 + 0.25 * y, 0.2), 0, 1)
    if ties:
        s = np.round(s, 2)  # plenty of tied scores, the usual trap for AUC / AP
    return y, s


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("thr", [0.5, 0.3])
def test_matches_sklearn_without_nan(seed, thr):
    y, s = _random(seed=seed)
    res = multilabel_metrics(y, s, thresholds=thr)
    pred = (s >= thr).astype(int)
    assert res.excluded == {}
    assert res["f1_micro"] == pytest.approx(f1_score(y, pred, average="micro"), abs=1e-12)
    assert res["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    assert res["auc_macro"] == pytest.approx(roc_auc_score(y, s, average="macro"), abs=1e-12)
    assert res["map"] == pytest.approx(average_precision_score(y, s, average="macro"), abs=1e-12)
    tab = res.per_label
    for k in range(y.shape[1]):
        assert tab.auc[k] == pytest.approx(roc_auc_score(y[:, k], s[:, k]), abs=1e-12)
        assert tab.ap[k] == pytest.approx(average_precision_score(y[:, k], s[:, k]), abs=1e-12)
        assert tab.f1[k] == pytest.approx(f1_score(y[:, k], pred[:, k]), abs=1e-12)


def test_per_label_thresholds_match_sklearn():
    y, s = _random(seed=3)
    thr = np.linspace(0.2, 0.7, y.shape[1])
    res = multilabel_metrics(y, s, thresholds=thr)
    pred = (s >= thr[None, :]).astype(int)
    assert res["f1_micro"] == pytest.approx(f1_score(y, pred, average="micro"))
    assert res["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    np.testing.assert_array_equal(res.per_label.threshold.to_numpy(), thr)


def test_degenerate_columns_are_reported_and_left_out():
    y, s = _random(seed=4, L=5)
    y[:, 1] = 1.0  # all positive: AUC undefined
    y[:, 3] = 0.0  # no positive: F1 / AP / AUC undefined
    res = multilabel_metrics(y, s, label_names=list("ABCDE"))
    assert set(res.excluded) == {"B", "D"}
    assert "no negatives" in res.excluded["B"] and "no positives" in res.excluded["D"]
    keep = [0, 2, 4]
    pred = (s >= 0.5).astype(int)
    assert res.n_included == 3
    assert res["f1_micro"] == pytest.approx(f1_score(y[:, keep], pred[:, keep], average="micro"))
    assert res["f1_macro"] == pytest.approx(f1_score(y[:, keep], pred[:, keep], average="macro"))
    assert res["auc_macro"] == pytest.approx(roc_auc_score(y[:, keep], s[:, keep]))
    assert res["map"] == pytest.approx(average_precision_score(y[:, keep], s[:, keep]))
    row_b = res.per_label.set_index("label").loc["B"]
    assert np.isnan(row_b.auc) and row_b.ap == pytest.approx(1.0)  # AP of an all-positive label
    assert not row_b.included


def test_nan_masking_equals_scoring_the_labelled_subset():
    y, s = _random(n=400, seed=5)
    rng = np.random.default_rng(5)
    y_nan = y.copy()
    y_nan[rng.random(y.shape) < 0.3] = np.nan
    y_nan[:, 2] = np.nan  # a label the dataset does not define at all
    res = multilabel_metrics(y_nan, s)
    assert res.excluded == {"label_2": "no labelled rows"}
    tp = fp = fn = 0
    f1s, aucs, aps = [], [], []
    for k in [0, 1, 3, 4, 5]:
        m = ~np.isnan(y_nan[:, k])
        yk, sk = y_nan[m, k], s[m, k]
        pk = (sk >= 0.5).astype(int)
        assert res.per_label.n_labelled[k] == m.sum()
        f1s.append(f1_score(yk, pk))
        aucs.append(roc_auc_score(yk, sk))
        aps.append(average_precision_score(yk, sk))
        tp += ((pk == 1) & (yk == 1)).sum()
        fp += ((pk == 1) & (yk == 0)).sum()
        fn += ((pk == 0) & (yk == 1)).sum()
    assert res["f1_micro"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert res["f1_macro"] == pytest.approx(np.mean(f1s))
    assert res["auc_macro"] == pytest.approx(np.mean(aucs))
    assert res["map"] == pytest.approx(np.mean(aps))
    # changing the scores of unlabelled entries must not change anything
    s2 = s.copy()
    s2[np.isnan(y_nan)] = 1 - s2[np.isnan(y_nan)]
    assert multilabel_metrics(y_nan, s2).as_dict() == res.as_dict()


def test_inputs_torch_dataframe_and_dict_access():
    y, s = _random(n=100, L=3, seed=6)
    df = pd.DataFrame(y, columns=["Effusion", "Edema", "Pneumothorax"])
    r1 = multilabel_metrics(df, torch.tensor(s, dtype=torch.float64))
    r2 = multilabel_metrics(torch.tensor(y), s)
    assert list(r1.per_label.label) == ["Effusion", "Edema", "Pneumothorax"]
    assert r1.as_dict() == r2.as_dict()
    assert set(["f1_micro", "f1_macro", "auc_macro", "map"]) <= set(r1.keys())
    assert dict(r1)["map"] == r1.map
    assert "AUC macro" in r1.summary()


def test_single_label_vector():
    y, s = _random(n=200, L=1, seed=7)
    res = multilabel_metrics(y[:, 0], s[:, 0])
    assert res["auc_macro"] == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))


def test_errors_are_explicit():
    y, s = _random(n=50, L=2, seed=8)
    with pytest.raises(ValueError, match="logits"):
        multilabel_metrics(y, s * 10 - 5)
    with pytest.raises(ValueError, match="1, 0 or NaN"):
        multilabel_metrics(np.where(y == 0, -1, y), s)
    with pytest.raises(ValueError, match="shape"):
        multilabel_metrics(y, s[:, :1])
    with pytest.raises(TypeError, match="validation"):
        multilabel_metrics(y, s, thresholds="tuned")
    with pytest.raises(ValueError, match="NaN or inf"):
        multilabel_metrics(y, np.where(y == 1, np.nan, s))
    # logits are fine with explicit thresholds (AUC / AP only use the ranking)
    r = multilabel_metrics(y, s * 10 - 5, thresholds=0.0)
    assert r.auc_macro == pytest.approx(multilabel_metrics(y, s).auc_macro)


def test_nothing_evaluable_gives_nan_not_error():
    y = np.zeros((10, 2))
    res = multilabel_metrics(y, np.random.default_rng(0).random((10, 2)))
    assert res.n_included == 0 and np.isnan(res.f1_micro) and np.isnan(res.auc_macro)
    assert len(res.excluded) == 2


# ------------------------------------------------------------------------------ thresholds
def _brute_force_best_f1(y, s):
    best = 0.0
    for t in np.unique(s):  # every possible cut, F1 from its definition
        p = s >= t
        tp, fp, fn = (p & (y == 1)).sum(), (p & (y == 0)).sum(), (~p & (y == 1)).sum()
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


@pytest.mark.parametrize("seed", [0, 1])
def test_tuned_thresholds_are_f1_optimal(seed):
    y, s = _random(n=150, L=4, seed=10 + seed)
    y[np.random.default_rng(seed).random(y.shape) < 0.1] = np.nan
    thr, table = tune_thresholds(y, s, return_table=True)
    tuned = multilabel_metrics(y, s, thresholds=thr)
    fixed = multilabel_metrics(y, s, thresholds=0.5)
    for k in range(y.shape[1]):
        m = ~np.isnan(y[:, k])
        best = _brute_force_best_f1(y[m, k], s[m, k])
        assert tuned.per_label.f1[k] == pytest.approx(best, abs=1e-12)
        assert table.f1_val[k] == pytest.approx(best, abs=1e-12)
        assert tuned.per_label.f1[k] >= fixed.per_label.f1[k] - 1e-12
    assert tuned.f1_macro >= fixed.f1_macro


def test_tuned_threshold_sits_between_scores_and_grid_is_worse_or_equal():
    y = np.array([0, 0, 1, 0, 1, 1], dtype=float)
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.8])
    thr = tune_thresholds(y, s)
    # best cut keeps {0.3, 0.4, 0.6, 0.8} (F1 6/7) vs {0.6, 0.8} (F1 0.8): midpoint 0.25
    assert thr[0] == pytest.approx(0.25)
    y2, s2 = _random(n=300, L=3, seed=12, ties=False)
    exact = multilabel_metrics(y2, s2, tune_thresholds(y2, s2))
    coarse = multilabel_metrics(y2, s2, tune_thresholds(y2, s2, grid=[0.3, 0.5, 0.7]))
    assert exact.f1_macro >= coarse.f1_macro
    assert set(coarse.thresholds) <= {0.3, 0.5, 0.7}


def test_untunable_label_falls_back_with_warning():
    y, s = _random(n=80, L=3, seed=13)
    y[:, 1] = 0
    with pytest.warns(UserWarning, match="label_1"):
        thr = tune_thresholds(y, s)
    assert thr[1] == 0.5


def test_tuned_and_fixed_use_validation_only():
    yv, sv = _random(n=200, L=3, seed=14)
    yt, st = _random(n=200, L=3, seed=15)
    out = evaluate_tuned_and_fixed(yv, sv, yt, st)
    np.testing.assert_allclose(out["tuned"].thresholds, tune_thresholds(yv, sv))
    assert np.all(out["fixed_0.5"].thresholds == 0.5)


# ------------------------------------------------------------------------------- intervals
def test_bootstrap_ci_contains_estimate_and_narrows_with_n():
    widths = []
    for n in (150, 1200):
        y, s = _random(n=n, L=4, seed=20)
        ci = bootstrap_ci(y, s, thresholds=0.5, n_boot=300, seed=0).set_index("metric")
        point = multilabel_metrics(y, s)
        for m in ("f1_micro", "f1_macro", "auc_macro", "map"):
            assert ci.loc[m, "estimate"] == pytest.approx(point[m])
            assert ci.loc[m, "lo"] <= point[m] <= ci.loc[m, "hi"]
            assert ci.loc[m, "mean"] == pytest.approx(point[m], abs=0.03)
        widths.append((ci.hi - ci.lo).to_numpy())
    assert np.all(widths[1] < widths[0])


def test_bootstrap_replicate_equals_sklearn_on_resampled_rows():
    """One replicate with integer weights == scikit-learn on the duplicated rows."""
    from cxrlab.metrics import _replicate_metrics

    y, s = _random(n=120, L=3, seed=21)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 120, size=120)
    w = np.bincount(idx, minlength=120)[None, :].astype(float)
    rep = _replicate_metrics(y, s, np.full(3, 0.5), w, np.arange(3))
    yr, sr = y[idx], s[idx]
    assert rep["auc_macro"][0] == pytest.approx(roc_auc_score(yr, sr))
    assert rep["map"][0] == pytest.approx(average_precision_score(yr, sr))
    assert rep["f1_micro"][0] == pytest.approx(f1_score(yr, sr >= 0.5, average="micro"))
    assert rep["f1_macro"][0] == pytest.approx(f1_score(yr, sr >= 0.5, average="macro"))


def test_bootstrap_is_seeded_and_supports_groups_and_per_label():
    y, s = _random(n=200, L=3, seed=22)
    a = bootstrap_ci(y, s, n_boot=100, seed=1)
    b = bootstrap_ci(y, s, n_boot=100, seed=1)
    pd.testing.assert_frame_equal(a, b)
    patients = np.repeat(np.arange(50), 4)
    g = bootstrap_ci(y, s, n_boot=100, seed=1, groups=patients, per_label=True,
                     label_names=["A", "B", "C"])
    assert {"auc:A", "ap:C", "f1:B"} <= set(g.metric)
    with pytest.raises(KeyError, match="unknown metric"):
        bootstrap_ci(y, s, n_boot=10, metrics=("accuracy",))


def test_summarise_seeds_and_format():
    runs = [{"f1_micro": v, "map": 0.2} for v in (0.25, 0.28, 0.31)]
    tab = summarise_seeds(runs).set_index("metric")
    assert tab.loc["f1_micro", "mean"] == pytest.approx(0.28)
    # t_{0.975, 2} = 4.3027; sd = 0.03 -> half width 0.07452
    assert tab.loc["f1_micro", "hi"] - 0.28 == pytest.approx(4.302653 * 0.03 / np.sqrt(3), rel=1e-5)
    assert tab.loc["map", "lo"] == pytest.approx(0.2) and tab.loc["map", "hi"] == pytest.approx(0.2)
    assert format_ci(0.2784, 0.2511, 0.3021) == "27.8 [25.1, 30.2]"
    assert format_ci(0.5, float("nan"), float("nan")) == "50.0"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = summarise_seeds([{"map": 0.3}])
    assert np.isnan(one.lo[0]) and one["mean"][0] == pytest.approx(0.3)


def test_paired_bootstrap_difference_is_narrower_than_two_separate_intervals():
    from cxrlab.metrics import bootstrap_ci, bootstrap_difference, masked_auc_macro

    rng = np.random.default_rng(0)
    n = 600
    y = (rng.random((n, 2)) < 0.3).astype(float)
    hard = rng.normal(size=(n, 2))  # what both models get wrong together
    sig = lambda z: 1 / (1 + np.exp(-z))
    a = sig(y * 1.2 + hard + 0.3 * rng.normal(size=(n, 2)))
    b = sig(y * 1.0 + hard + 0.3 * rng.normal(size=(n, 2)))
    groups = np.repeat(np.arange(n // 2), 2)
    d = bootstrap_difference(y, a, b, n_boot=300, groups=groups, seed=1)
    assert np.isclose(d["diff"], masked_auc_macro(y, a) - masked_auc_macro(y, b))
    assert d["lo"] < d["diff"] < d["hi"] and d["lo"] > 0  # a is better, beyond the noise
    ia = bootstrap_ci(y, a, n_boot=300, groups=groups, metrics=["auc_macro"]).iloc[0]
    ib = bootstrap_ci(y, b, n_boot=300, groups=groups, metrics=["auc_macro"]).iloc[0]
    assert ia["lo"] < ib["hi"]  # the separate intervals overlap...
    assert d["hi"] - d["lo"] < (ia["hi"] - ia["lo"])  # ...the paired one is narrower than either
    same = bootstrap_difference(y, a, a, n_boot=50)
    assert same["diff"] == 0 and same["lo"] == 0 == same["hi"]
    with pytest.raises(KeyError, match="mAUC"):
        bootstrap_difference(y, a, b, metric="mAUC")
    with pytest.raises(ValueError, match="same images"):
        bootstrap_difference(y, a, b[:10])


def test_masked_auc_macro_equals_sklearn_with_ties_and_missing_labels():
    from sklearn.metrics import roc_auc_score
    from cxrlab.metrics import masked_auc_macro

    rng = np.random.default_rng(3)
    y = (rng.random((300, 3)) < 0.2).astype(float)
    s = np.round(rng.random((300, 3)) + 0.3 * y, 1)  # coarse scores: many ties
    y[::4, 1] = np.nan
    y[:, 2] = 0  # one class only: left out
    want = np.mean([roc_auc_score(y[~np.isnan(y[:, j]), j], s[~np.isnan(y[:, j]), j])
                    for j in (0, 1)])
    assert np.isclose(masked_auc_macro(y, s), want)
    assert np.isnan(masked_auc_macro(np.zeros((5, 1)), np.ones((5, 1))))
