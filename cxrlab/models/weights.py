"""Getting weights into a backbone: from the hub, or from a file you brought.

Course machines, CI runners and hospital clusters often have no internet. Nothing here
downloads silently into a corner: either the hub answers, or the error says exactly which file
to fetch elsewhere and how to pass it (``weights="..."``), or how to go on without it
(``pretrained=False``, and results then say "random init").
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch

from cxrlab.errors import CxrlabError, MissingInputError, UsageError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
#: prefixes of classification heads: a backbone has none, so these keys are dropped on load
HEAD_PREFIXES = ("fc.", "head.", "head_dist.", "classifier.", "last_linear.")


class WeightsUnavailableError(CxrlabError, RuntimeError):
    """Published weights could not be fetched (no internet, hub down, blocked)."""


class WeightsMismatchError(CxrlabError, ValueError):
    """A weight file does not fit the backbone (other architecture, other size)."""


def unavailable_message(name: str, how_to_get: str, cause: BaseException | None = None) -> str:
    """The message of :class:`WeightsUnavailableError`: both ways out, spelled out."""
    why = f" ({type(cause).__name__}: {str(cause).splitlines()[0][:200]})" if cause else ""
    return (
        f"Could not fetch the pretrained weights of backbone {name!r}{why}.\n"
        f"Two ways out:\n"
        f"  (a) on a machine with internet, download them: {how_to_get}\n"
        f"      then copy the file here and pass it: "
        f"create_backbone({name!r}, weights='path/to/that/file')\n"
        f"      (or a folder holding {name}.safetensors / {name}.pth).\n"
        f"  (b) use random initialisation: create_backbone({name!r}, pretrained=False) "
        f"(profile field `pretrained`, env CXRLAB_PRETRAINED=0); results are then labelled "
        f"random-init and are not comparable with published pretrained numbers."
    )


def resolve_weights_path(weights, name: str) -> Path:
    """A weight file from ``weights``: the file itself, or ``<folder>/<name><suffix>``."""
    p = Path(weights).expanduser()
    if p.is_dir():
        for suffix in WEIGHT_SUFFIXES:
            cand = p / f"{name}{suffix}"
            if cand.is_file():
                return cand
        raise MissingInputError(
            f"folder {p} holds no weight file for {name!r}: expected one of "
            f"{[name + s for s in WEIGHT_SUFFIXES]}. Put the downloaded file there under that "
            f"name, or pass the file itself as weights=..., or use pretrained=False.")
    if not p.is_file():
        raise MissingInputError(
            f"weight file {p} does not exist. Pass the path of an existing .safetensors/.pth "
            f"file for {name!r} (for published weights, the error of create_backbone({name!r}, "
            f"pretrained=True) on an offline machine names the file to download), or use "
            f"pretrained=False for random initialisation.")
    if p.suffix not in WEIGHT_SUFFIXES:
        raise UsageError(f"{p}: unknown weight file type {p.suffix!r}; "
                         f"use one of {list(WEIGHT_SUFFIXES)}")
    return p


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a torch checkpoint.

    Checkpoints that wrap the weights (``{"state_dict": ...}``, ``{"model": ...}``, a cxrlab
    engine checkpoint) are unwrapped. ``torch.load`` runs with ``weights_only=True`` (no code
    execution) unless ``allow_pickle=True`` (needed for whole pickled models, e.g. the original
    torchxrayvision files; only for files you trust).
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 - SafetensorError, OSError...: truncated or not one
            raise WeightsMismatchError(
                f"{path} is not a readable .safetensors file ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}); it is probably truncated: download it again, "
                "or use pretrained=False") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as e:  # pickle errors come in many types
        raise WeightsMismatchError(
            f"{path} could not be read as a PyTorch state dict ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}). Save weights with torch.save(model.state_dict(), "
            f"path) or as .safetensors.") from e
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    for key in ("state_dict", "model", "backbone", "model_state"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsMismatchError(f"{path} holds no state dict (a dict of tensors); "
                                   f"got {type(obj).__name__}")
    return obj


#: wrappers a backbone's keys may sit under: DDP ("module."), a saved Backbone ("model."),
#: a whole method / engine checkpoint ("backbone.model.", with its heads beside it)
_PREFIXES = ("", "module.", "model.", "backbone.", "backbone.model.", "module.backbone.model.",
             "module.model.", "encoder.")


def _backbone_view(sd: dict, expected: set[str]) -> tuple[dict, list[str]]:
    """The part of ``sd`` that belongs to the network: under the prefix whose stripped keys
    match the most expected keys. Returns (that part, prefix-less; keys left outside it)."""
    def hits(p):
        return sum(1 for k in sd if k.startswith(p) and k[len(p):] in expected)

    best = max(_PREFIXES, key=hits)  # ties keep the earlier (shorter) prefix
    if not best:
        return sd, []
    inside = {k[len(best):]: v for k, v in sd.items() if k.startswith(best)}
    return inside, sorted(k for k in sd if not k.startswith(best))


def load_state_dict_into(backbone, sd: dict[str, torch.Tensor], strict: bool = True,
                         source: str = "state dict") -> dict:
    """Load ``sd`` into ``backbone.model``: strip wrappers and classifier keys, apply the
    backbone's filter (e.g. ViT position-embedding resampling), check keys and shapes.

    Returns ``{"missing": [...], "unexpected": [...], "dropped_head": [...],
    "ignored_outside_backbone": [...]}`` (keys of other modules of a whole-method checkpoint,
    e.g. a SupCon projection head beside ``backbone.model.*``). With
    ``strict=True`` any missing/unexpected key or shape mismatch raises
    :class:`WeightsMismatchError` naming them; otherwise they are warned about.
    """
    model = backbone.model
    expected = model.state_dict()
    sd, outside = _backbone_view(dict(sd), set(expected))
    dropped = [k for k in sd if k not in expected and k.startswith(HEAD_PREFIXES)]
    sd = {k: v for k, v in sd.items() if k not in dropped}
    if backbone.state_dict_filter is not None:
        sd = backbone.state_dict_filter(sd, model)
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shape_bad = sorted(f"{k}: file {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
                       for k in set(sd) & set(expected) if sd[k].shape != expected[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {missing[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:5]}")
    if shape_bad:
        problems.append(f"{len(shape_bad)} shape mismatch(es), e.g. {shape_bad[:3]}")
    if problems:
        msg = (f"{source} does not fit backbone {backbone.name!r}: " + "; ".join(problems)
               + f". The model's keys look like {list(expected)[:3]}. Was it saved from another "
               "architecture or input size? (strict=False loads what fits and warns)")
        if strict:
            raise WeightsMismatchError(msg)
        warnings.warn(msg, stacklevel=3)
        sd = {k: v for k, v in sd.items() if k in expected and sd[k].shape == expected[k].shape}
    model.load_state_dict(sd, strict=False)
    return {"missing": missing, "unexpected": unexpected, "dropped_head": dropped,
            "ignored_outside_backbone": outside}


def load_weights_file(backbone, weights, strict: bool = True, allow_pickle: bool = False) -> dict:
    """Load a local weight file (or ``<folder>/<name>.*``) into ``backbone``; sets
    ``backbone.weights_id = "file:<sha256[:12]>"`` and returns the key report of
    :func:`load_state_dict_into`."""
    path = resolve_weights_path(weights, backbone.name)
    allow_pickle = allow_pickle or getattr(backbone, "weights_need_pickle", False)
    sd = read_state_dict(path, allow_pickle=allow_pickle)
    report = load_state_dict_into(backbone, sd, strict=strict, source=str(path))
    backbone.weights_id = f"file:{file_sha256(path)[:12]}"
    backbone.weights_path = str(path)
    return report
