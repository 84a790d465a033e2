"""Prevalence / demographic tables of a manifest, and the real metadata torchxrayvision ships."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrlab.data.summary import (demographics_table, manifest_summary, plot_demographics,
                                 plot_prevalence, prevalence_table)
from cxrlab.labels import NIH14, SHARED7


def small_manifest():
    return pd.DataFrame({
        "image_id": list("abcdef"),
        "patient_id": ["1", "1", "2", "3", "4", "4"],
        "split": ["train", "train", "val", "test", "train", "train"],
        "domain": ["A", "A", "A", "B", "B", "B"],
        "age": [20, 22, np.nan, 60, 70, 80],
        "sex": ["F", "F", "M", "M", None, "F"],
        "view": ["PA", "AP", "PA", "AP", "AP", "AP"],
        "Effusion": [1, 0, np.nan, 1, 1, 0],
        "Hernia": [0, 0, 1, np.nan, np.nan, np.nan],   # domain B does not define it
    })


def test_prevalence_is_nan_aware():
    s = manifest_summary(small_manifest(), labels=["Effusion", "Hernia"])
    assert s.prevalence.loc["Effusion", "A"] == pytest.approx(1 / 2)   # the NaN is not a 0
    assert s.prevalence.loc["Effusion", "B"] == pytest.approx(2 / 3)
    assert s.prevalence.loc["Hernia", "A"] == pytest.approx(1 / 3)
    assert np.isnan(s.prevalence.loc["Hernia", "B"])                   # undefined: unknown, not 0 %
    c = s.counts.set_index(["group", "label"])
    assert c.loc[("A", "Effusion"), "n_labelled"] == 2
    assert c.loc[("A", "Effusion"), "n_missing"] == 1
    assert c.loc[("B", "Hernia"), "n_labelled"] == 0
    assert list(s.prevalence.columns) == ["A", "B"]
    assert "Prevalence" in repr(s) and "<h4>" in s._repr_html_()


def test_demographics():
    d = demographics_table(small_manifest())
    assert d.loc["A", "n_images"] == 3 and d.loc["A", "n_patients"] == 2
    assert d.loc["B", "images_per_patient"] == pytest.approx(1.5)
    assert d.loc["A", "age_mean"] == pytest.approx(21) and d.loc["B", "age_q50"] == 70
    assert d.loc["A", "pct_age_unknown"] == pytest.approx(100 / 3)
    assert d.loc["A", "pct_female"] == pytest.approx(200 / 3)
    assert d.loc["B", "pct_female"] == pytest.approx(50) and d.loc["B", "pct_sex_unknown"] > 30
    assert d.loc["B", "view_AP"] == 1 and d.loc["A", "view_PA"] == pytest.approx(2 / 3)
    assert (d.loc["A", "n_train"], d.loc["A", "n_val"], d.loc["A", "n_test"]) == (2, 1, 0)
    one = demographics_table(small_manifest(), by=None)
    assert list(one.index) == ["all"] and one.loc["all", "n_patients"] == 4
    by_two = prevalence_table(small_manifest(), labels=["Effusion"], by=["domain", "split"])
    assert "A/train" in set(by_two["group"])
    with pytest.raises(KeyError, match="cannot group by"):
        manifest_summary(small_manifest(), by="hospital")


def test_prevalence_plot_shows_the_table():
    """The bars are the prevalences (one colour per group, labels top to bottom), an undefined
    label is drawn as an empty bar marked n/a, and the title is the caller's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = manifest_summary(small_manifest(), labels=["Effusion", "Hernia"])
    ax = plot_prevalence(s, title="SYNTHETIC hospitals A and B").axes[0]
    assert ax.get_title() == "SYNTHETIC hospitals A and B"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Effusion", "Hernia"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A", "B"]
    assert ax.get_legend().get_title().get_text() == "domain"
    for container, group in zip(ax.containers, ["A", "B"]):
        widths = [bar.get_width() for bar in container]
        expected = np.nan_to_num(s.prevalence[group].to_numpy(dtype=float))
        assert np.allclose(widths, expected), (group, widths, expected)
    assert [b.get_width() for b in ax.containers[0]] == pytest.approx([1 / 2, 1 / 3])
    na = [t for t in ax.texts if t.get_text() == "n/a"]
    assert len(na) == 1   # Hernia at B only
    hernia_b = ax.containers[1][1]
    assert na[0].get_position()[1] == pytest.approx(hernia_b.get_y() + hernia_b.get_height() / 2)
    assert plot_prevalence(s).axes[0].get_title() == "Label prevalence"
    plt.close("all")


def test_demographics_plot_shows_the_table():
    """Ages as one density histogram per group, % female as bars, view shares stacked to 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = small_manifest()
    d = demographics_table(m)
    age, sex, view = plot_demographics(m).axes
    assert [ax.get_title() for ax in (age, sex, view)] == ["Age", "Sex", "View"]
    assert [t.get_text() for t in age.get_legend().get_texts()] == ["A", "B"]
    assert len(age.patches) == 2   # one step outline per group
    assert [b.get_height() for b in sex.patches] == pytest.approx(list(d["pct_female"]))
    assert [t.get_text() for t in sex.get_xticklabels()] == ["A", "B"]
    assert [t.get_text() for t in view.get_legend().get_texts()] == ["AP", "PA"]
    ap, pa = view.containers
    assert [b.get_height() for b in ap] == pytest.approx(list(d["view_AP"]))
    assert [b.get_y() for b in pa] == pytest.approx(list(d["view_AP"]))    # stacked on AP
    tops = [a.get_height() + p.get_height() for a, p in zip(ap, pa)]
    assert tops == pytest.approx([1.0, 1.0])
    plt.close("all")


def test_shipped_real_metadata():
    pytest.importorskip("torchxrayvision")
    from cxrlab.data.metadata import load_shipped_metadata, shipped_metadata_path

    nih = load_shipped_metadata("nih")
    assert len(nih) == 112_120 and nih["patient_id"].nunique() == 30_805
    # published label counts of Data_Entry_2017_v2020 (NIH README / paper table)
    counts = nih[list(NIH14)].sum()
    assert counts["Hernia"] == 227 and counts["Pneumothorax"] == 5302
    assert counts["Effusion"] == 13317 and counts["Infiltration"] == 19894
    assert nih["No_Finding"].isna().all()         # NIH does not define CheXpert-only labels
    chx = load_shipped_metadata("chexpert", frontal_only=False)
    assert len(chx) == 223_414
    frontal = chx[chx["view"] != "LATERAL"]
    assert 180_000 < len(frontal) < len(chx)
    s = manifest_summary(pd.concat([nih, frontal]), labels="shared7")
    assert list(s.prevalence.index) == list(SHARED7)
    assert s.demographics.loc["chexpert", "age_mean"] > s.demographics.loc["nih", "age_mean"]
    pc = load_shipped_metadata("padchest")
    assert 100_000 < len(pc) < 160_861 and set(pc["view"]) == {"PA", "AP", "AP_SUPINE"}
    assert pc["Support_Devices"].isna().all() and pc["Effusion"].notna().mean() > 0.99
    assert shipped_metadata_path("siim").name.endswith(".csv.gz")
    with pytest.raises(KeyError):
        load_shipped_metadata("mimic")
