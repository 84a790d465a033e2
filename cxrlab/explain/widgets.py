"""The interactive CAM explorer (ipywidgets): hospital, image, label, model, CAM method and
overlay strength; the overlay is a PNG in an ``ipywidgets.Image``.

Show :meth:`CamExplorer.static_figure` first (it is what a PDF, nbval or GitHub shows), then
:meth:`CamExplorer.widget`. Nothing here needs a browser: building the controls and rendering
the overlay are plain Python, so the notebook runs headless. In JupyterLab the widgets work
out of the box (``jupyterlab_widgets``); in **Colab** run once per session::

    from google.colab import output
    output.enable_custom_widget_manager()
"""
from __future__ import annotations

import io
from typing import Mapping, Sequence

import numpy as np
from torch import nn

from cxrlab.explain.cams import METHODS, cam_maps
from cxrlab.explain.plots import overlay_rgb

#: CSS classes of the overlay and of each control (the browser test finds them by these)
CSS = {"image": "cxrlab-cam-overlay", "hospital": "cxrlab-cam-hospital",
       "index": "cxrlab-cam-index", "label": "cxrlab-cam-label", "model": "cxrlab-cam-model",
       "method": "cxrlab-cam-method", "alpha": "cxrlab-cam-alpha"}


def png_bytes(rgb: np.ndarray, scale: int = 4) -> bytes:
    """RGB float [H, W, 3] in [0, 1] -> PNG bytes, enlarged ``scale`` times (nearest)."""
    from PIL import Image

    a = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
    if scale > 1:
        a = a.repeat(scale, 0).repeat(scale, 1)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


class CamExplorer:
    """Browse CAMs of several models over a cache's hospitals.

    cache: a :class:`~cxrlab.data.cache.Cache`; models: ``{name: trained Algorithm}`` (same
    label order); label_names: the models' output labels; rows: cache rows to browse per
    hospital (default: each hospital's test split, first ``per_hospital``).
    """

    def __init__(self, cache, models: Mapping[str, nn.Module], label_names: Sequence[str],
                 rows: Mapping[str, Sequence[int]] | None = None, per_hospital: int = 32,
                 methods: Sequence[str] = ("gradcam", "hirescam", "gradcam++"), alpha: float = 0.5):
        if not models:
            raise ValueError("CamExplorer needs at least one model: {name: algorithm}")
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown CAM method(s) {unknown}; choose from {list(METHODS)}")
        self.cache, self.models, self.labels = cache, dict(models), list(label_names)
        if rows is None:
            rows = {d: cache.select(split="test", domain=d)[:per_hospital] for d in cache.domains}
        self.rows = {k: np.asarray(v, dtype=np.int64) for k, v in rows.items() if len(v)}
        self.methods = list(methods)
        self.state = {"hospital": next(iter(self.rows)), "index": 0, "label": self.labels[0],
                      "model": next(iter(self.models)), "method": self.methods[0],
                      "alpha": float(alpha)}
        self._cache: dict = {}
        self._widgets = None

    # ------------------------------------------------------------------ computing
    def current_row(self) -> int:
        r = self.rows[self.state["hospital"]]
        return int(r[min(int(self.state["index"]), len(r) - 1)])

    def current(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(image uint8 [H, W], map [H, W], predicted probability of the label) for the state."""
        import torch

        s, row = self.state, self.current_row()
        key = (row, s["label"], s["model"], s["method"])
        if key not in self._cache:
            img = torch.from_numpy(np.asarray(self.cache.images[[row]]))[:, None]
            model = self.models[s["model"]]
            t = self.labels.index(s["label"])
            cam = cam_maps(model, img, t, method=s["method"])[0]
            with torch.no_grad():
                was = model.training
                model.eval()
                p = float(torch.sigmoid(model.predict(img)[0, t]))
                model.train(was)
            self._cache[key] = (np.asarray(self.cache.images[row]), cam, p)
        return self._cache[key]

    def overlay(self) -> np.ndarray:
        img, cam, _ = self.current()
        return overlay_rgb(img, cam, self.state["alpha"])

    def caption(self) -> str:
        _, _, p = self.current()
        s = self.state
        return (f"<b>{s['model']}</b> · {s['method']} · {s['label']} · {s['hospital']} row "
                f"{self.current_row()} · P({s['label']}) = {p:.2f} · SYNTHETIC"
                if self.cache.synthetic else
                f"<b>{s['model']}</b> · {s['method']} · {s['label']} · row {self.current_row()} · "
                f"P = {p:.2f}")

    def set(self, **changes) -> "CamExplorer":
        """Change the state (hospital, index, label, model, method, alpha) and re-render."""
        bad = set(changes) - set(self.state)
        if bad:
            raise KeyError(f"unknown explorer setting(s) {sorted(bad)}; known: {list(self.state)}")
        self.state.update(changes)
        if "hospital" in changes:
            self.state["index"] = min(self.state["index"], len(self.rows[self.state["hospital"]]) - 1)
        self._render()
        return self

    # ------------------------------------------------------------------ showing
    def static_figure(self):
        """The current view as a matplotlib figure (show this before the widget)."""
        import matplotlib.pyplot as plt

        img, cam, p = self.current()
        fig, axes = plt.subplots(1, 2, figsize=(5, 2.7))
        axes[0].imshow(img, cmap="gray", vmin=0, vmax=255)
        axes[0].set_title("image", fontsize=8)
        axes[1].imshow(self.overlay())
        axes[1].set_title(f"{self.state['method']}: {self.state['label']} (p={p:.2f})", fontsize=8)
        for ax in axes:
            ax.set_xticks([]), ax.set_yticks([])
        fig.suptitle(f"{self.state['model']} · {self.state['hospital']}"
                     + (" · SYNTHETIC" if self.cache.synthetic else ""), fontsize=9)
        fig.tight_layout()
        return fig

    def widget(self):
        """The explorer: controls on the left, the overlay (a PNG ``Image``) on the right."""
        import ipywidgets as W

        s = self.state
        wide = W.Layout(width="330px")
        c = {
            "hospital": W.Dropdown(options=list(self.rows), value=s["hospital"], description="hospital", layout=wide),
            "index": W.IntSlider(value=s["index"], min=0, max=len(self.rows[s["hospital"]]) - 1,
                                 description="image", continuous_update=False, layout=wide),
            "label": W.Dropdown(options=self.labels, value=s["label"], description="label", layout=wide),
            "model": W.Dropdown(options=list(self.models), value=s["model"], description="model", layout=wide),
            "method": W.Dropdown(options=self.methods, value=s["method"], description="CAM", layout=wide),
            "alpha": W.FloatSlider(value=s["alpha"], min=0.0, max=1.0, step=0.05,
                                   description="overlay", continuous_update=False,
                                   layout=wide),
        }
        image = W.Image(format="png", width=256, height=256)
        caption = W.HTML()
        for k, w in c.items():
            w.add_class(CSS[k])
        image.add_class(CSS["image"])
        self._widgets = {"controls": c, "image": image, "caption": caption}

        def on_change(change, key):
            if key == "hospital":
                c["index"].max = len(self.rows[change["new"]]) - 1
            self.set(**{key: change["new"]})

        for k, w in c.items():
            w.observe(lambda ch, k=k: on_change(ch, k), names="value")
        self._render()
        return W.HBox([W.VBox(list(c.values()), layout=W.Layout(min_width="340px")),
                       W.VBox([image, caption], layout=W.Layout(width="300px"))])

    def _render(self) -> None:
        if self._widgets is None:
            return
        self._widgets["image"].value = png_bytes(self.overlay())
        self._widgets["caption"].value = self.caption()
