r"""Supervised contrastive loss (SupCon, Khosla et al. 2020) for multi-label chest X-rays.

The formula
-----------
Each of the B images in a batch comes as V augmented views; their projections are
L2-normalised to unit vectors :math:`z`. Every one of the N = B*V views is an *anchor* i
(``contrast_mode="all"`` of the reference code). With :math:`A(i)` = all views except i itself
(self-contrast is removed from numerator and denominator) and :math:`P(i) \subset A(i)` its
positives,

.. math::

    \ell_i = -\frac{\tau}{\tau_{base}} \; \frac{1}{\sum_{p \in P(i)} w_{ip}}
             \sum_{p \in P(i)} w_{ip} \log
             \frac{\exp(z_i \cdot z_p / \tau)}{\sum_{a \in A(i)} \exp(z_i \cdot z_a / \tau)},
    \qquad \mathcal{L} = \frac{1}{N} \sum_i \ell_i .

Positives (``positives=``)
    * ``"any"`` (seed 000's multi-label rule): j is a positive of i when the two images share
      at least one label; ``w = 1``.
    * ``"jaccard"``: every pair is weighted by the label overlap
      :math:`w_{ij} = |L_i \cap L_j| / |L_i \cup L_j|`; pairs with no shared label get 0.
    * ``labels=None``: SimCLR, only the image's own other views are positives.
    * Always: the other views of the *same image* are positives with weight 1, also when the
      image has no label at all (the reference notes this: set the label mask's diagonal to 1).
      Two images without any label are *not* positives of each other ("share >= 1 label" is
      false); in the CheXpert space ``No_Finding`` is itself a label and then does pair them.
    * NaN in ``labels`` (not labelled) counts as 0: an unknown label is never "shared".
    * ``labels`` may also be 1-D integer class ids (single-label SupCon).

Conventions, stated because they change numbers
    * ``temperature=0.1`` and ``base_temperature=0.07`` (the reference code's default
      :math:`\tau_{base}`): the loss is scaled by :math:`\tau/\tau_{base}` = 1.43. With
      ``base_temperature=temperature`` the scale is 1.
    * An anchor with no positive (possible only with V = 1) contributes 0 and -- as in the
      reference SupContrast code, which divides by ``max(#positives, 1)`` and then averages
      over *all* anchors -- still counts in the mean over N. With V >= 2 every anchor has
      its own other view, so the question never arises. No NaN in either case.
    * Computed in float32 (float64 for float64 input) with ``logsumexp`` (row max
      subtracted), whatever the autocast.

Distributed data parallel
-------------------------
Under ``torchrun`` each rank holds a slice of the global batch. SupCon needs the *global*
batch as contrast set, so :func:`gather_with_grad` all-gathers features (and labels) and keeps
gradients flowing back to every rank's own slice. Rank r then computes the loss of its *local
anchors* against the *global* contrast set, as :math:`(W/N) \sum_{i \in r} \ell_i` with W
ranks and N global anchors. Why this scale: the gather's backward sums, over ranks, the
gradients that every rank's loss sends to a slice, so the gradient reaching rank r's features
is :math:`W \cdot \partial\mathcal{L}/\partial z_r`; DDP then *averages* the parameter
gradients over ranks, which divides the W back out. Result: parameter gradients identical to
one process on the whole batch, and the mean of the per-rank losses equals the
single-process loss (with equal slices each rank's loss is simply its local mean).
``tests/test_supcon_ddp.py`` checks both with a real two-process run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SupConLoss", "chance_loss", "gather_with_grad", "positive_weights"]


def chance_loss(batch_size: int, views: int = 2, temperature: float = 0.1,
                base_temperature: float = 0.07) -> float:
    """The SupCon loss of an encoder that has learnt nothing: every view equally similar to
    every other, so each positive gets probability 1 / (N - 1) among the N - 1 other views of
    the batch (N = ``views`` x ``batch_size``), and every anchor pays
    ``(temperature / base_temperature) * ln(N - 1)`` whatever its positives. A training curve
    has to go clearly below this line before the encoder has learnt anything."""
    n = int(views) * int(batch_size)
    if n < 2:
        raise ValueError(f"a batch needs at least two views in all, got {views} x {batch_size}")
    import math

    return float(temperature) / float(base_temperature) * math.log(n - 1)

_POSITIVE_RULES = ("any", "jaccard")


# --------------------------------------------------------------------------- distributed
def _dist_world() -> tuple[int, int]:
    """(rank, world_size), or (0, 1) outside an initialised process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_gather_sizes(n: int, device) -> list[int]:
    import torch.distributed as dist

    t = torch.tensor([n], device=device, dtype=torch.long)
    out = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return [int(x.item()) for x in out]


