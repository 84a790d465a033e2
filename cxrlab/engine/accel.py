"""Speed switches that only make sense on a GPU: bf16 autocast, channels_last, torch.compile.

On CPU, autocast and channels_last are turned off (they are slower or unsupported there and
would make CPU results differ from the reference ones); ``compile`` works everywhere but is
only worth its start-up cost on long GPU runs.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")


def autocast_context(device: torch.device, precision: str):
    """The autocast context for a training/eval step (a no-op unless bf16 on CUDA)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def effective_precision(device: torch.device, precision: str) -> str:
    """``precision`` as it will actually run (bf16 falls back to fp32 off CUDA, with a warning)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and device.type != "cuda":
        warnings.warn(f"precision='bf16' is used on CUDA only; training in fp32 on {device.type}",
                      stacklevel=3)
        return "fp32"
    return precision


def use_channels_last(module: nn.Module, device: torch.device) -> bool:
    """Convert ``module``'s 4-D weights to channels_last on CUDA (faster convolutions with
    tensor cores). Returns whether it did; the algorithm then feeds channels_last inputs."""
    if device.type != "cuda":
        return False
    module.to(memory_format=torch.channels_last)
    return True


def compile_modules(modules, compile) -> None:
    """``module.compile()`` in place for each module (state-dict keys unchanged).

    ``compile`` is ``False``, ``True`` (default inductor backend) or a backend name
    (e.g. ``"eager"`` / ``"aot_eager"`` to check a setup without a C++ compiler).
    """
    if not compile:
        return
    kwargs = {} if compile is True else {"backend": str(compile)}
    for m in modules:
        m.compile(**kwargs)
