"""Study protocols: every shipped YAML loads and resolves against tiny caches made here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrlab.data.cache import CacheError, CacheWriter, open_cache
from cxrlab.data.protocols import (ProtocolError, find_duplicates, list_protocols, load_protocol,
                                   protocol_from_dict)
from cxrlab.labels import ALL_LABELS, SHARED7

S = 32
SHIPPED = {"mimic_to_nih", "chexpert_to_nih", "pneumothorax_seed002", "pneumothorax_seed002_full",
           "synthetic", "synthetic_pneumothorax"}


def make_cache(path, n, *, dataset="nih", domains=None, seed=0, synthetic=False, images=None,
               ptx_rate=0.3, lateral_rate=0.0, labels=None):
    """A tiny finished cache: 2 images per patient, patient-level 60/20/20 splits, ages 20..95,
    random-noise images (so no two are alike unless made so)."""
    rng = np.random.default_rng(seed)
    pids = np.arange(n) // 2
    split_of = np.array(["train", "train", "train", "val", "test"])[pids % 5]
    w = CacheWriter(path, n=n, image_size=S)
    imgs = rng.integers(0, 256, (n, S, S), dtype=np.uint8) if images is None else images
    w.write(0, imgs)
    man = pd.DataFrame({
        "image_id": [f"{dataset}{seed}_{i:05d}" for i in range(n)],
        "patient_id": [f"{dataset}{seed}_p{p}" for p in pids], "split": split_of,
        "domain": [dataset] * n if domains is None else list(domains),
        "age": rng.integers(20, 96, n).astype(float), "sex": rng.choice(["M", "F"], n),
        "view": np.where(rng.random(n) < lateral_rate, "LATERAL", "PA"),
        "path": [f"img/{i}.png" for i in range(n)],
    })
    labs = labels or (SHARED7 if dataset != "siim" else ("Pneumothorax",))
    for lab in labs:
        man[lab] = (rng.random(n) < (ptx_rate if lab == "Pneumothorax" else 0.2)).astype(float)
    return w.finalize(man, meta={"synthetic": synthetic})


# ----------------------------------------------------------------------------- loading
def test_protocols_ship_inside_the_package_and_load_from_any_folder(tmp_path, monkeypatch):
    """A pip install (Colab) has no configs/ folder: the course protocols must be package data,
    and a user's own ./configs/protocols/<name>.yaml comes first."""
    import cxrlab
    from cxrlab.data.protocols import spec as P

    pkg = Path(cxrlab.__file__).parent / "data" / "protocols"
    assert P._PACKAGED_PROTOCOLS == pkg and SHIPPED <= {f.stem for f in pkg.glob("*.yaml")}
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CXRLAB_PROTOCOLS", raising=False)
    assert load_protocol("synthetic").path.parent == pkg
    own = tmp_path / "configs" / "protocols"
    own.mkdir(parents=True)
    text = (pkg / "synthetic.yaml").read_text().replace("name: synthetic", "name: my_synthetic", 1)
    (own / "synthetic.yaml").write_text(text)
    assert load_protocol("synthetic").path == own / "synthetic.yaml"


def test_every_shipped_protocol_loads_and_describes_itself():
    assert SHIPPED <= set(list_protocols())
    for name in SHIPPED:
        p = load_protocol(name)
        assert p.name == name and p.targets and p.label_space
        text = p.describe()
        assert name in text and p.source.name in text
    p = load_protocol("mimic_to_nih")
    assert p.label_space == SHARED7 and len(p.pitfall_label_space) == 14
    assert p.source.dataset == "mimic" and p.targets[0].split == "test"
    s2 = load_protocol("pneumothorax_seed002")
    assert [t.name for t in s2.targets] == ["mimic", "chexpert", "chexpert_age", "nih_age"]
    nih_age = s2.member("nih_age")
    assert nih_age.age_rule == "above_median" and nih_age.exclude_duplicates_of == "siim"
    assert nih_age.sample.n == 4607 and nih_age.sample.prevalence == 0.22
    assert nih_age.sample.label == "Pneumothorax"
    assert s2.source.sample.n == {"train": 936, "val": 234, "test": 4607}
    assert load_protocol(s2.path).name == s2.name          # by path as well as by name


