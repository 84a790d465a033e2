"""Cost of a masking-method training step against an ERM step (same batch, same model).

Keys:

* ``erm_step_ms``, ``rrr_step_ms``, ``actdiff_step_ms`` -- median milliseconds of one whole
  training step (``training_step``, ``backward``, AdamW ``step``) of ``bce_finetune``
  (no augmentation: the ERM arm), ``rrr`` and ``actdiff`` with lung-periphery masks, on the
  same batch (tiny_cnn at 64 px, batch 32; ``quick``: batch 16, fewer repeats).
* ``rrr_step_overhead_ratio`` -- RRR step / ERM step (double back-prop; target <= 4 on CPU).
* ``actdiff_step_overhead_ratio`` -- ActDiff step / ERM step (a second forward pass and its
  backward; target <= 2.5 on CPU).

The masks are precomputed by ``prepare_data`` as in training, so the steps time the methods,
not the distance transform of the lung periphery.
"""
from __future__ import annotations

import statistics
import time

import torch


#: every figure this group can report (BENCHMARKS.md documents each)
KEYS = (
    "erm_step_ms",
    "rrr_step_ms",
    "actdiff_step_ms",
    "rrr_step_overhead_ratio",
    "actdiff_step_overhead_ratio",
)


def _batch(n: int, size: int = 64):
    from cxrlab.data.synthetic import generate
    from cxrlab.labels import NIH14

    b = generate("source", n, size, seed=0, prevalence_factor={"Pneumothorax": 4})
    k = NIH14.index("Pneumothorax")
    return {"image": torch.from_numpy(b.images)[:, None],
            "labels": torch.from_numpy(b.labels[:, k:k + 1]),
            "row": torch.arange(n),
            "lung_mask": torch.from_numpy(b.lung_masks)[:, None],
            "lesion_mask": torch.from_numpy(b.lesion_masks.astype("int32"))[:, None]}


def _stepper(method: str, hparams: dict, batch: dict):
    """A function running one whole training step of ``method`` on ``batch``."""
    from cxrlab.engine.batching import as_batches
    from cxrlab.methods import create_algorithm
    from cxrlab.models import create_backbone

    alg = create_algorithm(method, create_backbone("tiny_cnn", image_size=64, seed=0), 1,
                           hparams, seed=0)
    alg.prepare_data(as_batches(batch))
    alg.train()
    opt = torch.optim.AdamW(alg.trainable_parameters(), lr=1e-3)

    def step(i: int) -> None:
        loss = alg.training_step(batch, i)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


ARMS = {
    "erm": ("bce_finetune", {"augment": "none", "backbone_lr_scale": 1.0}),
    "rrr": ("rrr", {"mask": "lung_periphery", "lam": 0.01}),
    "actdiff": ("actdiff", {"mask": "lung_periphery", "lam": 0.01}),
}


def run(quick: bool = False) -> dict[str, float]:
    batch = _batch(16 if quick else 32)
    reps = 5 if quick else 20
    steps = {name: _stepper(m, hp, batch) for name, (m, hp) in ARMS.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    # round robin: a change of machine load hits every method alike (shared CPUs)
    for i in range(reps + 2):  # two warm-up rounds
        for name, step in steps.items():
            t0 = time.perf_counter()
            step(i)
            if i >= 2:
                times[name].append(1000 * (time.perf_counter() - t0))
    ms = {name: statistics.median(t) for name, t in times.items()}
    return {"erm_step_ms": round(ms["erm"], 2), "rrr_step_ms": round(ms["rrr"], 2),
            "actdiff_step_ms": round(ms["actdiff"], 2),
            "rrr_step_overhead_ratio": round(ms["rrr"] / ms["erm"], 2),
            "actdiff_step_overhead_ratio": round(ms["actdiff"] / ms["erm"], 2)}
