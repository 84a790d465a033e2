"""What RRR and ActDiff share: a BCE fine-tune that is told, per image, where to look.

Seed 002's masking methods add a penalty to the classification loss that depends on an
*allowed region* per image (the mask). Which region is a hyper-parameter of the method
(``mask``, one of :data:`cxrlab.masks.MASK_KINDS`), computed from the masks every training
batch carries (see :mod:`cxrlab.methods.base`):

* ``lung_mask``   uint8 [B, 1, S, S], 1 inside the lungs (whole lung, lung periphery);
* ``lesion_mask`` int   [B, 1, S, S], bit k = NIH14 label k (abnormality, scaled abnormality).

An image whose allowed region is empty *has no mask* and adds no penalty: with abnormality
masks that is every negative image (they have no lesion), as in the paper, where only positive
images were annotated. The lung masks exist for every image, so lung and lung-periphery masks
steer every image.

The lung periphery needs a distance transform (scipy), too slow to run on every step. Before
training, :func:`cxrlab.engine.fit` calls :meth:`MaskGuidedFinetune.prepare_data`, which
checks the masks of the whole training set (shape, empty lungs, the kind the data can
provide: errors come *before* the first step) and computes every image's allowed region once,
keyed by the batch's ``row``. A step looks its rows up (and checks, cheaply, that each row's
lung-pixel count still matches, so a stale table is never used); rows it has not seen are
computed on the fly.

The masking methods train without augmentation: crops and rotations would move the pixels
away from their masks.
"""
from __future__ import annotations

import numpy as np
import torch

from cxrlab.errors import CxrlabError
from cxrlab.labels import NIH14
from cxrlab.masks import MASK_KINDS, attribution_mask
from cxrlab.methods.bce import BCEFinetune

#: mask kinds computed from the lung mask / from the lesion bit-planes
LUNG_KINDS = ("lung_periphery", "lung")
LESION_KINDS = ("abnormality", "scaled_abnormality")


class MaskError(CxrlabError, ValueError):
    """The masks a masking method needs are missing, of the wrong shape, or empty."""


def _as_numpy(v) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().numpy()
    return np.asarray(v)


def lesion_bits(lesion_label: str) -> int:
    """Bit mask of the lesion planes that count as "abnormality": one NIH14 label, or
    ``"any"`` (every finding's lesion)."""
    if lesion_label == "any":
        return (1 << len(NIH14)) - 1
    if lesion_label not in NIH14:
        raise MaskError(f"lesion_label={lesion_label!r}: choose an NIH14 label "
                        f"({', '.join(NIH14)}) or 'any'")
    return 1 << NIH14.index(lesion_label)


def check_mask_shape(name: str, mask, images_shape) -> None:
    """A mask must be [N, 1, S, S] like the images it belongs to."""
    shape = tuple(mask.shape)
    want = (images_shape[0], 1, *images_shape[-2:])
    if shape != want:
        raise MaskError(f"{name} has shape {shape} but the images are {tuple(images_shape)}; "
                        f"a mask must be [N, 1, S, S] = {want}, one per image at the image's "
                        "size (resize the masks with the images, e.g. in the same cache)")