def _all_gather_padded(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenate every rank's ``x`` along dim 0; slices may differ in length."""
    import torch.distributed as dist

    m = max(sizes)
    pad = x.new_zeros((m - x.shape[0],) + tuple(x.shape[1:]))
    xp = torch.cat([x, pad]).contiguous()
    out = [torch.empty_like(xp) for _ in sizes]
    dist.all_gather(out, xp)
    return torch.cat([o[:s] for o, s in zip(out, sizes)])


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns to each rank the *sum over ranks* of the gradient
    for its own slice (every rank's loss may depend on every slice)."""

    @staticmethod
    def forward(ctx, x, sizes, rank):
        ctx.sizes, ctx.rank = sizes, rank
        return _all_gather_padded(x, sizes)

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start: start + ctx.sizes[ctx.rank]], None, None


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather ``x`` [n_local, ...] from every rank -> ([n_global, ...], offset of this
    rank's slice). Gradients flow back to the local slice (summed over ranks). Outside a
    process group (or with one process) returns ``(x, 0)`` unchanged. Slices may differ in
    length across ranks (the last batch of an epoch)."""
    rank, world = _dist_world()
    if world == 1:
        return x, 0
    sizes = _all_gather_sizes(x.shape[0], x.device)
    return _GatherWithGrad.apply(x, sizes, rank), sum(sizes[:rank])


def _gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    rank, world = _dist_world()
    if world == 1:
        return x
    sizes = _all_gather_sizes(x.shape[0], x.device)
    return _all_gather_padded(x.detach(), sizes)


# ------------------------------------------------------------------------------ positives
def positive_weights(labels_a: torch.Tensor | None, labels_b: torch.Tensor | None,
                     positives: str = "any") -> torch.Tensor | None:
    """Image-pair weights [Ba, Bb] from label rows (before the same-image rule is added).

    ``"any"``: 1 if the rows share >= 1 label else 0. ``"jaccard"``: intersection / union
    (0 when both rows are empty). 1-D integer labels: 1 if the class ids are equal.
    ``None`` labels -> ``None`` (no label-based positives).
    """
    if labels_a is None:
        return None
    if labels_a.dim() == 1:  # class ids
        return (labels_a[:, None] == labels_b[None, :]).float()
    a = torch.nan_to_num(labels_a if labels_a.is_floating_point() else labels_a.float(), nan=0.0)
    b = torch.nan_to_num(labels_b if labels_b.is_floating_point() else labels_b.float(), nan=0.0)
    inter = a @ b.T
    if positives == "any":
        return (inter > 0.5).float()
    union = a.sum(1, keepdim=True) + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def _check_labels(labels, B: int) -> torch.Tensor | None:
    if labels is None:
        return None
    if not torch.is_tensor(labels):
        labels = torch.as_tensor(labels)
    if labels.shape[0] != B:
        raise ValueError(f"labels has {labels.shape[0]} rows but features has {B} images")
    if labels.dim() == 1:
        if labels.is_floating_point():
            raise ValueError("1-D labels must be integer class ids; multi-label targets must "
                             "be multi-hot [batch, classes]")
        return labels.long()
    if labels.dim() != 2:
        raise ValueError(f"labels must be [batch, classes] multi-hot or [batch] class ids; "
                         f"got shape {tuple(labels.shape)}")
    lab = torch.nan_to_num(labels.float(), nan=0.0)
    if ((lab != 0) & (lab != 1)).any():
        raise ValueError("multi-hot labels must be 0, 1 or NaN (e.g. CheXpert's -1 must be "
                         "mapped first)")
    return lab


# ---------------------------------------------------------------------------------- loss
class SupConLoss(nn.Module):
    """Supervised contrastive loss; see the module docstring for the formula and conventions.

    ``loss(features, labels)``: ``features`` [B, V, D] (V >= 1 views per image, any scale:
    they are L2-normalised here), ``labels`` multi-hot [B, C] (NaN = 0), [B] class ids, or
    ``None`` (SimCLR). Returns a scalar. Under an initialised process group with more than
    one rank the contrast set is gathered from all ranks (``gather=False`` turns this off).
    """

    def __init__(self, temperature: float = 0.1, base_temperature: float = 0.07,
                 positives: str = "any", gather: bool = True):
        super().__init__()
        if temperature <= 0 or base_temperature <= 0:
            raise ValueError(f"temperatures must be positive; got temperature={temperature}, "
                             f"base_temperature={base_temperature}")
        if positives not in _POSITIVE_RULES:
            raise ValueError(f"positives={positives!r}; choose one of {_POSITIVE_RULES}")
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature)
        self.positives = positives
        self.gather = gather

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, base_temperature={self.base_temperature}, "
                f"positives={self.positives!r}")

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if features.dim() != 3:
            raise ValueError(f"features must be [batch, views, dim]; got shape "
                             f"{tuple(features.shape)}. For one view use features[:, None].")
        B, V, D = features.shape
        labels = _check_labels(labels, B)
        if labels is not None:
            labels = labels.to(features.device)
            if labels.is_floating_point():
                labels = labels.to(torch.float64 if features.dtype == torch.float64 else torch.float32)
        dev_type = features.device.type
        with torch.autocast(device_type=dev_type, enabled=False):
            work = torch.float64 if features.dtype == torch.float64 else torch.float32
            z = F.normalize(features.to(work), dim=-1)
            # distributed: local anchors against the global contrast set
            rank, world = _dist_world()
            if self.gather and world > 1:
                z_all, offset = gather_with_grad(z)
                lab_all = _gather_no_grad(labels) if labels is not None else None
            else:
                z_all, offset, lab_all = z, 0, labels
            Bg = z_all.shape[0]
            loss_sum = self._loss_sum(z, z_all, offset, labels, lab_all)
            n_global_anchors = Bg * V
            return loss_sum * (world if (self.gather and world > 1) else 1) / n_global_anchors

    def _loss_sum(self, z, z_all, offset, labels, lab_all) -> torch.Tensor:
        """Sum of l_i over the local anchors (views of ``z``) against all views of ``z_all``.

        Only the denominator needs the full [anchors x contrast] logit matrix. The numerator
        sum_p w_ip s_ip is linear in the contrast vectors, so it is computed per *image*:
        with w_img[b, b'] the image-pair weight (1 for b' = b) and zsum[b'] the sum of image
        b''s views, sum_p w_ip z_i.z_p = z_i . (w_img @ zsum)[b] - z_i.z_i (drop self), and
        sum_p w_ip = V * w_img[b].sum() - 1. That saves several passes over the big matrix.
        """
        B, V, D = z.shape
        Bg = z_all.shape[0]
        dev = z.device
        # anchors and contrast set, view-major like the reference (view 0 of all images, ...)
        anchors = z.transpose(0, 1).reshape(V * B, D)
        contrast = z_all.transpose(0, 1).reshape(V * Bg, D)
        logits = (anchors / self.temperature) @ contrast.T  # [V*B, V*Bg]

        # denominator: log-sum-exp over A(i) = all views but i itself. The self entry gets a
        # large *finite* negative value so gradients stay finite even when A(i) is empty.
        rows = torch.arange(V * B, device=dev)
        self_cols = torch.arange(V, device=dev).repeat_interleave(B) * Bg \
            + torch.arange(B, device=dev).repeat(V) + offset
        neg_big = torch.tensor(torch.finfo(logits.dtype).min / 4, dtype=logits.dtype, device=dev)
        masked = logits.index_put((rows, self_cols), neg_big.expand(V * B))
        lse = torch.logsumexp(masked, dim=1)  # [V*B]

        # image-pair weights: label rule, then the image itself (its other views) weight 1
        w_img = positive_weights(labels, lab_all, self.positives)  # [B, Bg] or None
        if w_img is None:
            w_img = torch.zeros(B, Bg, dtype=z.dtype, device=dev)
        w_img = w_img.to(z.dtype).index_put(
            (torch.arange(B, device=dev), torch.arange(B, device=dev) + offset),
            torch.ones((), dtype=z.dtype, device=dev))
        pooled = w_img @ z_all.sum(1)  # [B, D]: weighted sum of all positive views (+ self)
        pooled = pooled.repeat(V, 1)  # row (v, b) -> image b
        pos_dot = ((pooled - anchors) * anchors).sum(1) / self.temperature  # sum_p w_ip s_ip
        w_sum = V * w_img.sum(1).repeat(V) - 1.0  # sum_p w_ip
        has_pos = w_sum > 1e-9
        mean_log_prob_pos = pos_dot / w_sum.clamp_min(1e-9) - lse
        per_anchor = -(self.temperature / self.base_temperature) * mean_log_prob_pos
        per_anchor = torch.where(has_pos, per_anchor, torch.zeros_like(per_anchor))
        return per_anchor.sum()
