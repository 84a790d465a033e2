"""The synthetic hospitals are learnable and shifted, not noise (notebook 01's claims, tested).

One module-scoped study per seed (written once each, about a minute on 2 CPU cores). The
default run (``make test``) checks every claim once, on seed 0; seeds 1 and 2 are marked
``slow`` and run with ``pytest -m slow tests/test_learnability.py`` or with
``CXRLAB_FULL_TESTS=1`` (see tests/conftest.py), e.g. after changing the generator, the shift
models or the thresholds below:

* a small CNN trained at ``source`` (train split; epoch chosen on source val) reaches a clearly
  better-than-chance macro AUC on the source test split, and loses a clear margin at a target;
* a domain classifier tells the four hospitals apart far above chance;
* with the shortcut on (a chest drain drawn in 90 % of the source's pneumothorax images, 5 % of
  the others, 5 % / 5 % at every target), the pneumothorax source-to-target AUC drop grows.

Thresholds come from measuring seeds 0, 1 and 2 with exactly this protocol (N_PER_HOSPITAL
1500, 64 px, EPOCHS 5; ``python -m tests.test_learnability 0,1,2`` prints them) and sit well
below the worst seed; see MEASURED. Targets are scored on *all* their images (the model never
saw any of them) so that rare labels have enough positives for a steady AUC.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from cxrlab import shift
from cxrlab.data.synthetic import write_synthetic_cache

N_PER_HOSPITAL = 1500
IMAGE_SIZE = 64
EPOCHS = 5
SEEDS = (0, 1, 2)
#: checked in every run; the other seeds are ``slow`` (they confirm that the margins hold
#: across seeds, which MEASURED records)
DEFAULT_SEEDS = (0,)
LABELS = shift.DEFAULT_GAP_LABELS      # Effusion, Cardiomegaly, Pneumothorax, Atelectasis, ...

# Measured on seeds 0 / 1 / 2 (``python -m tests.test_learnability 0,1,2``, torch 2.14 CPU);
# each threshold sits well below the worst seed. ``-m slow`` / ``CXRLAB_FULL_TESTS=1`` runs all
# three seeds, so the margins are checked to hold across seeds rather than assumed from one.
MEASURED = {   # generator version 2; shift models on the shared framework (tiny_cnn,
    # bce_finetune through engine.fit, no augmentation), 2026-12-02
    "source_auc_macro": (0.889, 0.876, 0.891),
    "largest_target_drop": (0.176, 0.220, 0.182),
    "domain_accuracy_logreg": (1.000, 1.000, 1.000),
    "ptx_drop_off": (0.201, 0.129, 0.127),
    "ptx_drop_on": (0.383, 0.364, 0.393),
    "ptx_drop_increase": (0.182, 0.235, 0.266),
}
MIN_SOURCE_AUC = 0.75        # chance is 0.5
MIN_TARGET_DROP = 0.08       # at least one target loses this much macro AUC
MIN_DOMAIN_ACCURACY = 0.90   # chance is about 0.25-0.3 (four hospitals, unequal test splits)
MIN_PTX_DROP_INCREASE = 0.04  # shortcut on minus shortcut off


def run_study(root, seed: int = 0) -> dict:
    """Write both caches under ``root`` and measure everything the tests assert."""
    caches = {sc: write_synthetic_cache(root / f"synth_sc{int(sc)}", n_per_hospital=N_PER_HOSPITAL,
                                        image_size=IMAGE_SIZE, seed=seed, shortcut=sc)
              for sc in (False, True)}
    gap = shift.source_target_gap(caches[False], labels=LABELS, epochs=EPOCHS, seed=seed,
                                  target_split=None)
    ptx = {sc: shift.source_target_gap(caches[sc], labels=("Pneumothorax",), epochs=EPOCHS,
                                       seed=seed, target_split=None) for sc in (False, True)}
    dom = shift.domain_classifier(caches[False], method="logreg", seed=seed)

    def ptx_drop(g):  # source AUC minus the mean over targets
        a = g["auc_Pneumothorax"]
        return float(a.iloc[0] - a.iloc[1:].mean())

    return {"gap": gap, "ptx": ptx, "domain": dom,
            "source_auc_macro": float(gap["auc_macro"].iloc[0]),
            "largest_target_drop": float(gap["drop"].iloc[1:].max()),
            "domain_accuracy_logreg": dom.accuracy,
            "ptx_drop_off": ptx_drop(ptx[False]), "ptx_drop_on": ptx_drop(ptx[True]),
            "ptx_drop_increase": ptx_drop(ptx[True]) - ptx_drop(ptx[False])}


@pytest.fixture(scope="module", ids=lambda s: f"seed{s}",
                params=[s if s in DEFAULT_SEEDS else pytest.param(s, marks=pytest.mark.slow)
                        for s in SEEDS])
def study(request, tmp_path_factory):
    return run_study(tmp_path_factory.mktemp(f"learnability_seed{request.param}"),
                     seed=request.param)


def test_source_model_is_clearly_better_than_chance(study):
    gap = study["gap"]
    assert gap["role"].iloc[0] == "source"
    # every default label is evaluable at the source (positives and negatives in its test split)
    assert gap[[f"auc_{lab}" for lab in LABELS]].iloc[0].notna().all()
    assert study["source_auc_macro"] >= MIN_SOURCE_AUC, gap.round(3).to_string()


def test_model_loses_auc_at_a_target(study):
    gap = study["gap"]
    assert study["largest_target_drop"] >= MIN_TARGET_DROP, gap.round(3).to_string()
    # shifted, yet not destroyed: the targets stay above chance on average
    assert gap["auc_macro"].iloc[1:].mean() > 0.55, gap.round(3).to_string()


def test_domain_classifier_separates_hospitals(study):
    dom = study["domain"]
    assert dom.chance < 0.4
    assert dom.accuracy >= MIN_DOMAIN_ACCURACY, dom.confusion.to_string()
    assert dom.per_class_accuracy.min() >= 0.8, dom.confusion.to_string()


def test_shortcut_makes_the_pneumothorax_drop_grow(study):
    on, off = study["ptx"][True], study["ptx"][False]
    # same seed, same patients and labels: only the drain differs between the two caches
    assert np.array_equal(on["n_pos_Pneumothorax"], off["n_pos_Pneumothorax"])
    assert study["ptx_drop_increase"] >= MIN_PTX_DROP_INCREASE, (
        f"drop off {study['ptx_drop_off']:.3f}, on {study['ptx_drop_on']:.3f}")
    # the drain does not hurt at the source, where it is there to be found (the source AUC is
    # near 1 without it on some seeds, so "rises" cannot be asked of every seed)
    assert on["auc_Pneumothorax"].iloc[0] >= off["auc_Pneumothorax"].iloc[0] - 0.02


if __name__ == "__main__":  # measure several seeds: python -m tests.test_learnability 0,1,2
    import tempfile
    import time
    from pathlib import Path

    for s in [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "0,1,2").split(",")]:
        t = time.time()
        with tempfile.TemporaryDirectory() as d:
            r = run_study(Path(d), seed=s)
        keys = ("source_auc_macro", "largest_target_drop", "domain_accuracy_logreg",
                "ptx_drop_off", "ptx_drop_on", "ptx_drop_increase")
        print(f"seed {s} ({time.time() - t:.0f} s): " + ", ".join(f"{k} {r[k]:.3f}" for k in keys))
        print(r["gap"][["domain", "n", "auc_macro", "drop"] + [f"auc_{x}" for x in LABELS]]
              .round(3).to_string(), flush=True)
