"""One place to seed Python, NumPy and PyTorch, DataLoader workers included."""
from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed ``random``, NumPy and torch (CPU and CUDA). Returns the seed.

    ``deterministic=True`` also asks cuDNN / torch for deterministic kernels (slower on GPU).
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return seed
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return seed


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoader: derive NumPy / random seeds from torch's per-worker
    seed, so that augmentations differ between workers yet repeat between runs."""
    import torch

    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_generator(seed: int):
    """A seeded ``torch.Generator`` to pass to DataLoader (``generator=``) with ``seed_worker``."""
    import torch

    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def loader_seeding(seed: int) -> dict:
    """Keyword arguments that make a DataLoader reproducible: ``DataLoader(ds, **loader_seeding(0))``."""
    return {"worker_init_fn": seed_worker, "generator": make_generator(seed)}
