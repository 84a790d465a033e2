"""One class per image: a linear head trained with softmax cross-entropy.

The chest X-ray methods are multi-label (a sigmoid per finding). Some questions have exactly
one answer per image instead: *which hospital took this image?* (the domain classifier of
:mod:`cxrlab.shift`). This method answers them through the same engine: the batch's
``labels`` are one-hot rows ``[B, K]`` (1 for the image's class, 0 elsewhere); a row holding a
NaN is an unlabelled image and is left out of the loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxrlab.augment import cxr_train_augment
from cxrlab.errors import UsageError
from cxrlab.methods.base import Algorithm, resolve_augment
from cxrlab.methods.registry import register_algorithm


def onehot_cross_entropy(logits: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits [B, K]`` against one-hot ``onehot [B, K]``, over the rows
    without NaN; 0 (with a gradient graph) when no row is labelled."""
    if logits.shape != onehot.shape:
        raise UsageError(f"logits {tuple(logits.shape)} and one-hot labels {tuple(onehot.shape)} "
                         "differ in shape; labels need one column per class")
    known = ~torch.isnan(onehot).any(dim=1)
    if not bool(known.any()):
        return logits.sum() * 0.0
    target = onehot[known].to(logits.dtype)
    if not torch.allclose(target.sum(dim=1), torch.ones(len(target), dtype=target.dtype,
                                                        device=target.device)):
        raise UsageError("softmax_classifier needs one-hot labels (each labelled row sums to 1); "
                         "for multi-label findings use 'bce_finetune'")
    return F.cross_entropy(logits[known], target.argmax(dim=1))


@register_algorithm("softmax_classifier")
class SoftmaxClassifier(Algorithm):
    """Backbone and linear head trained end to end with softmax cross-entropy (one class per
    image, given as one-hot labels). :meth:`predict` returns the class logits; their softmax
    are the class probabilities."""

    display_name = "softmax classifier (one class per image)"
    short_name = "softmax"
    scoring = "predict"
    HPARAMS = {
        "augment": ("none", "strength of the CXR augmentation: none, light, default, strong"),
    }

    def __init__(self, backbone, num_labels, hparams=None):
        super().__init__(backbone, num_labels, hparams)
        if self.num_labels < 2:
            raise UsageError(f"a softmax classifier needs at least two classes, got {self.num_labels}")
        self.head = nn.Linear(backbone.num_features, self.num_labels)
        self.hparams["augment"] = resolve_augment(self.hparams["augment"])
        self.augmenter = (cxr_train_augment(None, self.hparams["augment"])
                          if self.hparams["augment"] != "none" else None)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def training_step(self, batch: dict, step: int) -> dict:
        images = batch["image"].to(self.device, non_blocking=True)
        if self.augmenter is not None:
            images = self.augmenter(images)
        logits = self.predict(images).float()
        labels = batch["labels"].to(logits.device)
        loss = onehot_cross_entropy(logits, labels)
        with torch.no_grad():
            known = ~torch.isnan(labels).any(dim=1)
            acc = ((logits[known].argmax(1) == labels[known].argmax(1)).float().mean()
                   if bool(known.any()) else torch.zeros((), device=logits.device))
        return {"loss": loss, "accuracy": acc}
