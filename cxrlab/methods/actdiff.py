"""ActDiff (Viviano et al., "Saliency is a possible red herring when diagnosing poor
generalization", ICLR 2021), as seed 002 uses it.

Each training image ``x`` gets a copy ``x'`` in which the pixels *outside* the allowed region
are randomly permuted within the image (:func:`shuffle_outside`); the pixels inside stay where
they are. The loss adds ``lam x`` the distance between the network's activations on ``x`` and
on ``x'``: a network whose activations do not change when everything outside the mask is
scrambled cannot be using anything outside the mask.

**Distance: where the reference differs from a plain whole-map L2.** The reference code
(``compare_activations`` in the authors' *activmask* repository) applies
``torch.nn.PairwiseDistance(p=2)`` to each layer's pair of activations. That module takes the
L2 norm along the *last* axis only (with ``eps = 1e-6`` added to the difference), so for a
pooled feature vector ``[B, D]`` it is the per-image L2 distance, but for a feature map
``[B, C, H, W]`` it is one distance per (image, channel, row), taken along the width; the
loss is the mean over all these rows of all chosen layers (a layer with more rows weighs
more). It is not squared. A "plain whole-map L2" would be one norm per image over all of
``C x H x W``.

We use, per chosen layer, the **per-image L2 norm of the flattened difference, averaged over
the images that have a mask** (``distance="l2"``), summed over the layers. For the default
layer, the pooled penultimate features, this equals the reference up to its ``eps``.
``distance="reference"`` reproduces the reference's row-wise version for feature maps.

Layers: ``layers="pooled"`` (default, the backbone's pooled output) or a list of dotted
module names inside the backbone's network (``Backbone.model``), e.g. ``["features.2"]`` for
``tiny_cnn``'s third stage or ``["layer3"]`` for a ResNet; ``"pooled"`` may appear in the list.
"""
from __future__ import annotations

from typing import Sequence

import torch

from cxrlab.methods.mask_guided import MaskError, MaskGuidedFinetune
from cxrlab.methods.registry import register_algorithm

DISTANCES = ("l2", "reference")
#: how the distance is scaled: as it is, or in units of the batch's spread of the activations
SCALES = ("none", "batch")


