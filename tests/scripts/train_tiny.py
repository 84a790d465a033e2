"""A small training run for tests/test_engine.py, started as a subprocess
(``python -m tests.scripts.train_tiny``, and killed), or called in-process through :func:`run`.

Prints ``EPOCH_DONE <e>`` after each epoch's checkpoint is written, ``RESUMED_FROM <k>`` and
``FINISHED`` at the end. With ``--slow-from E`` every step of epochs >= E prints
``STEP <e> <global step>`` and sleeps 0.2 s: time for the test to kill it mid-epoch. The
slow-down touches timing only, never the numbers.
"""
import argparse
import time

import torch

from cxrlab.data.cache import open_cache
from cxrlab.data.dataset import CacheDataset
from cxrlab.engine import fit, make_val_fn
from cxrlab.labels import SHARED7
from cxrlab.methods import create_algorithm
from cxrlab.models import create_backbone


def run(cache_path, out, epochs=4, batch_size=16, slow_from=0, say=print,
        method="bce_finetune", hparams=None):
    """``method`` (default: BCE fine-tune with random augmentation) of tiny_cnn on the cache's
    train split (with its masks for methods that need them), validated on its val split;
    returns fit's TrainResult."""
    from cxrlab.methods import get_algorithm

    cache = open_cache(cache_path)
    masks = "lung_mask" in get_algorithm(method).needs
    train = CacheDataset(cache, cache.select("train"), "shared7", with_masks=masks)
    val = CacheDataset(cache, cache.select("val"), "shared7")
    hp = {"augment": "default"} if hparams is None and method == "bce_finetune" else hparams
    alg = create_algorithm(method, create_backbone("tiny_cnn", image_size=32, seed=0),
                           len(SHARED7), hp, seed=0)
    spe = len(train) // batch_size
    if slow_from:
        step_fn = alg.training_step

        def slow_step(batch, step):
            epoch = step // spe + 1
            if epoch >= slow_from:
                say(f"STEP {epoch} {step}")
                time.sleep(0.2)
            return step_fn(batch, step)

        alg.training_step = slow_step
    return fit(alg, train, epochs=epochs, batch_size=batch_size, lr=3e-3, seed=7,
               out_dir=out, device="cpu", val_fn=make_val_fn(val, label_names=SHARED7),
               monitor="auc_macro", log_every=2, verbose=False,
               on_epoch_end=lambda rec: say(f"EPOCH_DONE {rec['epoch']}"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--slow-from", type=int, default=0)
    p.add_argument("--method", default="bce_finetune")
    p.add_argument("--hparams", default=None, help="JSON mapping of hyper-parameters")
    a = p.parse_args()
    torch.set_num_threads(1)
    import json

    res = run(a.cache, a.out, a.epochs, a.batch_size, a.slow_from,
              say=lambda s: print(s, flush=True), method=a.method,
              hparams=None if a.hparams is None else json.loads(a.hparams))
    print(f"RESUMED_FROM {res.resumed_from}", flush=True)
    print("FINISHED", flush=True)


if __name__ == "__main__":
    main()
