"""The study driver (cxrlab.study): a tiny study end to end through the CLI, resuming,
thresholds from source validation only, the 14-label pitfall, seed 000's table, the report.

One tiny synthetic cache (two hospitals, ~100 images each, 64 px) and one tiny backbone; the
whole module runs in well under a minute on two cores.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cxrlab import cli
from cxrlab import study as S
from cxrlab.study.runner import _Runner
from cxrlab.labels import NIH14, SHARED7, defined_labels

MIMIC_UNDEFINED = sorted(set(NIH14) - set(defined_labels("mimic")))
PROTOCOL = {
    "name": "tiny_synthetic",
    "label_space": "shared7",
    "pitfall_label_space": "nih14",
    "source": {"name": "source", "dataset": "synthetic", "cache": "synthetic", "domain": "source"},
    "targets": [{"name": "target_nih", "dataset": "synthetic", "cache": "synthetic",
                 "domain": "target_nih", "split": "all"}],
}


def _config(cache_path: Path, **over) -> dict:
    cfg = {
        "name": "tiny", "protocol": PROTOCOL, "caches": {"synthetic": str(cache_path)},
        "mask_source_labels": "mimic", "label_spaces": ["shared7", "nih14"],
        "methods": ["bce_probe", "supcon", "bce_finetune"], "backbones": ["tiny_cnn"],
        "seeds": [0], "finetune_epochs": 1, "probe_epochs": 4, "batch_size": 32,
        "bootstrap": 20,
        "hparams": {"supcon": {"augment": "light"}, "bce_finetune": {"augment": "light"}},
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, one_thread):
    """(out folder, config path, home) of a tiny 3-method study run through `cxrlab run`."""
    from cxrlab.data.synthetic import write_synthetic_cache

    root = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CXRLAB_HOME", str(root / "home"))
        mp.setenv("CXRLAB_PROGRESS", "0")
        cache = write_synthetic_cache(root / "synthetic", hospitals=["source", "target_nih"],
                                      n_per_hospital=100, image_size=64, seed=0)
        cfg_path = root / "tiny.yaml"
        cfg_path.write_text(yaml.safe_dump(_config(cache.path)))
        out = root / "results" / "tiny"
        assert cli.main(["run", str(cfg_path), "--out", str(out), "--profile", "ci"]) == 0
        yield out, cfg_path, root / "home", cache


def test_run_writes_every_output(tiny_study):
    out, _, _, _ = tiny_study
    for f in ("metrics.json", "results.csv", "per_label.csv", "summary.csv", "README.md",
              "in_vs_out_of_domain.png", "thresholds.png", "label_spaces.png", "per_label_auc.png"):
        assert (out / f).is_file(), f
    for m in ("bce_probe", "supcon", "bce_finetune"):
        udir = out / "units" / f"{m}__tiny_cnn__seed0"
        for f in ("metrics.json", "per_label.csv", "predictions.npz"):
            assert (udir / f).is_file(), (m, f)
    assert (out / "checkpoints" / "supcon__tiny_cnn__seed0" / "last.pt").is_file()
    res = pd.read_csv(out / "results.csv")
    assert list(res.columns) == list(S.RESULT_COLUMNS)
    # 3 methods x 2 sets x 2 label spaces x 2 thresholds x 4 metrics
    assert len(res) == 3 * 2 * 2 * 2 * 4
    assert set(res["role"]) == {"in-domain", "out-of-domain"}
    assert set(res["threshold"]) == set(S.THRESHOLDS)
    assert res["synthetic"].all()
    ok = res[res["metric"] == "auc_macro"]
    assert ok["value"].between(0, 1).all() and (ok["ci_lo"] <= ok["ci_hi"]).all()
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["kind"] == S.STUDY_KIND and meta["synthetic"] and meta["label"] == "SYNTHETIC"
    # same budget for the two engine arms
    units = {u["unit"]: u for u in meta["units"]}
    assert set(units) == {f"{m}__tiny_cnn__seed0" for m in ("bce_probe", "supcon", "bce_finetune")}
    recs = {m: S.unit_summary(out / "units" / f"{m}__tiny_cnn__seed0")
            for m in ("supcon", "bce_finetune")}
    assert recs["supcon"]["info"]["images_seen"] == recs["bce_finetune"]["info"]["images_seen"] > 0
    assert "SYNTHETIC" in (out / "README.md").read_text()


def test_fourteen_labels_mark_source_undefined(tiny_study):
    out, _, _, _ = tiny_study
    meta = json.loads((out / "metrics.json").read_text())
    assert sorted(meta["source_undefined_labels"]) == MIMIC_UNDEFINED
    pl = pd.read_csv(out / "per_label.csv")
    target = pl[(pl["domain"] == "target_nih") & (pl["method"] == "bce_probe")
                & (pl["threshold_kind"] == "fixed0.5")].set_index("label")
    assert sorted(target.index[~target["source_defined"]]) == MIMIC_UNDEFINED
    assert target.loc[list(SHARED7), "source_defined"].all()
    # the probe never saw a label for them: constant scores, AUC exactly chance where defined
    auc = target.loc[MIMIC_UNDEFINED, "auc"].dropna()
    assert len(auc) and np.allclose(auc, 0.5)
    # at the source itself they are missing (NaN), hence excluded from its summaries
    src = pl[(pl["domain"] == "source") & (pl["method"] == "bce_probe")
             & (pl["threshold_kind"] == "fixed0.5")].set_index("label")
    assert (src.loc[MIMIC_UNDEFINED, "n_labelled"] == 0).all()
    assert not src.loc[MIMIC_UNDEFINED, "included"].any()
    # the nih14 summary at the target counts them, the shared7 one does not
    res = pd.read_csv(out / "results.csv")
    n = res[(res["domain"] == "target_nih") & (res["metric"] == "f1_macro")
            & (res["method"] == "bce_probe") & (res["threshold"] == "fixed0.5")]
    n = n.set_index("label_space")["n_labels"]
    assert n["shared7"] <= 7 < n["nih14"]


def test_resume_skips_finished_units(tiny_study, monkeypatch, capsys):
    out, cfg_path, home, _ = tiny_study
    monkeypatch.setenv("CXRLAB_HOME", str(home))
    stamps = {p: p.stat().st_mtime_ns for p in (out / "units").glob("*/metrics.json")}

    def boom(self, unit):
        raise AssertionError(f"unit {unit.name} was recomputed")

    monkeypatch.setattr(_Runner, "run_unit", boom)
    assert cli.main(["run", str(cfg_path), "--out", str(out), "--profile", "ci"]) == 0
    assert "complete (skipped)" in capsys.readouterr().out
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "units").glob("*/metrics.json")}


def test_killed_unit_resumes_from_its_checkpoint(tiny_study, monkeypatch):
    out, cfg_path, home, _ = tiny_study
    monkeypatch.setenv("CXRLAB_HOME", str(home))
    unit = out / "units" / "supcon__tiny_cnn__seed0"
    before = pd.read_csv(unit / "per_label.csv")
    (unit / "metrics.json").unlink()  # as if killed after training, before it was scored
    calls = []
    real = _Runner.run_unit

    def spy(self, u):
        calls.append(u.name)
        return real(self, u)

    monkeypatch.setattr(_Runner, "run_unit", spy)
    res = S.run_probe_study(cfg_path, out, profile="ci", verbose=False)
    assert calls == ["supcon__tiny_cnn__seed0"]
    info = S.unit_summary(unit)["info"]
    assert info["fit_resumed_from"] == info["fit_epochs"] == 1  # no epoch was trained again
    after = pd.read_csv(unit / "per_label.csv")
    pd.testing.assert_frame_equal(before, after)  # the same encoder, the same numbers
    assert len(res.results) == 96


def test_changed_config_is_refused(tiny_study, monkeypatch):
    out, _, home, cache = tiny_study
    monkeypatch.setenv("CXRLAB_HOME", str(home))
    with pytest.raises(S.StudyError, match="different configuration.*probe_epochs"):
        S.run_probe_study(_config(cache.path, probe_epochs=7), out, profile="ci", verbose=False)
    # fewer methods would rewrite the study's tables with fewer rows: refused, names the flag
    before = (out / "results.csv").read_bytes()
    with pytest.raises(S.StudyError, match="would drop 2 of them.*--overwrite"):
        S.run_probe_study(_config(cache.path, methods=["bce_probe"]), out, profile="ci",
                          verbose=False)
    assert (out / "results.csv").read_bytes() == before


def test_thresholds_come_from_source_validation_only(tiny_study, monkeypatch, tmp_path):
    _, _, home, cache = tiny_study
    monkeypatch.setenv("CXRLAB_HOME", str(home))
    cfg = S.load_study_config(_config(cache.path, methods=["bce_probe"]))
    from cxrlab import metrics as M
    from cxrlab.profiles import get_profile

    data = S.load_study_data(cfg, get_profile("ci"), verbose=False)
    val = data.labels("val")
    others = {n: data.labels(n) for n in data.sets if n != "val"}
    seen = []
    real = M.tune_thresholds

    def recording(y_true, y_score, *a, **k):
        seen.append(np.asarray(y_true, dtype=float).copy())
        return real(y_true, y_score, *a, **k)

    monkeypatch.setattr(M, "tune_thresholds", recording)
    S.run_probe_study(cfg, tmp_path / "out", profile="ci", verbose=False)
    assert len(seen) == 1
    assert np.array_equal(seen[0], val, equal_nan=True)
    for name, y in others.items():
        assert seen[0].shape != y.shape or not np.array_equal(seen[0], y, equal_nan=True), name
    # and the tuned thresholds stored with the unit are the ones tune_thresholds gave
    unit = tmp_path / "out" / "units" / "bce_probe__tiny_cnn__seed0"
    with np.load(unit / "predictions.npz") as z:
        with pytest.warns(UserWarning, match="no labelled positives"):  # the masked labels
            thr = real(z["val__labels"], z["val__scores"])
        assert np.allclose(z["thresholds_tuned_source_val"], thr)
        assert np.array_equal(z["val__labels"], val, equal_nan=True)


def test_evaluate_predictions_refuses_without_validation():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    with pytest.raises(ValueError, match="source validation"):
        S.evaluate_predictions({"t": y}, {"t": y}, ["Edema", "Effusion"], ["shared7"],
                               {"t": "out-of-domain"})


def test_seed000_table_layout(tiny_study):
    out, _, _, _ = tiny_study
    res = S.load_study(out)
    t = S.seed000_table(res.results, label_space="nih14", threshold="fixed0.5")
    assert list(t.columns) == ["setting", "model", "F1 micro", "F1 macro", "AUC macro", "mAP"]
    assert list(t["setting"]) == ["BCE linear probe", "SupCon + linear probe",
                                  "BCE fine-tune (control)"]
    assert set(t["model"]) == {"tiny CNN"}
    pat = re.compile(r"^\d+\.\d \[\d+\.\d, \d+\.\d\]$")
    assert all(pat.match(v) for c in ("F1 micro", "F1 macro", "AUC macro", "mAP") for v in t[c])
    cap = t.attrs["caption"]
    assert "SYNTHETIC" in cap and "target_nih" in cap and "nih14" in cap
    num = S.seed000_table(res.results, label_space="shared7", domain="source", numeric=True)
    auc = res.results.query("method == 'bce_probe' and domain == 'source' and label_space == "
                            "'shared7' and threshold == 'tuned_source_val' and metric == 'auc_macro'")
    assert num.loc[0, "AUC macro"] == round(100 * auc["value"].iloc[0], 1)
    with pytest.raises(KeyError, match="available"):
        S.seed000_table(res.results, domain="nowhere")
    both = S.compare_with_published(t)
    assert len(both) == 6 + 3 and both["source"].str.contains("published").sum() == 6


def test_summarise_over_seeds_uses_a_t_interval():
    from scipy import stats

    rows = [dict(study="s", method="bce_probe", setting="BCE linear probe", backbone="tiny_cnn",
                 model="tiny CNN", seed=s, domain="t", role="out-of-domain", label_space="shared7",
                 threshold="fixed0.5", metric="auc_macro", value=v, ci_lo=v - .05, ci_hi=v + .05,
                 n_images=10, n_labels=7, synthetic=True) for s, v in ((0, .6), (1, .7), (2, .8))]
    summ = S.summarise(pd.DataFrame(rows))
    r = summ.iloc[0]
    half = stats.t.ppf(0.975, 2) * np.std([.6, .7, .8], ddof=1) / np.sqrt(3)
    assert r["interval"] == "seeds" and r["n_seeds"] == 3
    assert np.isclose(r["value"], .7) and np.isclose(r["ci_hi"] - r["value"], half)
    assert np.isclose(r["boot_halfwidth"], .05)
    high = pd.DataFrame(rows).assign(value=[.97, .99, .90])
    r = S.summarise(high).iloc[0]
    assert r["ci_hi"] == 1.0 and r["ci_lo"] < r["value"]  # metrics live in [0, 1]


def test_published_tables_are_cited():
    pub = S.published_seed000_table()
    assert len(pub) == 6 and "published (student project slides" in pub.attrs["caption"]
    vit = pub[(pub["setting"] == "SupCon + linear probe") & (pub["model"] == "ViT-B/16")].iloc[0]
    assert (vit["F1 micro"], vit["AUC macro"]) == (30.06, 74.63)
    coh = S.published_cohen2020_table()
    assert set(coh["label"]) == set(SHARED7) and "MIDL 2020" in coh.attrs["citation"]


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(S.StudyError, match="unknown key.*'methds'.*did you mean 'methods'"):
        S.load_study_config({"methds": ["bce_probe"]})
    with pytest.raises(S.StudyError, match="unknown method"):
        S.load_study_config({"methods": ["rrr_probe"]})
    with pytest.raises(KeyError, match="temprature"):
        S.load_study_config({"methods": ["supcon"], "hparams": {"supcon": {"temprature": 1}}})
    with pytest.raises(S.StudyError, match="mask_source_labels"):
        S.load_study_config({"mask_source_labels": ["Hernai"]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [bce_probe\n")
    assert cli.main(["run", str(bad), "--out", str(tmp_path / "o")]) == 2
    shipped = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    studies = [p for p in shipped if p.stem != "course"]  # course.yaml is a course, not a study
    assert {"study_ci", "probe_synthetic", "mimic_to_nih", "chexpert_to_nih", "masking_seed002",
            "masking_siim", "masking_siim_full"} <= {p.stem for p in studies}
    from cxrlab.methods import ALGORITHMS
    from cxrlab.study.config import study_arms

    for path in studies:  # every shipped study config loads, and its arms' hparams are known
        cfg = S.load_study_config(path)
        assert cfg.name == path.stem, path
        for arm in study_arms(cfg):
            unknown = set(arm.hparams) - set(ALGORITHMS[arm.method].HPARAMS)
            assert not unknown, (path.name, arm.name, unknown)


def test_synthetic_cache_is_written_once_and_reused(tmp_path):
    a = S.synthetic_cache(tmp_path, n_per_hospital=16, image_size=32, verbose=False)
    stamp = (a.path / "images.npy").stat().st_mtime_ns
    b = S.synthetic_cache(tmp_path, n_per_hospital=16, image_size=32, verbose=False)
    assert b.path == a.path and (b.path / "images.npy").stat().st_mtime_ns == stamp
    assert a.synthetic and set(a.domains) == {"source", "target_nih", "target_old", "target_lowres"}
    c = S.synthetic_cache(tmp_path, n_per_hospital=16, image_size=32, seed=1, verbose=False)
    assert c.path != a.path and c.meta["seed"] == 1


def test_report_writes_markdown_and_png(tiny_study):
    out, _, _, _ = tiny_study
    root = out.parent
    assert cli.main(["report", str(root)]) == 0
    text = (root / "report.md").read_text()
    assert "tiny (SYNTHETIC)" in text and "published (student project slides" in text
    assert (root / "report_auc.png").stat().st_size > 1000
    with pytest.raises(FileNotFoundError, match="no study"):
        S.report(out / "units")


def test_a_new_method_is_one_registered_class(tiny_study, tmp_path, monkeypatch):
    """Issue #9: a method is one class with the decorator; the study's grid, tables and figures
    take its names from the registry, and one method can run as several arms."""
    import torch
    from torch import nn

    from cxrlab.losses import masked_bce_with_logits
    from cxrlab.methods import ALGORITHMS, Algorithm, register_algorithm
    from cxrlab.study import plots as P

    _, _, _, cache = tiny_study

    @register_algorithm("toy_scaled_head")
    class ToyScaledHead(Algorithm):
        display_name = "Toy scaled head"
        short_name = "toy"
        scoring = "predict"
        HPARAMS = {"scale": (1.0, "multiplies the logits")}

        def __init__(self, backbone, num_labels, hparams=None):
            super().__init__(backbone, num_labels, hparams)
            self.head = nn.Linear(backbone.num_features, self.num_labels)

        def predict(self, images):
            return float(self.hparams["scale"]) * self.head(self.features(images))

        def training_step(self, batch, step):
            logits = self.predict(batch["image"])
            return {"loss": masked_bce_with_logits(logits, batch["labels"].to(logits.device))}

    try:
        monkeypatch.setenv("CXRLAB_HOME", str(tmp_path / "home"))
        arms = ["bce_probe", "toy_scaled_head",
                {"name": "toy_x4", "method": "toy_scaled_head", "hparams": {"scale": 4.0}}]
        res = S.run_study(_config(cache.path, methods=arms), tmp_path / "toy", profile="ci",
                          verbose=False)
        assert sorted(p.name for p in (tmp_path / "toy" / "units").iterdir()) == [
            "bce_probe__tiny_cnn__seed0", "toy_scaled_head__tiny_cnn__seed0",
            "toy_x4__tiny_cnn__seed0"]
        stored = json.loads((tmp_path / "toy" / "units" / "toy_x4__tiny_cnn__seed0"
                             / "metrics.json").read_text())
        assert stored["config"]["hparams"] == {"scale": 4.0}
        assert stored["config"]["algorithm"] == "toy_scaled_head"
        table = S.seed000_table(res.results)
        assert list(table["setting"]) == ["BCE linear probe", "Toy scaled head",
                                          "Toy scaled head (toy_x4)"]
        summ = S.summarise(res.results)
        fig = P.plot_in_vs_out(summ)
        assert [ax.get_title() for ax in fig.axes[:3]] == list(table["setting"])
        fig = P.plot_label_spaces(summ)
        ticks = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels()]
        assert any(t.endswith("\ntoy") for t in ticks) and any(t.endswith("\ntoy_x4") for t in ticks)
        readme = (tmp_path / "toy" / "README.md").read_text()
        assert "Toy scaled head (toy_x4)" in readme
    finally:
        ALGORITHMS.pop("toy_scaled_head", None)


def test_arms_are_checked_before_training():
    base = {"protocol": PROTOCOL, "backbones": ["tiny_cnn"]}
    with pytest.raises(S.StudyError, match="unknown method 'rr'"):
        S.load_study_config({**base, "methods": ["bce_probe", {"name": "x", "method": "rr"}]})
    with pytest.raises(S.StudyError, match="appear twice"):
        S.load_study_config({**base, "methods": ["supcon", {"name": "supcon", "method": "supcon"}]})
    with pytest.raises(S.StudyError, match="unknown key"):
        S.load_study_config({**base, "methods": [{"name": "a", "method": "supcon", "lam": 1}]})
    with pytest.raises(KeyError, match="no hyper-parameter 'temp'"):
        S.load_study_config({**base, "methods": [{"name": "a", "method": "supcon",
                                                  "hparams": {"temp": 1}}]})
    cfg = S.load_study_config({**base, "hparams": {"supcon": {"temperature": 0.2}},
                               "methods": ["supcon", {"name": "hot", "method": "supcon",
                                                      "hparams": {"temperature": 0.5}}]})
    arms = cfg.arms()
    assert [(a.name, a.method, a.hparams, a.display) for a in arms] == [
        ("supcon", "supcon", {"temperature": 0.2}, "SupCon + linear probe"),
        ("hot", "supcon", {"temperature": 0.5}, "SupCon + linear probe (hot)")]


def test_a_method_that_needs_masks_gets_them_in_its_training_batches(tiny_study, tmp_path,
                                                                       monkeypatch):
    from cxrlab.data.dataset import load_masks

    _, _, _, cache = tiny_study
    m = load_masks(cache, [3, 1])
    assert m["row"].tolist() == [3, 1] and m["lung_mask"].shape == (2, 1, 64, 64)
    assert (m["lesion_mask"][0, 0].numpy() == cache.lesion_masks[3]).all()
    monkeypatch.setenv("CXRLAB_HOME", str(tmp_path / "home"))
    arm = {"name": "rrr_per", "method": "rrr", "hparams": {"lam": 0.1, "mask": "lung_periphery"}}
    res = S.run_study(_config(cache.path, methods=[arm]), tmp_path / "rrr", profile="ci",
                      verbose=False, figures=False)
    rec = json.loads((tmp_path / "rrr" / "units" / "rrr_per__tiny_cnn__seed0" / "metrics.json")
                     .read_text())
    assert rec["config"]["algorithm"] == "rrr" and rec["info"]["fit_epochs"] == 1
    assert set(res.results["setting"]) == {"RRR (rrr_per)"}


def test_paired_bootstrap_compares_two_arms_on_the_same_patients(tiny_study, monkeypatch):
    out, cfg_path, home, cache = tiny_study
    monkeypatch.setenv("CXRLAB_HOME", str(home))
    from cxrlab.profiles import get_profile

    res = S.load_study(out)
    data = S.load_study_data(S.load_study_config(res.config), get_profile("ci"))
    t = S.paired_bootstrap(res, data, "supcon", "bce_probe", n_boot=50)
    assert set(t["domain"]) == set(data.eval_names) and len(t) == len(data.eval_names)
    auc = res.results.query("label_space == 'shared7' and threshold == 'tuned_source_val' and "
                            "metric == 'auc_macro'").set_index(["method", "domain"])["value"]
    for r in t.itertuples():
        assert np.isclose(r.a, 100 * auc[("supcon", r.domain)], atol=1e-6)
        assert np.isclose(r.diff, r.a - r.b) and r.lo <= r.diff <= r.hi
        assert r.verdict == ("arm better" if r.lo > 0 else "baseline better" if r.hi < 0
                             else "within noise")
    with pytest.raises(KeyError, match="not in study"):
        S.paired_bootstrap(res, data, "rrr", "bce_probe")


def test_auc_figures_do_not_name_a_threshold(tiny_study):
    import matplotlib
    matplotlib.use("Agg")
    from cxrlab.study import plots as P

    res = S.load_study(tiny_study[0])
    fig = P.plot_in_vs_out(res.summary(), metric="auc_macro", label_space="shared7")
    assert "threshold" not in fig._suptitle.get_text()
    fig = P.plot_in_vs_out(res.summary(), metric="f1_macro", label_space="shared7")
    assert "thresholds tuned_source_val" in fig._suptitle.get_text()
