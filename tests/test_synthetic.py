"""The synthetic hospitals: determinism, shapes, masks, label statistics, shifts, errors,
the cache writer, the CLI and the bench entry (budget: about 40 s on two cores)."""
from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from cxrlab.data.cache import check_patient_splits, open_cache
from cxrlab.data.synthetic import (BLOCK, HOSPITALS, generate, get_hospital, hospital_table,
                                   hospital_table_markdown, load_label_prior,
                                   write_synthetic_cache)
from cxrlab.data.synthetic.findings import cardiothoracic_ratio
from cxrlab.data.synthetic.generator import block_meta, render_block
from cxrlab.labels import NIH14, lesion_mask_for

ROOT = Path(__file__).resolve().parents[1]
K = {name: i for i, name in enumerate(NIH14)}


@pytest.fixture(scope="module")
def batch64():
    """A source batch rich in findings (prevalence boosted), shared by the mask tests."""
    return generate("source", 256, 64, seed=11, prevalence_factor={n: 6.0 for n in NIH14})


def _meta_many(hospital, n_blocks, shortcut=False, seed=0):
    """Labels / severities / metadata of many images without drawing pixels (cheap)."""
    spec = get_hospital(hospital)
    parts = [block_meta(spec, seed, b, BLOCK, shortcut) for b in range(n_blocks)]
    labels = np.concatenate([p[0] for p in parts])
    sev = np.concatenate([p[1] for p in parts])
    meta = pd.concat([p[2] for p in parts], ignore_index=True)
    return labels, sev, meta


