"""Attention maps of trained models, measured: Grad-CAM and friends, metrics, figures, an
interactive explorer.

* :mod:`~cxrlab.explain.layers` - which layer Grad-CAM reads, per architecture (registry)
* :mod:`~cxrlab.explain.cams` - :func:`cam_maps`: batched maps, one per image and its label
* :mod:`~cxrlab.explain.metrics` - energy in a region, pointing game, agreement, consistency
* :mod:`~cxrlab.explain.faithfulness` - ROAD: does removing what the map shows change the logit?
* :mod:`~cxrlab.explain.analysis` - tables over models and images, with bootstrap intervals
* :mod:`~cxrlab.explain.plots` - figures (overlays, grids, shares, centres of mass)
* :mod:`~cxrlab.explain.widgets` - the ipywidgets explorer (imported on demand)
"""
from cxrlab.explain.cams import METHODS, CamInputError, UnknownLabelError, cam_maps
from cxrlab.explain.layers import (NoTargetLayerError, TargetLayers, register_target_layer,
                                   target_layers_for, vit_reshape_transform)
from cxrlab.explain.metrics import (MaskShapeError, bootstrap_mean, centre_of_mass, com_spread,
                                    energy_share, pointing_game, rank_correlation, top_region,
                                    topk_iou)

__all__ = ["METHODS", "CamInputError", "UnknownLabelError", "cam_maps", "NoTargetLayerError",
           "TargetLayers", "register_target_layer", "target_layers_for", "vit_reshape_transform",
           "MaskShapeError", "bootstrap_mean", "centre_of_mass", "com_spread", "energy_share",
           "pointing_game", "rank_correlation", "top_region", "topk_iou"]
