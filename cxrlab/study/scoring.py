"""Scoring one trained model on every evaluation set, thresholds from source validation only."""
from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlab import metrics as M
from cxrlab.labels import get_label_space
from cxrlab.study.config import _space_key


def evaluate_predictions(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                         label_names: Sequence[str], label_spaces: Sequence,
                         roles: Mapping[str, str], groups: Mapping[str, np.ndarray | None] | None = None,
                         n_boot: int = 200, seed: int = 0,
                         source_defined: Mapping[str, bool] | None = None):
    """Score one trained model on every evaluation set.

    ``scores`` / ``labels``: set name -> [n, L] probabilities / labels (NaN = missing) in
    ``label_names`` order; they must contain ``"val"`` (the *source validation* split), which
    alone chooses the tuned thresholds, and the evaluation sets named in ``roles`` (name ->
    ``"in-domain"`` or ``"out-of-domain"``). ``groups``: bootstrap units per set (patient ids);
    the resamples depend on ``seed`` only, so every method of a study is scored on the same
    resampled patients. Returns ``(rows, per_label, thresholds)``: long
    result rows (one per set, label space, threshold kind and metric, with bootstrap interval),
    a per-label table (both threshold kinds), and the tuned thresholds table.
    """
    names = list(label_names)
    if "val" not in scores or "val" not in labels:
        raise ValueError("evaluate_predictions needs the source validation split under 'val': "
                         "thresholds are tuned there and nowhere else")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # labels without validation positives -> 0.5, listed
        thr, thr_table = M.tune_thresholds(labels["val"], scores["val"], label_names=names,
                                           return_table=True)
    thresholds = {"fixed0.5": np.full(len(names), 0.5), "tuned_source_val": thr}
    defined = dict(source_defined or {lab: True for lab in names})
    rows, per_label = [], []
    for set_name, role in roles.items():
        y, s = labels[set_name], scores[set_name]
        g = None if groups is None else groups.get(set_name)
        for kind, t in thresholds.items():
            full = M.multilabel_metrics(y, s, t, names)
            tab = full.per_label.copy()
            tab.insert(0, "domain", set_name)
            tab.insert(1, "role", role)
            tab.insert(2, "threshold_kind", kind)
            tab["source_defined"] = [defined.get(lab, True) for lab in tab["label"]]
            per_label.append(tab)
            for space in label_spaces:
                lab_space = get_label_space(space)
                cols = [names.index(lab) for lab in lab_space if lab in names]
                sub_names = [names[c] for c in cols]
                point = M.multilabel_metrics(y[:, cols], s[:, cols], t[cols], sub_names)
                ci = None
                if n_boot and point.n_included:
                    ci = M.bootstrap_ci(y[:, cols], s[:, cols], t[cols], n_boot=n_boot,
                                        seed=seed, groups=g, label_names=sub_names)
                    ci = ci.set_index("metric")
                for metric in M.SUMMARY_METRICS:
                    lo = hi = float("nan")
                    if ci is not None:
                        lo, hi = float(ci.loc[metric, "lo"]), float(ci.loc[metric, "hi"])
                    rows.append({"domain": set_name, "role": role, "label_space": _space_key(space),
                                 "threshold": kind, "metric": metric, "value": float(point[metric]),
                                 "ci_lo": lo, "ci_hi": hi, "n_images": int(point.n_images),
                                 "n_labels": int(point.n_included)})
    return rows, pd.concat(per_label, ignore_index=True), thr_table


def marker_effect(algorithm, with_marker, without_marker, batch_size: int = 256) -> dict:
    """The causal effect of a marker (e.g. the synthetic chest drain) on a trained model: the
    same images scored with and without it.

    ``with_marker`` / ``without_marker``: uint8 [n, 1, S, S] of the same images (the synthetic
    hospitals draw them identically with ``shortcut=True`` and ``False``, only the marker
    differs). Returns ``delta`` (mean change of the logit when the marker is added),
    ``logit_sd`` (spread of the logits without it) and ``effect`` = delta / logit_sd: how far
    the marker alone moves an image through the model's ranking. A penalty that only shrinks
    the logits leaves ``effect`` where it was; one that removes the shortcut brings it to 0.
    """
    import torch

    from cxrlab.engine.predict import predict_logits

    a, b = (torch.as_tensor(np.asarray(x)) for x in (with_marker, without_marker))
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"with_marker and without_marker must be the same images [n, 1, S, S]; "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    z = torch.zeros(len(a), 1)
    la = np.asarray(predict_logits(algorithm, (a, z), batch_size=batch_size)[0], dtype=float)[:, 0]
    lb = np.asarray(predict_logits(algorithm, (b, z), batch_size=batch_size)[0], dtype=float)[:, 0]
    delta, sd = float(np.mean(la - lb)), float(np.std(lb))
    return {"delta": delta, "logit_sd": sd, "effect": delta / sd if sd > 0 else float("nan"),
            "n": int(len(a))}


