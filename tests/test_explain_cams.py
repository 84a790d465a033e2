"""cam_maps: equals Grad-CAM written out by hand, batches like single calls, finds the region a
model depends on (CNN and ViT), works on frozen backbones, and rejects bad input clearly."""

import numpy as np
import pytest
import torch
from torch import nn

from cxrlab.explain import (CamInputError, NoTargetLayerError, UnknownLabelError, cam_maps,
                            energy_share, target_layers_for, vit_reshape_transform)
from cxrlab.methods.registry import create_algorithm
from cxrlab.models import create_backbone, list_backbones

pytestmark = pytest.mark.usefixtures("one_thread")
S = 32
TOL = 1e-3


class OneConv(nn.Module):
    """x -> conv (the CAM layer, stride 1: no resize) -> ReLU -> mean pool -> linear."""

    def __init__(self, labels=3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.head = nn.Linear(6, labels)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def gradcam_by_hand(model, x, targets):
    """weights = spatial mean of d logit / d activation; ReLU of the weighted sum; per-image
    min-max to [0, 1]."""
    out = []
    for i, t in enumerate(targets):
        a = model.conv(x[i:i + 1])
        logit = model.head(torch.relu(a).mean((2, 3)))[0, t]
        g, = torch.autograd.grad(logit, a)
        w = g.mean((2, 3), keepdim=True)
        cam = torch.relu((w * a).sum(1))[0].detach()
        cam = cam - cam.min()
        out.append((cam / cam.max()).numpy())
    return np.stack(out)


def images(n, seed=0, size=S):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_one_conv_equals_gradcam_by_hand_and_batch_equals_loop():
    model, x, targets = OneConv(), images(5), [0, 2, 1, 1, 0]
    got = cam_maps(model, x, targets, target_layers=[model.conv])
    want = gradcam_by_hand(model, x, targets)
    assert got.shape == (5, S, S) and got.dtype == np.float32
    # TOL: pytorch_grad_cam divides by (max + 1e-7), twice; these maps peak near 1e-3 before
    # scaling, so the results agree to ~1e-4, while a wrong weight or ReLU is off by > 0.1
    assert np.abs(got - want).max() < TOL
    # each image's own target matters: label 0 and label 2 give different maps
    assert np.abs(got[0] - cam_maps(model, x[:1], 2, target_layers=[model.conv])[0]).max() > 0.05
    loop = np.concatenate([cam_maps(model, x[i:i + 1], t, target_layers=[model.conv])
                           for i, t in enumerate(targets)])
    assert np.abs(got - loop).max() < 1e-5
    # chunked passes give the same maps
    assert np.abs(cam_maps(model, x, targets, target_layers=[model.conv], batch_size=2) - got).max() < 1e-5
    # a single int is the same label for every image
    same = cam_maps(model, x, 1, target_layers=[model.conv])
    assert np.abs(same - gradcam_by_hand(model, x, [1] * 5)).max() < TOL


def test_frozen_model_still_gets_maps():
    model, x = OneConv(), images(3)
    want = cam_maps(model, x, [0, 1, 2], target_layers=[model.conv])
    for p in model.parameters():
        p.requires_grad_(False)
    got = cam_maps(model, x, [0, 1, 2], target_layers=[model.conv])
    assert np.abs(got - want).max() < 1e-5 and got.max() > 0.99


def region_mask(size):
    """A non-square, off-centre region: a transposed or shifted map would miss it."""
    m = torch.zeros(size, size)
    m[8:24, 40:64] = 1  # rows 8-23, columns 40-63 at 64 px
    return m


def grown(mask, px=8):
    """The region grown by one cell of an 8x8 CAM grid: the map is computed on 8-px cells
    (a cell on the border sees both sides) and upsampled bilinearly."""
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask.numpy() > 0, structure=np.ones((3, 3), bool), iterations=px)


