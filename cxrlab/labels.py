"""Label spaces and how each data set's label names map onto them.

One table (``LABEL_MAP``) says, for every data set the course reads, which of its raw label
columns means which canonical label. A canonical label that a data set does not define is
*missing* for that data set (NaN in the manifest), never a silent 0: a model trained on MIMIC
cannot learn "Hernia" because MIMIC never says whether an image has one.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cxrlab.errors import UnknownNameError

#: NIH ChestX-ray14 findings, in the order of the NIH paper and torchxrayvision.
NIH14: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema",
    "Fibrosis", "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening",
    "Pneumonia", "Pneumothorax",
)

#: CheXpert / MIMIC-CXR (CheXpert labeler) findings, canonical names (NIH spelling where shared).
CHEXPERT14: tuple[str, ...] = (
    "No_Finding", "Enlarged_Cardiomediastinum", "Cardiomegaly", "Lung_Opacity", "Lung_Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Effusion",
    "Pleural_Other", "Fracture", "Support_Devices",
)

#: The seven findings that both NIH and CheXpert/MIMIC define: the only fair cross-site labels.
SHARED7: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Pneumonia",
    "Pneumothorax",
)

#: Every canonical label a cache manifest may carry (the union, NIH order first).
ALL_LABELS: tuple[str, ...] = NIH14 + tuple(x for x in CHEXPERT14 if x not in NIH14)

LABEL_SPACES: dict[str, tuple[str, ...]] = {
    "nih14": NIH14,
    "chexpert14": CHEXPERT14,
    "shared7": SHARED7,
    "pneumothorax": ("Pneumothorax",),
}

# raw column name in the data set's own files -> canonical label
_CHEXPERT_RAW = {
    "No Finding": "No_Finding", "Enlarged Cardiomediastinum": "Enlarged_Cardiomediastinum",
    "Cardiomegaly": "Cardiomegaly", "Lung Opacity": "Lung_Opacity", "Lung Lesion": "Lung_Lesion",
    "Edema": "Edema", "Consolidation": "Consolidation", "Pneumonia": "Pneumonia",
    "Atelectasis": "Atelectasis", "Pneumothorax": "Pneumothorax", "Pleural Effusion": "Effusion",
    "Pleural Other": "Pleural_Other", "Fracture": "Fracture", "Support Devices": "Support_Devices",
}
LABEL_MAP: dict[str, dict[str, str]] = {
    # NIH: "Finding Labels" is a '|'-joined string of these names ("No Finding" = none of them)
    "nih": {name: name for name in NIH14},
    "chexpert": dict(_CHEXPERT_RAW),
    "mimic": dict(_CHEXPERT_RAW),
    # SIIM-ACR: every image is labelled for pneumothorax only (from the RLE file)
    "siim": {"Pneumothorax": "Pneumothorax"},
    # the synthetic hospitals draw all 14 NIH findings
    "synthetic": {name: name for name in NIH14},
    # PadChest: terms of its "Labels" lists (several fine-grained terms -> one canonical label;
    # absent term = negative, as for NIH's text-mined labels)
    "padchest": {
        "atelectasis": "Atelectasis", "laminar atelectasis": "Atelectasis",
        "lobar atelectasis": "Atelectasis", "segmental atelectasis": "Atelectasis",
        "round atelectasis": "Atelectasis", "total atelectasis": "Atelectasis",
        "atelectasis basal": "Atelectasis",
        "cardiomegaly": "Cardiomegaly", "consolidation": "Consolidation",
        "pulmonary edema": "Edema",
        "pleural effusion": "Effusion", "loculated pleural effusion": "Effusion",
        "loculated fissural effusion": "Effusion",
        "emphysema": "Emphysema", "pulmonary fibrosis": "Fibrosis", "hiatal hernia": "Hernia",
        "infiltrates": "Infiltration", "mass": "Mass", "pulmonary mass": "Mass",
        "nodule": "Nodule", "multiple nodules": "Nodule",
        "pleural thickening": "Pleural_Thickening",
        "apical pleural thickening": "Pleural_Thickening",
        "pneumonia": "Pneumonia", "atypical pneumonia": "Pneumonia",
        "pneumothorax": "Pneumothorax",
        "fracture": "Fracture", "rib fracture": "Fracture", "callus rib fracture": "Fracture",
        "clavicle fracture": "Fracture", "humeral fracture": "Fracture",
        "vertebral fracture": "Fracture",
        "normal": "No_Finding",
    },
}


def get_label_space(name: str | Sequence[str]) -> tuple[str, ...]:
    """Return the label names of a named label space, or validate an explicit list."""
    if isinstance(name, str):
        try:
            return LABEL_SPACES[name.lower()]
        except KeyError:
            raise UnknownNameError(
                f"unknown label space {name!r}; choose one of {sorted(LABEL_SPACES)} "
                "or pass a list of label names"
            ) from None
    labels = tuple(name)
    unknown = [x for x in labels if x not in ALL_LABELS]
    if unknown:
        raise UnknownNameError(f"unknown label name(s) {unknown}; known labels are {list(ALL_LABELS)}")
    return labels


def defined_labels(dataset: str) -> tuple[str, ...]:
    """The canonical labels a data set defines (others are missing, not negative)."""
    try:
        return tuple(LABEL_MAP[dataset].values())
    except KeyError:
        raise UnknownNameError(f"unknown data set {dataset!r}; choose one of {sorted(LABEL_MAP)}") from None


def label_index(name: str, space: str | Sequence[str] = "nih14") -> int:
    labels = get_label_space(space)
    if name not in labels:
        raise UnknownNameError(f"label {name!r} is not in label space {space!r}: {list(labels)}")
    return labels.index(name)


def mapping_table():
    """The harmonisation table as a DataFrame: one row per canonical label, one column per data
    set, holding the raw name that data set uses (empty where the data set does not define it;
    several raw names, e.g. PadChest's atelectasis subtypes, are joined with "; ")."""
    import pandas as pd

    rows = []
    for label in ALL_LABELS:
        row = {"label": label, "shared7": label in SHARED7}
        for ds, m in LABEL_MAP.items():
            row[ds] = "; ".join(k for k, v in m.items() if v == label)
        rows.append(row)
    return pd.DataFrame(rows)


def lesion_bit(label: str) -> int:
    """Bit of a label in the uint16 lesion-mask planes of a cache (NIH14 order)."""
    return label_index(label, "nih14")


def lesion_mask_for(lesion_masks: np.ndarray, label: str | None = None) -> np.ndarray:
    """Binary mask (uint8) of one label's lesions, or of any lesion when label is None."""
    if label is None:
        return (lesion_masks != 0).astype(np.uint8)
    return ((lesion_masks >> lesion_bit(label)) & 1).astype(np.uint8)
