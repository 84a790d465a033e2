"""Seed 002's tables and figures from a study's results (cxrlab.study.tables / plots), and the
masking arms in a study config."""
import numpy as np
import pandas as pd
import pytest

from cxrlab.study.tables import (SEED002_COLUMNS, paired_difference, published_seed002_table,
                                 seed002_table)


def fake_results(arms=("erm", "rrr_per"), seeds=(0, 1, 2), gain=0.05, noise=0.01):
    """Long results rows as a study writes them: the arm 'rrr_per' is `gain` better than ERM
    on the targets, equal at the source."""
    rng = np.random.default_rng(0)
    rows = []
    for arm in arms:
        for s in seeds:
            for d, role in (("source", "in-domain"), ("target_a", "out-of-domain"),
                            ("target_b", "out-of-domain")):
                v = 0.70 + (gain if arm != "erm" and role == "out-of-domain" else 0.0) \
                    + 0.01 * s + noise * rng.standard_normal()
                for thr in ("fixed0.5", "tuned_source_val"):
                    rows.append({"study": "t", "method": arm, "algorithm": "rrr",
                                 "setting": {"erm": "ERM"}.get(arm, "RRR, periphery"),
                                 "backbone": "tiny_cnn", "model": "tiny", "seed": s, "domain": d,
                                 "role": role, "label_space": "pneumothorax", "threshold": thr,
                                 "metric": "auc_macro", "value": v, "ci_lo": v - 0.02,
                                 "ci_hi": v + 0.02, "n_images": 100, "n_labels": 1,
                                 "synthetic": True})
    df = pd.DataFrame(rows)
    df.attrs["synthetic"] = True
    return df


def test_seed002_table_layout_and_numbers():
    res = fake_results()
    t = seed002_table(res)
    assert list(t["arm"]) == ["erm", "rrr_per"] and t.attrs["domains"] == ["source", "target_a", "target_b"]
    erm = res[(res.method == "erm") & (res.domain == "target_a") & (res.threshold == "tuned_source_val")]
    assert t.loc[0, "target_a mean"] == pytest.approx(100 * erm["value"].mean())
    assert t.loc[0, "target_a"].startswith(f"{100 * erm['value'].mean():.1f}±")
    assert t.loc[0, "n_seeds"] == 3 and "SYNTHETIC" in t.attrs["caption"]
    with pytest.raises(KeyError, match="not in these results"):
        seed002_table(res, arms=["erm", "actdiff"])


def test_paired_difference_sees_a_real_gain_and_not_a_null_one():
    d = paired_difference(fake_results(gain=0.05), "rrr_per", "erm").set_index("domain")
    assert d.loc["target_a", "beats"] and d.loc["target_b", "beats"]
    assert d.loc["target_a", "diff"] == pytest.approx(5.0, abs=2.0)
    assert not d.loc["source", "beats"]
    assert d.loc["mean of targets", "diff"] == pytest.approx(
        (d.loc["target_a", "diff"] + d.loc["target_b", "diff"]) / 2)
    assert d.loc["mean of targets", "beats"]
    null = paired_difference(fake_results(gain=0.0, noise=0.02), "rrr_per", "erm")
    assert not null["beats"].all()


def test_published_seed002_tables_match_reference():
    t = published_seed002_table("masks").set_index(["method", "mask"])
    assert t.loc[("ERM", "none"), "CXR-P"] == "83.5±1.2"
    assert t.loc[("ActDiff", "abnormality"), "MIMIC mean"] == 68.7
    assert t.loc[("RRR", "lung_periphery"), "ChestX-ray8 halfwidth"] == 1.6
    full = published_seed002_table("full").set_index("method")
    assert full.loc["ActDiff", "ChestX-ray8 mean"] == 78.4
    assert list(SEED002_COLUMNS) == [c for c in t.columns if c in SEED002_COLUMNS]
    assert not t.attrs["synthetic"] and "seed 002" in t.attrs["citation"]


