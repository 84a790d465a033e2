"""One training loop for every method.

:func:`fit` trains any :class:`cxrlab.methods.base.Algorithm` - the frozen BCE probe, the BCE
fine-tune, SupCon pre-training, and later RRR / ActDiff - with the same budget rules, the same
checkpoints and the same guards, so that methods differ only in what their
``training_step`` computes::

    from cxrlab.engine import fit
    from cxrlab.methods import create_algorithm
    from cxrlab.models import create_backbone

    alg = create_algorithm("bce_finetune", create_backbone("tiny_cnn"), num_labels=7)
    result = fit(alg, CacheDataset(cache, cache.select("train", "source"), "shared7"),
                 epochs=3, batch_size=64, lr=1e-3, seed=0, out_dir="checkpoints/bce_ft_s0")
    result.frame()          # one row per epoch: loss, lr, validation metrics, seconds

Run it again with the same arguments and it resumes from ``out_dir/last.pt`` (or returns at
once if the run is complete). What happens on each step:

1. the batch (uint8 images, NaN-masked labels, rows, optional masks) moves to the device;
2. ``algorithm.training_step(batch, global_step)`` runs under bf16 autocast on CUDA when
   ``precision="bf16"`` (channels_last weights and inputs on CUDA);
3. ``loss.backward()``, optional gradient clipping, AdamW step, per-step learning-rate schedule;
4. the loss joins a watch that stops the run with :class:`NonFiniteLossError` if it is NaN/inf.

After each epoch: the optional ``val_fn(algorithm) -> {name: value}`` (rank 0, eval mode, no
gradients), then an atomic checkpoint ``last.pt`` (and ``best.pt`` when ``monitor`` improves).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cxrlab.profiles import resolve_device
from cxrlab.engine import distributed as D
from cxrlab.engine.accel import autocast_context, compile_modules, effective_precision, use_channels_last
from cxrlab.engine.checkpoint import (BEST, LAST, atomic_copy, capture_rng, check_same_config, config_hash,
                                      epoch_path, load_checkpoint, restore_rng, save_checkpoint)
from cxrlab.engine.batching import EpochBatchSampler, as_batches, epoch_seed, fingerprint, label_width
from cxrlab.engine.guards import LossWatch
from cxrlab.engine.schedule import SCHEDULES, StepSchedule
from cxrlab.io import atomic_write_json
from cxrlab.progress import progress
from cxrlab.seeding import seed_everything

log = logging.getLogger("cxrlab.engine")


@dataclass
class TrainResult:
    """What :func:`fit` returns (also rebuilt from ``last.pt`` when a finished run is re-run)."""

    #: one dict per epoch: epoch (from 1), global_step, loss, lr, seconds, other training
    #: scalars of the method, and ``val_<name>`` for every value ``val_fn`` returned
    history: list[dict]
    #: every ``log_every`` steps (rank 0): epoch, step, global_step, loss (mean since the last
    #: record), lr
    steps: list[dict]
    out_dir: Path
    last_path: Path
    best_path: Path | None
    best_epoch: int | None
    #: epochs already done when this call started (0 for a fresh run)
    resumed_from: int
    global_step: int
    #: images that went through training steps (all ranks): the budget to compare methods by
    images_seen: int
    config: dict = field(default_factory=dict)

    def frame(self):
        """The history as a pandas DataFrame (one row per epoch)."""
        import pandas as pd

        return pd.DataFrame(self.history)

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def _validate(epochs, batch_size, lr, weight_decay, schedule, log_every, grad_clip):
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if log_every is not None and int(log_every) < 1:
        raise ValueError(f"log_every must be >= 1 or None, got {log_every}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be > 0 or None, got {grad_clip}")


OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(name: str, groups: list[dict], lr: float, weight_decay: float):
    """AdamW (decoupled weight decay) or SGD with momentum 0.9."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def _scalar(v) -> torch.Tensor | float:
    return v.detach().float().reshape(()) if isinstance(v, torch.Tensor) else float(v)


def _clear_run(out: Path) -> None:
    for p in [out / LAST, out / BEST, out / "history.json", *out.glob("epoch_*.pt")]:
        p.unlink(missing_ok=True)


