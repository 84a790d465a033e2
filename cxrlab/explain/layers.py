"""Which layer Grad-CAM reads, per architecture: a small registry keyed by backbone name.

Grad-CAM combines the activations of one spatial layer with the gradient of the target logit
with respect to them. The usual choice is the last spatial stage: ``layer4[-1]`` for ResNets,
the head convolution's BatchNorm+SiLU (``bn2``) for EfficientNet, the last dense block's norm
for DenseNet, and for a ViT the input norm of the last block (``blocks[-1].norm1``), whose
tokens ``[B, N, C]`` must be turned back into a map ``[B, C, h, w]`` without the class token
(:func:`vit_reshape_transform`). After the last block's norm1 the class token no longer mixes
into the patch tokens' gradient in a useful way, hence this layer and not the final ``norm``.

Add an architecture with :func:`register_target_layer`; a model the registry does not know
raises :class:`NoTargetLayerError`, whose message says how to pass ``target_layers=``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from cxrlab.errors import CxrlabError


class NoTargetLayerError(CxrlabError, LookupError):
    """The model's architecture has no registered Grad-CAM target layer."""


@dataclass(frozen=True)
class TargetLayers:
    """The layers Grad-CAM reads (their maps are averaged) and how to reshape their output."""

    layers: list
    reshape_transform: Callable | None = None
    #: dotted path of the first layer inside the backbone's network (for display)
    description: str = ""


#: backbone name -> function(network) -> TargetLayers
TARGET_LAYERS: dict[str, Callable[[nn.Module], TargetLayers]] = {}


def register_target_layer(*names: str):
    """Decorator: ``fn(network) -> TargetLayers`` is the Grad-CAM layer of backbones ``names``
    (``network`` is ``backbone.model``, the wrapped timm / torch module)."""
    def _register(fn):
        for n in names:
            TARGET_LAYERS[n] = fn
        return fn

    return _register


def vit_reshape_transform(num_prefix_tokens: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Grad-CAM reshape for ViTs: tokens [B, N, C] -> [B, C, h, w], dropping the first
    ``num_prefix_tokens`` (class / register tokens); the patch grid must be square."""

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3:
            raise ValueError(f"expected ViT tokens [B, N, C], got shape {tuple(tokens.shape)}")
        patches = tokens[:, num_prefix_tokens:, :]
        n = patches.shape[1]
        side = int(round(n ** 0.5))
        if side * side != n:
            raise ValueError(f"cannot reshape {n} patch tokens into a square grid")
        return patches.reshape(tokens.shape[0], side, side, tokens.shape[2]).permute(0, 3, 1, 2)

    return reshape


@register_target_layer("tiny_cnn")
def _last_feature_block(net: nn.Module) -> TargetLayers:
    return TargetLayers([net.features[-1]], None, f"features.{len(net.features) - 1}")


@register_target_layer("tiny_resnet", "resnet50")
def _resnet_layer4(net: nn.Module) -> TargetLayers:
    return TargetLayers([net.layer4[-1]], None, f"layer4.{len(net.layer4) - 1}")


@register_target_layer("efficientnet_b0")
def _efficientnet_bn2(net: nn.Module) -> TargetLayers:
    # bn2 = BatchNorm+SiLU after conv_head: the last spatial activation
    return TargetLayers([net.bn2], None, "bn2")


@register_target_layer("xrv_densenet121")
def _densenet_norm5(net: nn.Module) -> TargetLayers:
    return TargetLayers([net.get_submodule("features.norm5")], None, "features.norm5")


@register_target_layer("tiny_vit", "vit_base_patch16_224")
def _vit_last_norm1(net: nn.Module) -> TargetLayers:
    last = len(net.blocks) - 1
    return TargetLayers([net.blocks[last].norm1], vit_reshape_transform(net.num_prefix_tokens),
                        f"blocks.{last}.norm1")


def find_backbone(model: nn.Module):
    """The backbone inside ``model``: ``model.backbone`` for an Algorithm, else ``model``."""
    return getattr(model, "backbone", model)


def target_layers_for(model: nn.Module) -> TargetLayers:
    """The registered Grad-CAM layers of ``model`` (an Algorithm, a Backbone, or a module with
    a ``name`` the registry knows)."""
    bb = find_backbone(model)
    name = getattr(bb, "name", None)
    if not isinstance(name, str) or name not in TARGET_LAYERS:
        raise NoTargetLayerError(
            f"no known Grad-CAM target layer for {type(bb).__name__}"
            f"{f' {name!r}' if isinstance(name, str) else ''}; known architectures: "
            f"{', '.join(sorted(TARGET_LAYERS))}. Pass the layer yourself, e.g. "
            "cam_maps(model, x, targets, target_layers=[model.backbone.model.layer4[-1]]) "
            "(a list of modules; for a ViT also reshape_transform=vit_reshape_transform(1)), "
            "or register the architecture with "
            "cxrlab.explain.register_target_layer(name)(fn).")
    return TARGET_LAYERS[name](getattr(bb, "model", bb))
