"""Predictions of a trained algorithm, and the per-epoch validation hook of :func:`fit`.

Model selection and thresholds come from the *source* validation split only: pass
``make_val_fn`` the source ``val`` rows, never a target hospital's.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from cxrlab.engine.accel import autocast_context
from cxrlab.engine.batching import TensorBatches, as_batches, collate_dict
from cxrlab.losses import masked_bce_with_logits


def _iter_batches(data, batch_size: int, num_workers: int = 0):
    batches = as_batches(data)
    if isinstance(batches, TensorBatches):
        for start in range(0, len(batches), batch_size):
            yield {k: v[start:start + batch_size] for k, v in batches.data.items()}
    else:
        yield from DataLoader(batches.dataset, batch_size=batch_size, shuffle=False,
                              collate_fn=collate_dict, num_workers=num_workers)


@torch.no_grad()
def predict_logits(algorithm, data, batch_size: int = 256, precision: str = "fp32",
                   num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(logits [n, L], labels [n, L] with NaN)`` of ``algorithm.predict`` over ``data`` (in
    order), in eval mode on the algorithm's device. The train/eval mode is restored after."""
    was_training = algorithm.training
    algorithm.eval()
    dev = algorithm.device
    logits, labels = [], []
    try:
        for batch in _iter_batches(data, batch_size, num_workers):
            with autocast_context(dev, precision):
                out = algorithm.predict(batch["image"].to(dev, non_blocking=True))
            logits.append(out.float().cpu())
            labels.append(batch["labels"].float().cpu())
    finally:
        algorithm.train(was_training)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def predict_scores(algorithm, data, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities [n, L], labels [n, L])``: sigmoid of :func:`predict_logits`."""
    logits, labels = predict_logits(algorithm, data, **kwargs)
    return 1.0 / (1.0 + np.exp(-logits)), labels


def make_val_fn(data, batch_size: int = 256, precision: str = "fp32",
                label_names: Sequence[str] | None = None) -> Callable[[object], dict]:
    """A ``val_fn`` for :func:`fit`: masked BCE ``loss``, ``auc_macro`` and ``map`` on ``data``
    (threshold-free, so no threshold has to be chosen during training)."""

    def val_fn(algorithm) -> dict:
        logits, labels = predict_logits(algorithm, data, batch_size=batch_size, precision=precision)
        loss = float(masked_bce_with_logits(torch.from_numpy(logits), torch.from_numpy(labels)))
        from cxrlab.metrics import multilabel_metrics

        m = multilabel_metrics(labels, 1.0 / (1.0 + np.exp(-logits)), label_names=label_names)
        return {"loss": loss, "auc_macro": float(m["auc_macro"]), "map": float(m["map"])}

    return val_fn
