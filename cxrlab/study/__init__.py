"""Studies: train at one hospital, test at others, report honestly. One driver for the notebooks,
``cxrlab run CONFIG --out DIR`` and ``cxrlab report DIR``.

A *study* crosses methods x backbones x seeds on a protocol (:mod:`cxrlab.data.protocols`: a
source with train / val / test splits, and target data sets used for evaluation only)::

    from cxrlab.study import run_study, seed000_table
    res = run_study("configs/study_ci.yaml", out="results/study_ci")
    seed000_table(res.results, label_space="nih14", threshold="fixed0.5")

A study's *arms* are methods of the registry (:mod:`cxrlab.methods`), each with its display
name and its way of being scored (``Algorithm.scoring``); the tables and figures take every
name from there. The three methods of seed 000, plus the control arm it lacked:

* ``bce_probe`` -- frozen backbone, embeddings computed once and cached on disk
  (:mod:`cxrlab.probe.embeddings`), a linear head trained with masked BCE (:mod:`cxrlab.probe`).
* ``bce_finetune`` -- backbone and head trained end to end with BCE by the engine
  (:func:`cxrlab.engine.fit`), the *same budget* (epochs, batch size, augmentations) as SupCon.
  Without it, "SupCon beats the frozen BCE probe" mixes two causes: the loss, and the fact that
  only one arm adapted its features to chest X-rays.
* ``supcon`` -- SupCon pre-training of the backbone by the engine, then the frozen encoder's
  embeddings and the same linear probe as ``bce_probe``.

Rules that every number here follows
------------------------------------
* Model selection (the probe's epoch, the fine-tune's best epoch) and per-label thresholds use
  the **source validation split only**. Target labels are used for scoring, nothing else.
* Two thresholds are reported side by side: ``fixed0.5`` (what seed 000 presumably used) and
  ``tuned_source_val`` (per-label F1-optimal on source validation).
* Two label spaces: the *fair* one (``shared7``: the findings both sites define) and the
  *pitfall* one (``nih14``, seed 000's): a label the source never annotates (NaN in its
  manifest) cannot be learnt; its target score is chance by construction. Per-label tables mark
  such labels ``source_defined = False``; :func:`unit_summary` lists them.
* Every number carries a 95 % interval: a bootstrap over *patients* of the test set (one seed)
  or a t-interval over seeds (several seeds).
* Results on synthetic data say SYNTHETIC (column ``synthetic``, figure titles, captions).

Resumable: each (method, backbone, seed) *unit* writes ``units/<unit>/metrics.json`` (last, and
atomically), ``per_label.csv`` and ``predictions.npz``; a finished unit is skipped on the next
run; a unit killed in training continues from its engine checkpoint ``checkpoints/<unit>/``.

The package, one job per module: :mod:`~cxrlab.study.config` (what runs),
:mod:`~cxrlab.study.sets` (the resolved protocol), :mod:`~cxrlab.study.scoring` (scoring one
model), :mod:`~cxrlab.study.runner` (the units and the study), :mod:`~cxrlab.study.result`
(reading a study back), :mod:`~cxrlab.study.shards` (several processes, one folder:
``--shard I/N``, unit claims, ``study.json``), :mod:`~cxrlab.study.tables`,
:mod:`~cxrlab.study.gaps` (the source - target gap), :mod:`~cxrlab.study.plots` (figures),
:mod:`~cxrlab.study.report` and :mod:`~cxrlab.study.html` (the self-contained HTML report).
"""
from cxrlab.study.config import (THRESHOLDS, Arm, StudyConfig, StudyError, load_study_config,
                                 mask_labels, study_arms)
from cxrlab.study.sets import StudyData, load_study_data, source_undefined_labels, synthetic_cache
from cxrlab.study.scoring import evaluate_predictions
from cxrlab.study.report import report, study_markdown, write_study_figures
from cxrlab.study.result import STUDY_KIND, StudyResult, load_study
from cxrlab.study.compare import paired_bootstrap
from cxrlab.study.runner import UNIT_VERSION, Unit, run_probe_study, run_study
from cxrlab.study.shards import Shard, parse_shard
from cxrlab.study.gaps import gap_table
from cxrlab.study.tables import (METRIC_NAMES, RESULT_COLUMNS, compare_with_published, drop_table,
                                 metric_table, variant_gain,
                                 markdown_table, method_order, setting_names,
                                 published_cohen2020_table, published_seed000_table,
                                 seed000_table, summarise, unit_summary)

__all__ = [
    "THRESHOLDS", "METRIC_NAMES", "Arm", "study_arms", "method_order", "setting_names",
    "StudyConfig", "StudyError", "StudyResult", "StudyData", "Unit", "RESULT_COLUMNS",
    "STUDY_KIND", "UNIT_VERSION", "load_study_config", "load_study_data", "mask_labels",
    "run_study", "run_probe_study", "evaluate_predictions", "write_study_figures",
    "study_markdown", "summarise", "unit_summary", "seed000_table", "published_seed000_table",
    "published_cohen2020_table", "compare_with_published", "markdown_table", "load_study",
    "report", "synthetic_cache", "source_undefined_labels", "metric_table", "drop_table",
    "variant_gain", "Shard", "parse_shard", "gap_table", "paired_bootstrap",
]