def test_plots_draw_what_they_are_given():
    import matplotlib

    matplotlib.use("Agg")
    from cxrlab.study.plots import plot_lambda_curve, plot_masks

    res = fake_results(arms=("erm", "rrr_l01", "rrr_l1"))
    fig = plot_lambda_curve(res, {"erm": 0.0, "rrr_l01": 0.1, "rrr_l1": 1.0})
    ax = fig.axes[0]
    assert len(ax.lines) >= 3 and "SYNTHETIC" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0 (ERM)", "0.1", "1"]
    with pytest.raises(KeyError, match="not in these results"):
        plot_lambda_curve(res, {"erm": 0.0, "nope": 1.0})
    imgs = np.zeros((2, 16, 16), np.uint8)
    m = np.zeros((2, 16, 16), np.uint8)
    m[:, :8] = 1
    fig = plot_masks(imgs, {"lung": m, "abnormality": m * 0})
    assert len(fig.axes) == 6 and "50%" in fig.axes[1].get_title()
    with pytest.raises(ValueError, match="has 1 images"):
        plot_masks(imgs, {"lung": m[:1]})


def test_shortcut_reliance_reads_stored_predictions(tmp_path):
    """A unit whose score is the marker gets AUROC 1 among negatives; one whose score ignores
    it, about 0.5."""
    import json

    from cxrlab.study.tables import shortcut_reliance

    rng = np.random.default_rng(0)
    n = 400
    manifest = pd.DataFrame({"shortcut_marker": (rng.random(n) < 0.3).astype(int)})
    rows = np.arange(n)
    labels = (rng.random(n) < 0.2).astype(np.float32)[:, None]
    for name, score in (("shortcut", manifest["shortcut_marker"].to_numpy() + 0.01 * rng.random(n)),
                        ("fair", rng.random(n))):
        d = tmp_path / "units" / f"{name}__tiny__seed0"
        d.mkdir(parents=True)
        np.savez(d / "predictions.npz", source__scores=score[:, None].astype(np.float32),
                 source__labels=labels, source__rows=rows)
        (d / "metrics.json").write_text(json.dumps({"method": name, "seed": 0}))
    r = shortcut_reliance(tmp_path, manifest).set_index("method")
    assert r.loc["shortcut", "marker_auc"] == pytest.approx(1.0)
    assert abs(r.loc["fair", "marker_auc"] - 0.5) < 0.1
    assert r.loc["fair", "n"] == int((labels[:, 0] == 0).sum())
    with pytest.raises(KeyError, match="no column"):
        shortcut_reliance(tmp_path, manifest.rename(columns={"shortcut_marker": "x"}))


def test_marker_effect_separates_scale_from_reliance():
    """A linear model that reads only the marker pixel: effect = delta / sd; scaling the model
    down shrinks delta but not the effect."""
    import torch

    from cxrlab.methods import create_algorithm
    from cxrlab.models import create_backbone
    from cxrlab.study.scoring import marker_effect

    rng = np.random.default_rng(0)
    without = torch.from_numpy(rng.integers(0, 100, (64, 1, 32, 32), dtype=np.uint8))
    with_m = without.clone()
    with_m[:, :, :4, :4] = 255  # the marker: a bright corner
    alg = create_algorithm("bce_finetune", create_backbone("tiny_cnn", image_size=32, seed=0), 1,
                           {"augment": "none"}, seed=0).eval()
    big = marker_effect(alg, with_m, without)
    with torch.no_grad():
        alg.head.weight.mul_(0.1)
        alg.head.bias.mul_(0.1)
    small = marker_effect(alg, with_m, without)
    assert abs(small["delta"]) == pytest.approx(0.1 * abs(big["delta"]), rel=1e-3)
    assert small["effect"] == pytest.approx(big["effect"], rel=1e-3)
    none = marker_effect(alg, without, without)
    assert none["delta"] == 0 and none["effect"] == 0
    with pytest.raises(ValueError, match="same images"):
        marker_effect(alg, with_m[:3], without)