def shuffle_outside(x: torch.Tensor, allowed: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """A copy of ``x`` [B, C, H, W] whose pixels outside ``allowed`` ([B, 1, H, W] or
    [B, H, W], nonzero = keep) are randomly permuted within the same image (all channels of
    a pixel move together); pixels inside are untouched. Differentiable with respect to ``x``.

    ``generator`` draws the permutations (it lives on the CPU or on ``x``'s device); ``None``
    uses torch's global generator.
    """
    if x.dim() != 4:
        raise MaskError(f"shuffle_outside needs images [B, C, H, W], got shape {tuple(x.shape)}")
    if allowed.dim() == 3:
        allowed = allowed[:, None]
    if allowed.dim() != 4 or allowed.shape[0] != x.shape[0] or allowed.shape[1] != 1 \
            or allowed.shape[-2:] != x.shape[-2:]:
        raise MaskError(f"allowed has shape {tuple(allowed.shape)} but x is {tuple(x.shape)}; "
                        "give one mask per image, [B, 1, H, W] or [B, H, W]")
    B, C, H, W = x.shape
    n = H * W
    outside = (allowed.reshape(B, n) == 0).to(x.device)
    gdev = generator.device if generator is not None else x.device
    rand = torch.rand(B, n, generator=generator, device=gdev).to(x.device)
    # one sort: the outside pixels first, in random order; the k-th outside pixel (in
    # reading order) takes the value of the k-th of that random order; inside pixels keep
    # their own value
    order = torch.argsort(torch.where(outside, rand, torch.full_like(rand, 2.0)), dim=1)
    rank = (torch.cumsum(outside, dim=1) - 1).clamp(min=0)
    own = torch.arange(n, device=x.device).expand(B, n)
    src = torch.where(outside, order.gather(1, rank), own)
    out = x.reshape(B, C, n).gather(2, src[:, None, :].expand(B, C, n))
    return out.reshape(B, C, H, W)


def activation_distance(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None = None,
                        distance: str = "l2", scale: str = "none") -> torch.Tensor:
    """Distance between two activations of the same images ([B, ...]).

    ``"l2"``: per-image L2 norm of the flattened difference, averaged over the images
    (weighted by ``weight`` [B], e.g. 1 for images with a mask; 0 when no weight is positive).
    ``"reference"``: the reference code's ``PairwiseDistance(p=2)`` (L2 along the last axis,
    ``eps = 1e-6`` added to the difference), averaged over every other index.

    ``scale="batch"`` divides the distance by the spread of ``a`` over the batch (the root mean
    squared distance of each image's activations to the batch mean, treated as a constant):
    scaling all activations down, or adding a constant to them, then no longer lowers it, so
    the network cannot pay less without becoming invariant to what lies outside the mask.
    """
    if a.shape != b.shape:
        raise ValueError(f"activations differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    B = a.shape[0]
    w = torch.ones(B, device=a.device) if weight is None else weight.to(a.device, torch.float32)
    if distance == "l2":
        d = torch.linalg.vector_norm((a - b).float().reshape(B, -1), dim=1)
    elif distance == "reference":
        d = torch.linalg.vector_norm((a - b).float() + 1e-6, dim=-1).reshape(B, -1).mean(1)
    else:
        raise MaskError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if scale == "batch":
        flat = a.detach().float().reshape(B, -1)
        spread = torch.sqrt(((flat - flat.mean(0, keepdim=True)) ** 2).sum(1).mean())
        d = d / (spread + 1e-8)
    elif scale != "none":
        raise MaskError(f"scale must be one of {SCALES}, got {scale!r}")
    total = w.sum()
    return (d * w).sum() / total.clamp(min=1.0) if total > 0 else d.sum() * 0.0


@register_algorithm("actdiff")
class ActDiff(MaskGuidedFinetune):
    """BCE fine-tune + ``lam x`` the activation distance between each image and its copy
    shuffled outside the mask. Two forward passes per step (the classification loss sees the
    original images only); images without a mask are not shuffled and add nothing."""

    display_name = "ActDiff"
    HPARAMS = {
        **MaskGuidedFinetune.HPARAMS,
        "lam": (0.3, "weight of the activation distance (>= 0); 0.3: lung periphery, tiny_cnn "
                     "(configs/masking_seed002.yaml); seed 002: 1e-5 abnormality, 1e-3 lung "
                     "periphery on ResNet-50 features"),
        "layers": ("pooled", "activations compared: 'pooled' (penultimate features) or a list "
                             "of module names inside the backbone's network"),
        "distance": ("l2", "'l2' (per-image L2 of the flattened difference) or 'reference' "
                           "(the reference code's row-wise PairwiseDistance)"),
        "scale": ("none", "'none' (the distance as it is) or 'batch' (in units of the batch's "
                          "spread of the activations: scale-free)"),
    }

    def __init__(self, backbone, num_labels, hparams=None):
        super().__init__(backbone, num_labels, hparams)
        if self.hparams["distance"] not in DISTANCES:
            raise MaskError(f"actdiff: distance must be one of {DISTANCES}, got "
                            f"{self.hparams['distance']!r}")
        if self.hparams["scale"] not in SCALES:
            raise MaskError(f"actdiff: scale must be one of {SCALES}, got {self.hparams['scale']!r}")
        layers = self.hparams["layers"]
        layers = [layers] if isinstance(layers, str) else list(layers or [])
        if not layers:
            raise MaskError("actdiff: layers is empty; use 'pooled' or module names")
        net = getattr(backbone, "model", backbone)
        known = {name for name, _ in net.named_modules() if name}
        bad = [ly for ly in layers if ly != "pooled" and ly not in known]
        if bad:
            import difflib

            hints = {b: difflib.get_close_matches(b, known, n=3) for b in bad}
            raise MaskError(f"actdiff: unknown layer(s) {bad} in {type(net).__name__}; "
                            f"close names: {hints}. Use 'pooled' or a name from "
                            "backbone.model.named_modules()")
        self.hparams["layers"] = layers if len(layers) > 1 or layers[0] != "pooled" else "pooled"
        self._layer_names: Sequence[str] = [ly for ly in layers if ly != "pooled"]
        self._use_pooled = "pooled" in layers

    def _features_and_maps(self, x: torch.Tensor):
        """Pooled features and the chosen intermediate activations of one forward pass."""
        if not self._layer_names:
            return self.backbone(x), []
        net = getattr(self.backbone, "model", self.backbone)
        maps: list[torch.Tensor] = []
        handles = [net.get_submodule(name).register_forward_hook(
            lambda _m, _i, out: maps.append(out[0] if isinstance(out, tuple) else out))
            for name in self._layer_names]
        try:
            feats = self.backbone(x)
        finally:
            for h in handles:
                h.remove()
        return feats, maps

    def penalty_step(self, x, allowed, labels):
        feats, maps = self._features_and_maps(x)
        bce = self._loss(self.head(feats), labels)
        has = allowed.flatten(1).amax(1) > 0
        if self.hparams["lam"] == 0 or not bool(has.any()):
            return {"bce": bce, "penalty": torch.zeros((), device=bce.device)}
        idx = torch.nonzero(has).flatten()
        xs = shuffle_outside(x[idx], allowed[idx])
        feats_s, maps_s = self._features_and_maps(xs)
        pairs = ([(feats[idx], feats_s)] if self._use_pooled else []) + \
            [(m[idx], ms) for m, ms in zip(maps, maps_s)]
        pen = sum(activation_distance(a, b, distance=self.hparams["distance"],
                                      scale=self.hparams["scale"]) for a, b in pairs)
        return {"bce": bce, "penalty": pen}