def assert_energy_in_region(cams, mask):
    inside = energy_share(cams, np.broadcast_to(grown(mask), cams.shape))
    assert inside.min() > 0.95, inside
    # the transposed region (a swapped x/y anywhere in the pipeline) holds almost nothing
    flipped = energy_share(cams, np.broadcast_to(mask.numpy().T > 0, cams.shape))
    assert flipped.max() < 0.05, flipped


class DependsOnRegion(nn.Module):
    """Logits of ``net`` on the image multiplied by a fixed region mask: nothing outside the
    region can change the output. ``net``'s activations are exactly zero on zero input."""

    def __init__(self, backbone, mask, labels=2):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mask", mask)
        self.head = nn.Linear(backbone.num_features, labels)
        with torch.no_grad():  # positive weights: the evidence for each label is positive
            self.head.weight.copy_(torch.rand(self.head.weight.shape,
                                              generator=torch.Generator().manual_seed(1)) + 0.1)
        self.num_labels = labels

    def predict(self, x):
        return self.head(self.backbone(x * self.mask))


def test_cnn_energy_lies_in_the_region_the_model_depends_on():
    from cxrlab.models.backbone import Backbone

    class BiasFreeCNN(nn.Module):  # zero in -> zero out; stride 2 three times: 8x8 map at 64 px
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.features = nn.Sequential(*[nn.Sequential(nn.Conv2d(c, d, 3, 2, 1, bias=False), nn.ReLU())
                                            for c, d in ((1, 8), (8, 16), (16, 32))])
            self.num_features = 32

        def forward(self, x):
            return self.features(x).mean((2, 3))

    bb = Backbone(BiasFreeCNN(), name="tiny_cnn", num_features=32, in_chans=1, mean=(0.0,),
                  std=(1.0,), input_size=64)
    mask = region_mask(64)
    model = DependsOnRegion(bb, mask)
    x = images(6, seed=3, size=64) + 0.1
    cams = cam_maps(model, x, [0, 1, 0, 1, 0, 1])
    assert_energy_in_region(cams, mask)


def test_vit_energy_lies_in_the_region_the_model_depends_on():
    from timm.models.vision_transformer import VisionTransformer

    from cxrlab.models.timm_backbones import wrap_timm

    torch.manual_seed(0)
    # one block: the CAM layer (blocks[-1].norm1) sees the patch embeddings themselves; with
    # no patch bias and no position embedding, patches of a zero region embed to exactly zero
    vit = VisionTransformer(img_size=64, patch_size=8, in_chans=1, embed_dim=32, depth=1,
                            num_heads=2, num_classes=0, pos_embed="none", class_token=True)
    nn.init.zeros_(vit.patch_embed.proj.bias)
    vit.pretrained_cfg = {"mean": (0.0,), "std": (1.0,)}
    bb = wrap_timm(vit, "tiny_vit", False, input_size=64, fixed_input_size=True)
    mask = region_mask(64)
    model = DependsOnRegion(bb, mask)
    x = images(6, seed=4, size=64) + 0.1
    cams = cam_maps(model, x, [0, 1, 1, 0, 0, 1])
    assert_energy_in_region(cams, mask)


