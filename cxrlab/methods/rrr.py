"""Right for the Right Reasons (RRR; Ross, Hughes & Doshi-Velez, IJCAI 2017), as seed 002 uses it.

The penalty asks the input gradient of the model's log-probabilities to vanish outside the
allowed region::

    penalty = sum over images, channels and pixels of ((1 - allowed) * d(sum_k log p_k)/dx)^2

with ``p = sigmoid(logits)`` for multi-label outputs (log-sigmoid per label, as
REFERENCE.md recommends) or ``softmax(logits)`` for exclusive classes. It is a *sum*, not a
mean, as in the reference: its size grows with the batch and the image area, so ``lam``
depends on both (seed 002: lambda 1e-3 with abnormality masks, 1e-2 with lung-periphery masks,
at 224 px and batch 16). The gradient is taken with ``create_graph=True`` (double
back-propagation), so the penalty itself trains the network. An image without a mask (an
all-zero allowed region) adds nothing.

``x`` is the normalised network input; the gradient is taken with respect to it (the uint8
pixels are not differentiable), which only rescales the penalty by the backbone's 1/std.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrlab.methods.mask_guided import MaskError, MaskGuidedFinetune
from cxrlab.methods.registry import register_algorithm

OUTPUTS = ("sigmoid", "softmax", "both")
#: how the penalty is scaled: the reference's sum, or the share of the gradient energy outside
SCALES = ("sum", "share")


def double_backward_attention():
    """A context in which ``F.scaled_dot_product_attention`` uses its plain ("math") kernel.

    RRR differentiates an input gradient (double back-prop); the fused attention kernels of
    ViTs (flash, memory-efficient, the CPU flash kernel) have no second derivative, so a ViT
    would fail at the first ``backward`` with "derivative for
    aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented". The math
    kernel is differentiable twice; CNNs are unaffected."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def _full(t: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision tensors (bf16 autocast), float64 stays float64."""
    return t if t.dtype == torch.float64 else t.float()


def _log_probs(logits: torch.Tensor, outputs: str) -> torch.Tensor:
    if outputs == "sigmoid":
        return F.logsigmoid(_full(logits))
    if outputs == "softmax":
        return F.log_softmax(_full(logits), dim=1)
    if outputs == "both":  # a two-class softmax per label: log p_k + log (1 - p_k)
        z = _full(logits)
        return F.logsigmoid(z) + F.logsigmoid(-z)
    raise MaskError(f"outputs must be one of {OUTPUTS}, got {outputs!r}")


