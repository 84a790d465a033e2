"""Train a classifier at one hospital and score its per-label AUC, on the shared framework.

Nothing here is private to the shift measurements: the network is a registered backbone
(:func:`cxrlab.models.create_backbone`, ``"tiny_cnn"`` by default), the method a registered
algorithm (``"bce_finetune"``: masked BCE from :mod:`cxrlab.losses`, so NaN = not labelled is
ignored; ``"softmax_classifier"`` for the domain classifier), training is
:func:`cxrlab.engine.fit` (seeded batch order, best epoch on the *source* validation split) and
the AUC rules are :func:`cxrlab.metrics.multilabel_metrics`. Notebook 01 therefore runs the
same code as the studies of notebooks 02 and 03.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from cxrlab.errors import UsageError
from cxrlab.seeding import seed_everything

#: the backbone the shift measurements train from scratch unless told otherwise
DEFAULT_BACKBONE = "tiny_cnn"


@dataclass
class ImageClassifier:
    """A trained algorithm and what its outputs mean.

    ``names`` are the labels (multi-label, sigmoid) or the classes (one class per image,
    softmax); ``history`` is :attr:`cxrlab.engine.TrainResult.history` (one dict per epoch:
    ``loss``, ``val_<metric>``, ...); ``best_epoch`` is the epoch whose weights were kept.
    """

    algorithm: torch.nn.Module
    names: tuple[str, ...]
    multilabel: bool = True
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probabilities (sigmoid per label, or softmax over classes) as a NumPy array [n, K]."""
        from cxrlab.engine import predict_logits

        x = _as_image_tensor(images)
        if len(x) == 0:
            return np.zeros((0, len(self.names)), dtype=np.float32)
        logits, _ = predict_logits(self.algorithm, {"image": x, "labels": torch.zeros(len(x), 0)},
                                   batch_size=batch_size)
        t = torch.from_numpy(logits)
        p = torch.sigmoid(t) if self.multilabel else torch.softmax(t, dim=1)
        return p.numpy()


