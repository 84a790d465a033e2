"""cxrlab.shift.seeds: the source-to-target gap over seeds, with seed and patient-bootstrap
intervals (tiny hand-made hospitals, one epoch: seconds)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cxrlab import shift
from cxrlab.claims import Interval
from cxrlab.errors import UsageError
from cxrlab.shift.seeds import _auc_columns, _patient_weights, combined_interval

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------ intervals

def test_combined_interval_adds_seed_and_patient_halves_in_quadrature():
    per_seed = np.array([0.70, 0.74, 0.72])
    # bootstrap replicates: every seed moves together by a known spread
    offsets = np.linspace(-0.05, 0.05, 1001)
    reps = per_seed[:, None] + offsets[None, :]
    iv = combined_interval(per_seed, reps, level=0.95)
    seed_half = stats.t.ppf(0.975, 2) * per_seed.std(ddof=1) / math.sqrt(3)
    boot_half = (np.quantile(offsets, 0.975) - np.quantile(offsets, 0.025)) / 2
    half = math.hypot(seed_half, boot_half)
    assert isinstance(iv, Interval)
    assert iv.value == pytest.approx(0.72)
    assert iv.lo == pytest.approx(0.72 - half) and iv.hi == pytest.approx(0.72 + half)
    # wider than either source alone
    assert iv.hi - iv.value > seed_half and iv.hi - iv.value > boot_half


def test_combined_interval_one_seed_is_the_bootstrap_alone_and_nan_seeds_drop():
    reps = 0.8 + np.linspace(-0.02, 0.02, 401)[None, :]
    iv = combined_interval(np.array([0.8]), reps)
    assert iv.value == pytest.approx(0.8)
    assert iv.hi - iv.lo == pytest.approx(np.quantile(reps, 0.975) - np.quantile(reps, 0.025))
    iv2 = combined_interval(np.array([0.8, np.nan]), np.vstack([reps, np.full_like(reps, np.nan)]))
    assert iv2.value == pytest.approx(0.8)
    assert math.isnan(combined_interval(np.array([np.nan]), np.full((1, 5), np.nan)).value)
    with pytest.raises(UsageError, match="per_seed must be"):
        combined_interval(np.array([0.1, 0.2]), np.zeros((3, 4)))


def test_patient_weights_keep_a_patients_images_together():
    pats = np.array(["a", "a", "b", "c", "c", "c"])
    w = _patient_weights(pats, 50, np.random.default_rng(0))
    assert w.shape == (50, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 5]).all()
    # each replicate draws 3 patients: the patient counts sum to 3
    assert np.allclose(w[:, 0] + w[:, 2] + w[:, 3], 3)


def test_auc_columns_match_sklearn_and_mask_nan():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = (rng.random((60, 3)) < 0.3).astype(float)
    y[::7, 1] = np.nan
    y[:, 2] = 0.0  # no positive: left out
    s = rng.random((60, 3))
    point, boot = _auc_columns(y, s, np.ones((4, 60)))
    m = ~np.isnan(y[:, 1])
    assert point[0] == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))
    assert point[1] == pytest.approx(roc_auc_score(y[m, 1], s[m, 1]))
    assert np.isnan(point[2]) and np.isnan(boot[:, 2]).all()
    assert np.allclose(boot[:, 0], point[0])  # weights all one = the point estimate


# ------------------------------------------------------------------------------ the study

def test_gap_over_seeds_table_drops_and_paired_runs(fake_hospitals):
    cache = fake_hospitals
    g = shift.gap_over_seeds({"a": cache, "b": cache}, seeds=(0, 1), source="alpha",
                             labels=["Effusion", "Cardiomegaly"], epochs=1, n_boot=30,
                             keep_models=True)
    assert g.runs == ["a", "b"] and g.domains == ["alpha", "beta", "gamma"]
    assert g.auc[("a", "alpha")].shape == (2, 2) and g.boot[("a", "beta")].shape == (2, 30, 2)
    tab = g.table("a")
    assert set(tab["label"]) == {"Effusion", "Cardiomegaly", "macro"}
    assert (tab["lo"] <= tab["auc"]).all() and (tab["auc"] <= tab["hi"]).all()
    assert (tab["lo"] >= 0).all() and (tab["hi"] <= 1).all()  # an AUC's interval stays in [0, 1]
    # source scored on its test split, targets on every image
    n = tab.drop_duplicates("domain").set_index("domain")["n"]
    assert n["alpha"] == len(cache.select("test", "alpha"))
    assert n["beta"] == len(cache.select(domain="beta"))
    # the same seeds on the same cache: identical runs, so their paired difference is exactly 0
    d = g.difference(("a", "beta", "Effusion"), ("b", "beta", "Effusion"))
    assert d.value == 0 and d.lo == 0 and d.hi == 0
    # drop = source minus target, per seed, averaged
    drop = g.drop("beta", run="a")
    macro = lambda dom: np.nanmean(g.auc[("a", dom)], axis=1)  # noqa: E731
    assert drop.value == pytest.approx(float(np.mean(macro("alpha") - macro("beta"))))
    assert drop.lo < drop.value < drop.hi
    drops = g.drops(run="a")
    assert list(drops["target"]) == ["beta", "gamma"]
    assert drops["clear"].tolist() == [(r.lo > 0 or r.hi < 0) for r in drops.itertuples()]
    mt = g.mean_target_drop(run="a")
    assert mt.value == pytest.approx(float(np.mean(macro("alpha") - (macro("beta") + macro("gamma")) / 2)))
    # two identical runs: the drop does not change
    ch = g.drop_change("a", "b")
    assert ch.value == 0 and ch.lo == 0 and ch.hi == 0
    assert set(g.models) == {("a", 0), ("a", 1), ("b", 0), ("b", 1)}
    rows = cache.select("test", "alpha")
    from cxrlab.data.dataset import load_arrays
    x, y = load_arrays(cache, rows, g.labels)
    p = g.models[("a", 1)].predict_proba(x)
    assert p.shape == (len(rows), 2)
    ps = g.per_seed("a")
    assert len(ps) == 2 * 3 and set(ps["seed"]) == {0, 1}
    with pytest.raises(UsageError, match="several runs"):
        g.score("alpha")
    with pytest.raises(KeyError, match="not trained"):
        g.score("alpha", "Edema", run="a")


def test_combined_gaps_are_paired_like_one_call(fake_hospitals):
    kw = dict(seeds=(0, 1), source="alpha", labels=["Effusion"], epochs=1, n_boot=25)
    both = shift.gap_over_seeds({"a": fake_hospitals, "b": fake_hospitals}, **kw)
    a = shift.gap_over_seeds({"a": fake_hospitals}, **kw)
    b = shift.gap_over_seeds({"b": fake_hospitals}, **kw)
    merged = shift.SeededGap.combine(a, b)
    assert merged.runs == ["a", "b"]
    for key in both.boot:
        assert np.allclose(both.boot[key], merged.boot[key], equal_nan=True)
    assert merged.drop_change("a", "b").value == 0
    with pytest.raises(UsageError, match="must differ"):
        shift.SeededGap.combine(a, a)
    other = shift.gap_over_seeds({"c": fake_hospitals}, **{**kw, "n_boot": 20})
    with pytest.raises(UsageError, match="n_boot differs"):
        shift.SeededGap.combine(a, other)


def test_gap_over_seeds_checks_its_inputs(fake_hospitals):
    with pytest.raises(UsageError, match="distinct"):
        shift.gap_over_seeds(fake_hospitals, seeds=(0, 0), source="alpha", epochs=1)
    with pytest.raises(UsageError, match="n_boot"):
        shift.gap_over_seeds(fake_hospitals, seeds=(0,), source="alpha", epochs=1, n_boot=1)
    with pytest.raises(UsageError, match="empty"):
        shift.gap_over_seeds({}, seeds=(0,))


# ------------------------------------------------------------------------------ histogram matching

def test_match_histograms_removes_the_grey_level_curve_but_keeps_order():
    from cxrlab.shift.images import match_histograms, reference_quantiles

    rng = np.random.default_rng(0)
    ref_imgs = rng.integers(60, 120, (5, 16, 16)).astype(np.uint8)
    ref = reference_quantiles(ref_imgs)
    # another "hospital": brighter, other contrast, a monotone curve of the same kind of image
    other = np.clip(ref_imgs.astype(int) * 2 + 10, 0, 255).astype(np.uint8)
    out = match_histograms(other, ref)
    assert out.dtype == np.uint8 and out.shape == other.shape
    assert abs(out.mean() - ref_imgs.mean()) < 2 and abs(out.std() - ref_imgs.std()) < 2
    # monotone per image: brighter stays brighter
    a, b = other[0].ravel(), out[0].ravel()
    order = np.argsort(a, kind="stable")
    assert (np.diff(b[order].astype(int)) >= 0).all()
    # with a mask: only inside is matched, outside is one grey level (the reference median)
    mask = np.zeros(other.shape, bool)
    mask[:, 4:12, 4:12] = True
    masked = match_histograms(other, ref, mask)
    assert (masked[~mask] == np.uint8(round(float(np.median(ref))))).all()
    assert abs(masked[mask].mean() - ref_imgs.mean()) < 3
    with pytest.raises(ValueError, match="uint8"):
        match_histograms(other.astype(np.float32), ref)
    with pytest.raises(ValueError, match="sorted"):
        match_histograms(other, ref[::-1])


def test_domain_classifier_on_matched_pixels(fake_hospitals):
    from cxrlab.shift.domain import _PixelView

    cache = fake_hospitals  # brightness 70 / 120 / 170, noise 2 / 8 / 20 grey levels
    view = _PixelView(cache, "matched", cache.select("train", "alpha"))
    raw = {d: np.asarray(cache.images[cache.select("test", d)]).mean() for d in ("alpha", "gamma")}
    seen = {d: view(cache.select("test", d)).mean() for d in ("alpha", "gamma")}
    assert raw["gamma"] - raw["alpha"] > 80          # the brightness shift...
    assert abs(seen["gamma"] - seen["alpha"]) < 10   # ...is gone after matching
    # the noise is not: the classifier still beats chance (1/3) by far, and says what it saw
    res = shift.domain_classifier(cache, method="logreg", pixels="matched")
    assert res.pixels == "matched" and res.accuracy >= 0.6 and "matched" in repr(res)
    lung = _PixelView(cache, "lung_matched", cache.select("train", "alpha"))
    out = lung(cache.select("test", "beta"))
    outside = ~np.asarray(cache.lung_masks[cache.select("test", "beta")]).astype(bool)
    assert len(np.unique(out[outside])) == 1          # nothing outside the lungs is left
    res = shift.domain_classifier(cache, method="logreg", pixels="lung_matched")
    assert res.pixels == "lung_matched"
    with pytest.raises(ValueError, match="pixels"):
        shift.domain_classifier(cache, method="logreg", pixels="lungs")
