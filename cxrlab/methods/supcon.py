"""SupCon pre-training (Khosla et al. 2020) of the backbone, as seed 000 used it.

Each image is augmented twice; both views go through the backbone and a small projection MLP;
:class:`cxrlab.losses.supcon.SupConLoss` pulls together the views of the same image and of
images that share at least one finding, and pushes the rest apart. Afterwards the projection
head is thrown away and the *frozen* encoder is evaluated with a linear probe
(:mod:`cxrlab.probe`) - so this algorithm has no :meth:`predict`.

Under ``torchrun`` the loss gathers the projections of every rank, so the contrast set is the
global batch (``gather=True``), as on one big GPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxrlab.augment import TwoViewTransform, cxr_train_augment
from cxrlab.errors import CxrlabError
from cxrlab.losses.supcon import SupConLoss
from cxrlab.methods.base import Algorithm, resolve_augment
from cxrlab.methods.registry import register_algorithm


# ------------------------------------------------------------------------ projection head
class ProjectionHead(nn.Module):
    """The SupCon projection MLP: Linear(in, hidden) - ReLU - Linear(hidden, out).

    As in the reference (``hidden = in_dim``, ``out_dim = 128``). It is used only during
    contrastive training and discarded afterwards: the linear probe sits on the encoder's
    pooled features, which transfer better than the projection. ``normalize=True`` returns
    unit vectors (the loss normalises anyway).
    """

    def __init__(self, in_dim: int, hidden: int | None = None, out_dim: int = 128,
                 normalize: bool = False):
        super().__init__()
        hidden = int(hidden or in_dim)
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out_dim))
        self.normalize = normalize
        self.in_dim, self.hidden, self.out_dim = int(in_dim), hidden, int(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return F.normalize(y, dim=-1) if self.normalize else y


def two_view_features(encoder, head: nn.Module, views: torch.Tensor) -> torch.Tensor:
    """[B, V, C, S, S] images -> [B, V, out_dim] projections, one encoder pass for all views.

    ``encoder`` maps [B*V, C, S, S] to pooled features [B*V, D] (e.g. ``algorithm.features``).
    """
    if views.dim() < 3:
        raise ValueError(f"views must be [batch, views, ...]; got shape {tuple(views.shape)}")
    B, V = views.shape[:2]
    feats = encoder(views.reshape(B * V, *views.shape[2:]))
    return head(feats).reshape(B, V, -1)


class PretrainOnlyError(CxrlabError, NotImplementedError):
    """A pre-training method was asked for class predictions."""


@register_algorithm("supcon")
class SupConPretrain(Algorithm):
    """Backbone + projection head trained with the supervised contrastive loss on two views."""

    display_name = "SupCon + linear probe"
    short_name = "SupCon"
    scoring = "probe"
    can_predict = False
    HPARAMS = {
        "temperature": (0.1, "softmax temperature tau of the contrastive logits"),
        "base_temperature": (0.07, "loss is scaled by tau / base_temperature (reference: 0.07)"),
        "positives": ("any", "'any': images sharing >= 1 label are positives; 'jaccard': weighted"),
        "proj_dim": (128, "output width of the projection head"),
        "proj_hidden": (None, "hidden width of the projection head (None: the backbone's width)"),
        "augment": ("default", "strength of the two random CXR views (cxrlab.augment): light, "
                               "default, strong; none = two identical views (tests only)"),
        "gather": (True, "under DDP, contrast against the projections of every rank"),
    }

    def __init__(self, backbone, num_labels, hparams=None):
        super().__init__(backbone, num_labels, hparams)
        h = self.hparams
        self.head = ProjectionHead(backbone.num_features, hidden=h["proj_hidden"],
                                   out_dim=int(h["proj_dim"]))
        self.loss_fn = SupConLoss(temperature=float(h["temperature"]),
                                  base_temperature=float(h["base_temperature"]),
                                  positives=h["positives"], gather=bool(h["gather"]))
        h["augment"] = resolve_augment(h["augment"])
        # no parameters or buffers: draws from torch's RNG, which checkpoints save and restore
        self.two_views = (TwoViewTransform(cxr_train_augment(None, h["augment"]), 2)
                          if h["augment"] != "none" else None)

    def views(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,1,S,S] -> two augmented views, uint8 [B, 2, 1, S, S]."""
        images = images.to(self.device, non_blocking=True)
        if self.two_views is None:
            return images[:, None].expand(-1, 2, -1, -1, -1)
        return self.two_views(images)

    def training_step(self, batch: dict, step: int) -> dict:
        views = self.views(batch["image"])
        B, V = views.shape[:2]
        # one backbone pass over both views: [B*V, D] -> projections [B, V, proj_dim]
        z = self.head(self.features(views.reshape(B * V, *views.shape[2:])))
        return {"loss": self.loss_fn(z.reshape(B, V, -1), batch["labels"])}

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        raise PretrainOnlyError(
            "SupConPretrain learns an encoder, not a classifier: it has no label predictions. "
            "Freeze the pre-trained encoder (algorithm.encoder), embed the images with "
            "cxrlab.probe.extract_embeddings and fit the linear probe with "
            "cxrlab.probe.train_linear_probe; predict with the probe.")
