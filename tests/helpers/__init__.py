"""Helpers the tests import (``from tests.helpers.engine import make_cache``).

* :mod:`tests.helpers.engine` - learnable signal images, label matrices, a finished cache and a
  batch-norm-free backbone for the engine, method and DDP tests;
* :mod:`tests.helpers.hospitals` - hand-made "hospitals" with known brightness and noise for the
  shift tests;
* :func:`subprocess_env` - the environment for a test's child process, with the repository
  root on ``PYTHONPATH`` so that ``python -m tests.scripts.NAME`` and this checkout's
  ``cxrlab`` are what the child imports.
"""
from __future__ import annotations

import os
from pathlib import Path

#: the repository root (the folder holding ``cxrlab/`` and ``tests/``)
REPO_ROOT = Path(__file__).resolve().parents[2]


def subprocess_env(**extra: str) -> dict:
    """``os.environ`` plus ``extra``, with :data:`REPO_ROOT` first on ``PYTHONPATH``, one
    torch/OpenMP thread and no progress bars (children share two CPU cores with the test)."""
    paths = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, OMP_NUM_THREADS="1", CXRLAB_PROGRESS="0", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env


def script_command(name: str, *args: str) -> list[str]:
    """``[python, -m, tests.scripts.<name>, *args]``: run with ``cwd=REPO_ROOT`` and
    :func:`subprocess_env`."""
    import sys

    return [sys.executable, "-m", f"tests.scripts.{name}", *map(str, args)]
