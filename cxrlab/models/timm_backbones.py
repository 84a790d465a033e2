"""The course's ImageNet backbones, built by timm: ResNet-50, EfficientNet-B0, ViT-B/16.

All three are created with ``num_classes=0`` (timm then returns pooled features) and keep
their own input statistics from ``model.pretrained_cfg`` (ImageNet mean/std for the CNNs,
0.5/0.5 for this ViT). Chest X-rays are grayscale: :meth:`Backbone.normalize` replicates the
one channel to the three these networks were trained on.
"""
from __future__ import annotations

from cxrlab.models.backbone import Backbone
from cxrlab.models.registry import register_backbone
from cxrlab.models.weights import WeightsUnavailableError, unavailable_message

# errors that mean "the weights could not be fetched" (network, hub, disk cache), as opposed
# to programming errors (TypeError, KeyError ...) that must surface unchanged
_FETCH_ERRORS = (OSError, RuntimeError, ValueError, ConnectionError, TimeoutError, ImportError)


def hub_hint(cfg: dict) -> str:
    """How to download a timm model's weights by hand, from its ``pretrained_cfg``."""
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        return (f"https://huggingface.co/{hub_id}/resolve/main/model.safetensors "
                f"(Hugging Face repo {hub_id}, file model.safetensors; e.g. "
                f"`hf download {hub_id} model.safetensors --local-dir weights/`)")
    if cfg.get("url"):
        return cfg["url"]
    return f"the timm weights of {cfg.get('architecture')} (see timm's model card)"


def create_timm(name: str, arch: str, pretrained: bool, **kwargs):
    """``timm.create_model(arch, num_classes=0)``; hub failures become WeightsUnavailableError."""
    import timm

    if not pretrained:
        return timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    try:
        return timm.create_model(arch, pretrained=True, num_classes=0, **kwargs)
    except _FETCH_ERRORS as e:
        cfg = timm.models.get_pretrained_cfg(arch)
        cfg = cfg.to_dict() if cfg is not None else {"architecture": arch}
        raise WeightsUnavailableError(unavailable_message(name, hub_hint(cfg), e)) from e


def _weights_id(model) -> str:
    cfg = model.pretrained_cfg
    return f"imagenet:{cfg.get('hf_hub_id') or cfg.get('architecture')}"


def wrap_timm(model, name: str, pretrained: bool, input_size: int,
              fixed_input_size: bool = False, state_dict_filter=None) -> Backbone:
    """Wrap a timm model (built with num_classes=0) as a :class:`Backbone`, with the mean/std
    of its pretrained configuration."""
    cfg = model.pretrained_cfg
    in_chans = int(getattr(model, "in_chans", None) or 3)
    mean, std = tuple(cfg.get("mean", (0.5,) * in_chans)), tuple(cfg.get("std", (0.5,) * in_chans))
    if len(mean) != in_chans:  # a 1-channel variant of a 3-channel cfg: average the statistics
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    bb = Backbone(model, name=name, num_features=model.num_features, in_chans=in_chans,
                  mean=mean, std=std, input_size=input_size,
                  fixed_input_size=fixed_input_size,
                  state_dict_filter=state_dict_filter, hub_hint=hub_hint(cfg))
    if pretrained:
        bb.weights_id = _weights_id(model)
    return bb


@register_backbone("resnet50", description="ResNet-50 (25M params, 2048-d), timm",
                   display_name="ResNet-50", table_rank=2)
def resnet50(pretrained: bool = False, image_size: int | None = None, **kw) -> Backbone:
    m = create_timm("resnet50", "resnet50", pretrained, **kw)
    return wrap_timm(m, "resnet50", pretrained, input_size=image_size or 224)


@register_backbone("efficientnet_b0", description="EfficientNet-B0 (5M params, 1280-d), timm",
                   display_name="EfficientNet-B0", table_rank=1)
def efficientnet_b0(pretrained: bool = False, image_size: int | None = None, **kw) -> Backbone:
    m = create_timm("efficientnet_b0", "efficientnet_b0", pretrained, **kw)
    return wrap_timm(m, "efficientnet_b0", pretrained, input_size=image_size or 224)


def vit_state_dict_filter(sd, model):
    """timm's ViT checkpoint filter: resamples position embeddings to the model's grid (a
    224-px checkpoint into a 64-px model) and converts other layouts."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(sd, model)


def build_vit(name: str, arch: str, pretrained: bool, image_size: int | None, patch: int,
              **kw) -> Backbone:
    if image_size is not None:
        if image_size % patch:
            raise ValueError(f"{name} needs an image size divisible by its patch size {patch}, "
                             f"got {image_size}")
        kw.setdefault("img_size", image_size)
    m = create_timm(name, arch, pretrained, **kw)
    size = int(m.patch_embed.img_size[0])
    dynamic = bool(getattr(m, "dynamic_img_size", False))
    return wrap_timm(m, name, pretrained, input_size=size, fixed_input_size=not dynamic,
                     state_dict_filter=vit_state_dict_filter)


@register_backbone("vit_base_patch16_224",
                   description="ViT-B/16 (86M params, 768-d, class token), timm; built for "
                               "the profile's image size (position embeddings resampled)",
                   display_name="ViT-B/16", table_rank=0)
def vit_base_patch16_224(pretrained: bool = False, image_size: int | None = None, **kw) -> Backbone:
    return build_vit("vit_base_patch16_224", "vit_base_patch16_224", pretrained, image_size,
                     patch=16, **kw)
