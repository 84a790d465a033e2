"""A tiny study for the tests that run whole studies in child processes (sharding, resuming,
reports): two synthetic hospitals of a few dozen 32 px images, the tiny CNN, one probe arm and
one fine-tuned arm, two seeds (4 units, seconds each)."""
from __future__ import annotations

from pathlib import Path

import yaml

PROTOCOL = {
    "name": "tiny_synthetic",
    "label_space": "shared7",
    "source": {"name": "source", "dataset": "synthetic", "cache": "synthetic", "domain": "source"},
    "targets": [{"name": "target_nih", "dataset": "synthetic", "cache": "synthetic",
                 "domain": "target_nih", "split": "all"}],
}

#: the units of :func:`write_tiny_study`'s grid, in the runner's order
UNITS = [f"{m}__tiny_cnn__seed{s}" for m in ("bce_probe", "bce_finetune") for s in (0, 1)]


def tiny_config(cache_path, **over) -> dict:
    cfg = {"name": "tiny_shards", "protocol": PROTOCOL, "caches": {"synthetic": str(cache_path)},
           "mask_source_labels": "mimic", "methods": ["bce_probe", "bce_finetune"],
           "backbones": ["tiny_cnn"], "seeds": [0, 1], "finetune_epochs": 1, "probe_epochs": 2,
           "batch_size": 16, "bootstrap": 10, "hparams": {"bce_finetune": {"augment": "none"}}}
    cfg.update(over)
    return cfg


def write_tiny_study(root, n_per_hospital: int = 80, **over) -> Path:
    """Write the synthetic cache (once) and the study's YAML under ``root``; the YAML's path."""
    from cxrlab.data.synthetic import write_synthetic_cache

    root = Path(root)
    cache = root / "synthetic"
    if not (cache / "manifest.csv").exists() and not cache.exists():
        write_synthetic_cache(cache, hospitals=["source", "target_nih"],
                              n_per_hospital=n_per_hospital, image_size=32, seed=0)
    import hashlib

    tag = hashlib.sha256(repr(sorted(over.items())).encode()).hexdigest()[:8]
    path = root / ("tiny.yaml" if not over else f"tiny_{tag}.yaml")
    path.write_text(yaml.safe_dump(tiny_config(cache, **over)))
    return path
