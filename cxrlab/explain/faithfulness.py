"""Does the map point at what the model uses? ROAD (Rong et al. 2022) from ``pytorch_grad_cam``.

Remove And Debias: the pixels a map ranks highest are replaced by a noisy linear imputation
from their neighbours (not by black, which would itself be an unusual input), and the change
of the target logit is measured. Removing the *most* relevant pixels first (MoRF) should lower
the logit more than removing the *least* relevant first (LeRF): ``lerf - morf`` is large for
a faithful map. A random map is the baseline any real map must beat.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrlab.explain.cams import LabelTarget, LogitsModel, prepare_input, resolve_targets


def road_scores(model: nn.Module, x, targets, cams, percentiles: Sequence[int] = (20, 50, 80),
                ) -> dict[str, np.ndarray]:
    """Per image: ``morf`` and ``lerf`` (change of the target logit, averaged over removing
    ``percentiles`` % of the pixels) and ``faithfulness = lerf - morf``."""
    from pytorch_grad_cam.metrics.road import (ROADLeastRelevantFirstAverage,
                                               ROADMostRelevantFirstAverage)

    inputs = prepare_input(model, x)
    tgt = [LabelTarget(t) for t in resolve_targets(targets, inputs.shape[0],
                                                   getattr(model, "num_labels", None))]
    c = torch.as_tensor(np.asarray(cams, dtype=np.float32))
    if c.shape[0] != inputs.shape[0]:
        raise ValueError(f"{c.shape[0]} maps for {inputs.shape[0]} images")
    if tuple(c.shape[-2:]) != tuple(inputs.shape[-2:]):  # ViT: the network's own input size
        c = F.interpolate(c[:, None], size=inputs.shape[-2:], mode="bilinear",
                          align_corners=False)[:, 0]
    wrapper = LogitsModel(model)
    was_training = model.training
    model.eval()
    try:
        rng_state = np.random.get_state()  # the imputer draws noise from numpy's global RNG
        np.random.seed(0)
        morf = ROADMostRelevantFirstAverage(list(percentiles))(inputs, c.numpy(), tgt, wrapper)
        lerf = ROADLeastRelevantFirstAverage(list(percentiles))(inputs, c.numpy(), tgt, wrapper)
        np.random.set_state(rng_state)
    finally:
        model.train(was_training)
    morf, lerf = np.asarray(morf, np.float64).ravel(), np.asarray(lerf, np.float64).ravel()
    return {"morf": morf, "lerf": lerf, "faithfulness": lerf - morf}


def random_maps(shape, seed: int = 0, smooth: int = 8) -> np.ndarray:
    """Smooth random maps in [0, 1] (the baseline of a faithfulness check): uniform noise on a
    coarse grid of ``smooth``-pixel cells, upsampled."""
    B, H, W = shape
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(B, 1, max(1, H // smooth), max(1, W // smooth), generator=g)
    return F.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)[:, 0].numpy()