def compute_allowed(kind: str, lung=None, lesion=None, *, lesion_label: str = "Pneumothorax",
                    width_frac: float = 0.25, scale_grid: int = 16,
                    missing_lung: str = "error", rows=None) -> np.ndarray:
    """uint8 [N, S, S] allowed regions of a batch of images from its masks.

    ``lung``: [N, 1, S, S] or [N, S, S] 0/1; ``lesion``: the same shape, integer bit-planes
    (bit k = NIH14 label k). An empty lung mask raises :class:`MaskError` (naming ``rows``
    when given) unless ``missing_lung="skip"``, which leaves that image without a mask.
    """
    if kind not in MASK_KINDS:
        raise MaskError(f"unknown mask kind {kind!r}; choose one of {list(MASK_KINDS)}")
    if kind in LUNG_KINDS:
        if lung is None:
            raise MaskError(f"mask kind {kind!r} needs lung masks but the training data carry "
                            "none: train on CacheDataset(cache, rows, with_masks=True) of a cache "
                            "with lung masks (the synthetic hospitals, or a real cache after "
                            "cxrlab.data.chexmask.add_lung_masks), or a dict with 'lung_mask'")
        m = _as_numpy(lung)
        m = (m.reshape(len(m), *m.shape[-2:]) != 0)
        empty = ~m.reshape(len(m), -1).any(1)
        if empty.any() and missing_lung != "skip":
            idx = np.flatnonzero(empty)
            where = (np.asarray(rows)[idx] if rows is not None else idx)[:5].tolist()
            raise MaskError(f"{int(empty.sum())} of {len(m)} images have an empty lung mask "
                            f"(rows {where}{' ...' if len(idx) > 5 else ''}); a lung or "
                            f"lung-periphery mask cannot be drawn for them. Drop those rows, "
                            "or pass the hyper-parameter missing_lung='skip' to train them "
                            "without a mask (no penalty)")
        return attribution_mask(kind, lung=m.astype(np.uint8), width_frac=width_frac)
    if lesion is None:
        raise MaskError(f"mask kind {kind!r} needs lesion masks but the training data carry "
                        "none: use a cache with lesion masks (the synthetic hospitals, SIIM) "
                        "through CacheDataset(..., with_masks=True), or a dict with 'lesion_mask'")
    bits = lesion_bits(lesion_label)
    m = _as_numpy(lesion)
    m = ((m.reshape(len(m), *m.shape[-2:]).astype(np.int64) & bits) != 0).astype(np.uint8)
    return attribution_mask(kind, lesion=m, scale_grid=scale_grid)


class AllowedTable:
    """Every training image's allowed region, computed once, looked up by row."""

    def __init__(self, rows, allowed: np.ndarray, lung_count: np.ndarray | None):
        rows = np.asarray(rows, dtype=np.int64)
        self.index = torch.full((int(rows.max()) + 1 if len(rows) else 1,), -1, dtype=torch.long)
        self.index[torch.from_numpy(rows)] = torch.arange(len(rows))
        self.allowed = torch.from_numpy(np.ascontiguousarray(allowed, dtype=np.uint8))
        self.lung_count = None if lung_count is None else torch.from_numpy(
            np.asarray(lung_count, dtype=np.int64))

    def lookup(self, rows: torch.Tensor, lung: torch.Tensor | None):
        """(allowed uint8 [B, S, S], found bool [B]) for a batch; ``found`` is False for rows
        not in the table or whose lung-pixel count differs from the one stored."""
        rows = rows.detach().cpu().long()
        inside = (rows >= 0) & (rows < len(self.index))
        idx = torch.where(inside, self.index[rows.clamp(0, len(self.index) - 1)],
                          torch.full_like(rows, -1))
        found = idx >= 0
        out = self.allowed[idx.clamp(min=0)]
        if self.lung_count is not None and lung is not None:
            count = (lung.detach() != 0).flatten(1).sum(1).cpu()
            found &= self.lung_count[idx.clamp(min=0)] == count
        return out, found