def _as_image_tensor(images) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4 or t.shape[1] != 1:
        raise UsageError(f"images must be uint8 [n, 1, S, S] (or [n, S, S]), got {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        raise UsageError(f"images must be uint8 (as stored in the cache), got {t.dtype}")
    return t


def train_classifier(images, targets: torch.Tensor, *, method: str, names: Sequence[str],
                     multilabel: bool, epochs: int, seed: int, lr: float, batch_size: int,
                     weight_decay: float, augment, backbone: str | None, device: str,
                     val_fn: Callable | None, monitor: str | None,
                     pretrained: bool = False) -> ImageClassifier:
    """Build ``backbone`` and the registered ``method`` (both seeded), train them with
    :func:`cxrlab.engine.fit` (constant learning rate, checkpoints in a temporary folder) and
    keep the weights of the best epoch by ``monitor`` (the last epoch when there is no
    validation score or none is finite)."""
    from cxrlab.engine import fit, load_checkpoint
    from cxrlab.methods import create_algorithm
    from cxrlab.models import create_backbone

    x = _as_image_tensor(images)
    if len(x) != len(targets):
        raise UsageError(f"{len(x)} images but {len(targets)} label rows")
    if len(x) < 2:
        raise UsageError("need at least two training images")
    if epochs < 1:
        raise UsageError(f"epochs must be >= 1, got {epochs}")
    seed_everything(seed)
    bb = create_backbone(backbone or DEFAULT_BACKBONE, pretrained=bool(pretrained),
                         image_size=x.shape[-1], seed=seed)
    hparams = {"augment": augment}
    if method == "bce_finetune":
        # one learning rate for all layers: from scratch there is nothing to protect, and the
        # the small pretrained stand-ins are fine-tuned whole, as the studies fine-tune them
        hparams["backbone_lr_scale"] = 1.0
    alg = create_algorithm(method, bb, num_labels=targets.shape[1], hparams=hparams, seed=seed)
    with tempfile.TemporaryDirectory(prefix="cxrlab-shift-") as tmp:
        res = fit(alg, {"image": x, "labels": targets}, epochs=epochs,
                  batch_size=min(int(batch_size), len(x)), lr=lr, weight_decay=weight_decay,
                  seed=seed, out_dir=tmp, device=device, val_fn=val_fn, monitor=monitor,
                  schedule="constant", log_every=None, resume=False, verbose=False)
        best = res.best_epoch
        if res.best_path is not None and best != len(res.history):
            alg.load_state_dict(load_checkpoint(res.best_path, map_location="cpu")["model"])
    alg.eval()
    return ImageClassifier(alg, tuple(names), multilabel, list(res.history),
                           best if best is not None else len(res.history))


def train_small_cnn(images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, *,
                    epochs: int = 8, seed: int = 0, lr: float = 3e-3, batch_size: int = 32,
                    weight_decay: float = 1e-4, augment: str | bool = "none",
                    val: tuple | None = None, label_names: Sequence[str] | None = None,
                    backbone: str | None = None, device: str = "cpu",
                    pretrained: bool = False) -> ImageClassifier:
    """Train a small CNN with a linear multi-label head with masked BCE, from scratch or (with
    ``pretrained=True``) fine-tuned from the backbone's published weights (the course's
    pretrained stand-ins for the tiny backbones).

    The registered ``"bce_finetune"`` method on the registered ``backbone`` (``None``: the
    ``"tiny_cnn"`` of :mod:`cxrlab.models`), trained by :func:`cxrlab.engine.fit`.

    Parameters
    ----------
    images: uint8 [n, 1, S, S] (as :func:`cxrlab.data.dataset.load_arrays` returns them).
    labels: float [n, L]; 1 positive, 0 negative, NaN not labelled (ignored by the loss).
    val: optional ``(images, labels)`` of the *source* validation split: after every epoch the
        macro AUC on it is measured and the best epoch's weights are kept (model selection on
        source validation only; never pass target data here).
    augment: strength of :func:`cxrlab.augment.cxr_train_augment` ("none", "light", "default",
        "strong"; ``True`` = "default", ``False`` = "none"). Off by default: its brightness,
        contrast, gamma, noise and blur jitter would train away part of the very image shift
        these measurements are about.
    backbone: a :func:`cxrlab.models.list_backbones` name (``None``: ``"tiny_cnn"``).
    pretrained: start from the backbone's published weights instead of random init.

    Returns the trained :class:`ImageClassifier`; ``model.history`` holds the per-epoch training
    loss and ``val_auc_macro``, ``model.best_epoch`` the epoch kept.
    """
    x = _as_image_tensor(images)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    if y.ndim == 1:
        y = y[:, None]
    names = tuple(label_names) if label_names is not None else tuple(
        f"label_{j}" for j in range(y.shape[1]))
    val_fn = None
    if val is not None:
        vx, vy = _as_image_tensor(val[0]), np.asarray(val[1], dtype=np.float32)

        def val_fn(alg):
            m = ImageClassifier(alg, names)
            return {"auc_macro": evaluate_auc(m, vx, vy, label_names=names)["auc_macro"]}
    return train_classifier(x, y, method="bce_finetune", names=names, multilabel=True,
                            epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                            weight_decay=weight_decay, augment=augment, backbone=backbone,
                            device=device, val_fn=val_fn,
                            monitor="auc_macro" if val_fn is not None else None,
                            pretrained=pretrained)


# --------------------------------------------------------------------------------------------
# AUC
# --------------------------------------------------------------------------------------------

def auc_per_label(y_true: np.ndarray, y_score: np.ndarray,
                  label_names: Sequence[str] | None = None) -> dict:
    """ROC AUC per label on the rows where that label is known, plus the macro mean over the
    labels that have both positives and negatives (computed by
    :func:`cxrlab.metrics.multilabel_metrics`, the course's one definition of these rules).

    Returns a dict: ``auc_macro`` (float, NaN if no label is evaluable), ``per_label``
    (DataFrame: label, auc, n, n_pos; auc NaN for excluded labels) and ``excluded`` (labels
    without both classes among their labelled rows).
    """
    from cxrlab.metrics import multilabel_metrics

    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim == 1:
        y_true, y_score = y_true[:, None], y_score[:, None]
    if y_true.shape != y_score.shape:
        raise UsageError(f"labels {y_true.shape} and scores {y_score.shape} differ in shape")
    names = list(label_names) if label_names is not None else [
        f"label_{j}" for j in range(y_true.shape[1])]
    # AUC only depends on the ranking: the threshold argument is irrelevant here
    res = multilabel_metrics(y_true, y_score, thresholds=0.5, label_names=names)
    t = res.per_label
    per_label = pd.DataFrame({"label": t["label"], "auc": t["auc"].where(t["included"]),
                              "n": t["n_labelled"].astype(int), "n_pos": t["n_pos"].astype(int)})
    return {"auc_macro": float(res.auc_macro), "per_label": per_label,
            "excluded": list(res.excluded)}


def evaluate_auc(model: ImageClassifier, images, labels,
                 label_names: Sequence[str] | None = None) -> dict:
    """Score ``images`` with ``model`` and return :func:`auc_per_label` of the result."""
    names = label_names if label_names is not None else (model.names or None)
    scores = model.predict_proba(images)
    return auc_per_label(np.asarray(labels, dtype=np.float32), scores, names)
