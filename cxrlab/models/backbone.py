"""The one interface every backbone has, whatever library built it.

A :class:`Backbone` maps a batch of normalised images to pooled embeddings ``[B, D]``. It also
knows how *its* inputs must look: :meth:`Backbone.normalize` turns the cache's grayscale uint8
images into what the network was trained on (3 channels replicated from 1 for ImageNet models,
the model's own mean/std, a fixed input size for ViTs), so that normalisation happens on the
device, after the 4x cheaper uint8 copy. Which layer Grad-CAM reads is not the backbone's
business: see :mod:`cxrlab.explain.layers`.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Backbone(nn.Module):
    """A feature extractor: ``forward(x_normalised [B,C,S,S]) -> [B, D]``.

    Attributes
    ----------
    model : the wrapped network (a timm model built with ``num_classes=0``, or any module whose
        forward returns pooled features).
    name : registry name, e.g. ``"resnet50"``.
    weights_id : where the weights came from: ``"random-init-seed0"``,
        ``"imagenet:timm/resnet50.a1_in1k"``, ``"file:<sha256[:12]>"`` (set by the registry).
    num_features : D, the embedding width.
    in_chans : channels the network takes (1 for the tiny and CXR models, 3 for ImageNet ones).
    mean, std : per-channel statistics of the network's training data, applied to inputs in
        [0, 1] by :meth:`normalize`.
    input_size : side of the square input the network was built for.
    fixed_input_size : True when the network only takes ``input_size`` (ViT): :meth:`normalize`
        then resizes other sizes.
    """

    def __init__(self, model: nn.Module, *, name: str, num_features: int, in_chans: int,
                 mean: Sequence[float], std: Sequence[float], input_size: int,
                 fixed_input_size: bool = False,
                 state_dict_filter: Callable | None = None,
                 weights_id: str = "random-init", hub_hint: str = ""):
        super().__init__()
        self.model = model
        self.name = name
        self.weights_id = weights_id
        self.num_features = int(num_features)
        self.in_chans = int(in_chans)
        if len(mean) != self.in_chans or len(std) != self.in_chans:
            raise ValueError(f"mean/std need {self.in_chans} values, got {mean} / {std}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.input_size = int(input_size)
        self.fixed_input_size = bool(fixed_input_size)
        #: called on a loaded state dict before ``load_state_dict`` (e.g. ViT position-embedding
        #: resampling); see :mod:`cxrlab.models.weights`
        self.state_dict_filter = state_dict_filter
        #: how to get the published weights by hand (used in error messages)
        self.hub_hint = hub_hint
        # non-persistent: they follow .to(device) but are not part of the weights
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, -1, 1, 1), persistent=False)

    # ------------------------------------------------------------------ inputs
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Grayscale images -> the network's input.

        ``x``: uint8 in [0, 255] or float in [0, 1], shaped [B, 1, S, S] (or [B, S, S]).
        Returns float32 [B, in_chans, S', S']: resized to ``input_size`` if the network needs a
        fixed size, the one channel replicated to ``in_chans``, then ``(x - mean) / std`` with the
        network's own statistics. Runs on whatever device ``x`` is on: move uint8 there first.
        """
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4:
            raise ValueError(f"normalize expects images [B, 1, S, S], got shape {tuple(x.shape)}")
        if x.shape[1] not in (1, self.in_chans):
            raise ValueError(f"{self.name} takes 1-channel (grayscale) or {self.in_chans}-channel "
                             f"images, got {x.shape[1]} channels")
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if self.fixed_input_size and x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.input_size)
        if x.shape[1] != self.in_chans:
            x = x.expand(-1, self.in_chans, -1, -1)
        mean = self._mean.to(device=x.device)
        std = self._std.to(device=x.device)
        return (x - mean) / std

    @property
    def normalization_id(self) -> str:
        """A string that changes whenever :meth:`normalize` would produce different inputs
        (part of the embedding-cache key)."""
        size = f"resize{self.input_size}" if self.fixed_input_size else "native"
        return (f"in{self.in_chans}-mean{','.join(f'{m:.6g}' for m in self.mean)}"
                f"-std{','.join(f'{s:.6g}' for s in self.std)}-{size}")

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings [B, num_features] of already normalised images."""
        return self.model(x)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``forward(normalize(images))``: embeddings straight from cache images."""
        return self.forward(self.normalize(images))

    # ------------------------------------------------------------------ identity
    @property
    def pretrained(self) -> bool:
        return not self.weights_id.startswith("random-init")

    def fingerprint(self) -> str:
        """sha256 (first 16 hex) of every parameter and buffer: two backbones with the same
        fingerprint compute the same function. Changes as soon as a weight is trained."""
        h = hashlib.sha256()
        for k, v in self.model.state_dict().items():
            h.update(k.encode())
            t = v.detach()
            if t.dtype == torch.bfloat16:
                t = t.float()
            h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
            h.update(t.cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, weights={self.weights_id!r}, num_features={self.num_features}, "
                f"in_chans={self.in_chans}, input_size={self.input_size}")

