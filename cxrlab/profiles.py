"""Profiles: one code path, three sizes of the same course.

``CXRLAB_PROFILE`` picks the profile (``ci`` by default, so that a fresh checkout runs
quickly everywhere); any field can be overridden per run, either with keyword arguments to
:func:`get_profile` or with ``CXRLAB_<FIELD>`` environment variables (e.g.
``CXRLAB_IMAGE_SIZE=128``).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cxrlab.errors import RunError, UnknownNameError, UsageError

PROFILE_ENV = "CXRLAB_PROFILE"
DEFAULT_PROFILE = "ci"


@dataclass(frozen=True)
class Profile:
    """Every knob a notebook or a study reads. Frozen: use :meth:`replace` to change a field."""

    name: str
    #: where data comes from: "synthetic" or "real" (real caches, falling back to synthetic
    #: with a warning when none is prepared)
    data: str
    image_size: int
    #: images per synthetic hospital
    n_per_hospital: int
    #: backbones studied, by cxrlab model name
    backbones: tuple[str, ...]
    pretrained: bool
    epochs: int
    finetune_epochs: int
    batch_size: int
    lr: float
    seeds: tuple[int, ...]
    #: "auto" picks cuda > mps > cpu
    device: str
    #: "fp32" or "bf16" (autocast; only used on GPU)
    precision: str
    num_workers: int
    bootstrap: int
    data_dir: str
    checkpoint_dir: str
    results_dir: str
    extra: dict = field(default_factory=dict)

    def replace(self, **changes: Any) -> "Profile":
        return _apply_overrides(self, changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _home() -> Path:
    return Path(os.environ.get("CXRLAB_HOME", Path.cwd() / ".cxrlab"))


def _default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def _profiles() -> dict[str, Profile]:
    home = _home()
    common = dict(
        data_dir=str(home / "data"), checkpoint_dir=str(home / "checkpoints"),
        results_dir=str(home / "results"), device="auto",
    )
    return {
        "ci": Profile(
            name="ci", data="synthetic", image_size=64, n_per_hospital=1000,
            backbones=("tiny_cnn", "tiny_resnet", "tiny_vit"), pretrained=True,
            epochs=3, finetune_epochs=2, batch_size=64, lr=1e-3, seeds=(0,),
            precision="fp32", num_workers=0, bootstrap=200, **common,
        ),
        "cpu": Profile(
            name="cpu", data="synthetic", image_size=96, n_per_hospital=2000,
            backbones=("tiny_cnn", "tiny_resnet", "tiny_vit"), pretrained=True,
            epochs=8, finetune_epochs=5, batch_size=128, lr=1e-3, seeds=(0, 1, 2),
            precision="fp32", num_workers=_default_workers(), bootstrap=1000, **common,
        ),
        "gpu": Profile(
            name="gpu", data="real", image_size=224, n_per_hospital=20000,
            backbones=("resnet50", "efficientnet_b0", "vit_base_patch16_224"), pretrained=True,
            epochs=10, finetune_epochs=10, batch_size=128, lr=1e-3, seeds=(0, 1, 2),
            precision="bf16", num_workers=_default_workers(), bootstrap=1000, **common,
        ),
    }


PROFILE_NAMES = ("ci", "cpu", "gpu")


def _number(name: str, value: Any, kind: type) -> Any:
    """``value`` as an int or float; a bool, or text that is no number, names the field."""
    if isinstance(value, bool):
        raise UsageError(f"profile field {name!r} wants a number, got {value!r}")
    try:
        if kind is int and isinstance(value, float):
            if not value.is_integer():
                raise ValueError
            return int(value)
        return kind(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise UsageError(f"profile field {name!r} wants {what}, got {value!r}") from None


def _coerce(name: str, value: Any, current: Any) -> Any:
    """Turn an override (often a string from the environment) into the field's type."""
    if isinstance(current, bool):
        if isinstance(value, str):
            v = value.strip().lower()
            if v in ("1", "true", "yes", "on"):
                return True
            if v in ("0", "false", "no", "off"):
                return False
            raise UsageError(f"profile field {name!r} wants true/false, got {value!r}")
        return bool(value)
    if isinstance(current, tuple):
        if isinstance(value, str):
            items = [x.strip() for x in value.split(",") if x.strip()]
        else:
            items = list(value)
        if current and isinstance(current[0], int):
            return tuple(_number(name, x, int) for x in items)
        return tuple(str(x) for x in items)
    if isinstance(current, int):
        return _number(name, value, int)
    if isinstance(current, float):
        return _number(name, value, float)
    if isinstance(current, dict):
        return dict(value)
    return str(value)


