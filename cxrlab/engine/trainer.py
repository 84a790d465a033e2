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

import dataclasses
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


OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class FitConfig:
    """How :func:`fit` trains: the budget, the optimiser and the bookkeeping. Checked when made,
    so a bad value fails before any data is touched. ``fit(alg, data, epochs=3, ...)`` builds
    one from its keyword arguments; ``fit(alg, data, FitConfig(...))`` takes it as is, and
    ``config.replace(lr=1e-4)`` gives a variant."""

    #: the budget: ``batch_size`` is the *global* batch (split over ranks under ``torchrun``);
    #: every epoch has ``len(train_data) // batch_size`` steps
    epochs: int
    batch_size: int
    #: base learning rate (methods may scale it per parameter group, see
    #: ``Algorithm.param_groups``) and decoupled weight decay
    lr: float
    #: checkpoint folder (``last.pt``, ``best.pt``, ``epoch_XXX.pt``, ``history.json``)
    out_dir: Any
    weight_decay: float = 0.0
    #: seeds the random generators at the start and fixes each epoch's batch order
    seed: int = 0
    #: "auto", "cpu", "cuda", "cuda:1", "mps"
    device: str = "auto"
    #: "fp32" or "bf16" (bf16 autocast on CUDA only; fp32 elsewhere, with a warning)
    precision: str = "fp32"
    #: ``torch.compile`` the algorithm's ``compile_targets()`` in place; True or a backend name
    compile: bool | str = False
    #: DataLoader worker processes (Dataset inputs only)
    num_workers: int = 0
    #: ``val_fn(algorithm) -> {name: float}`` after every epoch (e.g.
    #: :func:`cxrlab.engine.predict.make_val_fn` on the *source* validation split)
    val_fn: Callable[[Any], dict] | None = None
    #: a key of ``val_fn``'s result; the best epoch ("max": higher is better, "min": lower) is
    #: kept in ``best.pt``
    monitor: str | None = None
    monitor_mode: str = "max"
    #: record the mean loss every this many steps in ``TrainResult.steps`` (and check for NaN
    #: at least this often on GPU; on CPU every step is checked)
    log_every: int | None = 50
    #: "cosine" (to 0 at the end) or "constant", after a linear warm-up of ``warmup_steps``
    schedule: str = "cosine"
    warmup_steps: int = 0
    #: clip the global gradient norm to this value
    grad_clip: float | None = None
    #: "adamw", or "sgd" (momentum 0.9, as the SupCon reference code uses)
    optimizer: str = "adamw"
    #: continue from ``out_dir/last.pt`` when it exists (its configuration must match);
    #: False deletes this folder's checkpoints and starts over
    resume: bool = True
    #: also keep ``epoch_XXX.pt`` for every epoch
    keep_epochs: bool = False
    #: called on rank 0 with the epoch's history record, after its checkpoint is written
    on_epoch_end: Callable[[dict], None] | None = None
    #: print one line per epoch (rank 0)
    verbose: bool = True

    def __post_init__(self):
        def bad(what: str):
            raise ValueError(what)

        if isinstance(self.epochs, bool) or int(self.epochs) < 1:
            bad(f"epochs must be >= 1, got {self.epochs}")
        if isinstance(self.batch_size, bool) or int(self.batch_size) < 1:
            bad(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0 or not np.isfinite(self.lr):
            bad(f"lr must be a finite number > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            bad(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            bad(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.log_every is not None and int(self.log_every) < 1:
            bad(f"log_every must be >= 1 or None, got {self.log_every}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            bad(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.monitor_mode not in ("max", "min"):
            bad(f"monitor_mode must be 'max' or 'min', got {self.monitor_mode!r}")
        if self.optimizer not in OPTIMIZERS:
            bad(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        object.__setattr__(self, "epochs", int(self.epochs))
        object.__setattr__(self, "batch_size", int(self.batch_size))

    def replace(self, **changes) -> "FitConfig":
        return dataclasses.replace(self, **changes)


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


def fit(algorithm, train_data, config: FitConfig | None = None, **kwargs) -> TrainResult:
    """Train ``algorithm`` on ``train_data``; checkpoint every epoch; resume exactly.

    ``algorithm``: a :class:`cxrlab.methods.base.Algorithm`. ``train_data``: a
    :class:`cxrlab.data.dataset.CacheDataset`, ``(images, labels)`` tensors from
    :func:`cxrlab.data.dataset.load_arrays`, or a dict of tensors (see
    :mod:`cxrlab.engine.batching`). How to train: a :class:`FitConfig`, or its fields as keyword
    arguments (``epochs``, ``batch_size``, ``lr`` and ``out_dir`` are required).
    """
    if config is None:
        config = FitConfig(**kwargs)
    elif kwargs:
        config = config.replace(**kwargs)
    run = _Run(algorithm, train_data, config)
    run.start_or_resume()
    for epoch in range(run.start_epoch + 1, config.epochs + 1):
        record = run.train_epoch(epoch)
        run.validate(record)
        improved = run.track_best(record)
        run.history.append(record)
        run.checkpoint(epoch, improved)
        run.report(record)
    algorithm.eval()  # ready to predict; fit() puts it back in train mode when called again
    return run.result()


class _Run:
    """The state of one :func:`fit` call, and the steps of its loop (one method each)."""

    def __init__(self, algorithm, train_data, cfg: FitConfig):
        self.alg, self.cfg = algorithm, cfg
        dev = torch.device(resolve_device(cfg.device))
        self.info = D.init_distributed(dev.type)
        if self.info.enabled and dev.type == "cuda":
            dev = torch.device("cuda", self.info.local_rank)
        self.dev = dev
        self.precision = effective_precision(dev, cfg.precision)
        self.out = Path(cfg.out_dir)
        self.last = self.out / LAST

        # data
        self.batches = as_batches(train_data)
        width = label_width(self.batches)
        if width is not None and width != algorithm.num_labels:
            raise ValueError(f"the training labels have {width} columns but the algorithm was "
                             f"built for num_labels={algorithm.num_labels}; build it with "
                             f"num_labels={width} (the size of the label space)")
        algorithm.prepare_data(self.batches)  # e.g. the masking methods' masks: errors before step 1
        self.sampler = EpochBatchSampler(len(self.batches), cfg.batch_size, cfg.seed,
                                         self.info.rank, self.info.world_size)
        self.steps_per_epoch = len(self.sampler)

        # model and optimiser
        algorithm.to(dev)
        algorithm.channels_last = use_channels_last(algorithm, dev)
        groups = [g for g in algorithm.param_groups(cfg.lr) if len(g["params"])]
        if not groups:
            raise ValueError(f"{algorithm.name} has no trainable parameters; nothing to train")
        self.optimizer = make_optimizer(cfg.optimizer, groups, cfg.lr, cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, StepSchedule(cfg.schedule, cfg.epochs * self.steps_per_epoch,
                                         cfg.warmup_steps))
        self.config = self._identity()
        self.chash = config_hash(self.config)
        self.history: list[dict] = []
        self.steps: list[dict] = []
        self.start_epoch = self.global_step = 0
        self.best_epoch, self.best_value = None, None

    def _identity(self) -> dict:
        """What a checkpoint must agree with to be resumed (hashed into ``config_hash``)."""
        alg, cfg = self.alg, self.cfg
        return {
            "algorithm": alg.name, "algorithm_class": type(alg).__qualname__,
            "hparams": alg.hparams, "num_labels": alg.num_labels,
            "backbone": getattr(alg.backbone, "name", type(alg.backbone).__name__),
            "backbone_weights": getattr(alg.backbone, "weights_id", None),
            "n_parameters": sum(p.numel() for p in alg.parameters()),
            "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": float(cfg.lr),
            "weight_decay": float(cfg.weight_decay), "seed": int(cfg.seed),
            "precision": self.precision, "schedule": cfg.schedule,
            "warmup_steps": int(cfg.warmup_steps),
            "grad_clip": None if cfg.grad_clip is None else float(cfg.grad_clip),
            "optimizer": cfg.optimizer, "monitor": cfg.monitor, "monitor_mode": cfg.monitor_mode,
            "world_size": self.info.world_size, "n_train": len(self.batches),
            "data": fingerprint(self.batches),
        }

    # ------------------------------------------------------------------ steps of the loop
    def start_or_resume(self) -> None:
        """Load ``last.pt`` (same configuration only) or start fresh, seeded."""
        cfg, info = self.cfg, self.info
        exists = D.broadcast_object(self.last.exists())
        if exists and cfg.resume:
            ckpt = load_checkpoint(self.last)
            check_same_config(ckpt, self.config, self.last)
            self.alg.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.start_epoch, self.global_step = int(ckpt["epoch"]), int(ckpt["global_step"])
            self.history, self.steps = list(ckpt["history"]), list(ckpt["steps"])
            self.best_epoch, self.best_value = ckpt.get("best_epoch"), ckpt.get("best_value")
            restore_rng(ckpt["rng"][info.rank])
            if cfg.verbose and info.is_main and self.start_epoch < cfg.epochs:
                print(f"resuming {self.alg.name} from {self.last} after epoch "
                      f"{self.start_epoch}/{cfg.epochs}")
        else:
            if info.is_main and exists:
                _clear_run(self.out)
            seed_everything(cfg.seed if info.rank == 0
                            else epoch_seed(cfg.seed, 10_000 + info.rank))
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        compile_modules(self.alg.compile_targets(), cfg.compile)
        self.model = D.wrap_ddp(self.alg, self.dev)
        self.watch = LossWatch(check_every=1 if self.dev.type == "cpu" else (cfg.log_every or 50),
                               all_reduce=D.all_reduce if info.enabled else None)

    def train_step(self, batch: dict, epoch: int, i: int) -> dict:
        """One optimiser step on one batch; returns the method's outputs."""
        batch = {k: v.to(self.dev, non_blocking=True) for k, v in batch.items()}
        with autocast_context(self.dev, self.precision):
            outputs = self.model(batch, self.global_step)
        loss = outputs["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.alg.trainable_parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.watch.add(loss, epoch, i, self.global_step)
        self.global_step += 1
        return outputs

    def train_epoch(self, epoch: int) -> dict:
        """Every step of one epoch; the epoch's record (mean loss and method scalars, lr)."""
        cfg, info = self.cfg, self.info
        t0 = time.perf_counter()
        self.sampler.set_epoch(epoch)
        loader = self.batches.loader(self.sampler, num_workers=cfg.num_workers,
                                     pin_memory=self.dev.type == "cuda", seed=cfg.seed)
        self.alg.train()
        self.watch.reset()
        sums: dict[str, Any] = {}
        bar = progress(loader, total=self.steps_per_epoch,
                       desc=f"{self.alg.name} {epoch}/{cfg.epochs}",
                       **({} if info.is_main else {"disable": True}))
        for i, batch in enumerate(bar):
            outputs = self.train_step(batch, epoch, i)
            for k, v in outputs.items():
                if k != "loss":
                    sums[k] = sums.get(k, 0.0) + _scalar(v)
            if cfg.log_every and self.global_step % cfg.log_every == 0:
                rec = {"epoch": epoch, "step": i, "global_step": self.global_step,
                       "loss": self.watch.window_mean(),
                       "lr": max(self.scheduler.get_last_lr())}
                self.steps.append(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", refresh=False)
        self.watch.check()
        means = torch.tensor([self.watch.mean()]
                             + [float(sums[k]) / self.steps_per_epoch for k in sorted(sums)],
                             dtype=torch.float64)
        means = D.all_reduce(means, op="mean") if info.enabled else means
        record = {"epoch": epoch, "global_step": self.global_step, "loss": float(means[0]),
                  "lr": float(max(self.scheduler.get_last_lr()))}
        record.update({k: float(v) for k, v in zip(sorted(sums), means[1:].tolist())})
        self.epoch_started = t0
        return record

    def validate(self, record: dict) -> None:
        """``val_fn`` on rank 0 (eval mode, no gradients), its values as ``val_<name>``."""
        if self.cfg.val_fn is not None:
            if self.info.is_main:
                self.alg.eval()
                with torch.no_grad():
                    vals = self.cfg.val_fn(self.alg)
                self.alg.train()
                vals = {(k if k.startswith("val_") else f"val_{k}"): float(v)
                        for k, v in dict(vals).items()}
            else:
                vals = None
            record.update(D.broadcast_object(vals))
        record["seconds"] = round(time.perf_counter() - self.epoch_started, 3)

    def track_best(self, record: dict) -> bool:
        """Whether this epoch is the best so far by ``monitor``."""
        monitor = self.cfg.monitor
        if monitor is None:
            return False
        key = monitor if monitor.startswith("val_") else f"val_{monitor}"
        if key not in record:
            raise KeyError(f"monitor={monitor!r} but val_fn returned "
                           f"{sorted(k for k in record if k.startswith('val_'))}")
        value, best = record[key], self.best_value
        better = best is None or (value > best if self.cfg.monitor_mode == "max" else value < best)
        if np.isfinite(value) and better:
            self.best_epoch, self.best_value = record["epoch"], float(value)
            return True
        return False

    def checkpoint(self, epoch: int, improved: bool) -> None:
        """``last.pt`` (atomic), ``best.pt`` when improved, ``history.json`` (rank 0)."""
        rng = D.all_gather_object(capture_rng())
        if self.info.is_main:
            state = {
                "model": self.alg.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": epoch,
                "global_step": self.global_step, "rng": rng, "history": self.history,
                "steps": self.steps, "config": self.config, "config_hash": self.chash,
                "best_epoch": self.best_epoch, "best_value": self.best_value,
            }
            save_checkpoint(self.last, state)
            if self.cfg.keep_epochs:
                atomic_copy(self.last, epoch_path(self.out, epoch))
            if improved:
                atomic_copy(self.last, self.out / BEST)
            atomic_write_json(self.out / "history.json",
                              {"config": self.config, "history": self.history})
        D.barrier()

    def report(self, record: dict) -> None:
        if not self.info.is_main:
            return
        cfg = self.cfg
        if cfg.verbose:
            extra = "  ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith("val_"))
            print(f"{self.alg.name} epoch {record['epoch']}/{cfg.epochs}  loss "
                  f"{record['loss']:.4f}  {extra + '  ' if extra else ''}lr {record['lr']:.2e}  "
                  f"{record['seconds']:.1f}s")
        log.info("epoch %d/%d done: %s", record["epoch"], cfg.epochs, record)
        if cfg.on_epoch_end is not None:
            cfg.on_epoch_end(dict(record))

    def result(self) -> TrainResult:
        return TrainResult(
            history=self.history, steps=self.steps, out_dir=self.out, last_path=self.last,
            best_path=(self.out / BEST) if self.best_epoch is not None else None,
            best_epoch=self.best_epoch, resumed_from=self.start_epoch,
            global_step=self.global_step, images_seen=self.global_step * self.cfg.batch_size,
            config=self.config,
        )
