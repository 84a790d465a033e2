"""Backbones by name (timm-style registry), with their own input normalisation (Grad-CAM
layers: :mod:`cxrlab.explain.layers`). See :func:`create_backbone` and :class:`Backbone`."""
from cxrlab.models.backbone import Backbone  # noqa: F401
from cxrlab.models.registry import (  # noqa: F401
    create_backbone, describe_backbones, display_name, get_spec, list_backbones, register_backbone,
    stands_in_for, table_order,
)
from cxrlab.models.weights import (  # noqa: F401
    WeightsMismatchError, WeightsUnavailableError, load_weights_file,
)

__all__ = ["Backbone", "create_backbone", "list_backbones", "describe_backbones",
           "register_backbone", "get_spec", "display_name", "stands_in_for", "table_order",
           "load_weights_file", "WeightsUnavailableError", "WeightsMismatchError"]
