"""A domain classifier: how easily hospitals are told apart from pixels alone."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from cxrlab.data.cache import Cache
from cxrlab.seeding import seed_everything
from cxrlab.shift.images import (_batch_statistics, _domains, _read, _sample_rows, match_histograms,
                                 reference_quantiles)

#: what the domain classifier sees (see :func:`domain_classifier`)
PIXELS = ("all", "matched", "lung_matched")
from cxrlab.shift.classifier import train_classifier


@dataclass
class DomainClassifierResult:
    """How well a classifier tells the domains apart on held-out (test split) images.

    ``chance`` is the accuracy of always guessing the most frequent test domain (0.25 for four
    balanced hospitals); ``confusion`` counts test images (rows: true, columns: predicted).
    """

    domains: list[str]
    method: str
    accuracy: float
    per_class_accuracy: pd.Series
    confusion: pd.DataFrame
    auc_macro_ovr: float
    chance: float
    n_train: int
    n_test: int
    y_true: np.ndarray = field(repr=False)
    probabilities: np.ndarray = field(repr=False)
    synthetic: bool = False
    pixels: str = "all"

    def summary(self) -> pd.DataFrame:
        """One row per domain: accuracy (recall) and number of test images, plus overall."""
        counts = self.confusion.sum(axis=1)
        df = pd.DataFrame({"accuracy": self.per_class_accuracy, "n_test": counts})
        df.loc["overall"] = [self.accuracy, self.n_test]
        df["n_test"] = df["n_test"].astype(int)
        return df

    def __repr__(self) -> str:
        return (f"DomainClassifierResult(method={self.method!r}, pixels={self.pixels!r}, "
                f"accuracy={self.accuracy:.3f}, "
                f"chance={self.chance:.3f}, auc_macro_ovr={self.auc_macro_ovr:.3f}, "
                f"domains={self.domains}, n_test={self.n_test})")


def _handcrafted_features(img: np.ndarray, grid: int = 8) -> np.ndarray:
    """Global statistics, a 16-bin histogram and a coarse ``grid x grid`` thumbnail per image."""
    stats = _batch_statistics(img)
    st = np.stack([stats[k] for k in ("mean", "std", "p05", "p95", "gradient", "highpass_std",
                                      "noise")], axis=1)
    hist = np.stack([np.histogram(im, bins=16, range=(0, 256))[0] for im in img]) / img[0].size
    n, s = img.shape[0], img.shape[1]
    cut = s - s % grid
    thumb = img[:, :cut, :cut].astype(np.float32).reshape(n, grid, cut // grid, grid,
                                                            cut // grid).mean((2, 4))
    return np.concatenate([st, hist, thumb.reshape(n, -1)], axis=1).astype(np.float64)


def domain_classifier(cache: Cache, domains: Sequence[str] | None = None, seed: int = 0,
                      method: str = "cnn", *, max_per_domain: int | None = None,
                      epochs: int = 4, lr: float = 3e-3, batch_size: int = 32,
                      augment: str | bool = "none", backbone: str | None = None,
                      device: str = "cpu", pixels: str = "all",
                      pretrained: bool = False) -> DomainClassifierResult:
    """Train a classifier to predict *which hospital* an image comes from.

    If it succeeds far above chance, the images carry a hospital signature a disease classifier
    can pick up too. Trained on the train split of each domain (epoch chosen on the val split),
    evaluated on the test split (the cache's splits are patient-level, so no patient is in both).

    method: ``"cnn"`` (a registered backbone, ``"tiny_cnn"`` by default, with the registered
        ``"softmax_classifier"`` method: softmax over domains, trained by
        :func:`cxrlab.engine.fit`, the epoch with the best val accuracy kept) or ``"logreg"``
        (logistic regression on hand-made features: intensity statistics, noise, a histogram
        and an 8x8 thumbnail; fast and interpretable).
    max_per_domain: cap on training images per domain (seeded sample; ``None`` = all).
    augment, backbone, pretrained: for ``"cnn"``: augmentation strength (see
        :func:`cxrlab.shift.train_small_cnn`), registered backbone name (``None``: ``"tiny_cnn"``)
        and whether to start from its published weights.
    pixels: what the classifier sees. ``"all"``: the images as stored. ``"matched"``: each
        image's grey levels mapped onto the pooled histogram of the first domain's training
        images (:func:`cxrlab.shift.images.match_histograms`): contrast curve, exposure and
        window are gone. ``"lung_matched"``: only the pixels inside the lung mask, matched the
        same way, everything outside set to one grey level: borders, markers and text are gone
        too, and what is left is texture (noise, blur, resolution) and anatomy.
    """
    if method not in ("cnn", "logreg"):
        raise ValueError(f"method must be 'cnn' or 'logreg', got {method!r}")
    if pixels not in PIXELS:
        raise ValueError(f"pixels must be one of {PIXELS}, got {pixels!r}")
    if pixels == "lung_matched" and cache.lung_masks is None:
        raise ValueError(f"pixels='lung_matched' needs lung masks and {cache.path.name} has none")
    doms = _domains(cache, domains)
    if len(doms) < 2:
        raise ValueError(f"a domain classifier needs at least two domains, got {doms}")
    parts = {}
    for split in ("train", "val", "test"):
        rows, ys = [], []
        for k, d in enumerate(doms):
            r = _sample_rows(cache, d, max_per_domain if split == "train" else None, seed, split)
            rows.append(r)
            ys.append(np.full(len(r), k))
        parts[split] = (np.concatenate(rows), np.concatenate(ys))
    if len(parts["test"][0]) == 0 or len(parts["train"][0]) == 0:
        raise ValueError("the cache needs train and test images in the chosen domains")
    seed_everything(seed)
    view = _PixelView(cache, pixels, parts["train"][0][parts["train"][1] == 0])
    if method == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        feats = {s: _handcrafted_features(view(parts[s][0])) for s in parts
                 if len(parts[s][0])}
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
        clf.fit(feats["train"], parts["train"][1])
        proba = np.zeros((len(parts["test"][0]), len(doms)))
        proba[:, clf.classes_] = clf.predict_proba(feats["test"])
    else:
        x_tr = torch.from_numpy(view(parts["train"][0]))[:, None]
        onehot = torch.eye(len(doms))
        val_fn = None
        if len(parts["val"][0]):
            x_va = torch.from_numpy(view(parts["val"][0]))[:, None]
            y_va = parts["val"][1]

            def val_fn(alg):
                from cxrlab.engine import predict_logits

                logits, _ = predict_logits(alg, {"image": x_va, "labels": onehot[y_va]})
                return {"accuracy": float((logits.argmax(1) == y_va).mean())}
        model = train_classifier(x_tr, onehot[parts["train"][1]], method="softmax_classifier",
                                 names=doms, multilabel=False, epochs=epochs, seed=seed, lr=lr,
                                 batch_size=batch_size, weight_decay=1e-4, augment=augment,
                                 backbone=backbone, device=device, val_fn=val_fn,
                                 monitor="accuracy" if val_fn is not None else None,
                                 pretrained=pretrained)
        x_te = torch.from_numpy(view(parts["test"][0]))[:, None]
        proba = model.predict_proba(x_te)
    return _domain_result(parts["test"][1], proba, doms, method, len(parts["train"][0]),
                          cache.synthetic, pixels)


class _PixelView:
    """Reads cache rows as the domain classifier should see them (``pixels``); the reference
    histogram comes from ``ref_rows`` (training images of the first domain) only."""

    def __init__(self, cache: Cache, pixels: str, ref_rows: np.ndarray):
        self.cache, self.pixels, self.ref = cache, pixels, None
        if pixels != "all":
            img = _read(cache.images, ref_rows)
            masks = _read(cache.lung_masks, ref_rows) if pixels == "lung_matched" else None
            self.ref = reference_quantiles(img, masks)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        img = _read(self.cache.images, rows)
        if self.pixels == "all":
            return img
        masks = _read(self.cache.lung_masks, rows) if self.pixels == "lung_matched" else None
        return match_histograms(img, self.ref, masks)


def _domain_result(y: np.ndarray, proba: np.ndarray, doms: list[str], method: str,
                   n_train: int, synthetic: bool, pixels: str = "all") -> DomainClassifierResult:
    from sklearn.metrics import confusion_matrix, roc_auc_score

    pred = proba.argmax(1)
    k = len(doms)
    cm = confusion_matrix(y, pred, labels=np.arange(k))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(cm) / cm.sum(1)
    present = np.unique(y)
    aucs = [roc_auc_score(y == c, proba[:, c]) for c in present
            if 0 < (y == c).sum() < len(y)]
    counts = np.bincount(y, minlength=k)
    return DomainClassifierResult(
        domains=list(doms), method=method, accuracy=float((pred == y).mean()),
        per_class_accuracy=pd.Series(per_class, index=doms, name="accuracy"),
        confusion=pd.DataFrame(cm, index=pd.Index(doms, name="true"),
                               columns=pd.Index(doms, name="predicted")),
        auc_macro_ovr=float(np.mean(aucs)) if aucs else float("nan"),
        chance=float(counts.max() / counts.sum()), n_train=int(n_train), n_test=int(len(y)),
        y_true=y, probabilities=proba, synthetic=synthetic, pixels=pixels,
    )