class MaskGuidedFinetune(BCEFinetune):
    """BCE fine-tune plus ``lam x`` a penalty that depends on each image's allowed region.

    Subclasses implement :meth:`penalty_step` (the loss of one batch given the normalised
    images and their allowed regions). ``lam = 0`` trains exactly the BCE fine-tune without
    augmentation, which is the ERM arm of seed 002.
    """

    HPARAMS = {
        "lam": (1.0, "weight of the penalty (>= 0; 0 = plain BCE fine-tune, i.e. ERM)"),
        "mask": ("lung_periphery", "allowed region: abnormality, scaled_abnormality, "
                                   "lung_periphery or lung (cxrlab.masks.MASK_KINDS)"),
        "lesion_label": ("Pneumothorax", "NIH14 label whose lesion is the abnormality mask "
                                         "('any': every finding's lesion)"),
        "width_frac": (0.25, "lung periphery: band width as a fraction of each lung's width"),
        "scale_grid": (16, "scaled abnormality: coarse grid size (cells per image side)"),
        "missing_lung": ("error", "image with an empty lung mask: 'error' (before training) "
                                  "or 'skip' (no penalty for it)"),
        "backbone_lr_scale": (1.0, "backbone learning rate = this x the base learning rate"),
        "pos_weight": (None, "positive-class weight of the BCE: None, one number, or one per label"),
    }
    #: the study gives this method's training batches lung_mask and lesion_mask
    needs = ("lung_mask", "lesion_mask")
    #: fit with the engine, select the epoch on source validation, predict
    scoring = "predict"

    def __init__(self, backbone, num_labels, hparams=None):
        super().__init__(backbone, num_labels, hparams)
        hp = self.hparams
        lam = hp["lam"]
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not np.isfinite(lam) \
                or lam < 0:
            raise MaskError(f"{self.name}: lam must be a finite number >= 0, got {lam!r} "
                            "(0 turns the penalty off)")
        hp["lam"] = float(lam)
        if hp["mask"] not in MASK_KINDS:
            raise MaskError(f"{self.name}: mask={hp['mask']!r}; choose one of {list(MASK_KINDS)}")
        lesion_bits(hp["lesion_label"])  # validates
        if not float(hp["width_frac"]) > 0:
            raise MaskError(f"{self.name}: width_frac must be > 0, got {hp['width_frac']!r}")
        if int(hp["scale_grid"]) < 1:
            raise MaskError(f"{self.name}: scale_grid must be a positive integer, got "
                            f"{hp['scale_grid']!r}")
        if hp["missing_lung"] not in ("error", "skip"):
            raise MaskError(f"{self.name}: missing_lung must be 'error' or 'skip', got "
                            f"{hp['missing_lung']!r}")
        self._table: AllowedTable | None = None

    # ------------------------------------------------------------------ masks
    def _mask_kwargs(self) -> dict:
        hp = self.hparams
        return dict(lesion_label=hp["lesion_label"], width_frac=float(hp["width_frac"]),
                    scale_grid=int(hp["scale_grid"]), missing_lung=hp["missing_lung"])

    @property
    def mask_key(self) -> str:
        """The batch key the chosen mask kind is computed from."""
        return "lung_mask" if self.hparams["mask"] in LUNG_KINDS else "lesion_mask"

    def prepare_data(self, batches) -> None:
        """Check the training set's masks and compute every allowed region once (called by
        :func:`cxrlab.engine.fit` before the first step). Raises :class:`MaskError`."""
        images_shape, masks, rows = _training_masks(batches, self.mask_key)
        if masks is None:
            compute_allowed(self.hparams["mask"], None, None, **self._mask_kwargs())  # raises
        check_mask_shape(self.mask_key, masks, images_shape)
        lung = masks if self.mask_key == "lung_mask" else None
        lesion = masks if self.mask_key == "lesion_mask" else None
        allowed = compute_allowed(self.hparams["mask"], lung, lesion, rows=rows,
                                  **self._mask_kwargs())
        if not allowed.reshape(len(allowed), -1).any(1).any():
            raise MaskError(f"{self.name}: no training image has a {self.hparams['mask']} mask "
                            f"(lesion_label={self.hparams['lesion_label']!r}); the penalty "
                            "would never act. Check the lesion masks of the cache or the label")
        count = None
        if lung is not None:
            count = (_as_numpy(lung) != 0).reshape(len(allowed), -1).sum(1)
        self._table = AllowedTable(rows, allowed, count)

    def allowed_regions(self, batch: dict) -> torch.Tensor:
        """float [B, 1, S, S] allowed regions of a batch on the model's device (0 = outside)."""
        key = self.mask_key
        img = batch["image"]
        if key not in batch:
            compute_allowed(self.hparams["mask"], None, None, **self._mask_kwargs())  # raises
        masks = batch[key]
        check_mask_shape(key, masks, img.shape)
        B = img.shape[0]
        lung = masks if key == "lung_mask" else None
        if self._table is not None and "row" in batch:
            allowed, found = self._table.lookup(batch["row"], lung)
        else:
            allowed = torch.zeros(B, *img.shape[-2:], dtype=torch.uint8)
            found = torch.zeros(B, dtype=torch.bool)
        if not bool(found.all()):
            miss = torch.nonzero(~found).flatten().numpy()
            sel = masks[torch.as_tensor(miss, device=masks.device)]
            fresh = compute_allowed(self.hparams["mask"], sel if lung is not None else None,
                                    sel if lung is None else None, **self._mask_kwargs())
            allowed[torch.as_tensor(miss)] = torch.from_numpy(fresh)
        return allowed[:, None].to(self.device, torch.float32, non_blocking=True)

    # ------------------------------------------------------------------ training
    def penalty_step(self, x: torch.Tensor, allowed: torch.Tensor, labels: torch.Tensor) -> dict:
        """``{"bce": ..., "penalty": ...}`` of one batch (normalised images ``x``)."""
        raise NotImplementedError

    def training_step(self, batch: dict, step: int) -> dict:
        allowed = self.allowed_regions(batch)
        x = self.prepare_images(batch["image"])
        out = self.penalty_step(x, allowed, batch["labels"])
        loss = out["bce"] + self.hparams["lam"] * out["penalty"]
        has = allowed.flatten(1).amax(1)
        return {"loss": loss, "bce": out["bce"].detach(), "penalty": out["penalty"].detach(),
                "masked_frac": has.mean().detach()}


