"""Linear probe: learns, ignores unlabelled entries, and equals the seed's ten-epoch way."""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cxrlab.errors import UsageError

from cxrlab.losses import balanced_pos_weight, masked_bce_with_logits
from cxrlab.metrics import masked_auc_macro
from cxrlab.probe import (predict_proba, select_linear_probe,
                          train_frozen_probe_epochs, train_linear_probe)

pytestmark = pytest.mark.usefixtures("one_thread")


def separable(n=600, d=16, labels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * 3 + 5  # off-centre, badly scaled: needs standardising
    w = torch.randn(d, labels, generator=g)
    y = ((x - 5) @ w > 0).float()
    return x, y


def test_masked_bce_matches_bce_on_labelled_entries():
    logits = torch.randn(6, 3, requires_grad=True)
    y = torch.tensor([[1, 0, np.nan]] * 3 + [[np.nan, 1, 0]] * 3, dtype=torch.float32)
    m = ~torch.isnan(y)
    ref = F.binary_cross_entropy_with_logits(logits[m], y[m])
    assert torch.allclose(masked_bce_with_logits(logits, y), ref)
    assert torch.allclose(masked_bce_with_logits(logits, y, reduction="sum"), ref * m.sum())
    assert (masked_bce_with_logits(logits, y, reduction="none")[~m] == 0).all()
    pw = torch.tensor([2.0, 1.0, 3.0])
    ref_w = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(y), pos_weight=pw,
                                               reduction="none")[m].mean()
    assert torch.allclose(masked_bce_with_logits(logits, y, pos_weight=pw), ref_w)
    # nothing labelled: zero loss, finite zero gradient
    none = masked_bce_with_logits(logits, torch.full_like(y, float("nan")))
    none.backward()
    assert none.item() == 0 and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="shape"):
        masked_bce_with_logits(logits, y[:, :2])


def test_balanced_pos_weight():
    y = torch.tensor([[1, 0], [0, 0], [0, np.nan], [0, 0]], dtype=torch.float32)
    assert torch.allclose(balanced_pos_weight(y), torch.tensor([3.0, 1.0]))


def test_probe_learns_a_separable_problem():
    x, y = separable()
    probe = train_linear_probe(x[:400], y[:400], epochs=20, lr=1e-2)
    p = predict_proba(probe, x[400:])
    assert p.shape == (200, 3) and p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
    assert masked_auc_macro(y[400:].numpy(), p) > 0.95
    assert len(probe.history) == 20 and probe.best_epoch == 20
    assert probe.history[-1]["train_loss"] < probe.history[0]["train_loss"]


def test_nan_labels_are_ignored():
    x, y = separable(n=300, labels=1)
    y_nan = y.clone()
    y_nan[::3] = float("nan")  # a third unlabelled
    keep = ~torch.isnan(y_nan[:, 0])
    kw = dict(epochs=5, lr=1e-2, batch_size=10_000, standardize=False)  # full batch
    a = train_linear_probe(x, y_nan, **kw)
    b = train_linear_probe(x[keep], y[keep], **kw)
    # same updates up to float rounding (Adam divides by the root of tiny second moments, so
    # rounding differences of the two sums show at 1e-4; NaN counted as 0 moves them by 3e-2)
    assert torch.allclose(a.linear.weight, b.linear.weight, atol=1e-3)
    # a label that is never labelled is never learnt (its weights stay at their zero init)
    y2 = torch.cat([y, torch.full_like(y, float("nan"))], 1)
    c = train_linear_probe(x, y2, epochs=3)
    assert c.linear.weight[1].abs().sum() == 0 and c.linear.weight[0].abs().sum() > 0


def test_model_selection_uses_validation():
    x, y = separable(n=500)
    probe = select_linear_probe(x[:300], y[:300], x[300:400], y[300:400], epochs=6,
                                weight_decays=(0.0, 1e-2))
    assert len(probe.selection) == 2 and 1 <= probe.best_epoch <= 6
    assert all("val_auc" in h for h in probe.history)
    best = max(probe.selection, key=lambda r: r["val_auc"])
    assert probe.config["weight_decay"] == best["weight_decay"]


