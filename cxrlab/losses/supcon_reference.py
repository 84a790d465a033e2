"""SupCon written straight from the formula, one anchor at a time (the test oracle).

This is deliberately the slow, obvious version of :class:`cxrlab.losses.supcon.SupConLoss`:
Python loops over anchors, positive sets built from Python sets of label indices, and the
log-softmax spelled out with the row maximum subtracted. It shares no code with the
vectorised loss, so agreement between the two (``tests/test_supcon.py``) checks the
positive rule, the masking of self-contrast, the Jaccard weights, the zero-positive case and
the temperature scaling. ``cxrlab bench`` times it beside the vectorised loss.

For anchor i (a view of image b(i)), with A(i) all views but i and P(i) its positives::

    l_i = -(tau / tau_base) * sum_{p in P(i)} w_ip * log( exp(s_ip) / sum_{a in A(i)} exp(s_ia) )
                            / sum_{p in P(i)} w_ip ,          s_ij = z_i . z_j / tau
    loss = mean over all anchors (an anchor with no positive contributes 0)
"""
from __future__ import annotations

import torch

__all__ = ["supcon_loss_loop"]


def _label_sets(labels, B: int) -> list[frozenset] | None:
    if labels is None:
        return None
    if labels.dim() == 1:
        return [frozenset([int(labels[b])]) for b in range(B)]
    rows = labels.detach().cpu().tolist()
    # NaN (not labelled) is never 1, so it is simply not in the set
    return [frozenset(k for k, v in enumerate(r) if v == 1) for r in rows]


def supcon_loss_loop(features: torch.Tensor, labels: torch.Tensor | None = None,
                     temperature: float = 0.1, base_temperature: float = 0.07,
                     positives: str = "any") -> torch.Tensor:
    """Reference SupCon loss; same arguments and conventions as ``SupConLoss.forward``."""
    if positives not in ("any", "jaccard"):
        raise ValueError(f"positives={positives!r}; choose 'any' or 'jaccard'")
    B, V, _ = features.shape
    z = features / features.norm(dim=-1, keepdim=True)
    views = [(b, v) for b in range(B) for v in range(V)]  # anchor index -> (image, view)
    z_flat = z.reshape(B * V, -1)  # row i is the view views[i]
    sets = _label_sets(labels, B)

    def weight(i_img: int, j_img: int) -> float:
        if i_img == j_img:
            return 1.0  # the image's other views are always positives
        if sets is None:
            return 0.0
        shared = sets[i_img] & sets[j_img]
        if positives == "any":
            return 1.0 if shared else 0.0
        union = sets[i_img] | sets[j_img]
        return len(shared) / len(union) if union else 0.0

    total = z.sum() * 0.0  # zero, but part of the graph (zero gradient if nothing is added)
    for i, (bi, vi) in enumerate(views):
        others = [j for j in range(len(views)) if j != i]  # A(i)
        if not others:
            continue
        zo = z_flat[torch.tensor(others, device=z.device)]
        s = zo @ z_flat[i] / temperature  # s_ia for a in A(i)
        m = s.max().detach()
        log_denominator = m + torch.log(torch.exp(s - m).sum())
        w = [weight(bi, views[j][0]) for j in others]
        pos = [k for k, wk in enumerate(w) if wk > 0]  # P(i)
        if not pos:
            continue  # zero positives: contributes 0
        w_pos = torch.tensor([w[k] for k in pos], dtype=s.dtype, device=s.device)
        log_prob_pos = s[pos] - log_denominator
        total = total - (temperature / base_temperature) * (w_pos * log_prob_pos).sum() / w_pos.sum()
    return total / len(views)
