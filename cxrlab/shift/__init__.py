"""Measure domain shift between hospitals: image statistics, a domain classifier, and the AUC
gap of a model trained at one hospital and tested at the others.

Three kinds of shift separate two hospitals (notebook 01):

* **image shift** (p(x) changes): contrast curve, exposure, noise, blur, resolution, burned-in
  markers. :func:`intensity_histograms` and :func:`image_statistics` *measure* it;
  :func:`domain_classifier` shows how easily a model tells hospitals apart from pixels alone.
* **population shift**: age, sex, projection (PA vs portable AP), disease prevalence.
  :func:`shift_summary` tabulates it.
* **label shift** in the sense of *label definitions* (p(y|x) changes): one site calls a
  borderline finding positive, another does not.

:func:`source_target_gap` puts them together: train a small CNN at the source hospital (train
split only, the best epoch chosen on the source validation split only) and report AUC on the
test split of every hospital. The drop from source to target is the price of the shift.

Everything here is small enough to run on a laptop CPU on the synthetic hospitals
(:mod:`cxrlab.data.synthetic`); results on those hospitals are *synthetic* and say so.

One module per measurement: :mod:`~cxrlab.shift.images` (histograms, image statistics),
:mod:`~cxrlab.shift.classifier` (train a registered backbone and method with the shared
engine, and score its AUC), :mod:`~cxrlab.shift.gap` (train
at the source, test everywhere), :mod:`~cxrlab.shift.seeds` (the same over several seeds, with
seed and patient-bootstrap intervals), :mod:`~cxrlab.shift.domain` (the domain classifier) and
:mod:`~cxrlab.shift.summary` (one table per cache).
"""
from cxrlab.shift.domain import DomainClassifierResult, domain_classifier
from cxrlab.shift.gap import DEFAULT_GAP_LABELS, label_drop, source_target_gap
from cxrlab.shift.images import image_statistics, intensity_histograms
from cxrlab.shift.classifier import ImageClassifier, auc_per_label, evaluate_auc, train_small_cnn
from cxrlab.shift.seeds import SeededGap, combined_interval, gap_over_seeds
from cxrlab.shift.summary import shift_summary

__all__ = ["DEFAULT_GAP_LABELS", "DomainClassifierResult", "ImageClassifier", "auc_per_label",
           "domain_classifier", "evaluate_auc", "image_statistics", "intensity_histograms",
           "label_drop", "shift_summary", "source_target_gap", "train_small_cnn",
           "SeededGap", "combined_interval", "gap_over_seeds"]
