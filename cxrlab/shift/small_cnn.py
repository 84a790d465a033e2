"""A small CNN trained with masked BCE (missing labels ignored), and its per-label AUC."""
from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from cxrlab.progress import progress
from cxrlab.seeding import seed_everything


class SmallCNN(nn.Module):
    """Four conv blocks (3x3 conv, BatchNorm, ReLU; max-pool after the first three) and global
    average pooling: about 40k weights at ``width=16``, seconds per epoch on a CPU at 64 px.

    It follows the :class:`cxrlab.models` backbone interface: ``forward(x_float) -> [B, D]``,
    ``normalize(x_uint8) -> float``, ``num_features`` (Grad-CAM layer: :mod:`cxrlab.explain.layers`).
    """

    def __init__(self, width: int = 16, in_chans: int = 1):
        super().__init__()
        w = width

        def block(cin, cout, pool):
            layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                      nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2))
            return nn.Sequential(*layers)

        self.features = nn.Sequential(block(in_chans, w, True), block(w, 2 * w, True),
                                      block(2 * w, 4 * w, True), block(4 * w, 4 * w, False))
        self.num_features = 4 * w
        self.name = "small_cnn"

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        """uint8 [B,1,S,S] -> float, centred on mid-grey. One fixed scaling for every hospital,
        so a brighter hospital *looks* brighter to the model (no per-image standardisation)."""
        return (x.float() / 255.0 - 0.5) / 0.25

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


