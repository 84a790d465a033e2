"""Study protocols as data: which cache trains, which caches test, on which labels.

A protocol is a small YAML file; the course's protocols ship with the package in
``cxrlab/data/protocols/`` (see the files there; every key is
documented below and unknown keys are refused)::

    name: mimic_to_nih
    description: ...
    citation: ...
    label_space: shared7          # the fair label space (cxrlab.labels.LABEL_SPACES or a list)
    pitfall_label_space: nih14    # optional: reported only to show the pitfall
    source:                       # one data set; its train / val / test splits are used
      name: mimic
      dataset: mimic              # nih | chexpert | mimic | siim | padchest | synthetic
      cache: mimic                # cache folder under the data dir (default: the data set)
    targets:                      # one or more data sets, evaluation only
      - {name: nih, dataset: nih, split: test}
    notes: ...

Keys of a source or target entry:

``name`` (required, unique), ``dataset`` (required), ``cache`` (folder name under the data
dir, or an absolute path; default = ``dataset``), ``domain`` (keep rows of these domains; the
synthetic hospitals are domains of one cache), ``split`` (targets: ``train|val|test|all``,
default ``test``), ``query`` (a pandas query on the manifest, e.g. ``"age >= 60"``),
``frontal_only`` (drop lateral views), ``labeled_only`` (drop rows with no defined label of
the label space), ``exclude_duplicates_of`` (name of another entry: drop images that are
copies of its images, see below), ``duplicate_threshold`` (default 0.98), ``age_rule``
(``above_median`` or ``oldest``, see below), ``one_per_patient`` (keep one random image per
patient), ``sample`` (``{n, prevalence, label, seed}``: a seeded random sample of ``n``
images, optionally with a fixed fraction ``prevalence`` of positives for ``label``; for the
source ``n`` is a mapping split -> count).

Rows are chosen in this order: split, domain, query, frontal_only, labeled_only, duplicate
exclusion, age rule, one image per patient, class-balanced sample. Every step is seeded and
independent of the machine.

**Seed 002's pneumothorax targets** (``pneumothorax_seed002.yaml``) are built as the paper
describes: "remove all SIIM-ACR images from ChestX-ray8 ... and randomly sampled a subset of
4,607 individuals with ages above the median for the dataset", the same for CheXpert-age, and
4,607 images with the source's class balance (22 % pneumothorax) everywhere.

* SIIM-ACR's images are NIH images renamed with DICOM UIDs and no public key maps one onto the
  other, so ``exclude_duplicates_of`` finds them by content: every image is reduced to a
  16 x 16 thumbnail, centred and normalised (which cancels any brightness / contrast change
  between the PNG and the DICOM), and an NIH image whose thumbnail correlates above
  ``duplicate_threshold`` with a SIIM thumbnail is dropped. A follow-up image of the same
  patient in the same pose can also match; dropping it too is the safe side of leakage.
* ``age_rule: above_median`` keeps ages strictly above the median age of the rows left at
  that point (the paper's stated rule). The paper reports mean ages of 71.4 (ChestX-ray8-age)
  and 89.6 (CheXpert-age); on the real metadata (torchxrayvision's copies) the stated rule
  gives about 61 and 75, while ``age_rule: oldest`` (the oldest images of each class) gives
  about 76 and 89.3: CheXpert caps ages at 90, so 89.6 is only reachable that way. The
  shipped protocol follows the text; :meth:`ResolvedProtocol.summary` prints the mean ages so
  the difference is visible.

Two modules: :mod:`~cxrlab.data.protocols.spec` reads and checks the YAML,
:mod:`~cxrlab.data.protocols.resolve` opens the caches and chooses the rows.
"""
from cxrlab.data.protocols.resolve import ResolvedProtocol, ResolvedSet, find_duplicates
from cxrlab.data.protocols.spec import (AGE_RULES, DATASETS, LATERAL_VIEWS,
                                        TARGET_SPLITS, DataSpec, Protocol, ProtocolError,
                                        SampleSpec, list_protocols, load_protocol,
                                        protocol_dirs, protocol_from_dict, protocol_to_dict)

__all__ = ["AGE_RULES", "DATASETS", "LATERAL_VIEWS", "TARGET_SPLITS", "DataSpec", "Protocol",
           "ProtocolError", "ResolvedProtocol", "ResolvedSet", "SampleSpec", "find_duplicates",
           "list_protocols", "load_protocol", "protocol_dirs", "protocol_from_dict",
           "protocol_to_dict"]
