"""Training methods (BCE, SupCon, a softmax classifier, RRR, ActDiff, ...), one module each; the registry lives in
``registry.py``.

Every method is an :class:`~cxrlab.methods.base.Algorithm` with one training interface, so
:func:`cxrlab.engine.fit` trains all of them the same way::

    from cxrlab.methods import create_algorithm, ALGORITHMS
    alg = create_algorithm("bce_finetune", backbone, num_labels=7, hparams={"augment": True})
"""
from cxrlab.methods.base import SCORINGS, Algorithm, HParamError
from cxrlab.methods.registry import ALGORITHMS, create_algorithm, get_algorithm, register_algorithm
# the built-in methods, one module each; importing them registers them
from cxrlab.methods import bce, supcon  # noqa: F401,E402
from cxrlab.methods import rrr, actdiff  # noqa: F401,E402  (after bce: tables list in this order)
from cxrlab.methods import softmax  # noqa: F401,E402  (one class per image: cxrlab.shift's domain classifier)
from cxrlab.methods.mask_guided import MaskError  # noqa: E402
from cxrlab.methods.supcon import PretrainOnlyError

__all__ = ["ALGORITHMS", "SCORINGS", "Algorithm", "HParamError", "MaskError", "PretrainOnlyError",
           "create_algorithm",
           "get_algorithm", "register_algorithm"]