class ImageClassifier(nn.Module):
    """A backbone plus a linear head; takes uint8 images [B,1,S,S] and returns logits [B, K].

    ``label_names`` (multi-label, sigmoid) or ``class_names`` (one class per image, softmax)
    record what the outputs mean.
    """

    def __init__(self, backbone: nn.Module, n_outputs: int, names: Sequence[str] = (),
                 multilabel: bool = True):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, n_outputs)
        self.names = tuple(names)
        self.multilabel = multilabel
        self.history: list[dict] = []
        self.best_epoch: int | None = None

    def forward(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.backbone.normalize(x_uint8)))

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probabilities (sigmoid per label, or softmax over classes) as a NumPy array."""
        images = _as_image_tensor(images)
        was_training = self.training
        self.eval()
        dev = next(self.parameters()).device
        outs = []
        for i in range(0, len(images), batch_size):
            logits = self(images[i:i + batch_size].to(dev))
            p = torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)
            outs.append(p.float().cpu())
        self.train(was_training)
        if not outs:
            return np.zeros((0, self.head.out_features), dtype=np.float32)
        return torch.cat(outs).numpy()


def make_backbone(backbone: str | None = None, image_size: int | None = None) -> nn.Module:
    """``None`` or ``"small_cnn"``: :class:`SmallCNN` (defined here, fixed, fast). Any other name
    is built with :func:`cxrlab.models.create_backbone` (random init, e.g. ``"tiny_cnn"``)."""
    if backbone in (None, "small_cnn"):
        return SmallCNN()
    try:
        from cxrlab.models import create_backbone
    except ImportError as e:  # pragma: no cover - depends on the installed package
        raise ImportError(f"backbone {backbone!r} needs cxrlab.models ({e}); "
                          "use backbone=None for the built-in SmallCNN") from e
    return create_backbone(backbone, pretrained=False, image_size=image_size)


def _as_image_tensor(images) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4 or t.shape[1] != 1:
        raise ValueError(f"images must be uint8 [n, 1, S, S] (or [n, S, S]), got {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (as stored in the cache), got {t.dtype}")
    return t


def _random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` px, repeating the edge pixels (cheap
    augmentation; one gather, no Python loop, stays uint8)."""
    if max_shift <= 0:
        return x
    n, c, h, w = x.shape
    dx = torch.randint(-max_shift, max_shift + 1, (n, 1), generator=gen)
    dy = torch.randint(-max_shift, max_shift + 1, (n, 1), generator=gen)
    iy = (torch.arange(h)[None] + dy).clamp_(0, h - 1)          # [n, h]
    ix = (torch.arange(w)[None] + dx).clamp_(0, w - 1)          # [n, w]
    b = torch.arange(n)[:, None, None]
    return x[:, 0][b, iy[:, :, None], ix[:, None, :]][:, None].expand(n, c, h, w).contiguous()


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the labels that are known (NaN = not labelled, ignored)."""
    known = ~torch.isnan(labels)
    if not known.any():
        return logits.sum() * 0.0
    loss = F.binary_cross_entropy_with_logits(logits[known], labels[known])
    return loss


def _fit(model: ImageClassifier, images: torch.Tensor, targets: torch.Tensor, *, epochs: int,
         seed: int, lr: float, batch_size: int, weight_decay: float, augment: int,
         score_val, device: str, desc: str) -> ImageClassifier:
    """The one training loop of this module (Adam, one seeded shuffle per epoch). After each
    epoch ``score_val(model)`` (higher is better, or None) picks the epoch whose weights are kept."""
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    best_score, best_state = -np.inf, None
    model.history = []
    for epoch in progress(range(1, epochs + 1), desc=desc):
        model.train()
        perm = torch.randperm(len(images), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(images), batch_size):
            idx = perm[i:i + batch_size]
            if len(idx) < 2:  # BatchNorm needs two images
                continue
            x = _random_shift(images[idx], augment, gen).to(device)
            y = targets[idx].to(device)
            logits = model(x)
            loss = masked_bce(logits, y) if model.multilabel else F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        score = score_val(model) if score_val is not None else None
        model.history.append({"epoch": epoch, "train_loss": total / max(count, 1),
                              "val_score": score})
        if score_val is None:
            score = epoch  # no validation data: keep the last epoch
        elif score is None or not np.isfinite(score):
            score = -np.inf  # val not evaluable (e.g. no positives): later epochs win ties
        if best_state is None or score >= best_score:
            best_score, best_state = score, copy.deepcopy(model.state_dict())
            model.best_epoch = epoch
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model


def train_small_cnn(images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, *,
                    epochs: int = 8, seed: int = 0, lr: float = 3e-3, batch_size: int = 32,
                    weight_decay: float = 1e-4, augment: int = 2,
                    val: tuple | None = None, label_names: Sequence[str] | None = None,
                    backbone: str | None = None, device: str = "cpu") -> ImageClassifier:
    """Train a small CNN with a linear multi-label head, from scratch, with masked BCE.

    Parameters
    ----------
    images: uint8 [n, 1, S, S] (as :func:`cxrlab.data.dataset.load_arrays` returns them).
    labels: float [n, L]; 1 positive, 0 negative, NaN not labelled (ignored by the loss).
    val: optional ``(images, labels)`` of the *source* validation split: after every epoch the
        macro AUC on it is measured and the best epoch's weights are kept (model selection on
        source validation only; never pass target data here).
    augment: random translation of up to this many pixels (0 = none).
    backbone: ``None`` for the built-in :class:`SmallCNN`, or a :mod:`cxrlab.models` name.

    Returns the trained :class:`ImageClassifier` (in eval mode); ``model.history`` holds the
    per-epoch training loss and validation score, ``model.best_epoch`` the epoch kept.
    """
    x = _as_image_tensor(images)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    if y.ndim == 1:
        y = y[:, None]
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} label rows")
    if len(x) < 2:
        raise ValueError("need at least two training images")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    seed_everything(seed)
    names = tuple(label_names) if label_names is not None else tuple(
        f"label_{j}" for j in range(y.shape[1]))
    model = ImageClassifier(make_backbone(backbone, image_size=x.shape[-1]), y.shape[1], names)
    score_val = None
    if val is not None:
        vx, vy = _as_image_tensor(val[0]), np.asarray(val[1], dtype=np.float32)

        def score_val(m):
            return evaluate_auc(m, vx, vy, label_names=names)["auc_macro"]
    return _fit(model, x, y, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                weight_decay=weight_decay, augment=augment, score_val=score_val, device=device,
                desc="train CNN")


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
        raise ValueError(f"labels {y_true.shape} and scores {y_score.shape} differ in shape")
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
