"""Losses, in one place: every method in :mod:`cxrlab.methods` and the linear probe use these.

* :mod:`~cxrlab.losses.bce` - binary cross-entropy that ignores unlabelled (NaN) entries, and
  the class-balancing positive weights;
* :mod:`~cxrlab.losses.supcon` - the supervised contrastive loss (multi-label positives, DDP
  gathering);
* :mod:`~cxrlab.losses.supcon_reference` - the same loss as a slow per-anchor loop, the
  reference the tests and the benchmark compare against.
"""
from cxrlab.losses.bce import balanced_pos_weight, masked_bce_with_logits
from cxrlab.losses.supcon import SupConLoss, positive_weights

__all__ = ["SupConLoss", "balanced_pos_weight", "masked_bce_with_logits", "positive_weights"]
