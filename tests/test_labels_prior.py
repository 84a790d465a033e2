"""The committed NIH label-combination table is what torchxrayvision's NIH metadata says."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrlab.data.synthetic.labels_prior import (PRIOR_CSV, LabelPrior, build_label_prior,
                                                load_label_prior, nih_table_path)
from cxrlab.labels import NIH14


def test_committed_prior_matches_the_shipped_nih_table():
    try:
        path = nih_table_path()
    except FileNotFoundError:
        pytest.skip("torchxrayvision's NIH table is not installed")
    rebuilt = build_label_prior(path)
    committed = pd.read_csv(PRIOR_CSV, keep_default_na=False)
    pd.testing.assert_frame_equal(rebuilt, committed, check_dtype=False)
    assert committed["count"].sum() == 112120


def test_prevalence_and_reweighting():
    prior = load_label_prior()
    prev = prior.prevalence()
    assert abs(prev["Infiltration"] - 0.177) < 0.002 and abs(prev["No Finding"] - 0.538) < 0.002
    boosted = prior.prevalence({"Cardiomegaly": 3.0})
    assert boosted["Cardiomegaly"] > 2.5 * prev["Cardiomegaly"]
    rng = np.random.default_rng(0)
    draws = prior.sample(rng, 20000, prior.weights())
    assert draws.shape == (20000, 14) and draws.dtype == np.float32
    assert np.all(np.abs(draws.mean(0) - prev[list(NIH14)].to_numpy()) < 0.012)
    with pytest.raises(KeyError, match="known labels"):
        prior.weights({"Cardiomegali": 2.0})
    with pytest.raises(ValueError):
        prior.weights({"Cardiomegaly": -1.0})


def test_build_from_a_small_table_sorts_names():
    df = pd.DataFrame({"Finding Labels": ["Effusion|Atelectasis", "Atelectasis|Effusion",
                                          "No Finding", "Mass"]})
    t = build_label_prior(df)
    assert dict(zip(t["labels"], t["count"])) == {"Atelectasis|Effusion": 2, "No Finding": 1,
                                                 "Mass": 1}
    p = LabelPrior(t)
    assert p.combos.sum() == 3 and p.no_finding.sum() == 1
    with pytest.raises(ValueError, match="unknown NIH finding"):
        build_label_prior(pd.DataFrame({"Finding Labels": ["Covid"]}))
