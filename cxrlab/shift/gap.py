"""Train at the source hospital, test everywhere: the AUC gap that domain shift costs."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from cxrlab.data.cache import Cache
from cxrlab.data.dataset import load_arrays
from cxrlab.labels import get_label_space
from cxrlab.shift.images import _domains
from cxrlab.shift.classifier import evaluate_auc, train_small_cnn

#: findings used by default to measure the source-to-target gap: common enough in a few
#: hundred images per hospital to give a usable AUC, and shared by NIH and CheXpert/MIMIC.
DEFAULT_GAP_LABELS: tuple[str, ...] = ("Effusion", "Cardiomegaly", "Pneumothorax",
                                       "Atelectasis", "Edema", "Consolidation")


def _resolve_targets(cache: Cache, source: str, targets) -> list[str]:
    targets = [d for d in cache.domains if d != source] if targets is None else (
        [targets] if isinstance(targets, str) else list(targets))
    _domains(cache, [source] + targets)
    if source in targets:
        raise ValueError(f"source {source!r} is also listed as a target")
    return targets


def train_at_source(cache: Cache, source: str, labels: Sequence[str], *, epochs: int, seed: int,
                    lr: float, batch_size: int, backbone: str | None, device: str,
                    pretrained: bool = False):
    """The small CNN of :func:`source_target_gap`, trained on ``source``'s train split with the
    epoch chosen on its val split (nothing of any other hospital is seen)."""
    tr, va = cache.select("train", source), cache.select("val", source)
    if len(tr) < 2:
        raise ValueError(f"source {source!r} has {len(tr)} training images; need more")
    x_tr, y_tr = load_arrays(cache, tr, labels)
    val = load_arrays(cache, va, labels) if len(va) else None
    return train_small_cnn(x_tr, y_tr, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                           val=val, label_names=labels, backbone=backbone, device=device,
                           pretrained=pretrained)


def evaluation_rows(cache: Cache, domain: str, role: str, target_split: str | None):
    """Rows a domain is scored on: the source's test split; a target's ``target_split``
    (``None``: every image, since the model never saw that hospital)."""
    if target_split is not None and target_split not in ("train", "val", "test"):
        raise ValueError(f"target_split must be 'train', 'val', 'test' or None, got {target_split!r}")
    return cache.select("test" if role == "source" else target_split, domain)


def source_target_gap(cache: Cache, source: str = "source", targets: Sequence[str] | None = None,
                      labels: Sequence[str] = DEFAULT_GAP_LABELS, *, epochs: int = 8,
                      seed: int = 0, lr: float = 3e-3, batch_size: int = 32,
                      backbone: str | None = None, device: str = "cpu",
                      target_split: str | None = "test", return_model: bool = False,
                      pretrained: bool = False):
    """Train at ``source`` (its train split), choose the epoch on its val split, and report the
    AUC on the *test* split of the source and of every target.

    ``target_split=None`` scores *every* image of each target instead of its test split: the
    model never saw any image of a target hospital, so all of them are held out, and rare
    labels get several times more positives (a steadier AUC). The source is always scored on
    its test split only. ``pretrained=True`` fine-tunes the backbone's published weights (the
    pretrained stand-ins for the tiny backbones) instead of training from random init.

    Returns a DataFrame, one row per domain: ``domain, role`` ("source"/"target"), ``n``,
    ``auc_macro`` (mean over ``labels`` with positives), ``drop`` (source AUC minus this AUC;
    positive = worse than at home) and one ``auc_<label>`` / ``n_pos_<label>`` column pair per
    label. ``df.attrs`` records the source, labels, seed, best epoch and validation AUC.
    With ``return_model=True`` returns ``(df, model)``. One seed, no interval: for intervals
    over seeds and patients see :func:`cxrlab.shift.gap_over_seeds`.
    """
    labels = tuple(get_label_space(labels))
    targets = _resolve_targets(cache, source, targets)
    evaluation_rows(cache, source, "source", target_split)  # checks target_split early
    model = train_at_source(cache, source, labels, epochs=epochs, seed=seed, lr=lr,
                            batch_size=batch_size, backbone=backbone, device=device,
                            pretrained=pretrained)
    rows = []
    for role, dom in [("source", source)] + [("target", t) for t in targets]:
        te = evaluation_rows(cache, dom, role, target_split)
        x_te, y_te = load_arrays(cache, te, labels)
        res = evaluate_auc(model, x_te, y_te, labels)
        row = {"domain": dom, "role": role, "n": len(te), "auc_macro": res["auc_macro"]}
        for _, r in res["per_label"].iterrows():
            row[f"auc_{r['label']}"] = r["auc"]
            row[f"n_pos_{r['label']}"] = r["n_pos"]
        rows.append(row)
    df = pd.DataFrame(rows)
    df.insert(4, "drop", df["auc_macro"].iloc[0] - df["auc_macro"])
    val_scores = [h.get("val_auc_macro") for h in model.history]
    df.attrs.update(source=source, labels=list(labels), seed=seed, epochs=epochs,
                    target_split=target_split or "all",
                    best_epoch=model.best_epoch,
                    val_auc=(val_scores[model.best_epoch - 1] if model.best_epoch else None),
                    synthetic=cache.synthetic)
    return (df, model) if return_model else df


def label_drop(gap: pd.DataFrame, label: str, target: str | None = None) -> float:
    """Source-minus-target AUC of one label from a :func:`source_target_gap` table (the largest
    drop over targets when ``target`` is None)."""
    col = f"auc_{label}"
    if col not in gap.columns:
        raise KeyError(f"{label!r} was not evaluated; labels were {gap.attrs.get('labels')}")
    src = gap.loc[gap["role"] == "source", col].iloc[0]
    tgt = gap[gap["role"] == "target"]
    if target is not None:
        tgt = tgt[tgt["domain"] == target]
        if tgt.empty:
            raise KeyError(f"no target {target!r} in this table")
    return float((src - tgt[col]).max())
