"""The one interface every training method implements (DomainBed-style).

An :class:`Algorithm` owns a backbone (see :mod:`cxrlab.models`) and whatever heads its
method needs. The engine (:func:`cxrlab.engine.fit`) knows nothing about BCE, SupCon or
masks: it draws batches, calls :meth:`Algorithm.training_step`, back-propagates ``"loss"``
and steps the optimiser. A new method is one subclass plus one line in the registry.

A *batch* is a dict::

    "image"        uint8 [B, 1, S, S]   (normalised on the device, by the backbone's own stats)
    "labels"       float [B, L]         1 / 0 / NaN = not labelled (ignored by the loss)
    "row"          long  [B]            the image's row in the cache
    "lung_mask"    uint8 [B, 1, S, S]   optional, 1 inside the lungs
    "lesion_mask"  int   [B, 1, S, S]   optional, bit k set where NIH14 label k has a lesion

Hyper-parameters are declared per class in :attr:`Algorithm.HPARAMS` as
``name -> (default, one-line meaning)``; asking for a name a method does not know is an
error, so a typo can never be silently ignored.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from cxrlab.errors import CxrlabError


#: the ways a study can score a method (see :attr:`Algorithm.scoring`)
SCORINGS = ("predict", "probe", "embed_probe")


class HParamError(CxrlabError, KeyError):
    """An algorithm was given a hyper-parameter it does not declare."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class Algorithm(nn.Module):
    """Base class: a backbone, heads, a loss, and how to predict.

    Subclasses set :attr:`name` and :attr:`HPARAMS`, and implement :meth:`training_step`
    (and :meth:`predict` if the method yields a classifier).

    Parameters
    ----------
    backbone:
        a :class:`cxrlab.models.Backbone`-like module: ``forward(x) -> [B, D]`` pooled
        features, ``normalize(uint8 [B,1,S,S]) -> float [B,C,S,S]`` and ``num_features``.
    num_labels:
        width L of the label vectors in the batches.
    hparams:
        overrides of :meth:`default_hparams`; unknown keys raise :class:`HParamError`.
    """

    #: registry name (set by :func:`~cxrlab.methods.registry.register_algorithm`)
    name: str = "algorithm"
    #: the method's name in tables (a study's "setting" column) and figure legends
    display_name: str = ""
    #: a few characters for crowded axis labels (default: :attr:`display_name`)
    short_name: str = ""
    #: how a study scores the method (one of :data:`SCORINGS`):
    #: ``"predict"`` - train with the engine, keep the epoch that is best on source validation,
    #: predict with the method's own head; ``"probe"`` - train with the engine, then freeze
    #: :attr:`encoder` and fit the linear probe on its embeddings; ``"embed_probe"`` - no engine
    #: run: embed with the frozen backbone and fit the linear probe (same model as training the
    #: method, computed once on cached embeddings)
    scoring: str = "predict"
    #: batch keys the method needs besides image and labels (``"lung_mask"``, ``"lesion_mask"``);
    #: a study loads them for its training set
    needs: tuple[str, ...] = ()
    #: hyper-parameter -> (default, meaning). Values must be JSON-serialisable: they go into
    #: the checkpoint's config hash.
    HPARAMS: dict[str, tuple[Any, str]] = {}
    #: False for pre-training methods that learn an encoder but no classifier
    can_predict: bool = True

    def __init__(self, backbone: nn.Module, num_labels: int, hparams: Mapping[str, Any] | None = None):
        super().__init__()
        for attr in ("normalize", "num_features"):
            if not hasattr(backbone, attr):
                raise TypeError(
                    f"{type(self).__name__} needs a backbone with .forward, .normalize and "
                    f".num_features (see cxrlab.models.create_backbone); "
                    f"{type(backbone).__name__} has no .{attr}")
        if int(num_labels) <= 0:
            raise ValueError(f"num_labels must be positive, got {num_labels}")
        self.backbone = backbone
        self.num_labels = int(num_labels)
        self.hparams = self.resolve_hparams(hparams)
        #: set by the engine on CUDA: feed the network channels_last tensors
        self.channels_last = False

    # ------------------------------------------------------------------ hyper-parameters
    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """The method's hyper-parameters and their defaults."""
        return {k: v[0] for k, v in cls.HPARAMS.items()}

    @classmethod
    def describe_hparams(cls) -> str:
        """One line per hyper-parameter: name, default and meaning (for notebooks and errors)."""
        if not cls.HPARAMS:
            return f"{cls.name}: no hyper-parameters"
        width = max(len(k) for k in cls.HPARAMS)
        return "\n".join(f"{k:<{width}}  default {v[0]!r:<8}  {v[1]}" for k, v in cls.HPARAMS.items())

    @classmethod
    def resolve_hparams(cls, hparams: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults updated with ``hparams``; unknown names raise :class:`HParamError`."""
        out = cls.default_hparams()
        for key, value in dict(hparams or {}).items():
            if key not in out:
                close = difflib.get_close_matches(key, list(out), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                known = ", ".join(sorted(out)) or "none"
                raise HParamError(f"{cls.name} has no hyper-parameter {key!r}.{hint} "
                                  f"Known: {known}.")
            out[key] = value
        return out

    # ------------------------------------------------------------------ parameters
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates (those with ``requires_grad``)."""
        return [p for p in self.parameters() if p.requires_grad]

    def param_groups(self, lr: float) -> list[dict]:
        """Optimiser parameter groups at base learning rate ``lr`` (one group by default;
        subclasses give the backbone a smaller rate, say)."""
        return [{"params": self.trainable_parameters(), "lr": lr}]

    def compile_targets(self) -> list[nn.Module]:
        """Sub-modules that ``fit(..., compile=True)`` compiles in place (state-dict keys stay
        the same, so checkpoints do not depend on whether compile was on)."""
        return [self.backbone]

    @property
    def encoder(self) -> nn.Module:
        """The network whose frozen embeddings a ``"probe"`` scoring evaluates (the backbone)."""
        return self.backbone

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ images
    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,1,S,S] -> the backbone's normalised float input on the model's device.

        A float tensor is taken as already normalised (e.g. the output of an augmentation
        that called ``backbone.normalize`` itself).
        """
        images = images.to(self.device, non_blocking=True)
        x = self.backbone.normalize(images) if images.dtype == torch.uint8 else images
        return self.memory_format(x)

    def memory_format(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in channels_last layout when the engine turned that on (CUDA), else unchanged."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features [B, D] of uint8 or normalised images."""
        return self.backbone(self.prepare_images(images))

    # ------------------------------------------------------------------ the contract
    def prepare_data(self, batches) -> None:
        """Called by :func:`cxrlab.engine.fit` once before training with the wrapped training
        data (:mod:`cxrlab.engine.batching`): check it and precompute what the steps need (the
        masking methods build their mask tables here). Default: nothing."""

    def training_step(self, batch: dict, step: int) -> dict:
        """One step's loss: return ``{"loss": scalar tensor, other_name: float or 0-d tensor}``.
        The other entries are averaged per epoch into the training history."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_step")

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [B, L] for uint8 [B,1,S,S] or normalised images."""
        raise NotImplementedError(f"{type(self).__name__} does not predict labels")

    def forward(self, batch: dict, step: int = 0) -> dict:
        """Same as :meth:`training_step`: lets ``DistributedDataParallel(algorithm)(batch,
        step)`` synchronise gradients of a method that has no ordinary ``forward``."""
        return self.training_step(batch, step)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_labels={self.num_labels}, hparams={self.hparams}"


def resolve_augment(value) -> str:
    """Normalise an ``augment`` hyper-parameter: a strength of :data:`cxrlab.augment.STRENGTHS`
    ("none", "light", "default", "strong"); ``True`` means "default", ``False`` "none"."""
    from cxrlab.augment import STRENGTHS

    if value is True:
        return "default"
    if value is False or value is None:
        return "none"
    if value not in STRENGTHS:
        raise ValueError(f"augment={value!r}; choose one of {list(STRENGTHS)} (or True/False)")
    return str(value)


def freeze(module: nn.Module) -> nn.Module:
    """Turn off gradients of every parameter of ``module`` (returns it)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def parameter_count(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)
