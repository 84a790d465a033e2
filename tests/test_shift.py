"""cxrlab.shift, its figures and the data figures on tiny hand-made caches (seconds, no synthetic generator)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from cxrlab import shift, style
from cxrlab.data import plots as data_plots
from cxrlab.shift import plots as shift_plots
from cxrlab.shift import domain as shift_domain
from cxrlab.shift import images as shift_images

from tests.helpers.hospitals import FAKE, make_twin_cache


@pytest.fixture
def cache(fake_hospitals):
    return fake_hospitals


# ------------------------------------------------------------------------------ statistics

def test_noise_estimate_recovers_known_sigma():
    rng = np.random.default_rng(0)
    flat = np.full((4, 64, 64), 128, np.uint8)
    st = shift_images._batch_statistics(flat)
    assert np.allclose(st["noise"], 0) and np.allclose(st["gradient"], 0)
    assert np.allclose(st["std"], 0) and np.allclose(st["contrast"], 0)
    # a smooth ramp plus noise: the estimate ignores the ramp and finds sigma = 10
    ramp = np.linspace(40, 200, 64)[None, None, :] * np.ones((4, 64, 1))
    noisy = np.clip(np.round(ramp + rng.normal(0, 10, ramp.shape)), 0, 255).astype(np.uint8)
    est = shift_images._batch_statistics(noisy)["noise"]
    assert np.all(np.abs(est - 10) < 1.0), est
    assert np.all(shift_images._batch_statistics(ramp.astype(np.uint8))["noise"] < 0.5)


def test_image_statistics_measure_the_known_shift(cache):
    st = shift.image_statistics(cache)
    assert len(st) == len(cache)
    for c in ("row", "domain", "split", "mean", "std", "p05", "p95", "contrast", "gradient",
              "highpass_std", "noise", "lung_mean", "outside_mean", "lung_fraction"):
        assert c in st.columns, c
    by = st.groupby("domain")[["mean", "noise", "outside_mean", "lung_mean"]].mean()
    assert by["mean"].is_monotonic_increasing          # alpha < beta < gamma brightness
    assert by["noise"].is_monotonic_increasing         # 2 < 8 < 20 grey levels of noise
    for d, (level, sigma) in FAKE.items():
        assert abs(by.loc[d, "noise"] - sigma) < 0.25 * sigma + 1.0
        assert abs(by.loc[d, "outside_mean"] - level) < 3
    assert (by["lung_mean"] < by["outside_mean"]).all()
    sub = shift.image_statistics(cache, rows=[5, 1, 40])
    assert list(sub["row"]) == [5, 1, 40]
    assert sub["mean"].iloc[0] == pytest.approx(float(np.asarray(cache.images[5]).mean()))


def test_intensity_histograms(cache):
    h = shift.intensity_histograms(cache, bins=32, rows_per_domain=10)
    assert set(h["domain"]) == set(FAKE)
    assert np.allclose(h.groupby("domain")["density"].sum(), 1.0)
    assert (h.groupby("domain")["n_images"].first() == 10).all()
    peaks = h.loc[h.groupby("domain")["density"].idxmax()].set_index("domain")["bin_center"]
    for d, (level, _) in FAKE.items():
        assert abs(peaks[d] - level) <= 8 + 2 * FAKE[d][1]
    lung = shift.intensity_histograms(cache, domains=["alpha"], bins=16, region="lung")
    assert lung.attrs["region"] == "lung" and set(lung["domain"]) == {"alpha"}
    with pytest.raises(ValueError, match="region"):
        shift.intensity_histograms(cache, region="heart")
    with pytest.raises(KeyError, match="unknown domain"):
        shift.intensity_histograms(cache, domains=["nowhere"])


# ------------------------------------------------------------------------------ AUC + CNN

def test_auc_per_label_masks_nan_and_excludes_single_class():
    y = np.array([[1, 0, np.nan], [0, 0, 1], [1, 0, 0], [0, 0, np.nan]], dtype=np.float32)
    s = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.9], [0.8, 0.2, 0.1], [0.1, 0.4, 0.99]])
    res = shift.auc_per_label(y, s, ["a", "b", "c"])
    pl = res["per_label"].set_index("label")
    assert pl.loc["a", "auc"] == 1.0 and pl.loc["c", "auc"] == 1.0
    assert np.isnan(pl.loc["b", "auc"]) and res["excluded"] == ["b"]
    assert pl.loc["c", "n"] == 2 and pl.loc["a", "n_pos"] == 2
    assert res["auc_macro"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        shift.auc_per_label(y, s[:, :2])


def test_shift_trains_with_the_shared_framework():
    """No private CNN, loss or loop: the registered backbone and method, trained by fit."""
    from cxrlab.methods.bce import BCEFinetune

    x, y = _square_task(40, 0)
    m = shift.train_small_cnn(x, y, epochs=1, seed=0, augment="none")
    assert isinstance(m.algorithm, BCEFinetune)
    assert m.algorithm.backbone.name == "tiny_cnn"
    assert m.history[0]["epoch"] == 1 and np.isfinite(m.history[0]["loss"])
    assert m.predict_proba(x[:3]).shape == (3, 2)
    m2 = shift.train_small_cnn(x, y, epochs=1, seed=0, augment="none", backbone="tiny_resnet")
    assert m2.algorithm.backbone.name == "tiny_resnet"
    with pytest.raises(ValueError, match="augment"):
        shift.train_small_cnn(x, y, epochs=1, augment=2)


def _square_task(n, seed):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.float32)
    x = rng.normal(100, 15, (n, 1, 32, 32))
    x[y == 1, :, 10:20, 10:20] += 50
    return (torch.from_numpy(np.clip(x, 0, 255).astype(np.uint8)),
            torch.from_numpy(np.stack([y, np.full(n, np.nan, np.float32)], 1)))


def test_train_small_cnn_learns_a_visible_signal_and_is_seeded():
    x, y = _square_task(160, 0)
    xv, yv = _square_task(60, 1)
    m = shift.train_small_cnn(x, y, epochs=3, seed=0, val=(xv, yv), label_names=["sq", "nan"])
    res = shift.evaluate_auc(m, xv, yv)
    assert res["auc_macro"] > 0.9 and res["excluded"] == ["nan"]
    assert len(m.history) == 3 and m.best_epoch in (1, 2, 3)
    m2 = shift.train_small_cnn(x, y, epochs=3, seed=0, val=(xv, yv))
    assert np.allclose(m.predict_proba(xv), m2.predict_proba(xv), atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        shift.train_small_cnn(x.float(), y, epochs=1)
    with pytest.raises(ValueError, match="label rows"):
        shift.train_small_cnn(x, y[:5], epochs=1)


# ------------------------------------------------------------------------------ studies

def test_source_target_gap_table(cache):
    df = shift.source_target_gap(cache, source="alpha", labels=["Effusion", "Pneumothorax"],
                                 epochs=1, seed=0)
    assert list(df["domain"]) == ["alpha", "beta", "gamma"]
    assert list(df["role"]) == ["source", "target", "target"]
    assert df["drop"].iloc[0] == 0
    assert np.allclose(df["drop"], df["auc_macro"].iloc[0] - df["auc_macro"])
    assert {"auc_Effusion", "n_pos_Effusion", "auc_Pneumothorax"} <= set(df.columns)
    assert df["n"].tolist() == [len(cache.select("test", d)) for d in df["domain"]]
    assert np.isnan(df["auc_Pneumothorax"]).all()   # no positives anywhere: excluded, not 0.5
    assert df.attrs["source"] == "alpha" and df.attrs["best_epoch"] == 1
    assert shift.label_drop(df, "Effusion", "beta") == pytest.approx(
        df["auc_Effusion"].iloc[0] - df["auc_Effusion"].iloc[1])
    with pytest.raises(ValueError, match="also listed"):
        shift.source_target_gap(cache, source="alpha", targets=["alpha"], epochs=1)


def test_domain_classifier_logreg_separates_fake_hospitals(cache):
    res = shift.domain_classifier(cache, method="logreg")
    n_test = sum(len(cache.select("test", d)) for d in FAKE)
    assert res.n_test == n_test and res.confusion.to_numpy().sum() == n_test
    assert res.accuracy >= 0.95 and res.auc_macro_ovr >= 0.95
    assert res.chance == pytest.approx(1 / 3)
    assert list(res.per_class_accuracy.index) == list(FAKE)
    assert res.probabilities.shape == (n_test, 3)
    assert "overall" in res.summary().index
    with pytest.raises(ValueError, match="method"):
        shift.domain_classifier(cache, method="svm")


def test_domain_classifier_cnn_separates_shifted_and_not_identical_domains(cache, tmp_path):
    # the same small budget for both pairs: 12 steps of 8 images
    kw = dict(method="cnn", epochs=3, batch_size=8)
    res = shift.domain_classifier(cache, domains=["alpha", "gamma"], **kw)
    assert res.confusion.shape == (2, 2) and res.chance == pytest.approx(0.5)
    assert res.accuracy >= 0.8, res   # brightness 70 vs 170: trivial even after a few steps
    assert np.allclose(res.probabilities.sum(1), 1.0, atol=1e-5)   # softmax over domains
    again = shift.domain_classifier(cache, domains=["alpha", "gamma"], **kw)
    assert np.allclose(again.probabilities, res.probabilities, atol=1e-5)   # seeded
    # two domains drawn from the *same* hospital: nothing to tell apart, so the held-out accuracy
    # must stay near chance and the ranking near random (a leak of rows or labels into the test
    # split, or a classifier reading the row order, would show up here)
    twin = make_twin_cache(tmp_path / "twin")
    same = shift.domain_classifier(twin, **kw)
    assert same.chance == pytest.approx(0.5)
    assert abs(same.accuracy - 0.5) <= 0.2, same
    assert same.auc_macro_ovr < 0.75, same


def test_shift_summary(cache):
    s = shift.shift_summary(cache, rows_per_domain=10)
    assert list(s.index) == list(FAKE)
    assert (s["n"] == 30).all() and (s["n_patients"] == 15).all()
    assert s.loc["alpha", "ap_pct"] == 0 and s.loc["gamma", "ap_pct"] == pytest.approx(
        100 * 22 / 30)
    assert s.loc["alpha", "prev_Effusion"] == pytest.approx(10 / 30)
    assert np.isnan(s.loc["gamma", "prev_Pneumothorax"]) and s.loc["alpha", "prev_Pneumothorax"] == 0
    assert s["noise"].is_monotonic_increasing and s["intensity_mean"].is_monotonic_increasing
    assert s.attrs["synthetic"] is True


# ------------------------------------------------------------------------------ plots

def _is_png(path):
    return path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_return_figures_and_save_png(cache, tmp_path):
    import matplotlib.pyplot as plt

    gap = pd.DataFrame({"domain": ["alpha", "beta"], "role": ["source", "target"], "n": [6, 6],
                        "auc_macro": [0.9, 0.7], "drop": [0.0, 0.2], "auc_Effusion": [0.9, 0.7],
                        "n_pos_Effusion": [2, 2]})
    gap.attrs.update(source="alpha", synthetic=True)
    dom = shift_domain._domain_result(np.array([0, 0, 1, 1]), np.array(
        [[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.1, 0.9]]), ["alpha", "beta"], "logreg", 8, True)
    figs = {
        "gallery": data_plots.plot_gallery(cache, per_domain=3),
        "gallery_rows": data_plots.plot_gallery(cache, rows=[0, 3, 40], show_masks=False),
        "hist": shift_plots.plot_intensity_histograms(shift.intensity_histograms(cache, bins=16)),
        "stats": shift_plots.plot_image_statistics(shift.image_statistics(cache)),
        "confusion": shift_plots.plot_domain_confusion(dom),
        "gap": shift_plots.plot_auc_gap(gap),
        "gap_cmp": shift_plots.plot_gap_comparison({"off": gap, "on": gap}, label="Effusion"),
        "labels": data_plots.plot_label_shift(shift.shift_summary(cache, rows_per_domain=5)),
        "demo": data_plots.plot_demographics(cache),
    }
    for name, fig in figs.items():
        assert isinstance(fig, Figure), name
        out = style.save_figure(fig, tmp_path / f"{name}.png", dpi=40, close=True)
        assert _is_png(out), name
    # titles say SYNTHETIC on synthetic data
    fig = data_plots.plot_gallery(cache, per_domain=1)
    assert "SYNTHETIC" in fig._suptitle.get_text()
    assert dom.confusion.to_numpy().sum() == 4 and dom.accuracy == 0.75
    plt.close("all")


def test_prevalence_table_accepts_several_shapes():
    long = pd.DataFrame({"domain": ["nih", "nih", "chexpert"], "label": ["Hernia", "Edema", "Edema"],
                         "prevalence": [0.002, 0.02, 0.25]})
    wide = data_plots.prevalence_table(long)
    assert wide.loc["Edema", "chexpert"] == 0.25 and np.isnan(wide.loc["Hernia", "chexpert"])
    assert data_plots.prevalence_table({"prevalence": wide}).equals(wide)
    fig = data_plots.plot_label_shift(long, title="real metadata")
    assert isinstance(fig, Figure)
    with pytest.raises(KeyError, match="prevalence"):
        data_plots.prevalence_table({"other": wide})
