"""A small timm-style registry: backbones are created by name.

>>> from cxrlab.models import create_backbone, list_backbones
>>> list_backbones()
['efficientnet_b0', 'resnet50', 'tiny_cnn', 'tiny_resnet', 'tiny_vit', 'vit_base_patch16_224', ...]
>>> bb = create_backbone("tiny_resnet", image_size=64)           # random init, seeded
>>> bb = create_backbone("resnet50", pretrained=True)              # ImageNet weights (internet)
>>> bb = create_backbone("resnet50", weights="resnet50.safetensors")  # the same, from a file

A *factory* registered with :func:`register_backbone` builds the network (random init, or its
published weights when ``pretrained=True``) and returns a :class:`~cxrlab.models.backbone.Backbone`.
Loading a local weight file, seeding the random initialisation and the error messages are
handled here, once, for every backbone.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

import torch

from cxrlab.errors import UnknownNameError, UsageError
from cxrlab.models.backbone import Backbone


@dataclass(frozen=True)
class BackboneSpec:
    """What the registry knows about one backbone name."""

    name: str
    factory: Callable[..., Backbone]
    #: one line for tables and error messages
    description: str = ""
    #: whether ``pretrained=True`` can fetch published weights for it
    has_pretrained: bool = True
    #: a tiny stand-in for the ``ci`` profile (fast on CPU, random init)
    tiny: bool = False
    #: what the published weights were trained on ("ImageNet", "CXR", ...)
    weights_source: str = ""
    #: the name in tables and legends ("ResNet-50")
    display_name: str = ""
    #: the real backbone a tiny stand-in plays in the ``ci`` profile (a registered name)
    stands_in_for: str | None = None
    #: rows of a study's tables are sorted by it (seed 000's order: ViT-B/16, EfficientNet-B0,
    #: ResNet-50; each stand-in right after the real ones, in the same order)
    table_rank: int = 100


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, *, description: str = "", has_pretrained: bool = True,
                      tiny: bool = False, weights_source: str = "ImageNet",
                      display_name: str = "", stands_in_for: str | None = None,
                      table_rank: int = 100):
    """Decorator: register ``factory(pretrained: bool, image_size: int | None, **kw) -> Backbone``
    under ``name``. Registering a name twice is an error (it would silently shadow the first)."""

    def deco(factory):
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(f"backbone name {name!r} is already registered "
                             f"(by {_REGISTRY[name].factory.__module__})")
        _REGISTRY[name] = BackboneSpec(name=name, factory=factory, description=description,
                                       has_pretrained=has_pretrained, tiny=tiny,
                                       weights_source=weights_source if has_pretrained else "",
                                       display_name=display_name or name,
                                       stands_in_for=stands_in_for, table_rank=int(table_rank))
        return factory

    return deco


def _ensure_builtin() -> None:
    # importing the modules runs their @register_backbone decorators
    from cxrlab.models import timm_backbones, tiny, xrv  # noqa: F401


def get_spec(name: str) -> BackboneSpec:
    """The registry entry of ``name``; unknown names raise a KeyError that lists the known ones."""
    _ensure_builtin()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(f"unknown backbone {name!r}.{hint} Known backbones: {list_backbones()}")
    return _REGISTRY[name]


def list_backbones(tiny: bool | None = None) -> list[str]:
    """Registered names, sorted. ``tiny=True`` only the CI stand-ins, ``False`` only the real ones."""
    _ensure_builtin()
    return sorted(n for n, s in _REGISTRY.items() if tiny is None or s.tiny == tiny)


def display_name(name: str) -> str:
    """The backbone's name in tables and legends; an unregistered name is returned as is (a
    table may hold results of a backbone registered in another session)."""
    _ensure_builtin()
    spec = _REGISTRY.get(name)
    return spec.display_name if spec else name


def stands_in_for(name: str) -> str | None:
    """The display name of the real backbone a tiny stand-in plays (``None`` for real ones)."""
    _ensure_builtin()
    spec = _REGISTRY.get(name)
    return display_name(spec.stands_in_for) if spec and spec.stands_in_for else None


def table_order(names) -> list[str]:
    """``names`` sorted as a study's tables list backbones (see :attr:`BackboneSpec.table_rank`)."""
    _ensure_builtin()
    return sorted(names, key=lambda n: (_REGISTRY[n].table_rank if n in _REGISTRY else 1000, n))


def describe_backbones() -> list[dict]:
    """One dict per registered backbone (name, description, tiny, published weights): a table
    for notebooks (``pd.DataFrame(describe_backbones())``)."""
    _ensure_builtin()
    return [{"name": s.name, "display_name": s.display_name, "description": s.description,
             "tiny": s.tiny, "stands_in_for": stands_in_for(s.name) or "",
             "published_weights": s.weights_source or "none"}
            for s in sorted(_REGISTRY.values(), key=lambda s: s.name)]


def create_backbone(name: str, pretrained: bool = False, weights=None,
                    image_size: int | None = None, seed: int = 0, strict: bool = True,
                    **kwargs) -> Backbone:
    """Create a backbone by name, in eval mode (call ``.train()`` to fine-tune it).

    Parameters
    ----------
    name : a registered name (:func:`list_backbones`).
    pretrained : fetch the published weights (ImageNet for the timm models, CXR for
        ``xrv_densenet121``). Needs internet or a warm hub cache; when the weights cannot be had,
        :class:`~cxrlab.models.weights.WeightsUnavailableError` says how to get them.
    weights : a local weight file (``.safetensors``, ``.pth``/``.pt``/``.bin`` state dict) or
        a folder holding ``<name>.safetensors`` / ``<name>.pth``. Takes precedence over
        ``pretrained`` (no download is tried). Classifier keys (``fc``/``head``/``classifier``)
        are dropped; any other missing or unexpected key is an error (``strict=False``: a warning).
    image_size : the side of the square input images. CNNs take any size; ViTs are built for
        it (position embeddings are resampled from the pretrained ones). ``None``: the model's
        native size.
    seed : seeds the random initialisation (without touching the global RNG), so that two
        random-init backbones with the same seed are identical; recorded in ``weights_id``.
    **kwargs : passed to the factory (e.g. ``drop_path_rate=0.1`` for timm models).
    """
    spec = get_spec(name)
    if weights is None and pretrained and not spec.has_pretrained:
        raise UsageError(f"backbone {name!r} has no published weights; use pretrained=False "
                         "(random init) or weights='path/to/your_checkpoint.pth'")
    if image_size is not None and int(image_size) < 16:
        raise UsageError(f"image_size must be at least 16 px, got {image_size}")
    image_size = None if image_size is None else int(image_size)
    fetch = bool(pretrained) and weights is None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        backbone = spec.factory(pretrained=fetch, image_size=image_size, **kwargs)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"factory of {name!r} returned {type(backbone).__name__}, not a Backbone")
    backbone.name = name
    if not fetch:
        backbone.weights_id = f"random-init-seed{int(seed)}"
    if weights is not None:
        from cxrlab.models.weights import load_weights_file

        load_weights_file(backbone, weights, strict=strict)
    return backbone.eval()