def _apply_overrides(profile: Profile, overrides: dict) -> Profile:
    names = {f.name for f in fields(Profile)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise UnknownNameError(f"unknown profile field(s) {unknown}; fields are {sorted(names)}")
    changes = {k: _coerce(k, v, getattr(profile, k)) for k, v in overrides.items()}
    out = dataclasses.replace(profile, **changes)
    _validate(out)
    return out


def _validate(p: Profile) -> None:
    if p.image_size < 32:
        raise UsageError(f"image_size must be at least 32 px, got {p.image_size}")
    if p.data not in ("synthetic", "real"):
        raise UsageError(f"data must be 'synthetic' or 'real', got {p.data!r}")
    if p.precision not in ("fp32", "bf16"):
        raise UsageError(f"precision must be 'fp32' or 'bf16', got {p.precision!r}")
    for k in ("n_per_hospital", "epochs", "finetune_epochs", "batch_size"):
        if getattr(p, k) <= 0:
            raise UsageError(f"{k} must be positive, got {getattr(p, k)}")
    if not (math.isfinite(p.lr) and p.lr > 0):
        raise UsageError(f"lr must be a finite number > 0, got {p.lr}")
    if p.bootstrap < 0 or p.bootstrap == 1:
        raise UsageError(f"bootstrap must be 0 (no intervals) or >= 2, got {p.bootstrap}")
    if p.num_workers < 0:
        raise UsageError(f"num_workers must be >= 0, got {p.num_workers}")
    if not p.seeds or any(s < 0 for s in p.seeds):
        raise UsageError(f"seeds must be one or more non-negative integers, got {p.seeds}")
    if not p.backbones:
        raise UsageError("backbones is empty; name at least one backbone")


def get_profile(name: str | None = None, **overrides: Any) -> Profile:
    """The active profile: ``name``, else ``$CXRLAB_PROFILE``, else ``ci``; then
    ``CXRLAB_<FIELD>`` environment overrides; then keyword ``overrides``."""
    name = (name or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE).strip().lower()
    profiles = _profiles()
    if name not in profiles:
        raise UnknownNameError(f"unknown profile {name!r}; choose one of {list(profiles)} "
                       f"(set {PROFILE_ENV} or pass --profile)")
    base = profiles[name]
    env = {}
    for f in fields(Profile):
        key = f"CXRLAB_{f.name.upper()}"
        if f.name not in ("name", "extra") and key in os.environ:
            try:  # checked here so that the message names the variable
                env[f.name] = _coerce(f.name, os.environ[key], getattr(base, f.name))
                _validate(dataclasses.replace(base, **{f.name: env[f.name]}))
            except UsageError as e:
                raise UsageError(f"environment variable {key}={os.environ[key]!r}: {e}; fix or "
                                 f"unset {key}") from None
    return _apply_overrides(base, {**env, **overrides})


def resolve_device(device: str = "auto") -> str:
    """"auto" -> the best available device ("cuda", "mps" or "cpu"); anything else is checked."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"device {device!r} requested but CUDA is not available; use device='cpu' "
                           "or run on a GPU machine")
    return device


#: the fields a learner compares across profiles (notebook 00's table)
TABLE_FIELDS = ("data", "image_size", "n_per_hospital", "backbones", "pretrained", "epochs",
                "finetune_epochs", "batch_size", "seeds", "bootstrap", "precision")


def profile_table(names=PROFILE_NAMES, fields_: tuple[str, ...] = TABLE_FIELDS):
    """The profiles side by side, read from :func:`get_profile` (so any ``CXRLAB_<FIELD>``
    override in the environment shows): a DataFrame with one row per field, one column per
    profile. Tuples print as comma-separated text."""
    import pandas as pd

    unknown = sorted(set(fields_) - {f.name for f in fields(Profile)})
    if unknown:
        raise UnknownNameError(f"unknown profile field(s) {unknown}; fields are "
                               f"{sorted(f.name for f in fields(Profile))}")

    def show(v):
        return ", ".join(map(str, v)) if isinstance(v, tuple) else v

    return pd.DataFrame({n: {f: show(getattr(get_profile(n), f)) for f in fields_} for n in names})
