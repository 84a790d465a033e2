"""Pre-trained weights of the tiny stand-in backbones, shipped with the package.

``create_backbone("tiny_resnet", pretrained=True)`` loads ``standins/tiny_resnet.safetensors``:
the ``ci`` / ``cpu`` analogue of ImageNet weights for the ``gpu`` profile's ResNet-50. How they
were made (supervised multi-label pre-training on synthetic *pre-training hospitals* that share
no hospital, seed or image with the course's four) is in ``scripts/pretrain_standins.py``; the
command, the generator version, the hospitals and each file's SHA-256 are in
``standins/manifest.json``, checked here before a file is used.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from cxrlab.models.weights import (WeightsUnavailableError, file_sha256, load_state_dict_into,
                                   read_state_dict)

STANDIN_DIR = Path(__file__).resolve().parent / "standins"
#: what the stand-ins were pre-trained on (the backbone table's "published_weights" column)
STANDIN_SOURCE = "synthetic CXR, 12 pre-training hospitals (cxrlab)"


@functools.lru_cache(maxsize=None)
def manifest() -> dict:
    """The manifest written by ``scripts/pretrain_standins.py``."""
    path = STANDIN_DIR / "manifest.json"
    if not path.exists():
        raise WeightsUnavailableError(
            f"the stand-in weights' manifest {path} is missing (a broken install?). Recreate "
            "the weights with `python scripts/pretrain_standins.py` from the repository, or use "
            "pretrained=False (random init).")
    return json.loads(path.read_text())


@functools.lru_cache(maxsize=None)
def standin_path(name: str) -> Path:
    """The checked weight file of stand-in ``name``."""
    entry = manifest()["models"].get(name)
    if entry is None:
        raise WeightsUnavailableError(
            f"no pre-trained stand-in weights for {name!r} (have: {sorted(manifest()['models'])}); "
            f"use pretrained=False or add it with `python scripts/pretrain_standins.py "
            f"--models {name}`")
    path = STANDIN_DIR / entry["file"]
    if not path.exists():
        raise WeightsUnavailableError(f"{path} is missing; recreate it with `python "
                                      f"scripts/pretrain_standins.py --models {name}` or use "
                                      "pretrained=False")
    digest = file_sha256(path)
    if digest != entry["sha256"]:
        raise WeightsUnavailableError(
            f"{path} does not match its manifest (sha256 {digest[:12]} vs "
            f"{entry['sha256'][:12]}): the file was changed or truncated. Recreate it with "
            f"`python scripts/pretrain_standins.py --models {name}`.")
    return path


def load_standin(backbone) -> None:
    """Load the shipped pre-trained weights into a freshly built stand-in ``backbone``; sets
    ``weights_id = "standin:<sha256[:12]>"``. The ViT's position embeddings are resampled when
    the image size differs from the pre-training size (64 px)."""
    path = standin_path(backbone.name)
    load_state_dict_into(backbone, read_state_dict(path), strict=True, source=str(path))
    backbone.weights_id = f"standin:{manifest()['models'][backbone.name]['sha256'][:12]}"
    backbone.weights_path = str(path)