# ---------------------------------------------------------------- determinism
def test_same_seed_same_bytes_different_seed_differs():
    a = generate("target_old", 40, 48, seed=7, shortcut=True)
    b = generate("target_old", 40, 48, seed=7, shortcut=True)
    for name in ("images", "lung_masks", "lesion_masks", "labels", "severity"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    pd.testing.assert_frame_equal(a.meta, b.meta)
    c = generate("target_old", 40, 48, seed=8, shortcut=True)
    assert a.images.tobytes() != c.images.tobytes()
    assert not np.array_equal(a.labels, c.labels) or not a.meta.equals(c.meta)


def test_prefix_stable_and_hospitals_differ():
    big = generate("source", BLOCK + 20, 32, seed=3)
    small = generate("source", 30, 32, seed=3)
    np.testing.assert_array_equal(small.images, big.images[:30])
    pd.testing.assert_frame_equal(small.meta, big.meta.iloc[:30].reset_index(drop=True))
    other = generate("target_nih", 30, 32, seed=3)
    assert other.images.tobytes() != small.images.tobytes()


def test_chunk_size_does_not_change_the_cache(tmp_path):
    kw = dict(hospitals=["source", "target_lowres"], n_per_hospital=BLOCK + 44, image_size=32,
              seed=5, shortcut=True)
    c1 = write_synthetic_cache(tmp_path / "a", chunk_size=100, **kw)
    c2 = write_synthetic_cache(tmp_path / "b", chunk_size=512, **kw)
    for name in ("images", "lung_masks", "lesion_masks"):
        assert np.asarray(getattr(c1, name)).tobytes() == np.asarray(getattr(c2, name)).tobytes()
    pd.testing.assert_frame_equal(c1.manifest, c2.manifest)
    # the cache holds exactly what generate() draws
    g = generate("target_lowres", 40, 32, seed=5, shortcut=True)
    rows = c1.select(domain="target_lowres")[:40]
    np.testing.assert_array_equal(c1.images[rows], g.images)
    np.testing.assert_array_equal(c1.labels("nih14", rows), g.labels)


# ---------------------------------------------------------------- shapes and masks
@pytest.mark.parametrize("hospital,size", [("source", 64), ("target_lowres", 37)])
def test_shapes_and_dtypes(hospital, size):
    b = generate(hospital, 12, size, seed=1)
    assert b.images.shape == b.lung_masks.shape == b.lesion_masks.shape == (12, size, size)
    assert b.images.dtype == np.uint8 and b.lung_masks.dtype == np.uint8
    assert b.lesion_masks.dtype == np.uint16
    assert b.labels.shape == (12, 14) and b.labels.dtype == np.float32
    assert set(np.unique(b.labels)) <= {0.0, 1.0}
    assert set(np.unique(b.lung_masks)) <= {0, 1}
    assert {"image_id", "patient_id", "age", "sex", "view", "domain", "split",
            "shortcut_marker"} <= set(b.meta.columns)
    assert (b.meta["domain"] == hospital).all()
    assert b.meta["image_id"].is_unique
    assert len(generate(hospital, 0, size)) == 0


def test_lungs_are_two_dark_regions(batch64):
    b = batch64
    comps = [np.sort(np.bincount(ndimage.label(m)[0].ravel())[1:])[::-1] for m in b.lung_masks]
    assert np.mean([len(c) == 2 for c in comps]) > 0.95
    assert min(c[:2].sum() / c.sum() for c in comps) > 0.995     # at most a stray pixel
    assert min(c[1] / c[0] for c in comps) > 0.3                 # two lungs, not one
    area = b.lung_masks.mean(axis=(1, 2))
    assert area.min() > 0.12 and area.max() < 0.6
    # a CXR: lungs darker than the mediastinum / abdomen, air outside the body darkest
    img = b.images.astype(float)
    lung = (img * b.lung_masks).sum((1, 2)) / b.lung_masks.sum((1, 2))
    centre = img[:, 40:56, 28:36].mean((1, 2))       # heart / diaphragm, midline, low
    assert np.median(centre - lung) > 40


def test_lesion_masks_match_labels_and_anatomy(batch64):
    b = batch64
    drawn = b.severity > 0
    for name, k in K.items():
        m = lesion_mask_for(b.lesion_masks, name).reshape(len(b), -1).any(1)
        assert not (m & ~drawn[:, k]).any(), f"{name}: mask without a finding"
        pos = drawn[:, k]
        if pos.sum() >= 5:
            assert m[pos].mean() > 0.9, f"{name}: finding without mask"
    # findings of the lung parenchyma lie inside the lungs; the heart and a hernia do not
    lung = b.lung_masks.astype(bool)
    for name in ("Nodule", "Mass", "Effusion", "Pneumothorax", "Consolidation", "Pneumonia",
                 "Emphysema", "Edema", "Infiltration", "Fibrosis", "Pleural_Thickening"):
        m = lesion_mask_for(b.lesion_masks, name).astype(bool)
        assert m.sum() > 0, name
        assert (m & lung).sum() / m.sum() > 0.95, name
    for name in ("Cardiomegaly", "Hernia"):
        m = lesion_mask_for(b.lesion_masks, name).astype(bool)
        if m.sum():
            assert (m & lung).sum() / m.sum() < 0.1, name


def test_findings_change_the_image():
    """Same patients with and without a finding: the pixels change where the mask says."""
    spec = get_hospital("source")
    for name in ("Effusion", "Pneumothorax", "Mass", "Cardiomegaly"):
        b = generate(spec, 64, 64, seed=2, prevalence_factor={name: 50.0})
        k = K[name]
        pos = b.labels[:, k] > 0
        assert pos.sum() > 10, name
        if name == "Cardiomegaly":
            ctr = b.meta["ctr"].to_numpy()
            assert ctr[pos].min() >= 0.499 and ctr[~pos].max() < 0.5
            continue
        m = lesion_mask_for(b.lesion_masks, name).astype(bool)
        size = m[pos].reshape(pos.sum(), -1).mean(1)
        assert np.median(size) > 0.004, f"{name} too small to see at 64 px"


def test_common_findings_are_learnable_from_pixels():
    """Even a linear model on 32x32 pixels finds cardiomegaly and effusion at 64 px (a CNN
    does better)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    def x(b):
        return b.images.reshape(len(b), 32, 2, 32, 2).mean((2, 4)).reshape(len(b), -1) / 255.0

    tr, te = generate("source", 500, 64, seed=0), generate("source", 300, 64, seed=1)
    for name in ("Cardiomegaly", "Effusion"):
        k = K[name]
        model = LogisticRegression(C=0.1, max_iter=300).fit(x(tr), tr.labels[:, k])
        assert roc_auc_score(te.labels[:, k], model.decision_function(x(te))) > 0.85, name


# ---------------------------------------------------------------- labels and population
def test_prevalence_follows_the_nih_prior():
    prior = load_label_prior()
    for hospital in ("target_nih", "source"):
        spec = get_hospital(hospital)
        labels, _, meta = _meta_many(hospital, 40)
        expected = prior.prevalence(spec.prevalence_factor, spec.no_finding_factor)
        got = labels.mean(0)
        # follow-ups repeat findings, so allow for clustering (4 s.e. at half the sample)
        se = np.sqrt(expected[list(NIH14)].to_numpy() * (1 - expected[list(NIH14)].to_numpy())
                     / (len(labels) / 2))
        assert np.all(np.abs(got - expected[list(NIH14)].to_numpy()) < 4 * se + 1e-3), hospital
        nf = (labels.sum(1) == 0).mean()
        assert abs(nf - expected["No Finding"]) < 0.03
    # co-occurrence is real, not independent coins: effusion goes with atelectasis
    labels, _, _ = _meta_many("target_nih", 40)
    e, a = labels[:, K["Effusion"]] > 0, labels[:, K["Atelectasis"]] > 0
    assert (e & a).mean() > 1.5 * e.mean() * a.mean()


def test_patients_have_follow_ups_and_population_differs():
    _, _, src = _meta_many("source", 8)
    _, _, old = _meta_many("target_old", 8)
    per_patient = src.groupby("patient_id").size()
    assert per_patient.max() > 1 and 2.0 < per_patient.mean() < 4.0
    assert (src.groupby("patient_id")["sex"].nunique() == 1).all()
    assert (src.groupby("patient_id")["age"].agg(lambda a: a.max() - a.min()) <= 15).all()
    assert (src.groupby("patient_id")["split"].nunique() == 1).all()
    assert old["age"].mean() > src["age"].mean() + 10
    assert (old["view"] == "AP").mean() > 0.8 > (src["view"] == "AP").mean()
    frac = src.drop_duplicates("patient_id")["split"].value_counts(normalize=True)
    assert abs(frac["train"] - 0.7) < 0.06 and abs(frac["test"] - 0.2) < 0.05


def test_label_shift_at_target_old():
    """target_old draws borderline hearts and small effusions but labels them negative."""
    spec = get_hospital("target_old")
    labels, sev, meta = _meta_many("target_old", 12)
    for name in ("Cardiomegaly", "Effusion"):
        k = K[name]
        border = (sev[:, k] > 0) & (labels[:, k] == 0)
        assert border.mean() > 0.1, name
        assert sev[border, k].max() < spec.threshold(name)
        assert sev[labels[:, k] > 0, k].min() >= spec.threshold(name)
    ctr = meta["ctr"].to_numpy()
    cm = labels[:, K["Cardiomegaly"]] > 0
    assert ((ctr >= 0.5) & ~cm).sum() > 20                  # enlarged, yet labelled negative
    assert ctr[cm].min() >= float(cardiothoracic_ratio(0.45)) - 1e-3
    # at the source every drawn finding is labelled positive
    labels, sev, meta = _meta_many("source", 12)
    assert not ((sev > 0) & (labels == 0)).any()
    assert (meta["ctr"].to_numpy()[labels[:, K["Cardiomegaly"]] == 0] < 0.5).all()


def test_shortcut_rates_differ_by_label_at_source_only():
    for hospital in HOSPITALS:
        spec = get_hospital(hospital)
        labels, _, meta = _meta_many(hospital, 16, shortcut=True)
        y = labels[:, K[spec.shortcut_label]] > 0
        mk = meta["shortcut_marker"].to_numpy().astype(bool)
        rate_pos, rate_neg = mk[y].mean(), mk[~y].mean()
        if hospital == "source":
            assert rate_pos > 0.8 and rate_neg < 0.1
        else:
            assert abs(rate_pos - rate_neg) < 0.08 and rate_neg < 0.12
        _, _, off = _meta_many(hospital, 2, shortcut=False)
        assert off["shortcut_marker"].sum() == 0


def test_shortcut_marker_is_drawn_outside_the_lungs():
    on = generate("source", 128, 64, seed=4, shortcut=True)
    off = generate("source", 128, 64, seed=4, shortcut=False)
    np.testing.assert_array_equal(on.labels, off.labels)
    np.testing.assert_array_equal(on.lung_masks, off.lung_masks)
    diff = on.images.astype(int) - off.images.astype(int)
    changed = np.abs(diff).reshape(len(on), -1).max(1) > 0
    mk = on.meta["shortcut_marker"].to_numpy().astype(bool)
    assert mk.sum() >= 3
    np.testing.assert_array_equal(changed, mk)
    big = np.abs(diff) > 20
    assert big[mk].sum() > 10 * mk.sum()                # visible: > 10 px per image
    assert (big & on.lung_masks.astype(bool)).sum() == 0


def test_acquisition_shifts_intensity_histograms():
    stats = {}
    for h in HOSPITALS:
        b = generate(h, 64, 64, seed=6)
        x = b.images.astype(float)
        lung = b.lung_masks.astype(bool)
        d2 = x[:, :, :-2] - 2 * x[:, :, 1:-1] + x[:, :, 2:]       # high-pass: mostly noise
        stats[h] = (x[lung].mean(), np.median(np.abs(d2[lung[:, :, 1:-1]])))
    lungs = [s[0] for s in stats.values()]
    assert max(lungs) - min(lungs) > 25                # display curves differ
    assert stats["target_lowres"][1] > 1.3 * stats["source"][1]   # heavy noise


# ---------------------------------------------------------------- errors
def test_bad_input_gets_clear_errors(tmp_path):
    with pytest.raises(KeyError, match="known hospitals are.*source"):
        generate("hospital_x", 4)
    with pytest.raises(KeyError, match="known labels"):
        generate("source", 4, shortcut_label="Pneumothorx")
    with pytest.raises(KeyError, match="known labels"):
        generate("source", 4, prevalence_factor={"Efusion": 2.0})
    with pytest.raises(ValueError, match="at least 32"):
        generate("source", 4, image_size=31)
    with pytest.raises(ValueError, match=">= 0"):
        generate("source", -1)
    with pytest.raises(ValueError, match="seed"):
        generate("source", 4, seed=-3)
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        write_synthetic_cache(f, n_per_hospital=4, image_size=32)
    with pytest.raises(KeyError, match="known hospitals"):
        write_synthetic_cache(tmp_path / "c", hospitals=["source", "nowhere"], n_per_hospital=4)
    with pytest.raises(ValueError, match=">= 0"):
        write_synthetic_cache(tmp_path / "c", n_per_hospital=-5)
    write_synthetic_cache(tmp_path / "ok", hospitals=["source"], n_per_hospital=4, image_size=32)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_synthetic_cache(tmp_path / "ok", hospitals=["source"], n_per_hospital=4,
                              image_size=32)
    c = write_synthetic_cache(tmp_path / "ok", hospitals=["source"], n_per_hospital=6,
                              image_size=32, overwrite=True)
    assert len(c) == 6


# ---------------------------------------------------------------- writer, CLI, bench, docs
def test_writer_end_to_end_and_resume(tmp_path, monkeypatch):
    import cxrlab.data.synthetic.writer as writer

    kw = dict(hospitals=["source", "target_nih", "target_old"], n_per_hospital=70,
              image_size=32, seed=9)
    ref = write_synthetic_cache(tmp_path / "ref", **kw)
    cache = open_cache(tmp_path / "ref")
    assert cache.synthetic and cache.meta["synthetic"] is True
    assert len(cache) == 210 and cache.domains == ["source", "target_nih", "target_old"]
    check_patient_splits(cache.manifest)
    for d in cache.domains:
        assert set(cache.manifest.loc[cache.select(domain=d), "split"]) == {"train", "val", "test"}
    assert cache.lung_masks is not None and cache.lesion_masks is not None
    labels = cache.labels("nih14")
    assert not np.isnan(labels).any()
    assert np.isnan(cache.labels("chexpert14")[:, 0]).all()          # No_Finding: not defined
    # a crash after the first hospital, then the same call resumes and gives the same cache
    real = writer.render_block
    calls = {"n": 0}

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(writer, "render_block", crashing)
    with pytest.raises(RuntimeError, match="simulated"):
        write_synthetic_cache(tmp_path / "re", **kw)
    monkeypatch.setattr(writer, "render_block", real)
    again = write_synthetic_cache(tmp_path / "re", **kw)
    assert np.asarray(again.images).tobytes() == np.asarray(ref.images).tobytes()
    pd.testing.assert_frame_equal(again.manifest, ref.manifest)


def test_ensure_reuses_an_up_to_date_cache_and_redraws_a_stale_one(tmp_path, monkeypatch):
    import json

    import cxrlab.data.synthetic.writer as writer
    from cxrlab.data.synthetic import ensure_synthetic_cache, synthetic_cache_matches

    kw = dict(hospitals=["source", "target_nih"], n_per_hospital=40, image_size=32, seed=3)
    out = tmp_path / "synth"
    assert not synthetic_cache_matches(out, **kw)
    first = ensure_synthetic_cache(out, **kw)
    assert synthetic_cache_matches(out, **kw) and len(first) == 80
    drawn = {"n": 0}
    real = writer.render_block

    def counting(*a, **k):
        drawn["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(writer, "render_block", counting)
    again = ensure_synthetic_cache(out, **kw)                  # up to date: nothing drawn
    assert drawn["n"] == 0 and len(again) == 80
    assert not synthetic_cache_matches(out, **{**kw, "image_size": 64})
    assert not synthetic_cache_matches(out, **{**kw, "shortcut": True})
    # a cache written by an older generator version is stale and redrawn in place
    meta = json.loads((out / "meta.json").read_text())
    meta["generator_version"] = -1
    (out / "meta.json").write_text(json.dumps(meta))
    assert not synthetic_cache_matches(out, **kw)
    redrawn = ensure_synthetic_cache(out, **kw)
    assert drawn["n"] > 0 and synthetic_cache_matches(out, **kw)
    assert np.asarray(redrawn.images).tobytes() == np.asarray(first.images).tobytes()
    # changed hospital parameters make it stale too
    meta = json.loads((out / "meta.json").read_text())
    meta["hospital_params"]["source"]["noise"] = 123.0
    (out / "meta.json").write_text(json.dumps(meta))
    assert not synthetic_cache_matches(out, **kw)


def test_generator_memory_per_block_is_bounded():
    spec = get_hospital("target_old")
    render_block(spec, 0, 0, 8, 224, True)                  # warm caches (vessel bank)
    tracemalloc.start()
    render_block(spec, 0, 0, BLOCK, 224, True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # output arrays of a block at 224 px are ~51 MB; the working set must stay near that
    assert peak < 200 * 2**20, f"peak {peak / 2**20:.0f} MiB for one block at 224 px"


def test_cli_data_synth(tmp_path, capsys):
    from cxrlab.cli import main

    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--n", "20", "--size", "32",
                 "--hospitals", "source,target_lowres", "--shortcut", "--seed", "2"]) == 0
    cache = open_cache(out)
    assert cache.domains == ["source", "target_lowres"] and cache.meta["shortcut"] is True
    assert main(["data", "synth", "--out", str(out), "--n", "20", "--size", "32"]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--hospitals", "mars"]) == 2
    assert "known hospitals" in capsys.readouterr().err


def test_bench_quick_reports_both_rates():
    from cxrlab.bench.synth import run

    res = run(quick=True)
    assert set(res) == {"synth_img_per_s_64", "synth_img_per_s_224"}
    assert res["synth_img_per_s_64"] > res["synth_img_per_s_224"] > 0


def test_hospital_table_and_docs_agree():
    table = hospital_table()
    assert list(table.columns) == list(HOSPITALS)
    assert {"contrast", "noise", "blur", "resolution", "collimation", "marker", "text",
            "borderline", "shortcut_pos", "shortcut_neg", "age_mean"} <= set(table.index)
    doc = (ROOT / "docs" / "synthetic_hospitals.md").read_text()
    block = re.search(r"<!-- hospital-table:start -->\n(.*?)<!-- hospital-table:end -->", doc,
                      re.S)
    assert block, "docs/synthetic_hospitals.md lacks the hospital-table markers"
    assert block.group(1) == hospital_table_markdown(), (
        "the docs' hospital table is stale: run `python -m cxrlab.data.synthetic`")
    for name in NIH14:
        assert name.replace("_", " ") in doc or name in doc, name
