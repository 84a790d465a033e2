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

#: a colour per domain (or model), stable across figures (tab10 order)
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]

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


def colors(names: Sequence[str]) -> dict[str, str]:
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


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
