"""Linear probes: a logistic-regression head on top of a frozen backbone.

Two ways to train the same head, with the same schedule (same initialisation, same minibatch
order, same AdamW steps), so their results can be compared number for number:

* :func:`train_linear_probe` (the fast way): embeddings are computed once
  (:func:`cxrlab.probe.extract_embeddings`, cached on disk) and the head trains on those
  tensors; ten epochs take a fraction of a second.
* :func:`train_frozen_probe_epochs` (the seed project's way, kept as a baseline): every epoch
  sends every image through the frozen backbone again. The backbone does not change, so the
  embeddings do not either: nine of ten forward passes are wasted work.

Labels are multi-label with NaN for "not labelled" (see :mod:`cxrlab.losses`). Model selection
(number of epochs, weight decay) uses the *source validation* split only; never the target.

Calibration. A probe whose scores are read as probabilities (a fixed threshold of 0.5, or a
threshold tuned on one hospital and used at another) must be calibrated, and three defaults see
to it: the bias starts at the logit of each label's training prevalence (``init_bias=
"prevalence"``: the model starts out predicting the base rate, not 0.5 for a finding seen in 3 %
of images); the epoch kept is the one with the lowest source-validation BCE (``select=
"val_loss"``, a proper scoring rule that rewards calibration and ranking, where AUC ignores
calibration); and training runs until that loss has not improved for ``patience`` epochs.
``init_bias="zero", select="val_auc", patience=None`` reproduce the seed project's probe.
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from cxrlab.errors import UsageError
from cxrlab.losses import balanced_pos_weight, masked_bce_with_logits
from cxrlab.metrics import masked_auc_macro
from cxrlab.progress import progress


class LinearProbe(nn.Module):
    """``logits = W ((emb - mean) / std) + b``: standardisation (fitted on the training
    embeddings; identity when ``standardize=False``) followed by one linear layer.

    Attributes: ``history`` (per-epoch train loss, and val loss/AUC when validated),
    ``best_epoch`` (the epoch kept by validation, else the last), ``config`` (hyper-parameters).
    """

    def __init__(self, dim: int, n_labels: int, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim) if mean is None else mean.float().clone())
        self.register_buffer("std", torch.ones(dim) if std is None else std.float().clone())
        self.linear = nn.Linear(dim, n_labels)
        nn.init.zeros_(self.linear.weight)  # deterministic start: p = 0.5 everywhere (the
        nn.init.zeros_(self.linear.bias)    # trainers then set the bias to the base rates)
        self.history: list[dict] = []
        self.best_epoch: int | None = None
        self.config: dict = {}

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.linear((emb - self.mean) / self.std)


def fit_standardizer(emb: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of training embeddings (std floored at ``eps``)."""
    emb = emb.double()
    return emb.mean(0).float(), emb.std(0, unbiased=False).clamp(min=eps).float()


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's minibatches: a permutation of ``range(n)`` from ``generator``, cut in
    ``batch_size`` pieces. Both probe trainers draw their order from here."""
    perm = torch.randperm(n, generator=generator)
    return list(perm.split(batch_size))


def _check_inputs(emb: torch.Tensor, y: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    emb = torch.as_tensor(emb, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.float32)
    if y.ndim == 1:
        y = y[:, None]
    if emb.ndim != 2 or len(emb) != len(y):
        raise UsageError(f"{what}: embeddings {tuple(emb.shape)} and labels {tuple(y.shape)} "
                         "must be [n, D] and [n, L] with the same n")
    return emb, y


def _resolve_pos_weight(pos_weight, y: torch.Tensor):
    if pos_weight is None:
        return None
    if isinstance(pos_weight, str):
        if pos_weight != "balanced":
            raise UsageError(f"pos_weight must be None, 'balanced' or a tensor, got {pos_weight!r}")
        return balanced_pos_weight(y)
    return torch.as_tensor(pos_weight, dtype=torch.float32)


def prevalence_logits(y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Per label, the logit of the share of positives among *labelled* rows (clamped to
    ``[eps, 1 - eps]``); 0 (p = 0.5) for a label without a single labelled row."""
    y = torch.as_tensor(y, dtype=torch.float64)
    labelled = ~torch.isnan(y)
    n = labelled.sum(0)
    pos = torch.where(labelled, y, torch.zeros_like(y)).sum(0)
    p = (pos / n.clamp(min=1)).clamp(eps, 1 - eps)
    return torch.where(n > 0, torch.logit(p), torch.zeros_like(p)).float()


INIT_BIAS = ("prevalence", "zero")
SELECT = ("val_loss", "val_auc")