def region_reliance(algorithm, images, keep, labels, fill: int = 128, label: int = 0,
                    batch_size: int = 256) -> dict:
    """How much a trained model's AUC rests on what lies *outside* a region: the same images
    scored as stored and with every pixel outside ``keep`` (e.g. the lung mask) set to
    ``fill``. A model that reads the lungs keeps its AUC; one that reads a chest drain, a
    collimation border or burned-in text outside them falls towards 0.5.

    This tests what a masking method promises (do not use what lies outside the mask) directly,
    where :func:`marker_effect` needs a twin image without the marker. ``images`` uint8
    [n, 1, S, S], ``keep`` bool or 0/1 of the same shape, ``labels`` [n] (or [n, L] with
    ``label`` the column scored). Returns ``auc_stored``, ``auc_region_only``, ``drop`` and
    ``n``."""
    import torch

    from cxrlab.engine.predict import predict_logits

    x = np.asarray(images)
    k = np.asarray(keep).astype(bool)
    if x.shape != k.shape or x.ndim != 4:
        raise ValueError(f"images and keep must both be [n, 1, S, S] of the same shape; got "
                         f"{x.shape} and {k.shape}")
    if not 0 <= int(fill) <= 255:
        raise ValueError(f"fill is a grey level in 0..255, got {fill}")
    y = np.asarray(labels, dtype=float)
    y = y[:, label] if y.ndim == 2 else y
    if len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    z = torch.zeros(len(x), 1)
    out = {}
    for name, imgs in (("auc_stored", x), ("auc_region_only", np.where(k, x, np.uint8(fill)))):
        logits = predict_logits(algorithm, (torch.as_tensor(imgs), z), batch_size=batch_size)[0]
        out[name] = M.masked_auc_macro(y[:, None], np.asarray(logits, dtype=float)[:, [label]])
    out["drop"] = out["auc_stored"] - out["auc_region_only"]
    out["n"] = int(len(x))
    return out


def load_unit_model(out_dir, unit: str, image_size: int, checkpoint: str = "best.pt"):
    """The trained model of one engine unit of a study (``out_dir/units/<unit>``), rebuilt from
    its stored configuration and loaded from ``out_dir/checkpoints/<unit>/<checkpoint>`` (the
    epoch chosen on source validation: ``best.pt``); in eval mode."""
    import json
    from pathlib import Path

    from cxrlab.engine import load_weights
    from cxrlab.methods import create_algorithm
    from cxrlab.models import create_backbone

    out_dir = Path(out_dir)
    f = out_dir / "units" / unit / "metrics.json"
    ckpt = out_dir / "checkpoints" / unit / checkpoint
    if not f.exists() or not ckpt.exists():
        from cxrlab.errors import MissingInputError

        raise MissingInputError(f"{unit}: no finished unit with a {checkpoint} under {out_dir} "
                                "(probe units keep no engine checkpoint)")
    cfg = json.loads(f.read_text())["config"]
    labels = np.load(out_dir / "units" / unit / "predictions.npz")["label_names"]
    bb = create_backbone(cfg["backbone"], pretrained=bool(cfg["settings"].get("pretrained")),
                         weights=cfg.get("weights"), image_size=image_size, seed=cfg["seed"])
    alg = create_algorithm(cfg.get("algorithm", cfg["method"]), bb, num_labels=len(labels),
                           hparams=cfg["hparams"], seed=cfg["seed"])
    load_weights(alg, ckpt)
    return alg.eval()