def test_region_reliance_sees_a_model_that_reads_outside_the_region(tmp_path):
    """A model trained to read a bright corner (outside the 'lungs') loses its AUC when only the
    lungs are kept; a model of the lungs' own content keeps it."""
    import torch

    from cxrlab.engine import fit
    from cxrlab.methods import create_algorithm
    from cxrlab.models import create_backbone
    from cxrlab.study.scoring import region_reliance

    rng = np.random.default_rng(0)
    n = 256
    y = (rng.random(n) < 0.5).astype(np.float32)
    x = rng.integers(60, 120, (n, 1, 32, 32)).astype(np.uint8)
    keep = np.zeros_like(x, dtype=bool)
    keep[:, :, 8:24, 8:24] = True                      # the "lungs"
    corner = x.copy()
    corner[y == 1, :, :4, :4] = 250                    # a shortcut outside them
    inside = x.copy()
    inside[y == 1, :, 12:20, 12:20] = 250              # a finding inside them
    torch.manual_seed(0)
    res = {}
    for name, imgs in (("corner", corner), ("inside", inside)):
        alg = create_algorithm("bce_finetune", create_backbone("tiny_cnn", image_size=32, seed=0),
                               1, {"augment": "none"}, seed=0)
        fit(alg, (torch.from_numpy(imgs), torch.from_numpy(y[:, None])), epochs=3, batch_size=64,
            lr=3e-3, seed=0, verbose=False, device="cpu", out_dir=tmp_path / name)
        res[name] = region_reliance(alg.eval(), imgs, keep, y)
    assert res["corner"]["auc_stored"] > 0.95 and res["corner"]["auc_region_only"] < 0.65
    assert res["inside"]["auc_stored"] > 0.95 and abs(res["inside"]["drop"]) < 0.05
    with pytest.raises(ValueError, match="same shape"):
        region_reliance(alg, corner, keep[:3], y)
    with pytest.raises(ValueError, match="grey level"):
        region_reliance(alg, corner, keep, y, fill=300)


def test_load_unit_model_rebuilds_the_trained_network(tmp_path):
    import json

    import torch

    from cxrlab.engine import fit, predict_logits
    from cxrlab.methods import create_algorithm
    from cxrlab.models import create_backbone
    from cxrlab.study.scoring import load_unit_model

    torch.manual_seed(0)
    imgs = torch.randint(0, 255, (32, 1, 32, 32), dtype=torch.uint8)
    y = (torch.rand(32, 1) < 0.5).float()
    hp = {"augment": "none", "backbone_lr_scale": 1.0}
    alg = create_algorithm("bce_finetune", create_backbone("tiny_cnn", image_size=32, seed=3), 1,
                           hp, seed=3)
    unit = "erm__tiny_cnn__seed3"
    fit(alg, (imgs, y), epochs=1, batch_size=16, lr=1e-2, out_dir=tmp_path / "checkpoints" / unit,
        device="cpu", verbose=False, val_fn=lambda a: {"auc_macro": 0.5}, monitor="auc_macro")
    d = tmp_path / "units" / unit
    d.mkdir(parents=True)
    np.savez(d / "predictions.npz", label_names=np.array(["Pneumothorax"]))
    (d / "metrics.json").write_text(json.dumps({"config": {
        "method": "erm", "algorithm": "bce_finetune", "backbone": "tiny_cnn", "seed": 3,
        "hparams": hp, "weights": None, "settings": {"pretrained": False}}}))
    again = load_unit_model(tmp_path, unit, 32)
    a = predict_logits(alg.eval(), (imgs, y))[0]
    b = predict_logits(again, (imgs, y))[0]
    assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    with pytest.raises(FileNotFoundError, match="no finished unit"):
        load_unit_model(tmp_path, "rrr__tiny_cnn__seed0", 32)