def test_vit_reshape_transform_drops_the_class_token_and_keeps_the_grid():
    B, side, C = 2, 4, 5
    tokens = torch.randn(B, 1 + side * side, C)
    maps = vit_reshape_transform(1)(tokens)
    assert maps.shape == (B, C, side, side)
    for r, c in [(0, 0), (0, 3), (2, 1), (3, 3)]:  # patch (r, c) is token 1 + r * side + c
        assert torch.equal(maps[:, :, r, c], tokens[:, 1 + r * side + c])
    with pytest.raises(ValueError, match="square"):
        vit_reshape_transform(1)(torch.randn(1, 1 + 15, C))


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_resnet", "tiny_vit"])
def test_algorithms_frozen_or_not_get_label_specific_maps_and_keep_their_mode(name):
    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 1, 64, 64), dtype=torch.uint8)
    for method in ("bce_probe", "bce_finetune"):
        alg = create_algorithm(method, create_backbone(name, image_size=64), 3)
        alg.train()
        maps = cam_maps(alg, x, [0, 1, 2, 0])
        assert maps.shape == (4, 64, 64) and maps.min() >= 0 and maps.max() <= 1
        peak = maps.reshape(4, -1).max(1)  # min-max scaled: 1, or 0 where ReLU left nothing
        assert ((peak > 0.99) | (peak == 0)).all() and (peak > 0.99).sum() >= 2, peak
        assert alg.training  # the library's eval() was undone
        assert np.abs(cam_maps(alg, x, 1) - maps).max() > 1e-3  # each image's own label
        hires = cam_maps(alg, x, [0, 1, 2, 0], method="hirescam")
        if name == "tiny_vit":  # token gradients differ from patch to patch
            assert np.abs(hires - maps).max() > 1e-3
        else:  # global average pooling after the layer: the gradient is the same everywhere,
            # so HiResCAM (gradient x activation) and Grad-CAM (mean gradient x activation) agree
            assert np.abs(hires - maps).max() < 1e-4


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_has_a_cam_layer_that_receives_gradient(name):
    bb = create_backbone(name, image_size=64)
    found = target_layers_for(bb)
    acts = {}
    h = found.layers[0].register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    z = bb.normalize(torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)).requires_grad_(True)
    try:
        emb = bb(z)
    finally:
        h.remove()
    a = acts["a"] if found.reshape_transform is None else found.reshape_transform(acts["a"])
    assert a.ndim == 4 and a.shape[0] == 2 and min(a.shape[2:]) >= 2
    w = torch.randn(bb.num_features, generator=torch.Generator().manual_seed(0))
    grad, = torch.autograd.grad((emb * w).sum(), acts["a"])  # (a ViT's LayerNorm output sums to 0)
    assert grad.abs().sum() > 0


def test_bad_inputs_say_what_to_do():
    alg = create_algorithm("bce_finetune", create_backbone("tiny_cnn", image_size=32), 3)
    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    with pytest.raises(UnknownLabelError, match="has 3 labels"):
        cam_maps(alg, x, 5)
    with pytest.raises(UnknownLabelError, match="-1 does not exist"):
        cam_maps(alg, x, [0, -1])
    model = OneConv(labels=2)  # no num_labels attribute: checked on the output
    with pytest.raises(UnknownLabelError, match="2 outputs"):
        cam_maps(model, images(2), [0, 2], target_layers=[model.conv])
    with pytest.raises(NoTargetLayerError, match="target_layers="):
        cam_maps(model, images(2), 0)
    with pytest.raises(CamInputError, match="3 targets for 2 images"):
        cam_maps(alg, x, [0, 1, 2])
    with pytest.raises(CamInputError, match="unknown CAM method"):
        cam_maps(alg, x, 0, method="gradcamm")
    with pytest.raises(CamInputError, match="label_names"):
        cam_maps(alg, x, "Pneumothorax")
    assert cam_maps(alg, x, "b", label_names=["a", "b", "c"]).shape == (2, 32, 32)
    from cxrlab.errors import CxrlabError
    assert issubclass(NoTargetLayerError, CxrlabError) and issubclass(UnknownLabelError, ValueError)


def test_requires_grad_flags_are_restored():
    model = OneConv()
    model.head.weight.requires_grad_(False)
    before = [p.requires_grad for p in model.parameters()]
    cam_maps(model, images(2), 0, target_layers=[model.conv])
    assert [p.requires_grad for p in model.parameters()] == before


def test_bench_reports_batched_faster_than_loop():
    from cxrlab.bench import GROUPS
    from cxrlab.bench.cam import run

    assert GROUPS["cam"] == "cxrlab.bench.cam"
    res = run(quick=True)
    assert res["cam_batched_vs_loop_max_abs_diff"] < 1e-4  # the same maps either way
    assert res["cam_batched_vs_loop_ratio"] > 1.5  # loose: shared CI cores (>= 3 in `cxrlab bench`)
