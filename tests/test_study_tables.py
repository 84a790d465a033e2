"""Tables the probe notebooks read: a metric per set, the in-domain -> out-of-domain drop with
its interval, and positives per label with the thin ones flagged."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from cxrlab import study as S
from cxrlab.errors import UnknownNameError
from cxrlab.study.tables import TARGETS_MEAN


def _summary(src=(0.90, 0.86, 0.94), targets=None) -> pd.DataFrame:
    targets = targets or {"t1": (0.80, 0.78, 0.82), "t2": (0.88, 0.84, 0.92)}
    rows = []
    for model in ("tiny CNN", "tiny ViT"):
        for dom, role, (v, lo, hi) in [("source", "in-domain", src)] + \
                [(d, "out-of-domain", x) for d, x in targets.items()]:
            rows.append(dict(setting="BCE linear probe", model=model, domain=dom, role=role,
                             label_space="shared7", threshold="tuned_source_val",
                             metric="auc_macro", value=v, ci_lo=lo, ci_hi=hi))
    df = pd.DataFrame(rows)
    df.attrs["synthetic"] = True
    return df


def test_metric_table_puts_the_source_first_in_percent():
    s = _summary()
    t = S.metric_table(s)
    assert list(t.columns) == ["source", "t1", "t2"] and list(t.index) == ["tiny CNN", "tiny ViT"]
    assert t.loc["tiny CNN", "t1"] == 80.0 and t.attrs["synthetic"]
    assert S.metric_table(s, interval=True).loc["tiny ViT", "source"] == "90.0 [86.0, 94.0]"
    with pytest.raises(UnknownNameError, match="f1_macro"):
        S.metric_table(s, metric="f1_macro")


def test_drop_interval_adds_the_variances_of_two_independent_test_sets():
    d = S.drop_table(_summary()).set_index(["model", "target"])
    z = norm.ppf(0.975)
    r = d.loc[("tiny CNN", "t1")]
    sd = np.hypot(0.08 / (2 * z), 0.04 / (2 * z))
    assert np.isclose(r["drop"], 10.0) and np.isclose(r["drop_hi"] - r["drop"], 100 * z * sd)
    assert r["beyond_interval"]
    # t2 loses 2 points with intervals of +-4 and +-4: not beyond the noise
    assert not d.loc[("tiny CNN", "t2"), "beyond_interval"]
    m = d.loc[("tiny CNN", TARGETS_MEAN)]
    assert np.isclose(m["drop"], 100 * (0.90 - 0.84))
    # the mean of two targets: variance of the source plus (var1 + var2) / 4
    sd_mean = np.sqrt((0.08 / (2 * z)) ** 2 + ((0.04 / (2 * z)) ** 2 + (0.08 / (2 * z)) ** 2) / 4)
    assert np.isclose(m["drop_hi"] - m["drop"], 100 * z * sd_mean)


def test_positives_per_label_flag_thin_counts(tmp_path, monkeypatch):
    from cxrlab.data.synthetic import write_synthetic_cache
    from cxrlab.profiles import get_profile

    monkeypatch.setenv("CXRLAB_HOME", str(tmp_path / "home"))
    cache = write_synthetic_cache(tmp_path / "syn", hospitals=["source", "target_nih"],
                                  n_per_hospital=150, image_size=32, seed=0)
    from tests.test_study import PROTOCOL
    cfg = S.load_study_config({"name": "p", "protocol": PROTOCOL,
                               "caches": {"synthetic": str(cache.path)},
                               "mask_source_labels": "mimic", "label_spaces": ["shared7", "nih14"]})
    data = S.load_study_data(cfg, get_profile("ci"))
    pos = data.positives(["Effusion", "Mass"])
    y = data.labels("val")[:, list(data.train_labels).index("Effusion")]
    assert pos.at["Effusion", "val"] == int(np.nansum(y))
    assert pd.isna(pos.at["Mass", "train"]) and not pd.isna(pos.at["Mass", "target_nih"])
    assert ("Effusion", "val") in pos.attrs["few"]  # 150 images: a handful of positives
    styled = data.positives_styled(["Effusion", "Mass"])
    assert styled.at["Mass", "train"] == "n/a" and styled.at["Effusion", "val"].endswith("(<10)")
    with pytest.raises(UnknownNameError, match="Nodulez"):
        data.positives(["Nodulez"])


def test_variant_gain_is_first_minus_second_per_set():
    a, b = _summary(), _summary(src=(0.80, 0.76, 0.84), targets={"t1": (0.70, 0.68, 0.72),
                                                                 "t2": (0.88, 0.84, 0.92)})
    g = S.variant_gain({"stand-in": a, "random": b}, domains=["source", "t1"])
    assert list(g.columns) == [("source", "stand-in"), ("source", "random"), ("source", "gain"),
                               ("t1", "stand-in"), ("t1", "random"), ("t1", "gain")]
    assert g.loc["tiny CNN", ("source", "gain")] == 10.0 and g.loc["tiny ViT", ("t1", "gain")] == 10.0
    with pytest.raises(UnknownNameError, match="nowhere"):
        S.variant_gain({"a": a, "b": b}, domains=["nowhere"])