def base_dict():
    return {"name": "t", "label_space": "shared7",
            "source": {"name": "src", "dataset": "mimic"},
            "targets": [{"name": "nih", "dataset": "nih", "split": "test"}]}


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(extra=1), r"unknown key\(s\) \['extra'\]"),
    (lambda d: d["targets"][0].update(spilt="test"), r"unknown key\(s\) \['spilt'\]"),
    (lambda d: d["targets"][0].update(sample={"n": 5, "size": 2}), r"unknown key\(s\) \['size'\]"),
    (lambda d: d.update(label_space="nih15"), "unknown label space"),
    (lambda d: d["targets"][0].update(split="testing"), "split 'testing' is unknown"),
    (lambda d: d["targets"][0].update(dataset="padchest2"), "dataset 'padchest2' is unknown"),
    (lambda d: d["targets"][0].update(name="src"), "used twice"),
    (lambda d: d["targets"][0].update(exclude_duplicates_of="nope"), "listed before"),
    (lambda d: d["source"].update(split="train"), "always uses its train / val / test"),
    (lambda d: d["targets"][0].update(age_rule="young"), "age_rule 'young'"),
    (lambda d: d["targets"][0].update(sample={"n": 10, "prevalence": 0.2}), "needs 'label'"),
    (lambda d: d["targets"][0].update(sample={"n": -3}), "positive integer"),
    (lambda d: d["source"].update(sample={"n": 100}), "mapping split -> count"),
    (lambda d: d["targets"][0].update(frontal_only="yes"), "true or false"),
    (lambda d: d.pop("targets"), "'targets' is missing"),
    (lambda d: d.update(targets=[]), "non-empty list"),
])
def test_bad_protocols_are_refused_with_the_reason(mutate, match):
    d = base_dict()
    mutate(d)
    with pytest.raises(ProtocolError, match=match):
        protocol_from_dict(d, source="bad.yaml")


