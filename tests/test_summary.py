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


def test_plots_return_figures():
    import matplotlib

    matplotlib.use("Agg")
    s = manifest_summary(small_manifest(), labels=["Effusion", "Hernia"])
    assert plot_prevalence(s).axes and plot_demographics(small_manifest()).axes
    import matplotlib.pyplot as plt

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
