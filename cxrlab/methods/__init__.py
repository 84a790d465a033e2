"""Training methods (BCE, SupCon, RRR, ActDiff, ...); the registry lives in ``registry.py``.

Every method is an :class:`~cxrlab.methods.base.Algorithm` with one training interface, so
:func:`cxrlab.engine.fit` trains all of them the same way::

    from cxrlab.methods import create_algorithm, ALGORITHMS
    alg = create_algorithm("bce_finetune", backbone, num_labels=7, hparams={"augment": True})
"""
from cxrlab.methods.base import Algorithm, HParamError
from cxrlab.methods.registry import ALGORITHMS, create_algorithm, get_algorithm, register_algorithm
from cxrlab.methods.supcon_method import PretrainOnlyError
from cxrlab.methods import actdiff, rrr  # noqa: F401,E402  (register 'actdiff', 'rrr')
from cxrlab.methods.mask_guided import MaskError  # noqa: E402

__all__ = ["ALGORITHMS", "Algorithm", "HParamError", "MaskError", "PretrainOnlyError", "create_algorithm",
           "get_algorithm", "register_algorithm"]