def test_bad_yaml_file_and_unknown_name(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("name: [unclosed\n")
    with pytest.raises(ProtocolError, match="not valid YAML"):
        load_protocol(f)
    f.write_text("name: x\nlabel_space: shared7\nsource: {name: s, dataset: nih}\n"
                 "targets: [{name: t, dataset: nih, colour: red}]\n")
    with pytest.raises(ProtocolError, match="colour"):
        load_protocol(f)
    with pytest.raises(KeyError, match="known protocols"):
        load_protocol("no_such_protocol")


# ----------------------------------------------------------------------------- resolving
def test_mimic_to_nih_resolves_and_missing_cache_says_how_to_prepare(tmp_path):
    p = load_protocol("mimic_to_nih")
    make_cache(tmp_path / "mimic", 60, dataset="mimic", lateral_rate=0.3)
    with pytest.raises(CacheError) as exc:
        p.resolve(tmp_path)
    msg = str(exc.value)
    assert "cxrlab data prepare nih --root" in msg and str(tmp_path / "nih") in msg
    make_cache(tmp_path / "nih", 50, dataset="nih", seed=1)
    r = p.resolve(tmp_path)
    src = open_cache(tmp_path / "mimic").manifest
    for split in ("train", "val", "test"):
        rows = r.source.rows[split]
        assert len(rows) and (src["split"].iloc[rows] == split).all()
        assert (src["view"].iloc[rows] != "LATERAL").all()          # frontal_only
    nih = open_cache(tmp_path / "nih").manifest
    assert np.array_equal(r["nih"].eval_rows, np.flatnonzero(nih["split"] == "test"))
    assert r["nih"].labels().shape == (len(r["nih"].eval_rows), 7)
    summ = r.summary()
    assert {"set", "part", "images", "patients", "age_mean", "Effusion_prev"} <= set(summ.columns)
    assert list(summ["part"]) == ["train", "val", "test", "eval"]
    assert not r.synthetic


def test_synthetic_protocols_resolve_by_domain_and_accept_overrides(tmp_path):
    doms = np.repeat(["source", "target_nih", "target_old", "target_lowres"], 20)
    cache = make_cache(tmp_path / "elsewhere", 80, dataset="synthetic", domains=doms,
                       synthetic=True, labels=tuple(ALL_LABELS[:14]))
    for name in ("synthetic", "synthetic_pneumothorax"):
        r = load_protocol(name).resolve(tmp_path / "nothing_here", caches={"synthetic": cache})
        assert r.synthetic
        m = cache.manifest
        assert (m["domain"].iloc[np.concatenate(list(r.source.rows.values()))] == "source").all()
        for t in ("target_nih", "target_old", "target_lowres"):
            rows = r[t].eval_rows
            assert len(rows) and (m["domain"].iloc[rows] == t).all() and \
                (m["split"].iloc[rows] == "test").all()
    with pytest.raises(CacheError, match="cxrlab data synth --out"):
        load_protocol("synthetic").resolve(tmp_path / "nothing_here")


def small_seed002(n_target=40, **target_extra):
    d = {"name": "mini002", "label_space": "pneumothorax",
         "source": {"name": "siim", "dataset": "siim",
                    "sample": {"n": {"train": 20, "val": 8, "test": 20}, "prevalence": 0.25}},
         "targets": [{"name": "nih_age", "dataset": "nih", "split": "all",
                      "exclude_duplicates_of": "siim", "age_rule": "above_median",
                      "sample": {"n": n_target, "prevalence": 0.25}, **target_extra}]}
    return protocol_from_dict(d)


def seed002_caches(tmp_path, n_copies=6):
    siim = make_cache(tmp_path / "siim", 120, dataset="siim", seed=3, ptx_rate=0.3)
    rng = np.random.default_rng(9)
    nih_imgs = rng.integers(0, 256, (300, S, S), dtype=np.uint8)
    # NIH holds some SIIM images, re-encoded with another brightness/contrast (as a PNG vs DICOM)
    copy_src = np.arange(n_copies) * 7
    nih_imgs[:n_copies] = np.clip(siim.images[copy_src].astype(float) * 0.8 + 20, 0, 255)
    nih = make_cache(tmp_path / "nih", 300, dataset="nih", seed=4, images=nih_imgs, ptx_rate=0.4)
    return siim, nih


def test_seed002_style_targets_class_balance_age_and_siim_removal(tmp_path):
    siim, nih = seed002_caches(tmp_path)
    r = small_seed002().resolve(tmp_path)
    # source: CXR-P-like sample per split at 25 % pneumothorax
    for split, n in (("train", 20), ("val", 8), ("test", 20)):
        rows = r.source.rows[split]
        y = siim.labels("pneumothorax", rows)[:, 0]
        assert len(rows) == n and y.sum() == round(n * 0.25)
        assert (siim.manifest["split"].iloc[rows] == split).all()
    rows = r["nih_age"].eval_rows
    y = nih.labels("pneumothorax", rows)[:, 0]
    assert len(rows) == 40 and y.sum() == 10
    ages = nih.manifest["age"]
    assert ages.iloc[rows].min() > ages[~ages.index.isin(range(6))].median() - 1e-9
    assert not set(rows) & set(range(6))                   # the SIIM copies are gone
    # deterministic, and another seed picks other images
    assert np.array_equal(small_seed002().resolve(tmp_path)["nih_age"].eval_rows, rows)
    other = protocol_from_dict({
        "name": "m", "label_space": "pneumothorax", "source": {"name": "siim", "dataset": "siim"},
        "targets": [{"name": "n", "dataset": "nih", "split": "all",
                     "sample": {"n": 40, "prevalence": 0.25, "seed": 5}}]})
    assert not np.array_equal(other.resolve(tmp_path)["n"].eval_rows, rows)


def test_find_duplicates_matches_reencoded_copies_only(tmp_path):
    siim, nih = seed002_caches(tmp_path, n_copies=6)
    dup = find_duplicates(nih, np.arange(len(nih)), siim, np.arange(len(siim)), 0.98)
    assert np.array_equal(np.flatnonzero(dup), np.arange(6))


def test_oldest_rule_one_per_patient_and_small_cache_warning(tmp_path):
    _, nih = seed002_caches(tmp_path)
    p = small_seed002(n_target=30, age_rule="oldest", one_per_patient=True)
    r = p.resolve(tmp_path)
    rows = r["nih_age"].eval_rows
    m = nih.manifest
    assert m["patient_id"].iloc[rows].is_unique
    y = nih.labels("pneumothorax", rows)[:, 0]
    assert len(rows) == 30 and y.sum() == round(30 * 0.25)
    # the sampled negatives are the oldest negatives available (after one image per patient)
    neg_ages = m["age"].iloc[rows[y == 0]]
    assert neg_ages.min() >= 60
    with pytest.warns(UserWarning, match="asked for 5000 images"):
        big = small_seed002(n_target=5000).resolve(tmp_path)
    y = nih.labels("pneumothorax", big["nih_age"].eval_rows)[:, 0]
    assert 0.2 <= y.mean() <= 0.3                            # prevalence kept while shrinking


def test_query_filter_and_bad_query(tmp_path):
    make_cache(tmp_path / "mimic", 40, dataset="mimic")
    make_cache(tmp_path / "nih", 60, dataset="nih", seed=2)
    d = base_dict()
    d["targets"][0].update(split="all", query="age >= 60 and sex == 'F'")
    r = protocol_from_dict(d).resolve(tmp_path)
    m = open_cache(tmp_path / "nih").manifest.iloc[r["nih"].eval_rows]
    assert len(m) and (m["age"] >= 60).all() and (m["sex"] == "F").all()
    d["targets"][0]["query"] = "no_such_column > 3"
    with pytest.raises(ProtocolError, match="query"):
        protocol_from_dict(d).resolve(tmp_path)
    d["targets"][0].update(query=None, domain="elsewhere")
    with pytest.raises(KeyError, match="elsewhere"):
        protocol_from_dict(d).resolve(tmp_path)
