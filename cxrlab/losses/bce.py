"""Losses shared by the linear probe and the training engine.

Multi-label chest X-ray data sets do not label every finding on every image: MIMIC never says
whether an image shows a "Hernia", CheXpert's uncertain labels may be dropped, and a data set
mixed from two sources has holes where one of them is silent. cxrlab writes such holes as NaN.
A NaN is *not* a negative: the loss must ignore it, not push the logit down.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce_with_logits(logits: torch.Tensor, y: torch.Tensor,
                           pos_weight: torch.Tensor | None = None,
                           reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy on logits that ignores unlabelled entries (``y`` is NaN).

    Parameters
    ----------
    logits : float tensor [B, L]
    y : float tensor [B, L] with 1 (positive), 0 (negative) or NaN (not labelled)
    pos_weight : optional float tensor [L]; weight of the positive term per label (as in
        :func:`torch.nn.functional.binary_cross_entropy_with_logits`), e.g. ``n_neg / n_pos``
        to counter class imbalance.
    reduction : ``"mean"`` (mean over the *labelled* entries only), ``"sum"``, or ``"none"``
        ([B, L] with zeros at unlabelled entries).

    With ``"mean"``, a batch with no labelled entry gives a loss of 0 that still has a
    gradient graph (so ``loss.backward()`` works and changes nothing), never NaN.
    """
    if logits.shape != y.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(y.shape)} differ in shape; "
                         "labels need one column per output")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    y = y.to(dtype=logits.dtype)
    mask = ~torch.isnan(y)
    target = torch.where(mask, y, torch.zeros_like(y))
    if pos_weight is not None:
        pos_weight = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    per_entry = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight,
                                                   reduction="none")
    per_entry = per_entry * mask
    if reduction == "none":
        return per_entry
    total = per_entry.sum()
    if reduction == "sum":
        return total
    return total / mask.sum().clamp(min=1)


def balanced_pos_weight(y: torch.Tensor, max_weight: float = 100.0) -> torch.Tensor:
    """Per-label ``n_negative / n_positive`` over the labelled entries of ``y`` [N, L] (NaN =
    unlabelled), clipped to ``[1/max_weight, max_weight]``; 1 for a label with no positive or
    no negative. Pass it as ``pos_weight`` to :func:`masked_bce_with_logits`."""
    y = torch.as_tensor(y, dtype=torch.float32)
    pos = (y == 1).sum(0).float()
    neg = (y == 0).sum(0).float()
    w = torch.where((pos > 0) & (neg > 0), neg / pos.clamp(min=1), torch.ones_like(pos))
    return w.clamp(1.0 / max_weight, max_weight)