def _check_allowed(x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    if allowed.dim() == 3:
        allowed = allowed[:, None]
    if allowed.dim() != 4 or allowed.shape[0] != x.shape[0] or allowed.shape[1] not in (1, x.shape[1]) \
            or allowed.shape[-2:] != x.shape[-2:]:
        raise MaskError(f"allowed has shape {tuple(allowed.shape)} but x is {tuple(x.shape)}; "
                        "give one mask per image, [B, 1, H, W] or [B, H, W]")
    return allowed.to(x.device, _full(x).dtype)


def rrr_penalty_from_logits(logits: torch.Tensor, x: torch.Tensor, allowed: torch.Tensor,
                            outputs: str = "sigmoid", scale: str = "sum") -> torch.Tensor:
    """The RRR penalty of ``logits = model(x)`` (``x`` must require grad and be part of the
    graph of ``logits``): lets a method reuse the forward pass of its classification loss.

    ``scale="sum"``: the reference's sum of squared outside gradients. ``scale="share"``: per
    image, the *share* of the squared input gradient that lies outside the allowed region
    (0 = all sensitivity inside, 1 = all outside), averaged over the images with a mask. The
    share does not change when the logits are scaled, so a network cannot pay less by making
    all its predictions less confident (what it does against the sum); it has to move its
    sensitivity into the allowed region."""
    if not x.requires_grad:
        raise ValueError("rrr_penalty needs x.requires_grad=True before the forward pass")
    if scale not in SCALES:
        raise MaskError(f"scale must be one of {SCALES}, got {scale!r}")
    allowed = _check_allowed(x, allowed)
    logp = _log_probs(logits, outputs).sum()
    (grad,) = torch.autograd.grad(logp, x, create_graph=True)
    has_mask = (allowed.flatten(1).amax(1) > 0).to(grad.dtype)  # images without a mask: 0
    outside = (1.0 - allowed) * has_mask[:, None, None, None]
    g2 = _full(grad) ** 2
    if scale == "sum":
        return (outside * g2).sum()
    out_e = (outside * g2).flatten(1).sum(1)
    total = g2.flatten(1).sum(1)
    share = out_e / total.clamp(min=1e-30)  # a flat image (no gradient at all) shares 0
    return (share * has_mask).sum() / has_mask.sum().clamp(min=1.0)


def rrr_penalty(model, x: torch.Tensor, allowed: torch.Tensor,
                outputs: str = "sigmoid", scale: str = "sum") -> torch.Tensor:
    """RRR's penalty, without lambda: ``sum ((1 - allowed) * d(sum_k log p_k)/dx)^2`` over the
    batch, channels and pixels, differentiable (double back-prop).

    ``model``: maps ``x`` [B, C, H, W] to logits [B, K]; ``allowed``: [B, 1, H, W] or
    [B, H, W], 1 where the model may look; an all-zero mask means "no mask": no penalty.
    ``outputs``: ``"sigmoid"`` (independent labels, sum_k log p_k), ``"softmax"`` (exclusive
    classes) or ``"both"`` (sum_k log p_k + log(1 - p_k): both outcomes of every label, i.e.
    Ross et al.'s sum over *all* classes of a two-class softmax per label).

    Why ``"both"`` matters for a binary label: the input gradient of log p is (1 - p) dz/dx,
    which vanishes on confidently positive images - exactly those where a shortcut that goes
    with the positives acts - so ``"sigmoid"`` barely penalises the shortcut there; the
    gradient of log p + log(1 - p) is (1 - 2p) dz/dx, large on every confident image.

    ``scale``: ``"sum"`` (the reference, above) or ``"share"`` (per image, the outside share of
    the squared gradient, averaged over the images with a mask; see
    :func:`rrr_penalty_from_logits`).
    """
    x = x.detach().requires_grad_(True)
    with double_backward_attention():
        logits = model(x)
    return rrr_penalty_from_logits(logits, x, allowed, outputs, scale)


@register_algorithm("rrr")
class RRR(MaskGuidedFinetune):
    """BCE fine-tune + ``lam x`` :func:`rrr_penalty` with the chosen mask (one forward pass,
    double back-prop). Training history: ``bce``, ``penalty`` (before lambda), ``masked_frac``
    (share of the batch that had a mask)."""

    display_name = "RRR"
    HPARAMS = {
        **MaskGuidedFinetune.HPARAMS,
        "lam": (0.1, "weight of the input-gradient penalty (>= 0); 0.1: lung periphery at 64 px, "
                     "batch 32 (configs/masking_seed002.yaml); seed 002: 1e-3 abnormality, 1e-2 "
                     "lung periphery at 224 px, batch 16"),
        "outputs": ("sigmoid", "log-probabilities of the penalty: sigmoid (sum_k log p_k), softmax, "
                               "or both (sum_k log p_k + log(1 - p_k))"),
        "scale": ("sum", "'sum' (the reference: sum of squared outside gradients) or 'share' "
                         "(per image, the outside share of the squared gradient: scale-free)"),
    }

    def __init__(self, backbone, num_labels, hparams=None):
        super().__init__(backbone, num_labels, hparams)
        if self.hparams["outputs"] not in OUTPUTS:
            raise MaskError(f"rrr: outputs must be one of {OUTPUTS}, got "
                            f"{self.hparams['outputs']!r}")
        if self.hparams["scale"] not in SCALES:
            raise MaskError(f"rrr: scale must be one of {SCALES}, got {self.hparams['scale']!r}")

    def penalty_step(self, x, allowed, labels):
        x = x.detach().requires_grad_(True)
        with double_backward_attention():  # a ViT's attention must be differentiable twice
            logits = self.head(self.backbone(x))
        bce = self._loss(logits, labels)
        if self.hparams["lam"] == 0:  # ERM: skip the double back-prop
            return {"bce": bce, "penalty": torch.zeros((), device=bce.device)}
        pen = rrr_penalty_from_logits(logits, x, allowed, self.hparams["outputs"],
                                      self.hparams["scale"])
        return {"bce": bce, "penalty": pen}
