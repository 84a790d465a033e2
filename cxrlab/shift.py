"""Measure domain shift between hospitals: image statistics, a domain classifier, and the AUC
gap of a model trained at one hospital and tested at the others.

Three kinds of shift separate two hospitals (notebook 01):

* **image shift** (p(x) changes): contrast curve, exposure, noise, blur, resolution, burned-in
  markers. :func:`intensity_histograms` and :func:`image_statistics` *measure* it;
  :func:`domain_classifier` shows how easily a model tells hospitals apart from pixels alone.
* **population shift**: age, sex, projection (PA vs portable AP), disease prevalence.
  :func:`shift_summary` tabulates it.
* **label shift** in the sense of *label definitions* (p(y|x) changes): one site calls a
  borderline finding positive, another does not.

:func:`source_target_gap` puts them together: train a small CNN at the source hospital (train
split only, the best epoch chosen on the source validation split only) and report AUC on the
test split of every hospital. The drop from source to target is the price of the shift.

Everything here is small enough to run on a laptop CPU on the synthetic hospitals
(:mod:`cxrlab.data.synthetic`); results on those hospitals are *synthetic* and say so.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from cxrlab.data.cache import Cache
from cxrlab.data.dataset import load_arrays
from cxrlab.labels import SHARED7, get_label_space
from cxrlab.progress import progress
from cxrlab.seeding import seed_everything

#: findings used by default to measure the source-to-target gap: common enough in a few
#: hundred images per hospital to give a usable AUC, and shared by NIH and CheXpert/MIMIC.
DEFAULT_GAP_LABELS: tuple[str, ...] = ("Effusion", "Cardiomegaly", "Pneumothorax",
                                       "Atelectasis", "Edema", "Consolidation")


# --------------------------------------------------------------------------------------------
# image statistics
# --------------------------------------------------------------------------------------------

def _sample_rows(cache: Cache, domain: str, n: int | None, seed: int,
                 split: str | None = None) -> np.ndarray:
    rows = cache.select(split=split, domain=domain)
    if n is not None and len(rows) > n:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(rows, size=n, replace=False))
    return rows


def _read(arr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Read memmap rows in file order (fast), return them in the order asked for."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows)
    out = np.empty((len(rows),) + arr.shape[1:], dtype=arr.dtype)
    out[order] = arr[rows[order]]
    return out


def _domains(cache: Cache, domains: Sequence[str] | None) -> list[str]:
    if domains is None:
        return cache.domains
    domains = [domains] if isinstance(domains, str) else list(domains)
    unknown = sorted(set(domains) - set(cache.domains))
    if unknown:
        raise KeyError(f"unknown domain(s) {unknown}; this cache has {cache.domains}")
    return domains


def intensity_histograms(cache: Cache, domains: Sequence[str] | None = None,
                         rows_per_domain: int | None = 200, bins: int = 64,
                         region: str = "all", seed: int = 0) -> pd.DataFrame:
    """Pixel-intensity histogram of each domain, as a tidy table.

    Parameters
    ----------
    domains: which domains (default: all in the cache).
    rows_per_domain: images sampled per domain (seeded; ``None`` = all).
    bins: histogram bins over the uint8 range 0..255.
    region: ``"all"`` pixels, or ``"lung"`` / ``"outside"`` the lung mask (needs lung masks):
        inside the lungs the histogram shows the contrast curve and exposure of the hospital,
        outside it shows collimation, markers and background.

    Returns
    -------
    DataFrame with one row per (domain, bin): ``domain, bin_left, bin_right, bin_center,
    density`` (fraction of pixels, sums to 1 per domain) and ``n_images``.
    """
    if bins < 2 or bins > 256:
        raise ValueError(f"bins must be between 2 and 256, got {bins}")
    if region not in ("all", "lung", "outside"):
        raise ValueError(f"region must be 'all', 'lung' or 'outside', got {region!r}")
    if region != "all" and cache.lung_masks is None:
        raise ValueError(f"region={region!r} needs lung masks and {cache.path.name} has none; "
                         "use region='all'")
    edges = np.linspace(0, 256, bins + 1)
    frames = []
    for dom in _domains(cache, domains):
        rows = _sample_rows(cache, dom, rows_per_domain, seed)
        if len(rows) == 0:
            continue
        px = _read(cache.images, rows)
        if region != "all":
            inside = _read(cache.lung_masks, rows).astype(bool)
            px = px[inside] if region == "lung" else px[~inside]
        counts, _ = np.histogram(px.ravel(), bins=edges)
        total = max(counts.sum(), 1)
        frames.append(pd.DataFrame({
            "domain": dom, "bin_left": edges[:-1], "bin_right": edges[1:],
            "bin_center": (edges[:-1] + edges[1:]) / 2, "density": counts / total,
            "n_images": len(rows),
        }))
    if not frames:
        raise ValueError("no images in the requested domains")
    out = pd.concat(frames, ignore_index=True)
    out.attrs.update(region=region, bins=bins, synthetic=cache.synthetic)
    return out


def _conv3x3(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """'valid' 3x3 correlation of a batch [n, H, W] with kernel k (float32 out, [n, H-2, W-2])."""
    h, w = x.shape[1] - 2, x.shape[2] - 2
    out = np.zeros((x.shape[0], h, w), dtype=np.float32)
    for i in range(3):
        for j in range(3):
            if k[i, j] != 0:
                out += k[i, j] * x[:, i:i + h, j:j + w]
    return out


_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)
_LAPLACE_DIFF = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_BOX = np.full((3, 3), 1 / 9, dtype=np.float32)


def _batch_statistics(img: np.ndarray) -> dict[str, np.ndarray]:
    x = img.astype(np.float32)
    flat = x.reshape(len(x), -1)
    p05, p95 = np.percentile(flat, [5, 95], axis=1)
    gx = _conv3x3(x, _SOBEL_X) / 8.0
    gy = _conv3x3(x, _SOBEL_X.T) / 8.0
    hp = x[:, 1:-1, 1:-1] - _conv3x3(x, _BOX)
    lap = np.abs(_conv3x3(x, _LAPLACE_DIFF))
    return {
        "mean": flat.mean(1), "std": flat.std(1), "p05": p05, "p95": p95,
        "contrast": p95 - p05,
        # mean Sobel gradient magnitude (grey levels per pixel): sharpness / edge energy
        "gradient": np.sqrt(gx ** 2 + gy ** 2).reshape(len(x), -1).mean(1),
        # std of the high-pass residual (image minus its 3x3 mean): fine texture + noise
        "highpass_std": hp.reshape(len(x), -1).std(1),
        # Immerkaer (1996) fast noise estimate: the Laplacian-difference kernel cancels
        # smooth structure, so what is left is mostly pixel noise (sigma in grey levels)
        "noise": math.sqrt(math.pi / 2) * lap.reshape(len(x), -1).mean(1) / 6.0,
    }


def image_statistics(cache: Cache, rows: Sequence[int] | None = None,
                     chunk_size: int = 512) -> pd.DataFrame:
    """Per-image statistics that *measure* image shift (grey levels 0..255).

    Columns: ``row, domain, split, mean, std, p05, p95, contrast`` (p95 - p05), ``gradient``
    (mean Sobel gradient magnitude: edges and sharpness; blur lowers it), ``highpass_std`` (std
    of the image minus its 3x3 local mean: texture + noise), ``noise`` (Immerkaer's estimate of
    the pixel-noise sigma, insensitive to smooth anatomy) and, when the cache has lung masks,
    ``lung_mean`` / ``outside_mean`` (mean grey level inside and outside the lungs) and
    ``lung_fraction`` (share of the image covered by lung: collimation, inspiration, framing).
    """
    rows = np.arange(len(cache)) if rows is None else np.asarray(rows, dtype=np.int64)
    parts = []
    for start in range(0, len(rows), chunk_size):
        r = rows[start:start + chunk_size]
        img = _read(cache.images, r)
        stats = _batch_statistics(img)
        if cache.lung_masks is not None:
            lung = _read(cache.lung_masks, r).astype(bool)
            n_in = lung.reshape(len(r), -1).sum(1)
            n_out = lung[0].size - n_in
            s_in = (img * lung).reshape(len(r), -1).sum(1, dtype=np.float64)
            s_all = img.reshape(len(r), -1).sum(1, dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                stats["lung_mean"] = np.where(n_in > 0, s_in / np.maximum(n_in, 1), np.nan)
                stats["outside_mean"] = np.where(n_out > 0, (s_all - s_in) / np.maximum(n_out, 1),
                                                 np.nan)
            stats["lung_fraction"] = n_in / lung[0].size
        parts.append(pd.DataFrame(stats))
    cols = ["mean", "std", "p05", "p95", "contrast", "gradient", "highpass_std", "noise"]
    body = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    m = cache.manifest.iloc[rows]
    head = pd.DataFrame({"row": rows, "domain": m["domain"].astype(str).to_numpy(),
                         "split": m["split"].astype(str).to_numpy()})
    out = pd.concat([head, body.reset_index(drop=True)], axis=1)
    out.attrs["synthetic"] = cache.synthetic
    return out


# --------------------------------------------------------------------------------------------
# a small CNN, trained with masked BCE
# --------------------------------------------------------------------------------------------

class SmallCNN(nn.Module):
    """Four conv blocks (3x3 conv, BatchNorm, ReLU; max-pool after the first three) and global
    average pooling: about 40k weights at ``width=16``, seconds per epoch on a CPU at 64 px.

    It follows the :class:`cxrlab.models` backbone interface: ``forward(x_float) -> [B, D]``,
    ``normalize(x_uint8) -> float``, ``num_features``, ``target_layer``.
    """

    def __init__(self, width: int = 16, in_chans: int = 1):
        super().__init__()
        w = width

        def block(cin, cout, pool):
            layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                      nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2))
            return nn.Sequential(*layers)

        self.features = nn.Sequential(block(in_chans, w, True), block(w, 2 * w, True),
                                      block(2 * w, 4 * w, True), block(4 * w, 4 * w, False))
        self.num_features = 4 * w
        self.name = "small_cnn"
        self.reshape_transform = None

    @property
    def target_layer(self) -> nn.Module:
        return self.features[-1]

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        """uint8 [B,1,S,S] -> float, centred on mid-grey. One fixed scaling for every hospital,
        so a brighter hospital *looks* brighter to the model (no per-image standardisation)."""
        return (x.float() / 255.0 - 0.5) / 0.25

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


class ImageClassifier(nn.Module):
    """A backbone plus a linear head; takes uint8 images [B,1,S,S] and returns logits [B, K].

    ``label_names`` (multi-label, sigmoid) or ``class_names`` (one class per image, softmax)
    record what the outputs mean.
    """

    def __init__(self, backbone: nn.Module, n_outputs: int, names: Sequence[str] = (),
                 multilabel: bool = True):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, n_outputs)
        self.names = tuple(names)
        self.multilabel = multilabel
        self.history: list[dict] = []
        self.best_epoch: int | None = None

    def forward(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.backbone.normalize(x_uint8)))

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probabilities (sigmoid per label, or softmax over classes) as a NumPy array."""
        images = _as_image_tensor(images)
        was_training = self.training
        self.eval()
        dev = next(self.parameters()).device
        outs = []
        for i in range(0, len(images), batch_size):
            logits = self(images[i:i + batch_size].to(dev))
            p = torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)
            outs.append(p.float().cpu())
        self.train(was_training)
        if not outs:
            return np.zeros((0, self.head.out_features), dtype=np.float32)
        return torch.cat(outs).numpy()


