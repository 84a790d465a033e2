"""Tiny stand-ins for the ``ci`` profile: the same three families (plain CNN, ResNet, ViT) at a
size that trains in seconds on a laptop CPU. They take 1-channel input (no replication) and
have no published weights: random init, seeded by :func:`create_backbone`.

Their normalisation (mean 0.5, std 0.25 on [0, 1] grayscale) is a convention of this course,
not learnt statistics; it centres typical radiographs near zero.
"""
from __future__ import annotations

from torch import nn

from cxrlab.models.backbone import Backbone
from cxrlab.models.registry import register_backbone
from cxrlab.models.timm_backbones import vit_state_dict_filter, wrap_timm

TINY_MEAN, TINY_STD = (0.5,), (0.25,)


class TinyCNN(nn.Module):
    """Four stride-2 conv blocks (1 -> 16 -> 32 -> 64 -> 128 channels) and global average
    pooling: a 64-px image becomes a 4x4x128 map, then a 128-d embedding."""

    def __init__(self, in_chans: int = 1, widths=(16, 32, 64, 128)):
        super().__init__()
        blocks, c = [], in_chans
        for w in widths:
            blocks.append(nn.Sequential(nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False),
                                        nn.BatchNorm2d(w), nn.ReLU(inplace=True)))
            c = w
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c
        self.in_chans = in_chans

    def forward(self, x):
        return self.pool(self.features(x)).flatten(1)


@register_backbone("tiny_cnn", description="4-layer CNN (0.1M params, 128-d), CI stand-in",
                   has_pretrained=False, tiny=True, display_name="tiny CNN",
                   stands_in_for="efficientnet_b0", table_rank=11)
def tiny_cnn(pretrained: bool = False, image_size: int | None = None, **kw) -> Backbone:
    m = TinyCNN(**kw)
    return Backbone(m, name="tiny_cnn", num_features=m.num_features, in_chans=m.in_chans,
                    mean=TINY_MEAN * m.in_chans, std=TINY_STD * m.in_chans,
                    input_size=image_size or 64)


@register_backbone("tiny_resnet", description="ResNet with one BasicBlock per stage, widths "
                   "16-128 (0.7M params, 128-d), timm; CI stand-in for ResNet-50",
                   has_pretrained=False, tiny=True, display_name="tiny ResNet",
                   stands_in_for="resnet50", table_rank=12)
def tiny_resnet(pretrained: bool = False, image_size: int | None = None, **kw) -> Backbone:
    from timm.models.resnet import BasicBlock, ResNet

    kw.setdefault("in_chans", 1)
    # output_stride 16 keeps a 4x4 map at 64 px for Grad-CAM (cxrlab.explain.layers); zero_init_last=False gives
    # random-init residual branches a non-zero output (richer random features)
    m = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=0, channels=(16, 32, 64, 128),
               stem_width=16, output_stride=16, zero_init_last=False, **kw)
    m.pretrained_cfg = {"architecture": "tiny_resnet", "mean": TINY_MEAN * kw["in_chans"],
                        "std": TINY_STD * kw["in_chans"]}
    return wrap_timm(m, "tiny_resnet", False, input_size=image_size or 64)


@register_backbone("tiny_vit", description="ViT with 8-px patches, width 64, depth 2, 2 heads "
                   "(0.1M params, 64-d), timm; CI stand-in for ViT-B/16",
                   has_pretrained=False, tiny=True, display_name="tiny ViT",
                   stands_in_for="vit_base_patch16_224", table_rank=10)
def tiny_vit(pretrained: bool = False, image_size: int | None = None, **kw) -> Backbone:
    from timm.models.vision_transformer import VisionTransformer

    size = image_size or 64
    if size % 8:
        raise ValueError(f"tiny_vit needs an image size divisible by its patch size 8, got {size}")
    kw.setdefault("in_chans", 1)
    m = VisionTransformer(img_size=size, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                          num_classes=0, **kw)
    m.pretrained_cfg = {"architecture": "tiny_vit", "mean": TINY_MEAN * kw["in_chans"],
                        "std": TINY_STD * kw["in_chans"]}
    return wrap_timm(m, "tiny_vit", False, input_size=size,
                     fixed_input_size=not getattr(m, "dynamic_img_size", False),
                     state_dict_filter=vit_state_dict_filter)
