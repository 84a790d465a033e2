"""Figures of attention maps: overlays, grids (one label across models, one model across
labels), energy shares with intervals, centres of mass. Every function returns a matplotlib
Figure; results on synthetic hospitals should say so in the title (``synthetic=True``)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd


def _plt():
    import matplotlib.pyplot as plt

    return plt


def overlay_rgb(image, cam, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """A grayscale image [H, W] (uint8 or [0, 1]) with a CAM [H, W] in [0, 1] blended on top:
    float RGB [H, W, 3] in [0, 1]. ``alpha`` 0 shows the image only, 1 the map only."""
    import matplotlib

    img = np.asarray(image, dtype=np.float64).squeeze()
    if img.max() > 1.0:
        img = img / 255.0
    cam = np.asarray(cam, dtype=np.float64).squeeze()
    if img.shape != cam.shape:
        from cxrlab.explain.metrics import MaskShapeError

        raise MaskShapeError(f"image {img.shape} and map {cam.shape} differ in size")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    heat = matplotlib.colormaps[cmap](np.clip(cam, 0, 1))[..., :3]
    return np.clip((1 - alpha) * img[..., None] + alpha * heat, 0, 1)


def plot_cam_grid(images, cams: Mapping[str, np.ndarray], col_titles: Sequence[str] | None = None,
                  alpha: float = 0.5, title: str = "", contours: Mapping[str, np.ndarray] | None = None,
                  size: float = 1.6):
    """Rows = the keys of ``cams`` (models, or labels), columns = images.

    ``images`` [N, H, W] (or [N, 1, H, W]); ``cams[key]`` [N, H, W]; ``contours``: optional
    ``{name: bool masks [N, H, W]}`` drawn as outlines (e.g. lesion, drain)."""
    plt = _plt()
    imgs = np.asarray(images)
    if imgs.ndim == 4:
        imgs = imgs[:, 0]
    keys = list(cams)
    n = len(imgs)
    fig, axes = plt.subplots(len(keys), n, figsize=(size * n, size * len(keys) + 0.4),
                             squeeze=False)
    colors = ["white", "cyan", "magenta", "yellow"]
    for r, k in enumerate(keys):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(overlay_rgb(imgs[c], cams[k][c], alpha))
            for j, (name, m) in enumerate((contours or {}).items()):
                if np.asarray(m[c]).any():
                    ax.contour(np.asarray(m[c], float), levels=[0.5], colors=colors[j % 4],
                               linewidths=0.7)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(str(k), fontsize=8)
            if r == 0 and col_titles is not None:
                ax.set_title(str(col_titles[c]), fontsize=7)
    if contours:
        fig.text(0.01, 0.005, "outlines: " + ", ".join(f"{n} ({colors[j % 4]})"
                                                       for j, n in enumerate(contours)), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_attention_shares(summary: pd.DataFrame, metrics: Sequence[str] = ("share_shortcut",
                          "share_lung", "share_lesion"), title: str = "", ax=None):
    """Grouped bars: one group per metric, one bar per model, 95 % intervals as whiskers
    (``summary`` from :func:`cxrlab.explain.analysis.summarize`)."""
    plt = _plt()
    s = summary[summary["metric"].isin(metrics)]
    models = list(dict.fromkeys(s["model"]))
    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 + 1.3 * len(metrics), 3))
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        sub = s[s["model"] == m].set_index("metric").reindex(list(metrics))
        x = np.arange(len(metrics)) + (i - (len(models) - 1) / 2) * width
        err = np.vstack([sub["mean"] - sub["lo"], sub["hi"] - sub["mean"]])
        ax.bar(x, sub["mean"], width, yerr=err, capsize=3, label=m)
    ax.set_xticks(np.arange(len(metrics)), [m.replace("share_", "in ") for m in metrics])
    ax.set_ylabel("share of CAM energy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    ax.figure.tight_layout()
    return ax.figure


def plot_centres(df: pd.DataFrame, by: str = "model", title: str = "", ax=None):
    """Centres of mass of the maps in lung-normalised coordinates (the lung field's box is
    [-1, 1]^2), one colour per ``by`` group (rows of :func:`attention_table`)."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(3.4, 3.4))
    for key, g in df.groupby(by, sort=False):
        ax.scatter(g["com_x"], g["com_y"], s=10, alpha=0.7, label=str(key))
    ax.add_patch(plt.Rectangle((-1, -1), 2, 2, fill=False, ls="--", lw=0.8, color="grey"))
    ax.set_xlim(-1.6, 1.6), ax.set_ylim(1.6, -1.6)  # image rows grow downwards
    ax.set_xlabel("x (lung half-widths)"), ax.set_ylabel("y (lung half-heights)")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    ax.figure.tight_layout()
    return ax.figure