class _HeadTrainer:
    """The schedule both trainers share: a LinearProbe, AdamW, seeded minibatch order."""

    def __init__(self, probe: LinearProbe, y: torch.Tensor, *, epochs: int, lr: float,
                 weight_decay: float, batch_size: int, seed: int, pos_weight,
                 init_bias: str = "prevalence"):
        if epochs < 1 or batch_size < 1:
            raise UsageError(f"epochs and batch_size must be positive, got {epochs}, {batch_size}")
        if init_bias not in INIT_BIAS:
            raise UsageError(f"init_bias must be one of {INIT_BIAS}, got {init_bias!r}")
        if init_bias == "prevalence":
            with torch.no_grad():
                probe.linear.bias.copy_(prevalence_logits(y))
        self.probe, self.y = probe, y
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.pos_weight = _resolve_pos_weight(pos_weight, y)
        self.opt = torch.optim.AdamW(probe.linear.parameters(), lr=lr, weight_decay=weight_decay)
        self.generator = torch.Generator().manual_seed(int(seed))
        probe.config = {"epochs": epochs, "lr": lr, "weight_decay": weight_decay,
                        "batch_size": batch_size, "seed": seed,
                        "pos_weight": None if pos_weight is None else
                        (pos_weight if isinstance(pos_weight, str) else "given"),
                        "init_bias": init_bias}

    def step(self, emb_batch: torch.Tensor, idx: torch.Tensor) -> float:
        self.probe.train()
        loss = masked_bce_with_logits(self.probe(emb_batch), self.y[idx], pos_weight=self.pos_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach()) * len(idx)


class _Selector:
    """Keeps the epoch with the best source-validation score: the lowest BCE (``select=
    "val_loss"``) or the highest macro AUC (``"val_auc"``; the loss where AUC is undefined)."""

    def __init__(self, val_emb, val_y, pos_weight, select: str = "val_loss"):
        if select not in SELECT:
            raise UsageError(f"select must be one of {SELECT}, got {select!r}")
        self.val_emb, self.val_y, self.pos_weight, self.select = val_emb, val_y, pos_weight, select
        self.best_score, self.best_state, self.best_epoch = -math.inf, None, None

    def update(self, probe: LinearProbe, epoch: int, record: dict) -> None:
        if self.val_emb is None:
            probe.best_epoch = epoch
            return
        probe.eval()
        with torch.no_grad():
            logits = probe(self.val_emb)
            record["val_loss"] = float(masked_bce_with_logits(logits, self.val_y, self.pos_weight))
        record["val_auc"] = masked_auc_macro(self.val_y.numpy(), torch.sigmoid(logits).numpy())
        use_auc = self.select == "val_auc" and not math.isnan(record["val_auc"])
        score = record["val_auc"] if use_auc else -record["val_loss"]
        if score > self.best_score:  # ties keep the earlier (cheaper) epoch
            self.best_score, self.best_epoch = score, epoch
            self.best_state = copy.deepcopy(probe.state_dict())

    def finish(self, probe: LinearProbe) -> LinearProbe:
        if self.best_state is not None:
            probe.load_state_dict(self.best_state)
            probe.best_epoch = self.best_epoch
        return probe.eval()


def train_linear_probe(train_emb, train_y, val_emb=None, val_y=None, *, epochs: int = 10,
                       lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 128,
                       seed: int = 0, pos_weight=None, standardize: bool = True,
                       init_bias: str = "prevalence", select: str = "val_loss",
                       patience: int | None = None) -> LinearProbe:
    """Train a linear probe on cached embeddings (CPU tensors; seconds).

    Parameters
    ----------
    train_emb, train_y : [n, D] embeddings and [n, L] labels (1 / 0 / NaN = not labelled).
    val_emb, val_y : optional *source validation* set: the epoch with the best validation
        score (``select``) is kept (``probe.best_epoch``); without it the last epoch is kept.
    epochs, lr, weight_decay, batch_size, seed : AdamW on shuffled minibatches, the seed
        project's schedule by default (10 epochs, batch 128).
    pos_weight : None, ``"balanced"`` (n_neg / n_pos per label) or a tensor [L].
    standardize : standardise embeddings with the training mean/std first (better conditioned;
        ``False`` reproduces a plain linear layer on raw embeddings).
    init_bias : ``"prevalence"`` (logit of each label's training prevalence) or ``"zero"``.
    select : ``"val_loss"`` (lowest source-validation BCE: sees calibration) or ``"val_auc"``.
    patience : stop once the validation score has not improved for this many epochs (``epochs``
        is then a cap); ``None`` runs every epoch. Needs a validation set.
    """
    train_emb, train_y = _check_inputs(train_emb, train_y, "train")
    if val_emb is not None:
        val_emb, val_y = _check_inputs(val_emb, val_y, "val")
    mean, std = fit_standardizer(train_emb) if standardize else (None, None)
    probe = LinearProbe(train_emb.shape[1], train_y.shape[1], mean, std)
    if patience is not None and (int(patience) < 1 or val_emb is None):
        raise UsageError(f"patience must be a positive number of epochs and needs a validation "
                         f"set, got patience={patience!r} with"
                         f"{'out' if val_emb is None else ''} validation embeddings")
    trainer = _HeadTrainer(probe, train_y, epochs=epochs, lr=lr, weight_decay=weight_decay,
                           batch_size=batch_size, seed=seed, pos_weight=pos_weight,
                           init_bias=init_bias)
    probe.config.update(standardize=standardize, select=select, patience=patience)
    selector = _Selector(val_emb, val_y, trainer.pos_weight, select)
    for epoch in range(1, trainer.epochs + 1):
        total = 0.0
        for idx in epoch_batches(len(train_emb), trainer.batch_size, trainer.generator):
            total += trainer.step(train_emb[idx], idx)
        record = {"epoch": epoch, "train_loss": total / max(1, len(train_emb))}
        selector.update(probe, epoch, record)
        probe.history.append(record)
        if patience is not None and epoch - selector.best_epoch >= int(patience):
            break
    return selector.finish(probe)