#: positions of the fields in a tuple-shaped dataset item (cxrlab.engine.batching.ITEM_KEYS)
_ITEM_KEYS = ("image", "labels", "row", "lung_mask", "lesion_mask")


def _training_masks(batches, key: str):
    """(images shape, masks [N, 1, S, S] or None, rows) of a whole training set, as wrapped by
    the engine (in-memory tensors: ``.data``; a Dataset: ``.dataset``)."""
    from cxrlab.data.dataset import CacheDataset

    data = getattr(batches, "data", None)
    if isinstance(data, dict):
        return tuple(data["image"].shape), data.get(key), _as_numpy(data["row"])
    ds = getattr(batches, "dataset", None)
    if isinstance(ds, CacheDataset):
        c = ds.cache
        shape = (len(ds.rows), 1, c.image_size, c.image_size)
        if not ds.with_masks:
            return shape, None, ds.rows
        src = c.lung_masks if key == "lung_mask" else c.lesion_masks
        order = np.argsort(ds.rows)
        arr = np.empty((len(ds.rows), c.image_size, c.image_size), dtype=src.dtype)
        arr[order] = src[ds.rows[order]]
        return shape, arr[:, None], ds.rows
    if ds is not None:  # any other Dataset: read its items once
        items = [ds[i] for i in range(len(ds))]
        cols = (items[0].keys() if isinstance(items[0], dict) else _ITEM_KEYS[:len(items[0])])
        get = (lambda it, k: it[k]) if isinstance(items[0], dict) else \
            (lambda it, k: it[_ITEM_KEYS.index(k)])
        images = np.stack([_as_numpy(get(it, "image")) for it in items])
        rows = np.array([int(get(it, "row")) for it in items]) if "row" in cols else np.arange(len(items))
        masks = np.stack([_as_numpy(get(it, key)) for it in items]) if key in cols else None
        return images.shape, masks, rows
    raise TypeError(f"cannot read masks from {type(batches).__name__}")
