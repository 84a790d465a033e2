"""Binary cross-entropy methods: the seed's frozen linear probe and the fine-tune control arm.

Seed 000 compared a *frozen* backbone + linear head (BCE) with SupCon, which *trains the
backbone*. A difference between the two then mixes two causes: the loss, and the fact that
one arm adapted its features to chest X-rays and the other did not. :class:`BCEFinetune` is
the missing control: the same backbone trained end to end with BCE, the same augmentations,
epochs and batch size as SupCon pre-training.

Both use :func:`cxrlab.losses.masked_bce_with_logits`: a NaN label means "not labelled by
this data set" and is ignored, never counted as a negative.
"""
from __future__ import annotations

import torch
from torch import nn

from cxrlab.augment import cxr_train_augment
from cxrlab.losses import masked_bce_with_logits
from cxrlab.methods.base import Algorithm, freeze, resolve_augment
from cxrlab.methods.registry import register_algorithm


def _pos_weight(value, num_labels: int):
    if value is None:
        return None
    w = torch.as_tensor(value, dtype=torch.float32).flatten()
    if w.numel() == 1:
        w = w.expand(num_labels).clone()
    if w.numel() != num_labels or bool((w <= 0).any()):
        raise ValueError(f"pos_weight must be one positive number or {num_labels} of them, "
                         f"got {value!r}")
    return w


class _BCEBase(Algorithm):
    """A linear head on the backbone's pooled features, trained with masked BCE."""

    def __init__(self, backbone, num_labels, hparams=None):
        super().__init__(backbone, num_labels, hparams)
        self.head = nn.Linear(backbone.num_features, self.num_labels)
        pw = _pos_weight(self.hparams["pos_weight"], self.num_labels)
        self.register_buffer("pos_weight", pw if pw is not None else torch.empty(0), persistent=False)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pw = self.pos_weight if self.pos_weight.numel() else None
        return masked_bce_with_logits(logits.float(), labels.to(logits.device), pos_weight=pw)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


@register_algorithm("bce_probe")
class BCEProbe(_BCEBase):
    """The seed's baseline: frozen backbone, a linear head trained with masked BCE.

    The backbone never changes (its parameters have no gradient and it stays in eval mode,
    so batch-norm statistics are frozen too). For many epochs over the same images, the
    embedding cache of :mod:`cxrlab.probe` is much faster and gives the same model; this
    class is the same method on images, through the common engine.
    """

    display_name = "BCE linear probe"
    short_name = "BCE probe"
    scoring = "embed_probe"
    HPARAMS = {
        "pos_weight": (None, "positive-class weight of the BCE: None, one number, or one per label"),
    }

    def __init__(self, backbone, num_labels, hparams=None):
        super().__init__(backbone, num_labels, hparams)
        freeze(self.backbone)
        self.backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen means frozen: no batch-norm statistics update either
        return self

    def training_step(self, batch: dict, step: int) -> dict:
        with torch.no_grad():
            feats = self.features(batch["image"])
        logits = self.head(feats.detach())
        return {"loss": self._loss(logits, batch["labels"])}


@register_algorithm("bce_finetune")
class BCEFinetune(_BCEBase):
    """Backbone and head trained end to end with masked BCE (the control arm for SupCon).

    The backbone learns at ``backbone_lr_scale`` times the base learning rate (a pretrained
    backbone needs gentler updates than a freshly initialised head). Each batch goes through
    one view of the same CXR augmentations SupCon uses, so the two
    arms differ only in the loss (``augment`` takes the same strengths as SupCon's).
    """

    display_name = "BCE fine-tune (control)"
    short_name = "fine-tune"
    scoring = "predict"
    HPARAMS = {
        "backbone_lr_scale": (0.1, "backbone learning rate = this x the base learning rate"),
        "augment": ("default", "strength of the CXR augmentation (one view per image, as in "
                               "SupCon): none, light, default, strong"),
        "pos_weight": (None, "positive-class weight of the BCE: None, one number, or one per label"),
    }

    def __init__(self, backbone, num_labels, hparams=None):
        super().__init__(backbone, num_labels, hparams)
        scale = float(self.hparams["backbone_lr_scale"])
        if not scale > 0:
            raise ValueError(f"backbone_lr_scale must be > 0, got {scale} (to freeze the "
                             "backbone, use the 'bce_probe' algorithm)")
        # subclasses without an "augment" hyper-parameter (the masking methods) train without
        augment = resolve_augment(self.hparams.get("augment", "none"))
        if "augment" in self.hparams:
            self.hparams["augment"] = augment
        # no parameters or buffers: draws from torch's RNG, which checkpoints save and restore
        self.augmenter = cxr_train_augment(None, augment) if augment != "none" else None

    def param_groups(self, lr: float) -> list[dict]:
        bb = [p for p in self.backbone.parameters() if p.requires_grad]
        head = [p for p in self.head.parameters() if p.requires_grad]
        return [{"params": bb, "lr": lr * float(self.hparams["backbone_lr_scale"])},
                {"params": head, "lr": lr}]

    def training_step(self, batch: dict, step: int) -> dict:
        images = batch["image"].to(self.device, non_blocking=True)
        if self.augmenter is not None:
            images = self.augmenter(images)  # uint8 in, uint8 out
        logits = self.predict(images)
        return {"loss": self._loss(logits, batch["labels"])}