def make_backbone(backbone: str | None = None, image_size: int | None = None) -> nn.Module:
    """``None`` or ``"small_cnn"``: :class:`SmallCNN` (defined here, fixed, fast). Any other name
    is built with :func:`cxrlab.models.create_backbone` (random init, e.g. ``"tiny_cnn"``)."""
    if backbone in (None, "small_cnn"):
        return SmallCNN()
    try:
        from cxrlab.models import create_backbone
    except ImportError as e:  # pragma: no cover - depends on the installed package
        raise ImportError(f"backbone {backbone!r} needs cxrlab.models ({e}); "
                          "use backbone=None for the built-in SmallCNN") from e
    return create_backbone(backbone, pretrained=False, image_size=image_size)


def _as_image_tensor(images) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4 or t.shape[1] != 1:
        raise ValueError(f"images must be uint8 [n, 1, S, S] (or [n, S, S]), got {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (as stored in the cache), got {t.dtype}")
    return t


def _random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` px, repeating the edge pixels (cheap
    augmentation; one gather, no Python loop, stays uint8)."""
    if max_shift <= 0:
        return x
    n, c, h, w = x.shape
    dx = torch.randint(-max_shift, max_shift + 1, (n, 1), generator=gen)
    dy = torch.randint(-max_shift, max_shift + 1, (n, 1), generator=gen)
    iy = (torch.arange(h)[None] + dy).clamp_(0, h - 1)          # [n, h]
    ix = (torch.arange(w)[None] + dx).clamp_(0, w - 1)          # [n, w]
    b = torch.arange(n)[:, None, None]
    return x[:, 0][b, iy[:, :, None], ix[:, None, :]][:, None].expand(n, c, h, w).contiguous()


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the labels that are known (NaN = not labelled, ignored)."""
    known = ~torch.isnan(labels)
    if not known.any():
        return logits.sum() * 0.0
    loss = F.binary_cross_entropy_with_logits(logits[known], labels[known])
    return loss


def _fit(model: ImageClassifier, images: torch.Tensor, targets: torch.Tensor, *, epochs: int,
         seed: int, lr: float, batch_size: int, weight_decay: float, augment: int,
         score_val, device: str, desc: str) -> ImageClassifier:
    """The one training loop of this module (Adam, one seeded shuffle per epoch). After each
    epoch ``score_val(model)`` (higher is better, or None) picks the epoch whose weights are kept."""
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    best_score, best_state = -np.inf, None
    model.history = []
    for epoch in progress(range(1, epochs + 1), desc=desc):
        model.train()
        perm = torch.randperm(len(images), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(images), batch_size):
            idx = perm[i:i + batch_size]
            if len(idx) < 2:  # BatchNorm needs two images
                continue
            x = _random_shift(images[idx], augment, gen).to(device)
            y = targets[idx].to(device)
            logits = model(x)
            loss = masked_bce(logits, y) if model.multilabel else F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        score = score_val(model) if score_val is not None else None
        model.history.append({"epoch": epoch, "train_loss": total / max(count, 1),
                              "val_score": score})
        if score_val is None:
            score = epoch  # no validation data: keep the last epoch
        elif score is None or not np.isfinite(score):
            score = -np.inf  # val not evaluable (e.g. no positives): later epochs win ties
        if best_state is None or score >= best_score:
            best_score, best_state = score, copy.deepcopy(model.state_dict())
            model.best_epoch = epoch
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model


def train_small_cnn(images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, *,
                    epochs: int = 8, seed: int = 0, lr: float = 3e-3, batch_size: int = 32,
                    weight_decay: float = 1e-4, augment: int = 2,
                    val: tuple | None = None, label_names: Sequence[str] | None = None,
                    backbone: str | None = None, device: str = "cpu") -> ImageClassifier:
    """Train a small CNN with a linear multi-label head, from scratch, with masked BCE.

    Parameters
    ----------
    images: uint8 [n, 1, S, S] (as :func:`cxrlab.data.dataset.load_arrays` returns them).
    labels: float [n, L]; 1 positive, 0 negative, NaN not labelled (ignored by the loss).
    val: optional ``(images, labels)`` of the *source* validation split: after every epoch the
        macro AUC on it is measured and the best epoch's weights are kept (model selection on
        source validation only; never pass target data here).
    augment: random translation of up to this many pixels (0 = none).
    backbone: ``None`` for the built-in :class:`SmallCNN`, or a :mod:`cxrlab.models` name.

    Returns the trained :class:`ImageClassifier` (in eval mode); ``model.history`` holds the
    per-epoch training loss and validation score, ``model.best_epoch`` the epoch kept.
    """
    x = _as_image_tensor(images)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    if y.ndim == 1:
        y = y[:, None]
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} label rows")
    if len(x) < 2:
        raise ValueError("need at least two training images")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    seed_everything(seed)
    names = tuple(label_names) if label_names is not None else tuple(
        f"label_{j}" for j in range(y.shape[1]))
    model = ImageClassifier(make_backbone(backbone, image_size=x.shape[-1]), y.shape[1], names)
    score_val = None
    if val is not None:
        vx, vy = _as_image_tensor(val[0]), np.asarray(val[1], dtype=np.float32)

        def score_val(m):
            return evaluate_auc(m, vx, vy, label_names=names)["auc_macro"]
    return _fit(model, x, y, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                weight_decay=weight_decay, augment=augment, score_val=score_val, device=device,
                desc="train CNN")


# --------------------------------------------------------------------------------------------
# AUC
# --------------------------------------------------------------------------------------------

def auc_per_label(y_true: np.ndarray, y_score: np.ndarray,
                  label_names: Sequence[str] | None = None) -> dict:
    """ROC AUC per label on the rows where that label is known, plus the macro mean over the
    labels that have both positives and negatives (computed by
    :func:`cxrlab.metrics.multilabel_metrics`, the course's one definition of these rules).

    Returns a dict: ``auc_macro`` (float, NaN if no label is evaluable), ``per_label``
    (DataFrame: label, auc, n, n_pos; auc NaN for excluded labels) and ``excluded`` (labels
    without both classes among their labelled rows).
    """
    from cxrlab.metrics import multilabel_metrics

    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim == 1:
        y_true, y_score = y_true[:, None], y_score[:, None]
    if y_true.shape != y_score.shape:
        raise ValueError(f"labels {y_true.shape} and scores {y_score.shape} differ in shape")
    names = list(label_names) if label_names is not None else [
        f"label_{j}" for j in range(y_true.shape[1])]
    # AUC only depends on the ranking: the threshold argument is irrelevant here
    res = multilabel_metrics(y_true, y_score, thresholds=0.5, label_names=names)
    t = res.per_label
    per_label = pd.DataFrame({"label": t["label"], "auc": t["auc"].where(t["included"]),
                              "n": t["n_labelled"].astype(int), "n_pos": t["n_pos"].astype(int)})
    return {"auc_macro": float(res.auc_macro), "per_label": per_label,
            "excluded": list(res.excluded)}


def evaluate_auc(model: ImageClassifier, images, labels,
                 label_names: Sequence[str] | None = None) -> dict:
    """Score ``images`` with ``model`` and return :func:`auc_per_label` of the result."""
    names = label_names if label_names is not None else (model.names or None)
    scores = model.predict_proba(images)
    return auc_per_label(np.asarray(labels, dtype=np.float32), scores, names)


# --------------------------------------------------------------------------------------------
# train at the source, test everywhere
# --------------------------------------------------------------------------------------------

def source_target_gap(cache: Cache, source: str = "source", targets: Sequence[str] | None = None,
                      labels: Sequence[str] = DEFAULT_GAP_LABELS, *, epochs: int = 8,
                      seed: int = 0, lr: float = 3e-3, batch_size: int = 32,
                      backbone: str | None = None, device: str = "cpu",
                      target_split: str | None = "test", return_model: bool = False):
    """Train at ``source`` (its train split), choose the epoch on its val split, and report the
    AUC on the *test* split of the source and of every target.

    ``target_split=None`` scores *every* image of each target instead of its test split: the
    model never saw any image of a target hospital, so all of them are held out, and rare
    labels get several times more positives (a steadier AUC). The source is always scored on
    its test split only.

    Returns a DataFrame, one row per domain: ``domain, role`` ("source"/"target"), ``n``,
    ``auc_macro`` (mean over ``labels`` with positives), ``drop`` (source AUC minus this AUC;
    positive = worse than at home) and one ``auc_<label>`` / ``n_pos_<label>`` column pair per
    label. ``df.attrs`` records the source, labels, seed, best epoch and validation AUC.
    With ``return_model=True`` returns ``(df, model)``.
    """
    labels = tuple(get_label_space(labels))
    targets = [d for d in cache.domains if d != source] if targets is None else (
        [targets] if isinstance(targets, str) else list(targets))
    _domains(cache, [source] + targets)
    if source in targets:
        raise ValueError(f"source {source!r} is also listed as a target")
    tr, va = cache.select("train", source), cache.select("val", source)
    if len(tr) < 2:
        raise ValueError(f"source {source!r} has {len(tr)} training images; need more")
    x_tr, y_tr = load_arrays(cache, tr, labels)
    val = load_arrays(cache, va, labels) if len(va) else None
    model = train_small_cnn(x_tr, y_tr, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                            val=val, label_names=labels, backbone=backbone, device=device)
    if target_split is not None and target_split not in ("train", "val", "test"):
        raise ValueError(f"target_split must be 'train', 'val', 'test' or None, got {target_split!r}")
    rows = []
    for role, dom in [("source", source)] + [("target", t) for t in targets]:
        te = cache.select("test" if role == "source" else target_split, dom)
        x_te, y_te = load_arrays(cache, te, labels)
        res = evaluate_auc(model, x_te, y_te, labels)
        row = {"domain": dom, "role": role, "n": len(te), "auc_macro": res["auc_macro"]}
        for _, r in res["per_label"].iterrows():
            row[f"auc_{r['label']}"] = r["auc"]
            row[f"n_pos_{r['label']}"] = r["n_pos"]
        rows.append(row)
    df = pd.DataFrame(rows)
    df.insert(4, "drop", df["auc_macro"].iloc[0] - df["auc_macro"])
    val_scores = [h["val_score"] for h in model.history]
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


# --------------------------------------------------------------------------------------------
# domain classifier
# --------------------------------------------------------------------------------------------

@dataclass
class DomainClassifierResult:
    """How well a classifier tells the domains apart on held-out (test split) images.

    ``chance`` is the accuracy of always guessing the most frequent test domain (0.25 for four
    balanced hospitals); ``confusion`` counts test images (rows: true, columns: predicted).
    """

    domains: list[str]
    method: str
    accuracy: float
    per_class_accuracy: pd.Series
    confusion: pd.DataFrame
    auc_macro_ovr: float
    chance: float
    n_train: int
    n_test: int
    y_true: np.ndarray = field(repr=False)
    probabilities: np.ndarray = field(repr=False)
    synthetic: bool = False

    def summary(self) -> pd.DataFrame:
        """One row per domain: accuracy (recall) and number of test images, plus overall."""
        counts = self.confusion.sum(axis=1)
        df = pd.DataFrame({"accuracy": self.per_class_accuracy, "n_test": counts})
        df.loc["overall"] = [self.accuracy, self.n_test]
        df["n_test"] = df["n_test"].astype(int)
        return df

    def __repr__(self) -> str:
        return (f"DomainClassifierResult(method={self.method!r}, accuracy={self.accuracy:.3f}, "
                f"chance={self.chance:.3f}, auc_macro_ovr={self.auc_macro_ovr:.3f}, "
                f"domains={self.domains}, n_test={self.n_test})")


def _handcrafted_features(img: np.ndarray, grid: int = 8) -> np.ndarray:
    """Global statistics, a 16-bin histogram and a coarse ``grid x grid`` thumbnail per image."""
    stats = _batch_statistics(img)
    st = np.stack([stats[k] for k in ("mean", "std", "p05", "p95", "gradient", "highpass_std",
                                      "noise")], axis=1)
    hist = np.stack([np.histogram(im, bins=16, range=(0, 256))[0] for im in img]) / img[0].size
    n, s = img.shape[0], img.shape[1]
    cut = s - s % grid
    thumb = img[:, :cut, :cut].astype(np.float32).reshape(n, grid, cut // grid, grid,
                                                            cut // grid).mean((2, 4))
    return np.concatenate([st, hist, thumb.reshape(n, -1)], axis=1).astype(np.float64)


def domain_classifier(cache: Cache, domains: Sequence[str] | None = None, seed: int = 0,
                      method: str = "cnn", *, max_per_domain: int | None = None,
                      epochs: int = 4, lr: float = 3e-3, batch_size: int = 32,
                      device: str = "cpu") -> DomainClassifierResult:
    """Train a classifier to predict *which hospital* an image comes from.

    If it succeeds far above chance, the images carry a hospital signature a disease classifier
    can pick up too. Trained on the train split of each domain (epoch chosen on the val split),
    evaluated on the test split (the cache's splits are patient-level, so no patient is in both).

    method: ``"cnn"`` (the :class:`SmallCNN`, softmax over domains) or ``"logreg"`` (logistic
        regression on hand-made features: intensity statistics, noise, a histogram and an 8x8
        thumbnail; fast and interpretable).
    max_per_domain: cap on training images per domain (seeded sample; ``None`` = all).
    """
    if method not in ("cnn", "logreg"):
        raise ValueError(f"method must be 'cnn' or 'logreg', got {method!r}")
    doms = _domains(cache, domains)
    if len(doms) < 2:
        raise ValueError(f"a domain classifier needs at least two domains, got {doms}")
    parts = {}
    for split in ("train", "val", "test"):
        rows, ys = [], []
        for k, d in enumerate(doms):
            r = _sample_rows(cache, d, max_per_domain if split == "train" else None, seed, split)
            rows.append(r)
            ys.append(np.full(len(r), k))
        parts[split] = (np.concatenate(rows), np.concatenate(ys))
    if len(parts["test"][0]) == 0 or len(parts["train"][0]) == 0:
        raise ValueError("the cache needs train and test images in the chosen domains")
    seed_everything(seed)
    if method == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        feats = {s: _handcrafted_features(_read(cache.images, parts[s][0])) for s in parts
                 if len(parts[s][0])}
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
        clf.fit(feats["train"], parts["train"][1])
        proba = np.zeros((len(parts["test"][0]), len(doms)))
        proba[:, clf.classes_] = clf.predict_proba(feats["test"])
    else:
        x_tr, _ = load_arrays(cache, parts["train"][0], [])
        y_tr = torch.as_tensor(parts["train"][1], dtype=torch.long)
        model = ImageClassifier(SmallCNN(), len(doms), doms, multilabel=False)
        score_val = None
        if len(parts["val"][0]):
            x_va, _ = load_arrays(cache, parts["val"][0], [])
            y_va = parts["val"][1]

            def score_val(m):
                return float((m.predict_proba(x_va).argmax(1) == y_va).mean())
        _fit(model, x_tr, y_tr, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
             weight_decay=1e-4, augment=2, score_val=score_val, device=device,
             desc="domain classifier")
        x_te, _ = load_arrays(cache, parts["test"][0], [])
        proba = model.predict_proba(x_te)
    return _domain_result(parts["test"][1], proba, doms, method, len(parts["train"][0]),
                          cache.synthetic)


def _domain_result(y: np.ndarray, proba: np.ndarray, doms: list[str], method: str,
                   n_train: int, synthetic: bool) -> DomainClassifierResult:
    from sklearn.metrics import confusion_matrix, roc_auc_score

    pred = proba.argmax(1)
    k = len(doms)
    cm = confusion_matrix(y, pred, labels=np.arange(k))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(cm) / cm.sum(1)
    present = np.unique(y)
    aucs = [roc_auc_score(y == c, proba[:, c]) for c in present
            if 0 < (y == c).sum() < len(y)]
    counts = np.bincount(y, minlength=k)
    return DomainClassifierResult(
        domains=list(doms), method=method, accuracy=float((pred == y).mean()),
        per_class_accuracy=pd.Series(per_class, index=doms, name="accuracy"),
        confusion=pd.DataFrame(cm, index=pd.Index(doms, name="true"),
                               columns=pd.Index(doms, name="predicted")),
        auc_macro_ovr=float(np.mean(aucs)) if aucs else float("nan"),
        chance=float(counts.max() / counts.sum()), n_train=int(n_train), n_test=int(len(y)),
        y_true=y, probabilities=proba, synthetic=synthetic,
    )


# --------------------------------------------------------------------------------------------
# one table per cache
# --------------------------------------------------------------------------------------------

def shift_summary(cache: Cache, labels: Sequence[str] = SHARED7,
                  rows_per_domain: int | None = 200, seed: int = 0) -> pd.DataFrame:
    """One row per domain: how the hospitals differ, in numbers.

    Columns: ``n`` images, ``n_patients``, ``age_mean``, ``female_pct``, ``ap_pct`` (share of
    portable AP views), ``prev_<label>`` (share positive among labelled images, NaN when the
    domain does not define the label) and image statistics averaged over up to
    ``rows_per_domain`` images: ``intensity_mean``, ``contrast``, ``noise``, ``gradient``.
    """
    labels = get_label_space(labels)
    m = cache.manifest
    out = []
    for dom in cache.domains:
        g = m[m["domain"].astype(str) == dom]
        age = pd.to_numeric(g["age"], errors="coerce")
        row = {"domain": dom, "n": len(g), "n_patients": int(g["patient_id"].nunique()),
               "age_mean": float(age.mean()) if age.notna().any() else float("nan"),
               "female_pct": 100.0 * float((g["sex"].astype(str) == "F").mean()),
               "ap_pct": 100.0 * float((g["view"].astype(str) == "AP").mean())}
        for lab in labels:
            v = pd.to_numeric(g[lab], errors="coerce") if lab in g.columns else pd.Series(
                dtype=float)
            row[f"prev_{lab}"] = float(v.mean()) if v.notna().any() else float("nan")
        stats = image_statistics(cache, _sample_rows(cache, dom, rows_per_domain, seed))
        for src, dst in (("mean", "intensity_mean"), ("contrast", "contrast"),
                         ("noise", "noise"), ("gradient", "gradient")):
            row[dst] = float(stats[src].mean()) if len(stats) else float("nan")
        out.append(row)
    df = pd.DataFrame(out).set_index("domain")
    df.attrs["synthetic"] = cache.synthetic
    return df
