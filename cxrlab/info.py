"""What `cxrlab info` and notebook 00 show: versions, device, profile, folders."""
from __future__ import annotations

import os
import platform
from importlib import metadata


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def info_dict(profile: str | None = None) -> dict:
    import torch

    from cxrlab import __version__
    from cxrlab.profiles import get_profile, resolve_device

    p = get_profile(profile)
    dev = resolve_device(p.device)
    d = {
        "cxrlab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "grad-cam": _version("grad-cam"),
        "torchxrayvision": _version("torchxrayvision"),
        "device": dev + (f" ({torch.cuda.get_device_name(0)})" if dev == "cuda" else ""),
        "cpu_count": os.cpu_count(),
        "profile": p.name,
        "data": p.data,
        "image_size": p.image_size,
        "backbones": ", ".join(p.backbones),
        "data_dir": p.data_dir,
        "checkpoint_dir": p.checkpoint_dir,
        "results_dir": p.results_dir,
    }
    return d
