"""Backbones: shapes, normalisation, weight files, and the offline errors (their Grad-CAM layers:
tests/test_explain_cams.py)."""

import pytest
import torch

from cxrlab.models import (WeightsMismatchError, WeightsUnavailableError, create_backbone,
                           list_backbones)

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 64
_MADE: dict = {}


def made(name):
    """Each backbone is built once per test session (the big ones take a second)."""
    if name not in _MADE:
        _MADE[name] = create_backbone(name, pretrained=False, image_size=SIZE)
    return _MADE[name]


def test_registry_lists_course_backbones():
    names = list_backbones()
    for n in ("resnet50", "efficientnet_b0", "vit_base_patch16_224", "tiny_cnn", "tiny_resnet",
              "tiny_vit", "xrv_densenet121"):
        assert n in names
    assert set(list_backbones(tiny=True)) == {"tiny_cnn", "tiny_resnet", "tiny_vit"}


def test_unknown_name_suggests_close_ones():
    with pytest.raises(KeyError, match="Did you mean 'resnet50'") as e:
        create_backbone("resnet5")
    assert "tiny_vit" in str(e.value)  # lists the known names


def test_tiny_backbones_have_no_published_weights():
    with pytest.raises(ValueError, match="pretrained=False"):
        create_backbone("tiny_cnn", pretrained=True)


@pytest.mark.parametrize("name", list_backbones())
def test_forward_and_normalize(name):
    bb = made(name)
    assert bb.name == name and bb.weights_id == "random-init-seed0" and not bb.pretrained
    x = torch.randint(0, 256, (2, 1, SIZE, SIZE), dtype=torch.uint8)
    x[:, :, 0, 0], x[:, :, 0, 1] = 0, 255
    z = bb.normalize(x)
    assert z.dtype == torch.float32 and z.shape == (2, bb.in_chans, bb.input_size, bb.input_size)
    mean, std = torch.tensor(bb.mean), torch.tensor(bb.std)
    assert torch.allclose(z[0, :, 0, 0], (0 - mean) / std, atol=1e-4)
    assert torch.allclose(z[0, :, 0, 1], (1 - mean) / std, atol=1e-3 * float(1 / std.min()))
    if bb.in_chans == 3:  # grayscale replicated, ImageNet statistics from timm's config
        assert torch.allclose(z[:, 0] * std[0] + mean[0], z[:, 2] * std[2] + mean[2], atol=1e-5)
        assert bb.mean == tuple(bb.model.pretrained_cfg["mean"])
    # float input in [0, 1] is the same as uint8 / 255
    assert torch.allclose(bb.normalize(x.float() / 255), z, atol=1e-5)

    emb = bb(z)
    assert emb.shape == (2, bb.num_features) and torch.isfinite(emb).all()
    assert (emb[0] - emb[1]).abs().max() > 0  # two different images, two embeddings


def test_seeded_random_init_is_reproducible():
    a, b = create_backbone("tiny_cnn", seed=0), create_backbone("tiny_cnn", seed=0)
    c = create_backbone("tiny_cnn", seed=1)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert c.weights_id == "random-init-seed1"
    state = torch.random.get_rng_state()
    create_backbone("tiny_cnn", seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


def test_vit_takes_a_fixed_size_cnn_any_size():
    big = torch.randint(0, 256, (1, 1, 96, 96), dtype=torch.uint8)
    assert made("tiny_vit").normalize(big).shape == (1, 1, SIZE, SIZE)  # ViT: resized
    assert made("tiny_cnn").normalize(big).shape == (1, 1, 96, 96)  # CNN: any size
    with pytest.raises(ValueError, match="divisible"):
        create_backbone("tiny_vit", image_size=60)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weight_file_round_trip(tmp_path, suffix):
    src = create_backbone("tiny_vit", seed=7)
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(src.model.state_dict(), str(path))
    else:  # a whole Backbone state dict with a classifier head, as a checkpoint dict
        sd = dict(src.state_dict())
        sd["model.head.weight"] = torch.zeros(3, 64)
        torch.save({"state_dict": sd, "epoch": 3}, path)
    bb = create_backbone("tiny_vit", weights=path)  # seed 0 init, then overwritten
    assert bb.fingerprint() == src.fingerprint() != create_backbone("tiny_vit").fingerprint()
    assert bb.weights_id.startswith("file:") and bb.pretrained
    x = torch.randint(0, 256, (2, 1, SIZE, SIZE), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(bb.embed(x), src.embed(x))
    # a folder holding <name>.pth works too
    torch.save(src.model.state_dict(), tmp_path / "tiny_vit.pth")
    assert create_backbone("tiny_vit", weights=tmp_path).fingerprint() == src.fingerprint()


def test_backbone_loads_from_a_whole_method_checkpoint(tmp_path):
    """An engine/SupCon checkpoint holds the backbone beside heads: the backbone part loads."""
    src = create_backbone("tiny_cnn", seed=4)
    sd = {f"module.backbone.{k}": v for k, v in src.state_dict().items()}
    sd["module.head.weight"] = torch.zeros(2, src.num_features)
    sd["module.projector.0.weight"] = torch.zeros(8, src.num_features)
    torch.save({"model": sd, "optimizer": {}, "epoch": 2}, tmp_path / "ckpt.pt")
    bb = create_backbone("tiny_cnn", weights=tmp_path / "ckpt.pt")
    assert bb.fingerprint() == src.fingerprint()


def test_vit_weights_from_another_image_size_are_resampled(tmp_path):
    src = create_backbone("tiny_vit", image_size=96)
    torch.save(src.model.state_dict(), tmp_path / "w96.pth")
    bb = create_backbone("tiny_vit", image_size=SIZE, weights=tmp_path / "w96.pth")
    assert bb.model.pos_embed.shape == (1, 1 + (SIZE // 8) ** 2, 64)


def test_wrong_or_missing_weight_file(tmp_path):
    torch.save(create_backbone("tiny_vit").model.state_dict(), tmp_path / "vit.pth")
    with pytest.raises(WeightsMismatchError, match="missing key") as e:
        create_backbone("tiny_cnn", weights=tmp_path / "vit.pth")
    assert "unexpected key" in str(e.value) and "strict=False" in str(e.value)
    with pytest.warns(UserWarning, match="does not fit"):
        create_backbone("tiny_cnn", weights=tmp_path / "vit.pth", strict=False)
    with pytest.raises(FileNotFoundError, match="pretrained=False"):
        create_backbone("tiny_cnn", weights=tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match=r"tiny_cnn\.safetensors"):
        create_backbone("tiny_cnn", weights=tmp_path)


def test_offline_pretrained_names_both_ways_out(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)  # read at import time: patch the constant
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))  # an empty cache: nothing to find
    with pytest.raises(WeightsUnavailableError) as e:
        create_backbone("efficientnet_b0", pretrained=True)
    msg = str(e.value)
    assert "weights=" in msg and "pretrained=False" in msg
    assert "timm/efficientnet_b0" in msg  # says which file to fetch
    assert isinstance(e.value, RuntimeError)


def test_offline_xrv_names_both_ways_out(tmp_path, monkeypatch):
    import torchxrayvision as xrv

    def no_network(url, path):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(xrv.utils, "get_cache_dir", lambda: str(tmp_path))
    monkeypatch.setattr(xrv.utils, "download", no_network)
    with pytest.raises(WeightsUnavailableError, match="pretrained=False") as e:
        create_backbone("xrv_densenet121", pretrained=True)
    assert "weights=" in str(e.value) and ".pt" in str(e.value)
    assert not list(tmp_path.iterdir())  # no half-written weight file left behind
