"""`cxrlab bench`: speed figures as one JSON object.

Each module in :data:`GROUPS` exposes ``run(quick: bool) -> dict[str, float]`` and ``KEYS``, the
names of every figure it can report (BENCHMARKS.md documents each one; a test checks it); every figure
that is a ratio is measured against its baseline *in the same run* on the same machine, so the
numbers compare across machines. ``quick=True`` shrinks the workloads (used by the tests).
"""
from __future__ import annotations

import importlib
import json
import platform
import time

from cxrlab.errors import UnknownNameError

#: group name -> module (under cxrlab.bench) that measures it
GROUPS = {
    "synth": "cxrlab.bench.synth",
    "cache": "cxrlab.bench.cache",
    "probe": "cxrlab.bench.probe",
    "supcon": "cxrlab.bench.supcon",
    "resize": "cxrlab.bench.resize",
    "cam": "cxrlab.bench.cam",
    "masking": "cxrlab.bench.masking",
}


def all_keys() -> dict[str, tuple[str, ...]]:
    """Group -> the keys its module declares (``KEYS``): every figure `cxrlab bench` can print."""
    return {g: tuple(importlib.import_module(m).KEYS) for g, m in GROUPS.items()}


def run_bench(groups: list[str] | None = None, quick: bool = False) -> dict:
    groups = list(GROUPS) if not groups else groups
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise UnknownNameError(f"unknown bench group(s) {unknown}; choose from {list(GROUPS)}")
    import torch

    result: dict = {
        "_machine": {"python": platform.python_version(), "torch": torch.__version__,
                     "cpu_count": __import__("os").cpu_count(), "platform": platform.platform(),
                     "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                     "quick": quick},
    }
    for g in groups:
        try:
            mod = importlib.import_module(GROUPS[g])
        except ModuleNotFoundError as e:
            if e.name == GROUPS[g]:
                continue  # group not built yet
            raise
        t0 = time.perf_counter()
        result.update(mod.run(quick=quick))
        result["_machine"][f"seconds_{g}"] = round(time.perf_counter() - t0, 2)
    return result


def main(groups: list[str] | None = None, quick: bool = False, out: str | None = None) -> dict:
    res = run_bench(groups, quick=quick)
    text = json.dumps(res, indent=2, sort_keys=True)
    print(text)
    if out:
        from cxrlab.io import atomic_write_text

        atomic_write_text(out, text + "\n")
    return res