@pytest.fixture(scope="module")
def blob_cache(tmp_path_factory):
    """Images where label 1 = a bright square somewhere, label 2 = random, a few NaNs."""
    from cxrlab.data.cache import CacheWriter

    n, s = 160, 32
    rng = np.random.default_rng(0)
    y = (rng.random((n, 2)) < 0.4).astype(np.float32)
    y[rng.random(n) < 0.1, 1] = np.nan
    imgs = rng.normal(100, 20, (n, s, s)).clip(0, 255).astype(np.uint8)
    for i in np.flatnonzero(y[:, 0] == 1):
        cy, cx = rng.integers(6, s - 6, 2)
        imgs[i, cy - 5:cy + 5, cx - 5:cx + 5] = 220
    w = CacheWriter(tmp_path_factory.mktemp("blob") / "cache", n, s)
    w.write(0, imgs)
    man = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)],
                        "patient_id": [f"p{i}" for i in range(n)],
                        "split": np.where(np.arange(n) < 120, "train", "test"), "domain": "toy",
                        "Effusion": y[:, 0], "Edema": y[:, 1]})
    return w.finalize(man, meta={"synthetic": True})


@pytest.mark.parametrize("standardize", [True, False])
def test_cached_probe_equals_ten_epoch_probe(blob_cache, standardize):
    from cxrlab.probe.embeddings import extract_embeddings
    from cxrlab.models import create_backbone

    bb = create_backbone("tiny_cnn", image_size=32)
    tr, te = blob_cache.select("train"), blob_cache.select("test")
    labels = ["Effusion", "Edema"]
    y_tr = torch.from_numpy(blob_cache.labels(labels, tr))
    kw = dict(epochs=10, lr=1e-2, batch_size=32, seed=3, standardize=standardize)
    emb_tr = extract_embeddings(bb, blob_cache, tr, device="cpu", cache_dir=False)
    emb_te = extract_embeddings(bb, blob_cache, te, device="cpu", cache_dir=False)
    cached = train_linear_probe(emb_tr, y_tr, **kw)
    epochs = train_frozen_probe_epochs(bb, blob_cache, tr, y_tr, device="cpu", **kw)
    assert torch.allclose(cached.linear.weight, epochs.linear.weight, atol=1e-4)
    y_te = blob_cache.labels(labels, te)
    auc_c = masked_auc_macro(y_te, predict_proba(cached, emb_te))
    auc_e = masked_auc_macro(y_te, predict_proba(epochs, emb_te))
    assert abs(auc_c - auc_e) <= 0.01
    if standardize:
        assert masked_auc_macro(y_te[:, :1], predict_proba(cached, emb_te)[:, :1]) > 0.8


def test_bench_quick_reports_the_ratio_and_equal_auc():
    from cxrlab.bench.probe import run

    res = run(quick=True)
    assert {"probe_cached_vs_epoch_ratio", "probe_auc_cached", "probe_auc_epoch",
            "probe_auc_abs_diff"} <= set(res)
    assert res["probe_auc_abs_diff"] <= 0.01
    assert res["probe_cached_vs_epoch_ratio"] > 1.5  # 10 passes vs 1 (loose: shared CI cores)


def test_the_probe_starts_at_the_base_rate_and_keeps_the_best_calibrated_epoch():
    from cxrlab.probe.linear import prevalence_logits

    y = torch.tensor([[1.0, float("nan"), 0.0], [0.0, float("nan"), 0.0],
                      [0.0, float("nan"), 1.0], [0.0, float("nan"), 0.0]])
    logits = prevalence_logits(y)
    assert torch.allclose(torch.sigmoid(logits), torch.tensor([0.25, 0.5, 0.25]), atol=1e-6)
    x, yy = separable(n=600, labels=2)
    yy[:, 1] = (torch.rand(600, generator=torch.Generator().manual_seed(1)) < 0.05).float()
    p0 = train_linear_probe(x[:400], yy[:400], epochs=1, lr=1e-12)
    assert torch.allclose(p0.linear.bias, prevalence_logits(yy[:400]), atol=1e-5)
    zero = train_linear_probe(x[:400], yy[:400], epochs=1, lr=1e-12, init_bias="zero")
    assert zero.linear.bias.abs().max() < 1e-6
    # the epoch kept is the one with the lowest source-validation loss, and patience stops early
    p = train_linear_probe(x[:400], yy[:400], x[400:], yy[400:], epochs=200, lr=3e-2, patience=5)
    losses = [h["val_loss"] for h in p.history]
    assert p.best_epoch == 1 + int(np.argmin(losses)) and len(p.history) == p.best_epoch + 5 < 200
    q = train_linear_probe(x[:400], yy[:400], x[400:], yy[400:], epochs=8, select="val_auc")
    aucs = [h["val_auc"] for h in q.history]
    assert aucs[q.best_epoch - 1] == max(aucs)


def test_bad_probe_options_are_refused():
    x, y = separable(n=50)
    with pytest.raises(UsageError, match="init_bias"):
        train_linear_probe(x, y, init_bias="mean")
    with pytest.raises(UsageError, match="select"):
        train_linear_probe(x, y, x, y, select="f1")
    with pytest.raises(UsageError, match="patience"):
        train_linear_probe(x, y, patience=3)  # no validation set to be patient about