def select_linear_probe(train_emb, train_y, val_emb, val_y, *,
                        weight_decays: Sequence[float] = (0.0, 1e-4, 1e-3, 1e-2),
                        **kwargs) -> LinearProbe:
    """Grid over weight decay (and, through validation, the epoch), all judged on the *source
    validation* set by the same score as the epochs (``select``, default the validation BCE);
    returns the best probe with ``probe.selection`` (one dict per candidate)."""
    select = kwargs.get("select", "val_loss")
    best_score, best_probe, table = -math.inf, None, []
    for wd in weight_decays:
        p = train_linear_probe(train_emb, train_y, val_emb, val_y, weight_decay=wd, **kwargs)
        best = next((h for h in p.history if h["epoch"] == p.best_epoch), {})
        val_auc, val_loss = best.get("val_auc", float("nan")), best.get("val_loss", float("nan"))
        table.append({"weight_decay": wd, "best_epoch": p.best_epoch, "val_auc": val_auc,
                      "val_loss": val_loss})
        score = val_auc if select == "val_auc" else -val_loss
        score = -math.inf if math.isnan(score) else score
        if best_probe is None or score > best_score:
            best_score, best_probe = score, p
    probe = best_probe
    probe.selection = table
    return probe


@torch.no_grad()
def predict_proba(probe: LinearProbe, emb, batch_size: int = 65536) -> np.ndarray:
    """Sigmoid probabilities [n, L] (NumPy float32) of embeddings [n, D]."""
    probe.eval()
    emb = torch.as_tensor(emb, dtype=torch.float32)
    dev = probe.mean.device
    out = [torch.sigmoid(probe(emb[i:i + batch_size].to(dev))).cpu()
           for i in range(0, len(emb), batch_size)]
    return (torch.cat(out) if out else torch.empty(0, probe.linear.out_features)).numpy()


def train_frozen_probe_epochs(backbone, cache, rows, labels, *, epochs: int = 10,
                              lr: float = 1e-3, weight_decay: float = 1e-4,
                              batch_size: int = 128, seed: int = 0, pos_weight=None,
                              standardize: bool = False, device: str = "auto",
                              precision: str = "fp32",
                              init_bias: str = "prevalence") -> LinearProbe:
    """The seed project's linear probe, kept as a baseline: every epoch, every minibatch of
    images goes through the frozen backbone again, then the head takes one AdamW step.

    Same head, initialisation, minibatch order and optimiser as :func:`train_linear_probe`
    with the same arguments, so the two give the same probe up to floating-point noise
    (``standardize=True`` costs one extra forward pass here, to fit the statistics).

    ``rows``: cache rows of the training images; ``labels``: [n, L] (NaN = not labelled).
    """
    from cxrlab.profiles import resolve_device
    from cxrlab.data.cache import Cache, open_cache
    from cxrlab.engine.accel import autocast_context, effective_precision
    from cxrlab.probe.embeddings import (compute_embeddings,
                                   read_images)

    cache = cache if isinstance(cache, Cache) else open_cache(cache)
    rows = np.asarray(rows, dtype=np.int64)
    y = torch.as_tensor(labels, dtype=torch.float32)
    y = y[:, None] if y.ndim == 1 else y
    if len(y) != len(rows):
        raise UsageError(f"{len(rows)} rows but {len(y)} label rows; pass one label row per image")
    device = resolve_device(device)
    prec = effective_precision(torch.device(device), precision)
    mean = std = None
    if standardize:
        mean, std = fit_standardizer(compute_embeddings(backbone, cache, rows, device=device,
                                                        precision=prec))
    probe = LinearProbe(backbone.num_features, y.shape[1], mean, std)
    trainer = _HeadTrainer(probe, y, epochs=epochs, lr=lr, weight_decay=weight_decay,
                           batch_size=batch_size, seed=seed, pos_weight=pos_weight,
                           init_bias=init_bias)
    probe.config["standardize"] = standardize
    was_training, home = backbone.training, next(backbone.parameters()).device
    backbone.eval().to(device)
    try:
        for epoch in progress(range(1, trainer.epochs + 1), desc=f"frozen probe {backbone.name}",
                              unit="epoch"):
            total = 0.0
            for idx in epoch_batches(len(rows), trainer.batch_size, trainer.generator):
                x = read_images(cache.images, rows[idx.numpy()]).to(device)
                with torch.no_grad(), autocast_context(torch.device(device), prec):
                    emb = backbone(backbone.normalize(x)).float().cpu()
                total += trainer.step(emb, idx)
            probe.history.append({"epoch": epoch, "train_loss": total / max(1, len(rows))})
        probe.best_epoch = trainer.epochs
    finally:
        backbone.to(home).train(was_training)
    return probe.eval()