def fit(algorithm, train_data, *, epochs: int, batch_size: int, lr: float,
        weight_decay: float = 0.0, seed: int = 0, out_dir, device: str = "auto",
        precision: str = "fp32", compile: bool | str = False, num_workers: int = 0,
        val_fn: Callable[[Any], dict] | None = None, monitor: str | None = None,
        monitor_mode: str = "max",
        log_every: int | None = 50, schedule: str = "cosine", warmup_steps: int = 0,
        grad_clip: float | None = None, optimizer: str = "adamw", resume: bool = True,
        keep_epochs: bool = False,
        on_epoch_end: Callable[[dict], None] | None = None, verbose: bool = True) -> TrainResult:
    """Train ``algorithm`` on ``train_data``; checkpoint every epoch; resume exactly.

    Parameters
    ----------
    algorithm: a :class:`cxrlab.methods.base.Algorithm`.
    train_data: a :class:`cxrlab.data.dataset.CacheDataset`, ``(images, labels)`` tensors from
        :func:`cxrlab.data.dataset.load_arrays`, or a dict of tensors (see :mod:`cxrlab.engine.batching`).
    epochs, batch_size: the budget. ``batch_size`` is the *global* batch (split over ranks
        under ``torchrun``); every epoch has ``len(train_data) // batch_size`` steps.
    lr, weight_decay: base learning rate (methods may scale it per parameter group, see
        ``Algorithm.param_groups``) and decoupled weight decay.
    seed: seeds the random generators at the start and fixes each epoch's batch order.
    out_dir: checkpoint folder (``last.pt``, ``best.pt``, ``epoch_XXX.pt``, ``history.json``).
    device: "auto", "cpu", "cuda", "cuda:1", "mps".
    precision: "fp32" or "bf16" (bf16 autocast on CUDA only; fp32 elsewhere, with a warning).
    compile: ``torch.compile`` the algorithm's ``compile_targets()`` in place; ``True`` or a
        backend name.
    num_workers: DataLoader worker processes (Dataset inputs only).
    val_fn: ``val_fn(algorithm) -> {name: float}`` after every epoch (e.g.
        :func:`cxrlab.engine.predict.make_val_fn` on the *source* validation split).
    monitor, monitor_mode: a key of ``val_fn``'s result and whether higher ("max", e.g.
        ``auc_macro``) or lower ("min", e.g. ``loss``) is better: the best epoch is kept in
        ``best.pt``.
    log_every: record the mean loss every this many steps in ``TrainResult.steps`` (and check
        for NaN at least this often on GPU; on CPU every step is checked).
    schedule, warmup_steps: "cosine" (to 0 at the end) or "constant", after a linear warm-up.
    grad_clip: clip the global gradient norm to this value.
    optimizer: "adamw" (default) or "sgd" (momentum 0.9, as the SupCon reference code uses).
    resume: continue from ``out_dir/last.pt`` when it exists (its configuration must match);
        ``False`` deletes this folder's checkpoints and starts over.
    keep_epochs: also keep ``epoch_XXX.pt`` for every epoch.
    on_epoch_end: called on rank 0 with the epoch's history record, after its checkpoint is written.
    verbose: print one line per epoch (rank 0).
    """
    _validate(epochs, batch_size, lr, weight_decay, schedule, log_every, grad_clip)
    if monitor_mode not in ("max", "min"):
        raise ValueError(f"monitor_mode must be 'max' or 'min', got {monitor_mode!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    optimizer_name = optimizer
    epochs, batch_size = int(epochs), int(batch_size)
    dev = torch.device(resolve_device(device))
    info = D.init_distributed(dev.type)
    if info.enabled and dev.type == "cuda":
        dev = torch.device("cuda", info.local_rank)
    precision = effective_precision(dev, precision)
    out = Path(out_dir)

    # ---------------------------------------------------------------- data
    batches = as_batches(train_data)
    width = label_width(batches)
    if width is not None and width != algorithm.num_labels:
        raise ValueError(f"the training labels have {width} columns but the algorithm was built "
                         f"for num_labels={algorithm.num_labels}; build it with num_labels={width} "
                         "(the size of the label space)")
    algorithm.prepare_data(batches)  # e.g. the masking methods' masks: errors before step 1
    sampler = EpochBatchSampler(len(batches), batch_size, seed, info.rank, info.world_size)
    steps_per_epoch = len(sampler)

    # ---------------------------------------------------------------- model and optimiser
    algorithm.to(dev)
    algorithm.channels_last = use_channels_last(algorithm, dev)
    groups = [g for g in algorithm.param_groups(lr) if len(g["params"])]
    if not groups:
        raise ValueError(f"{algorithm.name} has no trainable parameters; nothing to train")
    optimizer = make_optimizer(optimizer, groups, lr, weight_decay)
    total_steps = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, StepSchedule(schedule, total_steps,
                                                                          warmup_steps))
    config = {
        "algorithm": algorithm.name, "algorithm_class": type(algorithm).__qualname__,
        "hparams": algorithm.hparams, "num_labels": algorithm.num_labels,
        "backbone": getattr(algorithm.backbone, "name", type(algorithm.backbone).__name__),
        "backbone_weights": getattr(algorithm.backbone, "weights_id", None),
        "n_parameters": sum(p.numel() for p in algorithm.parameters()),
        "epochs": epochs, "batch_size": batch_size, "lr": float(lr),
        "weight_decay": float(weight_decay), "seed": int(seed), "precision": precision,
        "schedule": schedule, "warmup_steps": int(warmup_steps),
        "grad_clip": None if grad_clip is None else float(grad_clip), "optimizer": optimizer_name,
        "monitor": monitor, "monitor_mode": monitor_mode,
        "world_size": info.world_size, "n_train": len(batches), "data": fingerprint(batches),
    }
    chash = config_hash(config)

    # ---------------------------------------------------------------- fresh start or resume
    last = out / LAST
    exists = D.broadcast_object(last.exists())
    history: list[dict] = []
    steps: list[dict] = []
    start_epoch, global_step = 0, 0
    best_epoch, best_value = None, None
    if exists and resume:
        ckpt = load_checkpoint(last)
        check_same_config(ckpt, config, last)
        algorithm.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, global_step = int(ckpt["epoch"]), int(ckpt["global_step"])
        history, steps = list(ckpt["history"]), list(ckpt["steps"])
        best_epoch, best_value = ckpt.get("best_epoch"), ckpt.get("best_value")
        restore_rng(ckpt["rng"][info.rank])
        if verbose and info.is_main and start_epoch < epochs:
            print(f"resuming {algorithm.name} from {last} after epoch {start_epoch}/{epochs}")
    else:
        if info.is_main and exists:
            _clear_run(out)
        seed_everything(seed if info.rank == 0 else epoch_seed(seed, 10_000 + info.rank))
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    compile_modules(algorithm.compile_targets(), compile)
    model = D.wrap_ddp(algorithm, dev)

    watch = LossWatch(check_every=1 if dev.type == "cpu" else (log_every or 50),
                      all_reduce=D.all_reduce if info.enabled else None)

    # ---------------------------------------------------------------- epochs
    for epoch in range(start_epoch + 1, epochs + 1):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        loader = batches.loader(sampler, num_workers=num_workers, pin_memory=dev.type == "cuda",
                                seed=seed)
        algorithm.train()
        watch.reset()
        sums: dict[str, Any] = {}
        bar = progress(loader, total=steps_per_epoch, desc=f"{algorithm.name} {epoch}/{epochs}",
                       **({} if info.is_main else {"disable": True}))
        for i, batch in enumerate(bar):
            batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
            with autocast_context(dev, precision):
                outputs = model(batch, global_step)
            loss = outputs["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(algorithm.trainable_parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
            watch.add(loss, epoch, i, global_step)
            for k, v in outputs.items():
                if k != "loss":
                    sums[k] = sums.get(k, 0.0) + _scalar(v)
            global_step += 1
            if log_every and global_step % log_every == 0:
                rec = {"epoch": epoch, "step": i, "global_step": global_step,
                       "loss": watch.window_mean(), "lr": max(scheduler.get_last_lr())}
                steps.append(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", refresh=False)
        watch.check()

        # ------------------------------------------------------------ epoch record
        means = torch.tensor([watch.mean()] + [float(sums[k]) / steps_per_epoch for k in sorted(sums)],
                             dtype=torch.float64)
        means = D.all_reduce(means, op="mean") if info.enabled else means
        record = {"epoch": epoch, "global_step": global_step, "loss": float(means[0]),
                  "lr": float(max(scheduler.get_last_lr()))}
        record.update({k: float(v) for k, v in zip(sorted(sums), means[1:].tolist())})
        if val_fn is not None:
            if info.is_main:
                algorithm.eval()
                with torch.no_grad():
                    vals = val_fn(algorithm)
                algorithm.train()
                vals = {(k if k.startswith("val_") else f"val_{k}"): float(v)
                        for k, v in dict(vals).items()}
            else:
                vals = None
            record.update(D.broadcast_object(vals))
        record["seconds"] = round(time.perf_counter() - t0, 3)

        improved = False
        if monitor is not None:
            key = monitor if monitor.startswith("val_") else f"val_{monitor}"
            if key not in record:
                raise KeyError(f"monitor={monitor!r} but val_fn returned "
                               f"{sorted(k for k in record if k.startswith('val_'))}")
            value = record[key]
            better = (best_value is None or (value > best_value if monitor_mode == "max"
                                             else value < best_value))
            if np.isfinite(value) and better:
                best_epoch, best_value, improved = epoch, float(value), True
        history.append(record)

        # ------------------------------------------------------------ checkpoint (rank 0)
        rng = D.all_gather_object(capture_rng())
        if info.is_main:
            state = {
                "model": algorithm.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch, "global_step": global_step,
                "rng": rng, "history": history, "steps": steps, "config": config,
                "config_hash": chash, "best_epoch": best_epoch, "best_value": best_value,
            }
            save_checkpoint(last, state)
            if keep_epochs:
                atomic_copy(last, epoch_path(out, epoch))
            if improved:
                atomic_copy(last, out / BEST)
            atomic_write_json(out / "history.json", {"config": config, "history": history})
        D.barrier()
        if info.is_main:
            if verbose:
                extra = "  ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith("val_"))
                print(f"{algorithm.name} epoch {epoch}/{epochs}  loss {record['loss']:.4f}  "
                      f"{extra + '  ' if extra else ''}lr {record['lr']:.2e}  {record['seconds']:.1f}s")
            log.info("epoch %d/%d done: %s", epoch, epochs, record)
            if on_epoch_end is not None:
                on_epoch_end(dict(record))

    algorithm.eval()  # ready to predict; fit() puts it back in train mode when called again
    return TrainResult(
        history=history, steps=steps, out_dir=out, last_path=last,
        best_path=(out / BEST) if best_epoch is not None else None, best_epoch=best_epoch,
        resumed_from=start_epoch, global_step=global_step,
        images_seen=global_step * batch_size, config=config,
    )
