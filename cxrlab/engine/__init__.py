"""The training engine: one loop (:func:`fit`) for every method in :mod:`cxrlab.methods`.

* :mod:`~cxrlab.engine.trainer` - :func:`fit` (a :class:`FitConfig` and the loop's steps), :class:`TrainResult`
* :mod:`~cxrlab.engine.batching` - batch order fixed by (seed, epoch), sharded across ranks
* :mod:`~cxrlab.engine.checkpoint` - atomic per-epoch checkpoints, exact resume, config check
* :mod:`~cxrlab.engine.guards` - stop on a NaN / inf loss, naming the step
* :mod:`~cxrlab.engine.accel` - bf16 autocast, channels_last, torch.compile (GPU switches)
* :mod:`~cxrlab.engine.distributed` - torchrun / DDP (gloo on CPU, NCCL on GPU)
* :mod:`~cxrlab.engine.predict` - predictions and the per-epoch validation hook
* ``python -m cxrlab.engine`` - train from the command line (also under ``torchrun``)
"""
from cxrlab.engine.checkpoint import (CheckpointError, CheckpointMismatchError, load_checkpoint,
                                      load_weights)
from cxrlab.engine.predict import make_val_fn, predict_logits, predict_scores
from cxrlab.engine.guards import NonFiniteLossError
from cxrlab.engine.trainer import FitConfig, TrainResult, fit

__all__ = ["FitConfig", "CheckpointError", "CheckpointMismatchError", "NonFiniteLossError", "TrainResult",
           "fit", "load_checkpoint", "load_weights", "make_val_fn", "predict_logits",
           "predict_scores"]
