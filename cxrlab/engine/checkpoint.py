"""Per-epoch training checkpoints: written atomically, resumed exactly, never mixed up.

A checkpoint holds everything the next epoch depends on: the weights, the optimiser's moments,
the learning-rate schedule, the step counters, the training history and the random number
generators of every process (torch, CUDA, NumPy, Python). The batch order needs no state: it
is a function of ``(seed, epoch)`` (:mod:`cxrlab.engine.batching`). So a run killed at any moment
and started again continues as if nothing had happened - bit for bit on the same machine.

It also holds the run's *configuration* (method, hyper-parameters, learning rate, data
fingerprint, ...) and its hash. A ``last.pt`` whose configuration differs from the run being
started is refused with the list of differences, rather than silently continuing someone
else's run with new settings.

Files are written with :func:`cxrlab.io.atomic_torch_save`: a crash while saving leaves the
previous ``last.pt`` intact.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrlab.errors import CxrlabError, MissingInputError
from cxrlab.io import atomic_torch_save

FORMAT = "cxrlab-train-checkpoint"
VERSION = 1
LAST = "last.pt"
BEST = "best.pt"


class CheckpointError(CxrlabError, RuntimeError):
    """A checkpoint file is unreadable or not a cxrlab training checkpoint."""


class CheckpointMismatchError(CheckpointError):
    """``last.pt`` in the output folder belongs to a run with another configuration."""


def config_hash(config: dict) -> str:
    """Stable short hash of a JSON-serialisable configuration."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def epoch_path(out_dir, epoch: int) -> Path:
    return Path(out_dir) / f"epoch_{epoch:03d}.pt"


# --------------------------------------------------------------------------- RNG states
def capture_rng() -> dict:
    """This process's random number generator states (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- save / load
def save_checkpoint(path, state: dict) -> Path:
    """Atomically write ``state`` (plus format/version tags) to ``path``."""
    return atomic_torch_save({"format": FORMAT, "version": VERSION, **state}, path)


def atomic_copy(src, dst) -> Path:
    """Copy a file so that ``dst`` is either the old file or the complete new one."""
    import shutil

    from cxrlab.io import atomic_path

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def load_checkpoint(path, map_location: Any = "cpu") -> dict:
    """Read a training checkpoint (tensors only; no pickled code is executed)."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - say which file and what to do
        raise CheckpointError(f"cannot read checkpoint {path} ({type(e).__name__}: {e}); delete "
                              "it to start the run again from scratch") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cxrlab training checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt.get('version')}, this cxrlab "
                              f"reads {VERSION}; start a new run in another folder")
    return ckpt


def config_differences(old: dict, new: dict) -> list[str]:
    """Human-readable ``key: old -> new`` lines for the keys that differ."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append(f"{k}: {a!r} -> {b!r}")
    return out


def check_same_config(ckpt: dict, config: dict, path) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``ckpt`` was written by this config."""
    if ckpt.get("config_hash") == config_hash(config):
        return
    diffs = config_differences(ckpt.get("config", {}), config)
    lines = "\n  ".join(diffs) or "(the configurations hash differently)"
    raise CheckpointMismatchError(
        f"{path} was written by a run with a different configuration:\n  {lines}\n"
        "Resuming would mix two runs. Use another out_dir for the new settings, restore the "
        "old ones, or pass resume=False to start over in this folder (overwriting it).")


def load_weights(algorithm: torch.nn.Module, path, strict: bool = True) -> dict:
    """Load the model weights of a training checkpoint into ``algorithm``; returns the
    checkpoint (its ``history``, ``epoch``, ``config``, ...)."""
    ckpt = load_checkpoint(path)
    algorithm.load_state_dict(ckpt["model"], strict=strict)
    return ckpt
