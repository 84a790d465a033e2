"""The course's figure style, in one place: colours, short label names, the SYNTHETIC tag of
every figure made from synthetic data, and :func:`save_figure`. Each package draws its own
figures (:mod:`cxrlab.data.plots`, :mod:`cxrlab.shift.plots`, :mod:`cxrlab.study.plots`,
:mod:`cxrlab.explain.plots`) with these; every figure function returns a matplotlib Figure and
never calls ``plt.show()``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from cxrlab.io import atomic_path

#: colours for names the course does not know in advance (tab10 order)
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]

#: one colour per hospital for the whole course; a real data set shares the colour of the
#: synthetic hospital that plays its part (MIMIC-CXR/CheXpert = source, NIH = target_nih)
HOSPITAL_COLORS = {
    "source": "#1f77b4", "mimic": "#1f77b4", "chexpert": "#17becf", "siim": "#7f7f7f",
    "target_nih": "#ff7f0e", "nih": "#ff7f0e",
    "target_old": "#2ca02c", "target_lowres": "#d62728",
}
#: one colour per model family for the whole course; a ci stand-in shares the colour of the
#: model it stands in for (tiny_resnet = ResNet-50, tiny_cnn = EfficientNet-B0, tiny_vit = ViT)
MODEL_COLORS = {
    "resnet50": "#6a3d9a", "tiny_resnet": "#6a3d9a",
    "efficientnet_b0": "#b15928", "tiny_cnn": "#b15928",
    "vit_base_patch16_224": "#1b9e77", "tiny_vit": "#1b9e77",
}

#: two runs of one model compared side by side (e.g. "shortcut off" / "shortcut on"): a neutral
#: light / dark pair, so that the hospital and model colours keep their meaning
RUN_SHADES = ["#b0b0b0", "#404040", "#7a7a7a", "#d9d9d9"]

#: short label names for crowded axes
SHORT = {"Atelectasis": "Atel", "Cardiomegaly": "Cardio", "Consolidation": "Consol",
         "Edema": "Edema", "Effusion": "Effus", "Emphysema": "Emphys", "Fibrosis": "Fibro",
         "Hernia": "Hernia", "Infiltration": "Infil", "Mass": "Mass", "Nodule": "Nodule",
         "Pleural_Thickening": "PlThick", "Pneumonia": "Pneum", "Pneumothorax": "PTX"}


def red_cmap():
    from matplotlib.colors import ListedColormap

    return ListedColormap(["red"])


RED = red_cmap()


def pyplot():
    import matplotlib.pyplot as plt

    return plt


def color_of(name: str) -> str:
    """The course's colour for a hospital or a model, the same in every figure. Other names get
    a colour from :data:`PALETTE` chosen by the name itself (not by its position in a list), so
    they too keep their colour across figures."""
    key = str(name)
    if key in HOSPITAL_COLORS:
        return HOSPITAL_COLORS[key]
    if key in MODEL_COLORS:
        return MODEL_COLORS[key]
    low = key.lower()
    for table in (HOSPITAL_COLORS, MODEL_COLORS):
        if low in table:
            return table[low]
    import zlib

    return PALETTE[zlib.crc32(key.encode()) % len(PALETTE)]


def colors(names: Sequence[str]) -> dict[str, str]:
    """``{name: color_of(name)}`` for ``names``."""
    return {n: color_of(n) for n in names}


def synthetic_tag(obj) -> str:
    if isinstance(obj, (pd.DataFrame, pd.Series)):
        synthetic = obj.attrs.get("synthetic", False)
    elif isinstance(obj, dict):
        synthetic = obj.get("synthetic", False)
    else:
        synthetic = getattr(obj, "synthetic", False)
    return "SYNTHETIC: " if synthetic else ""


def save_figure(fig, path: str | os.PathLike, dpi: int = 100, close: bool = False) -> Path:
    """Save ``fig`` atomically (PNG unless the suffix says otherwise); returns the path."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    if not path.suffix:
        path = path.with_suffix(".png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    if close:
        pyplot().close(fig)
    return path


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------
