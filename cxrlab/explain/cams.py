"""Class activation maps for any trained model, batched: :func:`cam_maps`.

One call computes one map per image, each for *its own* target label, with a single forward
and backward pass over the whole batch (``pytorch_grad_cam`` sums the B target logits before
back-propagating; image b's logit depends on image b only, so each image gets its own
gradient). Maps come back at the input size, min-max scaled to [0, 1] per image.

Pitfalls handled here (see the course's reference notes):

* a **frozen backbone** (a linear probe: ``requires_grad=False`` everywhere below the head)
  gives its activations no gradient. Here, while the maps are computed, exactly the target
  layers' own parameters require grad (or, for a layer without parameters, the input): the
  activations get their gradient whether the model is frozen or not, and the backward pass
  stops at the target layer instead of computing every weight's gradient (about half the
  time of a batch). The flags are restored afterwards;
* **ViTs** need their tokens reshaped into a map, without the class token
  (:mod:`cxrlab.explain.layers`), and take a fixed input size: the map is computed at the
  network's size and resized back to the image's;
* the library switches the model to ``eval()``; the model's train/eval mode is restored after.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrlab.errors import CxrlabError
from cxrlab.explain.layers import find_backbone, target_layers_for


class CamInputError(CxrlabError, ValueError):
    """Bad input to a CAM function: shapes, targets, method names."""


class UnknownLabelError(CamInputError):
    """A target label outside the model's outputs."""


def _methods() -> dict:
    import pytorch_grad_cam as pgc

    return {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "hirescam": pgc.HiResCAM,
            "xgradcam": pgc.XGradCAM, "layercam": pgc.LayerCAM}


#: CAM methods by name: all use the gradient of the target logit, so each map is specific to
#: its label (gradient-free methods such as EigenCAM are not: they ignore the target)
METHODS = ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam")


class LogitsModel(nn.Module):
    """``normalised images -> logits`` for an Algorithm (its ``predict``) or any module."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        predict = getattr(self.inner, "predict", None)
        return predict(x) if callable(predict) else self.inner(x)


class LabelTarget:
    """``pytorch_grad_cam`` target: the logit of one label, with a clear error when the model
    has no such output."""

    def __init__(self, label: int):
        self.label = int(label)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        width = output.shape[-1]
        if not 0 <= self.label < width:
            raise UnknownLabelError(f"target label {self.label} does not exist: the model has "
                                    f"{width} outputs (labels 0..{width - 1})")
        return output[..., self.label]


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def prepare_input(model: nn.Module, x) -> torch.Tensor:
    """Images -> the tensor the network takes, on the model's device.

    uint8 images [B, 1, S, S] (or [B, S, S]) go through the backbone's own ``normalize``;
    float tensors are taken as already normalised (as ``Algorithm.predict`` does)."""
    x = torch.as_tensor(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise CamInputError(f"images must be [B, C, H, W] (or [B, H, W]), got shape "
                            f"{tuple(x.shape)}")
    x = x.to(model_device(model))
    bb = find_backbone(model)
    if x.dtype == torch.uint8:
        if not hasattr(bb, "normalize"):
            raise CamInputError(f"uint8 images need a model with a backbone that normalises "
                                f"them; {type(model).__name__} has none: pass float images")
        x = bb.normalize(x)
    return x.float()


def resolve_targets(targets, batch: int, num_labels: int | None = None,
                    label_names: Sequence[str] | None = None) -> list[int]:
    """One integer label per image: an int (or name) for all, or a sequence of length B."""
    if isinstance(targets, (int, np.integer, str)):
        targets = [targets] * batch
    elif isinstance(targets, torch.Tensor):
        targets = targets.flatten().tolist()
    targets = list(np.asarray(targets, dtype=object).ravel())
    if len(targets) != batch:
        raise CamInputError(f"got {len(targets)} targets for {batch} images: pass one label "
                            "(int) for every image or one per image")
    out = []
    for t in targets:
        if isinstance(t, str):
            if label_names is None or t not in list(label_names):
                raise UnknownLabelError(f"target label {t!r} is not one of the model's labels "
                                        f"{list(label_names) if label_names else '(pass label_names=)'}")
            t = list(label_names).index(t)
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            raise CamInputError(f"targets must be integers (label indices), got {t!r}")
        if num_labels is not None and not 0 <= int(t) < num_labels:
            raise UnknownLabelError(f"target label {int(t)} does not exist: the model has "
                                    f"{num_labels} labels (0..{num_labels - 1})")
        out.append(int(t))
    return out


def cam_maps(model: nn.Module, x, targets, target_layers: Sequence[nn.Module] | None = None,
             method: str = "gradcam", *, reshape_transform: Callable | None = None,
             label_names: Sequence[str] | None = None, batch_size: int = 128) -> np.ndarray:
    """Class activation maps: float32 ``[B, H, W]`` in [0, 1] at the input size.

    model: a trained :class:`~cxrlab.methods.base.Algorithm` (its ``predict`` gives the logits)
        or any module mapping float images to logits ``[B, L]``.
    x: uint8 cache images ``[B, 1, H, W]`` (normalised by the model's backbone) or float
        images already normalised.
    targets: the label whose logit each map explains: one int for every image, or one per
        image (names work with ``label_names=``).
    target_layers: layers to read (default: the registry of :mod:`cxrlab.explain.layers`,
        by backbone name); ``reshape_transform`` goes with them for token layers.
    method: one of :data:`METHODS`.
    batch_size: images per forward/backward pass (bounds memory; the result is the same).
    """
    classes = _methods()
    if method not in classes:
        raise CamInputError(f"unknown CAM method {method!r}; choose one of {list(METHODS)}")
    if target_layers is None:
        found = target_layers_for(model)
        layers, reshape = found.layers, found.reshape_transform
    else:
        layers = list(target_layers) if isinstance(target_layers, (list, tuple)) else [target_layers]
        if not layers or not all(isinstance(m, nn.Module) for m in layers):
            raise CamInputError("target_layers must be a list of modules of the model, e.g. "
                                "[model.backbone.model.layer4[-1]]")
        reshape = reshape_transform
    inputs = prepare_input(model, x)
    B = inputs.shape[0]
    if B == 0:
        raise CamInputError("no images given")
    out_hw = tuple(torch.as_tensor(x).shape[-2:])
    names = label_names if label_names is not None else getattr(model, "label_names", None)
    tgt = resolve_targets(targets, B, getattr(model, "num_labels", None), names)

    wrapper = LogitsModel(model)
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    layer_params = {id(p) for m in layers for p in m.parameters()}
    maps = []
    try:
        for p, _ in flags:
            p.requires_grad_(id(p) in layer_params)
        with classes[method](model=wrapper, target_layers=layers, reshape_transform=reshape) as cam:
            for lo in range(0, B, int(batch_size)):
                xb = inputs[lo:lo + batch_size].detach().clone()
                if not layer_params:  # a layer without weights: its gradient comes via the input
                    xb.requires_grad_(True)
                tb = [LabelTarget(t) for t in tgt[lo:lo + batch_size]]
                maps.append(torch.from_numpy(np.asarray(cam(input_tensor=xb, targets=tb),
                                                        dtype=np.float32)))
    finally:
        model.train(was_training)
        for p, flag in flags:
            p.requires_grad_(flag)
    m = torch.cat(maps)
    if tuple(m.shape[-2:]) != out_hw:
        m = F.interpolate(m[:, None], size=out_hw, mode="bilinear", align_corners=False)[:, 0]
    return m.clamp_(0, 1).numpy().astype(np.float32)
