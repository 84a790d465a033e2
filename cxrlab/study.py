"""Studies: train at one hospital, test at others, report honestly. One driver for the notebooks,
``cxrlab run CONFIG --out DIR`` and ``cxrlab report DIR``.

A *study* crosses methods x backbones x seeds on a protocol (:mod:`cxrlab.data.protocols`: a
source with train / val / test splits, and target data sets used for evaluation only)::

    from cxrlab.study import run_study, seed000_table
    res = run_study("configs/study_ci.yaml", out="results/study_ci")
    seed000_table(res.results, label_space="nih14", threshold="fixed0.5")

The three methods of seed 000, plus the control arm it lacked:

* ``bce_probe`` -- frozen backbone, embeddings computed once and cached on disk
  (:mod:`cxrlab.embeddings`), a linear head trained with masked BCE (:mod:`cxrlab.probe`).
* ``bce_finetune`` -- backbone and head trained end to end with BCE by the engine
  (:func:`cxrlab.engine.fit`), the *same budget* (epochs, batch size, augmentations) as SupCon.
  Without it, "SupCon beats the frozen BCE probe" mixes two causes: the loss, and the fact that
  only one arm adapted its features to chest X-rays.
* ``supcon`` -- SupCon pre-training of the backbone by the engine, then the frozen encoder's
  embeddings and the same linear probe as ``bce_probe``.

Rules that every number here follows
------------------------------------
* Model selection (the probe's epoch, the fine-tune's best epoch) and per-label thresholds use
  the **source validation split only**. Target labels are used for scoring, nothing else.
* Two thresholds are reported side by side: ``fixed0.5`` (what seed 000 presumably used) and
  ``tuned_source_val`` (per-label F1-optimal on source validation).
* Two label spaces: the *fair* one (``shared7``: the findings both sites define) and the
  *pitfall* one (``nih14``, seed 000's): a label the source never annotates (NaN in its
  manifest) cannot be learnt; its target score is chance by construction. Per-label tables mark
  such labels ``source_defined = False``; :func:`unit_summary` lists them.
* Every number carries a 95 % interval: a bootstrap over *patients* of the test set (one seed)
  or a t-interval over seeds (several seeds).
* Results on synthetic data say SYNTHETIC (column ``synthetic``, figure titles, captions).

Resumable: each (method, backbone, seed) *unit* writes ``units/<unit>/metrics.json`` (last, and
atomically), ``per_label.csv`` and ``predictions.npz``; a finished unit is skipped on the next
run; a unit killed in training continues from its engine checkpoint ``checkpoints/<unit>/``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlab import metrics as M
from cxrlab.io import atomic_path, atomic_to_csv, atomic_write_json, atomic_write_text
from cxrlab.labels import ALL_LABELS, NIH14, defined_labels, get_label_space

__all__ = [
    "METHODS", "THRESHOLDS", "SETTING_NAMES", "MODEL_NAMES", "StudyConfig", "StudyError",
    "StudyResult", "StudyData", "Unit", "RESULT_COLUMNS", "load_study_config", "load_study_data",
    "mask_labels", "run_study", "run_probe_study", "evaluate_predictions", "write_study_figures",
    "study_markdown",
    "summarise", "unit_summary", "seed000_table", "published_seed000_table",
    "published_cohen2020_table", "compare_with_published", "markdown_table", "load_study",
    "report", "synthetic_cache", "source_undefined_labels",
]

#: methods a study can run, in the order of seed 000's table (then the control arm)
METHODS = ("bce_probe", "supcon", "bce_finetune")
#: threshold kinds reported for F1: the fixed 0.5, and per-label F1-optimal on source val
THRESHOLDS = ("fixed0.5", "tuned_source_val")
#: row names of seed 000's table
SETTING_NAMES = {"bce_probe": "BCE linear probe", "supcon": "SupCon + linear probe",
                 "bce_finetune": "BCE fine-tune (control)"}
#: display names, in seed 000's row order (the tiny CI stand-ins after their real model)
MODEL_NAMES = {"vit_base_patch16_224": "ViT-B/16", "efficientnet_b0": "EfficientNet-B0",
               "resnet50": "ResNet-50", "xrv_densenet121": "DenseNet-121 (XRV)",
               "tiny_vit": "tiny ViT", "tiny_cnn": "tiny CNN", "tiny_resnet": "tiny ResNet"}
#: which real backbone each CI stand-in plays
STAND_INS = {"tiny_vit": "ViT-B/16", "tiny_cnn": "EfficientNet-B0", "tiny_resnet": "ResNet-50"}
METRIC_NAMES = {"f1_micro": "F1 micro", "f1_macro": "F1 macro", "auc_macro": "AUC macro",
                "map": "mAP"}
RESULT_COLUMNS = ("study", "method", "setting", "backbone", "model", "seed", "domain", "role",
                  "label_space", "threshold", "metric", "value", "ci_lo", "ci_hi", "n_images",
                  "n_labels", "synthetic")
UNIT_VERSION = 1
STUDY_KIND = "cxrlab-study"


class StudyError(ValueError):
    """A study config is invalid, or an output folder holds a different study."""


# ============================================================================ configuration
@dataclass(frozen=True)
class StudyConfig:
    """What a study runs. Load from YAML with :func:`load_study_config`; ``None`` = the profile's
    value. Unknown keys are refused.

    protocol: a protocol name (``cxrlab/protocols/<name>.yaml``: ``synthetic``,
        ``mimic_to_nih``, ``chexpert_to_nih``), a YAML path, or an inline mapping.
    target_split: override every target's split (``train|val|test|all``). Target images are
        never used for training, thresholds or selection, so ``all`` is honest and gives
        tighter intervals on small synthetic hospitals.
    mask_source_labels: labels set to *missing* at the source (train, val and test), e.g.
        ``mimic``: the 7 NIH labels MIMIC-CXR does not define. On the synthetic hospitals
        (which draw all 14) this emulates a MIMIC-like source, to show the 14-label pitfall.
    label_spaces: evaluated label spaces (default: the protocol's, then its pitfall space).
    methods, backbones, seeds: the grid (subset of :data:`METHODS`; backbone names of
        :mod:`cxrlab.models`).
    pretrained, weights: ImageNet weights (profile), or local weight files per backbone.
    synthetic: ``{n_per_hospital, image_size, seed, shortcut}`` of the synthetic cache when the
        protocol reads one (default: the profile's sizes, seed 0, no shortcut).
    caches: member or cache name -> folder (overrides the protocol's cache locations).
    epochs: probe epochs; finetune_epochs: the budget of *both* ``bce_finetune`` and
        ``supcon``; batch_size, lr: of the engine runs; probe_*: of the linear probe.
    hparams: per-method hyper-parameters (``cxrlab.methods``), e.g. ``{supcon: {temperature: 0.1}}``.
    bootstrap: resamples for the 95 % intervals (0: none); bootstrap_unit: ``patient`` or ``image``.
    """

    name: str = "study"
    description: str = ""
    protocol: Any = "synthetic"
    target_split: str | None = None
    mask_source_labels: Any = ()
    label_spaces: tuple | None = None
    methods: tuple[str, ...] = ("bce_probe",)
    backbones: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    pretrained: bool | None = None
    weights: dict = field(default_factory=dict)
    synthetic: dict = field(default_factory=dict)
    caches: dict = field(default_factory=dict)
    epochs: int | None = None
    finetune_epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 0.0
    probe_epochs: int | None = None
    probe_lr: float | None = None
    probe_batch_size: int | None = None
    probe_weight_decay: float = 1e-4
    probe_pos_weight: Any = None
    hparams: dict = field(default_factory=dict)
    bootstrap: int | None = None
    bootstrap_unit: str = "patient"
    embed_batch_size: int = 256

    def as_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=_json_default))


_SYNTH_KEYS = {"n_per_hospital", "image_size", "seed", "shortcut"}


def _json_default(o):
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _as_tuple(v, key: str, kind=str) -> tuple | None:
    """A list setting from YAML: a list, one value, or a comma-separated string."""
    if v is None:
        return None
    if isinstance(v, str):
        v = [x.strip() for x in v.split(",") if x.strip()]
    elif isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, (list, tuple)):
        raise StudyError(f"study config: {key!r} must be a list, got {v!r}")
    try:
        return tuple(kind(x) for x in v)
    except (TypeError, ValueError):
        raise StudyError(f"study config: {key!r} must be a list of {kind.__name__}, got {v!r}") from None


def load_study_config(config: str | os.PathLike | Mapping | StudyConfig) -> StudyConfig:
    """A :class:`StudyConfig` from a YAML file, a mapping, or a config (returned as is).

    Unknown keys raise :class:`StudyError` naming the allowed ones; values are checked (methods,
    label spaces, thresholds of the bootstrap ...), so a typo fails before any training.
    """
    if isinstance(config, StudyConfig):
        return config
    where = "study config"
    if isinstance(config, (str, os.PathLike)):
        import yaml

        p = Path(config).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"study config {p} does not exist (see configs/study_ci.yaml "
                                    "for an example)")
        where = f"study config {p.name}"
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise StudyError(f"{where}: not valid YAML ({e})") from None
    else:
        raw = dict(config)
    if not isinstance(raw, dict):
        raise StudyError(f"{where}: expected a mapping of settings, got {type(raw).__name__}")
    allowed = {f.name for f in dataclasses.fields(StudyConfig)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        import difflib

        hints = [f"{u!r} (did you mean {difflib.get_close_matches(u, allowed, n=1)[0]!r}?)"
                 if difflib.get_close_matches(u, allowed, n=1) else repr(u) for u in unknown]
        raise StudyError(f"{where}: unknown key(s) {', '.join(hints)}; allowed keys are "
                         f"{sorted(allowed)}")
    kw = dict(raw)
    for key in ("methods", "backbones"):
        if key in kw:
            kw[key] = _as_tuple(kw[key], key)
    if "seeds" in kw:
        kw["seeds"] = _as_tuple(kw["seeds"], "seeds", int)
    if kw.get("label_spaces") is not None:
        ls = kw["label_spaces"]
        ls = [ls] if isinstance(ls, str) else ls
        if not isinstance(ls, (list, tuple)) or not ls:
            raise StudyError(f"{where}: label_spaces must be a list of names (e.g. [shared7, "
                             f"nih14]) or of label lists, got {ls!r}")
        kw["label_spaces"] = tuple(x if isinstance(x, str) else tuple(x) for x in ls)
    for key in ("weights", "synthetic", "caches", "hparams"):
        if key in kw and kw[key] is None:
            kw[key] = {}
        if key in kw and not isinstance(kw[key], dict):
            raise StudyError(f"{where}: {key!r} must be a mapping, got {kw[key]!r}")
    if "mask_source_labels" in kw and kw["mask_source_labels"] is None:
        kw["mask_source_labels"] = ()
    cfg = StudyConfig(**kw)
    _check_config(cfg, where)
    return cfg


def _check_config(cfg: StudyConfig, where: str) -> None:
    from cxrlab.methods import ALGORITHMS

    if not cfg.methods:
        raise StudyError(f"{where}: 'methods' is empty; choose from {list(METHODS)}")
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad:
        raise StudyError(f"{where}: unknown method(s) {bad}; a study runs {list(METHODS)}")
    missing = [m for m in cfg.methods if m not in ALGORITHMS and m != "bce_probe"]
    if missing:
        raise StudyError(f"{where}: method(s) {missing} are not registered in cxrlab.methods")
    unknown_hp = sorted(set(cfg.hparams) - set(cfg.methods) - set(METHODS))
    if unknown_hp:
        raise StudyError(f"{where}: hparams for unknown method(s) {unknown_hp}")
    for m, hp in cfg.hparams.items():
        if not isinstance(hp, dict):
            raise StudyError(f"{where}: hparams[{m!r}] must be a mapping")
        if m in ALGORITHMS and m != "bce_probe":
            ALGORITHMS[m].resolve_hparams(hp)  # unknown names raise HParamError
    if cfg.seeds is not None and (not cfg.seeds or any(s < 0 for s in cfg.seeds)):
        raise StudyError(f"{where}: seeds must be non-negative integers, got {cfg.seeds}")
    if cfg.target_split not in (None, "train", "val", "test", "all"):
        raise StudyError(f"{where}: target_split must be train, val, test or all; got "
                         f"{cfg.target_split!r}")
    if cfg.bootstrap_unit not in ("patient", "image"):
        raise StudyError(f"{where}: bootstrap_unit must be 'patient' or 'image', got "
                         f"{cfg.bootstrap_unit!r}")
    if cfg.bootstrap is not None and (cfg.bootstrap < 0 or cfg.bootstrap == 1):
        raise StudyError(f"{where}: bootstrap must be 0 (no intervals) or >= 2, got {cfg.bootstrap}")
    unknown = sorted(set(cfg.synthetic) - _SYNTH_KEYS)
    if unknown:
        raise StudyError(f"{where}: synthetic: unknown key(s) {unknown}; allowed "
                         f"{sorted(_SYNTH_KEYS)}")
    for k in ("epochs", "finetune_epochs", "batch_size", "probe_epochs", "probe_batch_size"):
        v = getattr(cfg, k)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise StudyError(f"{where}: {k} must be a positive integer, got {v!r}")
    if cfg.label_spaces is not None:
        for ls in cfg.label_spaces:
            try:
                get_label_space(ls)
            except KeyError as e:
                raise StudyError(f"{where}: label_spaces: {e.args[0]}") from None
    mask_labels(cfg.mask_source_labels)  # validates


def mask_labels(spec) -> tuple[str, ...]:
    """Labels named by ``mask_source_labels``: a data set name (``mimic``, ``chexpert``: the
    NIH labels it does not define), a list of labels, or nothing."""
    if spec is None or spec == () or spec == []:
        return ()
    if isinstance(spec, str):
        if spec in ("mimic", "chexpert", "nih", "siim"):
            defined = set(defined_labels(spec))
            return tuple(lab for lab in NIH14 if lab not in defined)
        spec = [spec]
    labels = tuple(spec)
    unknown = [x for x in labels if x not in ALL_LABELS]
    if unknown:
        raise StudyError(f"mask_source_labels: unknown label(s) {unknown}; use 'mimic', "
                         f"'chexpert' or label names from {list(ALL_LABELS)}")
    return labels


# ============================================================================ data
def synthetic_cache(data_dir: str | os.PathLike, n_per_hospital: int, image_size: int,
                    seed: int = 0, shortcut: bool = False, verbose: bool = True):
    """The synthetic hospitals as a cache under ``data_dir``, written once and reused.

    ``data_dir/synthetic`` (where ``cxrlab data synth --out DATA_DIR/synthetic`` writes) is
    used when it was drawn with the same parameters; otherwise
    ``data_dir/synthetic_n<N>_<S>px_seed<K>[_shortcut]`` is reused or written (rewritten when
    it was drawn by another generator version or other hospital parameters).
    """
    from cxrlab.data.cache import Cache
    from cxrlab.data.synthetic import ensure_synthetic_cache, synthetic_cache_matches

    data_dir = Path(data_dir).expanduser()
    request = dict(n_per_hospital=int(n_per_hospital), image_size=int(image_size), seed=int(seed),
                   shortcut=bool(shortcut))
    if synthetic_cache_matches(data_dir / "synthetic", **request):
        return Cache(data_dir / "synthetic")
    named = data_dir / (f"synthetic_n{int(n_per_hospital)}_{int(image_size)}px_seed{int(seed)}"
                        + ("_shortcut" if shortcut else ""))
    t0 = time.perf_counter()
    fresh = not synthetic_cache_matches(named, **request)
    cache = ensure_synthetic_cache(named, **request)
    if verbose and fresh:
        print(f"wrote the synthetic hospitals: {len(cache)} images at {image_size} px "
              f"({time.perf_counter() - t0:.1f} s)")
    return cache


@dataclass
class _EvalSet:
    name: str
    cache: Any
    rows: np.ndarray
    role: str  # "train", "val", "in-domain", "out-of-domain"


class StudyData:
    """The resolved protocol: where every set's images and labels come from.

    ``sets``: ``train``, ``val`` (source) and one evaluation set per name: the source's test
    split (``role="in-domain"``) and every target (``"out-of-domain"``). Labels are in
    ``train_labels`` order, with the ``masked`` labels set to NaN at the source.
    """

    def __init__(self, resolved, train_labels: Sequence[str], masked: Sequence[str] = (),
                 bootstrap_unit: str = "patient"):
        self.resolved = resolved
        self.protocol = resolved.protocol
        self.train_labels = tuple(train_labels)
        self.masked = tuple(masked)
        self.bootstrap_unit = bootstrap_unit
        src = resolved.source
        self.source_name = src.name
        reserved = {"train", "val"}
        names = [src.name] + list(resolved.targets)
        if reserved & set(names):
            raise StudyError(f"protocol {self.protocol.name!r}: data set names {sorted(reserved)} "
                             "are reserved for the source's splits; rename them")
        self.sets: dict[str, _EvalSet] = {
            "train": _EvalSet("train", src.cache, src.rows["train"], "train"),
            "val": _EvalSet("val", src.cache, src.rows["val"], "val"),
            src.name: _EvalSet(src.name, src.cache, src.rows["test"], "in-domain"),
        }
        for name, t in resolved.targets.items():
            self.sets[name] = _EvalSet(name, t.cache, t.rows["eval"], "out-of-domain")
        if len(self.sets["val"].rows) == 0:
            raise StudyError(f"protocol {self.protocol.name!r}: the source has no validation "
                             "rows; thresholds and model selection need a source validation "
                             "split (check the cache's splits and the protocol's filters)")
        if len(self.sets[src.name].rows) == 0:
            raise StudyError(f"protocol {self.protocol.name!r}: the source has no test rows; "
                             "the in-domain score needs them (check the cache's splits)")

    @property
    def eval_names(self) -> list[str]:
        return [n for n, s in self.sets.items() if s.role in ("in-domain", "out-of-domain")]

    @property
    def synthetic(self) -> bool:
        return any(bool(s.cache.synthetic) for s in self.sets.values())

    def labels(self, name: str) -> np.ndarray:
        """float32 [n, L] labels of a set (NaN = missing), masked at the source."""
        s = self.sets[name]
        y = s.cache.labels(list(self.train_labels), s.rows)
        if self.masked and s.role in ("train", "val", "in-domain"):  # the source's sets only
            for j, lab in enumerate(self.train_labels):
                if lab in self.masked:
                    y[:, j] = np.nan
        return y

    def groups(self, name: str) -> np.ndarray | None:
        """Bootstrap units of a set: patient ids (``bootstrap_unit='patient'``) or None."""
        if self.bootstrap_unit != "patient":
            return None
        s = self.sets[name]
        return s.cache.manifest["patient_id"].astype(str).to_numpy()[s.rows]

    def source_defined(self) -> dict[str, bool]:
        """Label -> whether the source's training split labels it at all."""
        y = self.labels("train")
        return {lab: bool((~np.isnan(y[:, j])).any()) for j, lab in enumerate(self.train_labels)}

    def fingerprint(self) -> dict:
        """What identifies the data of the study (caches' meta.json and the chosen rows)."""
        out = {}
        for name, s in self.sets.items():
            meta = (Path(s.cache.path) / "meta.json").read_bytes()
            h = hashlib.sha256(meta)
            h.update(np.asarray(s.rows, dtype=np.int64).tobytes())
            out[name] = h.hexdigest()[:16]
        out["masked"] = list(self.masked)
        out["train_labels"] = list(self.train_labels)
        return out

    def describe(self) -> pd.DataFrame:
        """One row per set: role, images, patients, and how many labels it defines."""
        rows = []
        for name, s in self.sets.items():
            y = self.labels(name)
            g = self.groups(name)
            rows.append({"set": name, "role": s.role, "images": len(s.rows),
                         "patients": int(len(np.unique(g))) if g is not None else np.nan,
                         "labels_defined": int((~np.isnan(y)).any(0).sum()),
                         "positives": int(np.nansum(y))})
        return pd.DataFrame(rows)


def _label_space_names(cfg: StudyConfig, protocol) -> list:
    if cfg.label_spaces is not None:
        return list(cfg.label_spaces)
    out = [protocol.label_space_name or tuple(protocol.label_space)]
    if protocol.pitfall_label_space is not None:
        out.append(protocol.pitfall_label_space_name or tuple(protocol.pitfall_label_space))
    return out


def _space_key(space) -> str:
    return space if isinstance(space, str) else "+".join(space)


def load_study_data(cfg: StudyConfig, profile, caches: Mapping | None = None,
                    verbose: bool = True) -> StudyData:
    """Resolve the config's protocol: open (or write, for synthetic data) the caches and choose
    the rows of every set."""
    from cxrlab.data.protocols import load_protocol, protocol_from_dict

    proto = (protocol_from_dict(cfg.protocol, source="study config: protocol")
             if isinstance(cfg.protocol, dict) else load_protocol(cfg.protocol))
    if cfg.target_split is not None:
        proto = dataclasses.replace(proto, targets=tuple(
            dataclasses.replace(t, split=cfg.target_split) for t in proto.targets))
    overrides = dict(cfg.caches)
    overrides.update(caches or {})
    synth_keys = {m.cache for m in proto.members if m.dataset == "synthetic"}
    for key in synth_keys:
        if key not in overrides and not any(m.name in overrides for m in proto.members
                                            if m.cache == key):
            s = cfg.synthetic
            overrides[key] = synthetic_cache(
                profile.data_dir, n_per_hospital=s.get("n_per_hospital") or profile.n_per_hospital,
                image_size=s.get("image_size") or profile.image_size, seed=s.get("seed", 0),
                shortcut=s.get("shortcut", False), verbose=verbose)
    resolved = proto.resolve(profile.data_dir, caches=overrides)
    spaces = [get_label_space(s) for s in _label_space_names(cfg, proto)]
    wanted = set().union(*spaces)
    train_labels = [lab for lab in ALL_LABELS if lab in wanted]
    return StudyData(resolved, train_labels, mask_labels(cfg.mask_source_labels),
                     cfg.bootstrap_unit)


def source_undefined_labels(data: StudyData) -> list[str]:
    """Labels the source never annotates: a model trained there cannot learn them."""
    return [lab for lab, ok in data.source_defined().items() if not ok]


# ============================================================================ evaluation
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


# ============================================================================ units
@dataclass(frozen=True)
class Unit:
    """One (method, backbone, seed) run of a study."""

    method: str
    backbone: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}__{self.backbone}__seed{self.seed}"


class _Runner:
    """Runs and stores units; holds what every unit shares."""

    def __init__(self, cfg: StudyConfig, profile, data: StudyData, out: Path, overwrite: bool,
                 verbose: bool):
        from cxrlab.config import resolve_device

        self.cfg, self.profile, self.data, self.out = cfg, profile, data, out
        self.overwrite, self.verbose = overwrite, verbose
        self.device = resolve_device(profile.device)
        self.precision = profile.precision
        self.pretrained = profile.pretrained if cfg.pretrained is None else bool(cfg.pretrained)
        self.label_spaces = _label_space_names(cfg, data.protocol)
        self.n_boot = profile.bootstrap if cfg.bootstrap is None else int(cfg.bootstrap)
        self.settings = {
            "epochs": cfg.epochs or profile.epochs,
            "finetune_epochs": cfg.finetune_epochs or profile.finetune_epochs,
            "batch_size": cfg.batch_size or profile.batch_size,
            "lr": cfg.lr or profile.lr, "weight_decay": cfg.weight_decay,
            "probe_epochs": cfg.probe_epochs or cfg.epochs or profile.epochs,
            "probe_lr": cfg.probe_lr or cfg.lr or profile.lr,
            "probe_batch_size": cfg.probe_batch_size or cfg.batch_size or profile.batch_size,
            "probe_weight_decay": cfg.probe_weight_decay, "probe_pos_weight": cfg.probe_pos_weight,
            "pretrained": self.pretrained, "precision": self.precision,
            "bootstrap": self.n_boot, "bootstrap_unit": cfg.bootstrap_unit,
            "label_spaces": [_space_key(s) for s in self.label_spaces],
        }
        self.embedding_dir = Path(profile.checkpoint_dir).expanduser() / "embeddings"
        self.source_defined = data.source_defined()

    # ------------------------------------------------------------------ identity
    def unit_config(self, unit: Unit) -> dict:
        hp = self.cfg.hparams.get(unit.method, {})
        weights = self.cfg.weights.get(unit.backbone)
        d = {"version": UNIT_VERSION, "method": unit.method, "backbone": unit.backbone,
             "seed": unit.seed, "settings": self.settings, "hparams": hp,
             "weights": None if weights is None else str(weights),
             "data": self.data.fingerprint()}
        if unit.method == "bce_probe":  # no engine run: its budget does not enter
            d["settings"] = {k: v for k, v in self.settings.items()
                             if k not in ("finetune_epochs", "batch_size", "lr", "weight_decay")}
        return json.loads(json.dumps(d, default=_json_default))

    @staticmethod
    def config_hash(config: dict) -> str:
        return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]

    def unit_dir(self, unit: Unit) -> Path:
        return self.out / "units" / unit.name

    def is_complete(self, unit: Unit) -> bool:
        """True when the unit's metrics.json exists for this very configuration; raises
        :class:`StudyError` when it exists for another one (and ``overwrite`` is off)."""
        f = self.unit_dir(unit) / "metrics.json"
        if not f.exists():
            return False
        try:
            stored = json.loads(f.read_text())
        except (OSError, ValueError):
            return False
        want = self.unit_config(unit)
        if stored.get("config_hash") == self.config_hash(want):
            return True
        if self.overwrite:
            return False
        old = stored.get("config", {})
        diffs = _dict_diff(old, want)
        raise StudyError(
            f"{self.out.name}/units/{unit.name} holds results of a different configuration "
            f"(differences: {'; '.join(diffs[:4]) or 'unknown'}). Write this study to another "
            f"--out folder, delete that unit folder, or pass overwrite=True to recompute.")

    # ------------------------------------------------------------------ models
    def backbone(self, unit: Unit):
        from cxrlab.models import create_backbone

        size = self.data.sets["train"].cache.image_size
        return create_backbone(unit.backbone, pretrained=self.pretrained,
                               weights=self.cfg.weights.get(unit.backbone), image_size=size,
                               seed=unit.seed)

    def _arrays(self, name: str, with_labels: bool = True):
        """Images (+ labels) of a set for the engine: in memory when small, else a Dataset."""
        import torch

        s = self.data.sets[name]
        y = torch.from_numpy(self.data.labels(name))
        if len(s.rows) * s.cache.image_size ** 2 <= (1 << 30):
            from cxrlab.data.dataset import load_arrays

            images, _ = load_arrays(s.cache, s.rows, list(self.data.train_labels))
            return (images, y)
        from cxrlab.data.dataset import CacheDataset

        ds = CacheDataset(s.cache, s.rows, list(self.data.train_labels))
        ds.labels = y  # the source's masked labels
        return ds

    def embeddings(self, backbone, cache_dir) -> dict:
        from cxrlab.embeddings import extract_embeddings

        out = {}
        for name, s in self.data.sets.items():
            out[name] = extract_embeddings(backbone, s.cache, s.rows,
                                           batch_size=self.cfg.embed_batch_size,
                                           device=self.device, precision=self.precision,
                                           cache_dir=cache_dir)
        return out

    def probe_scores(self, emb: dict, unit: Unit) -> tuple[dict, dict]:
        from cxrlab.probe import predict_proba, train_linear_probe

        st = self.settings
        import torch

        probe = train_linear_probe(
            emb["train"], torch.from_numpy(self.data.labels("train")), emb["val"],
            torch.from_numpy(self.data.labels("val")), epochs=st["probe_epochs"],
            lr=st["probe_lr"], weight_decay=st["probe_weight_decay"],
            batch_size=st["probe_batch_size"], seed=unit.seed, pos_weight=st["probe_pos_weight"])
        scores = {name: predict_proba(probe, e) for name, e in emb.items() if name != "train"}
        info = {"probe_best_epoch": probe.best_epoch, "probe_history": probe.history}
        return scores, info

    def fit(self, unit: Unit, method: str, backbone, monitor: bool):
        from cxrlab.engine import fit, make_val_fn
        from cxrlab.methods import create_algorithm

        st = self.settings
        alg = create_algorithm(method, backbone, num_labels=len(self.data.train_labels),
                               hparams=self.cfg.hparams.get(method), seed=unit.seed)
        val_fn = make_val_fn(self._arrays("val"), precision=self.precision) if monitor else None
        result = fit(alg, self._arrays("train"), epochs=st["finetune_epochs"],
                     batch_size=min(st["batch_size"], len(self.data.sets["train"].rows)),
                     lr=st["lr"], weight_decay=st["weight_decay"], seed=unit.seed,
                     out_dir=self.out / "checkpoints" / unit.name, device=self.device,
                     precision=self.precision, num_workers=self.profile.num_workers,
                     val_fn=val_fn, monitor="auc_macro" if monitor else None,
                     resume=True, verbose=False)
        return alg, result

    # ------------------------------------------------------------------ one unit
    def run_unit(self, unit: Unit) -> dict:
        t0 = time.perf_counter()
        udir = self.unit_dir(unit)
        if self.overwrite and udir.exists():
            (udir / "metrics.json").unlink(missing_ok=True)
        if self.overwrite and (self.out / "checkpoints" / unit.name).exists():
            import shutil

            shutil.rmtree(self.out / "checkpoints" / unit.name)
        info: dict[str, Any] = {}
        bb = self.backbone(unit)
        info["weights_id"] = bb.weights_id
        if unit.method == "bce_probe":
            emb = self.embeddings(bb, self.embedding_dir)
            info["seconds_embed"] = round(time.perf_counter() - t0, 2)
            scores, extra = self.probe_scores(emb, unit)
            info.update(extra)
        elif unit.method == "supcon":
            alg, res = self.fit(unit, "supcon", bb, monitor=False)
            info.update(_fit_info(res))
            t1 = time.perf_counter()
            emb = self.embeddings(alg.encoder, self.out / "checkpoints" / unit.name / "embeddings")
            info["seconds_embed"] = round(time.perf_counter() - t1, 2)
            scores, extra = self.probe_scores(emb, unit)
            info.update(extra)
        elif unit.method == "bce_finetune":
            from cxrlab.engine import load_weights, predict_scores

            alg, res = self.fit(unit, "bce_finetune", bb, monitor=True)
            info.update(_fit_info(res))
            if res.best_path is not None and Path(res.best_path).exists():
                load_weights(alg, res.best_path)  # best epoch on source validation AUC
            scores = {}
            for name in self.data.sets:
                if name == "train":
                    continue
                scores[name], _ = predict_scores(alg, self._arrays(name), precision=self.precision,
                                                 num_workers=self.profile.num_workers)
        else:  # pragma: no cover - _check_config refuses other names
            raise StudyError(f"unknown method {unit.method!r}")
        t_eval = time.perf_counter()
        names = list(self.data.train_labels)
        labels = {n: self.data.labels(n) for n in scores}
        roles = {n: self.data.sets[n].role for n in self.data.eval_names}
        groups = {n: self.data.groups(n) for n in roles}
        rows, per_label, thr_table = evaluate_predictions(
            scores, labels, names, self.label_spaces, roles, groups, n_boot=self.n_boot,
            seed=unit.seed, source_defined=self.source_defined)
        info["seconds_eval"] = round(time.perf_counter() - t_eval, 2)
        info["seconds"] = round(time.perf_counter() - t0, 2)
        self._write_unit(unit, rows, per_label, thr_table, scores, labels, info)
        return info

    def _write_unit(self, unit, rows, per_label, thr_table, scores, labels, info) -> None:
        udir = self.unit_dir(unit)
        udir.mkdir(parents=True, exist_ok=True)
        arrays = {"label_names": np.array(self.data.train_labels)}
        for name in scores:
            arrays[f"{name}__scores"] = np.asarray(scores[name], dtype=np.float32)
            arrays[f"{name}__labels"] = np.asarray(labels[name], dtype=np.float32)
            arrays[f"{name}__rows"] = np.asarray(self.data.sets[name].rows, dtype=np.int64)
        arrays["thresholds_tuned_source_val"] = thr_table["threshold"].to_numpy(dtype=np.float64)
        with atomic_path(udir / "predictions.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
        per_label = per_label.copy()
        for col, val in (("method", unit.method), ("backbone", unit.backbone), ("seed", unit.seed)):
            per_label.insert(0, col, val)
        atomic_to_csv(per_label, udir / "per_label.csv")
        atomic_to_csv(thr_table, udir / "thresholds.csv")
        cfg = self.unit_config(unit)
        record = {
            "unit": unit.name, "method": unit.method, "backbone": unit.backbone, "seed": unit.seed,
            "config": cfg, "config_hash": self.config_hash(cfg), "rows": rows,
            "source_undefined_labels": [k for k, v in self.source_defined.items() if not v],
            "untuned_labels": thr_table.loc[~thr_table["tuned"], "label"].tolist(),
            "synthetic": self.data.synthetic, "info": info,
        }
        atomic_write_json(udir / "metrics.json", record)  # last: marks the unit complete


def _fit_info(res) -> dict:
    return {"fit_epochs": len(res.history), "fit_resumed_from": res.resumed_from,
            "fit_best_epoch": res.best_epoch, "images_seen": res.images_seen,
            "fit_history": res.history,
            "seconds_fit": round(sum(h.get("seconds", 0.0) for h in res.history), 2)}


def _dict_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _dict_diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


# ============================================================================ the study
@dataclass
class StudyResult:
    """What a study produced (also read back from disk by :func:`load_study`).

    ``results``: long table (:data:`RESULT_COLUMNS`), ``per_label``: one row per unit,
    evaluation set, threshold kind and label; ``units``: per-unit timings and whether it was
    computed or found complete; ``data``: the sets (role, images, patients).
    """

    name: str
    out: Path
    config: dict
    profile: str
    synthetic: bool
    results: pd.DataFrame
    per_label: pd.DataFrame
    units: pd.DataFrame
    data: pd.DataFrame
    source_undefined: list = field(default_factory=list)
    protocol: str = ""
    figures: dict = field(default_factory=dict)

    def summary(self, **kw) -> pd.DataFrame:
        return summarise(self.results, **kw)

    def seed000_table(self, **kw) -> pd.DataFrame:
        return seed000_table(self.results, **kw)

    @property
    def tag(self) -> str:
        return "SYNTHETIC" if self.synthetic else "real data"


def _resolve_profile(profile):
    from cxrlab.config import Profile, get_profile

    return profile if isinstance(profile, Profile) else get_profile(profile)


def run_probe_study(config, out, profile=None, seeds: Sequence[int] | None = None, *,
                    methods: Sequence[str] | None = None, backbones: Sequence[str] | None = None,
                    caches: Mapping | None = None, overwrite: bool = False,
                    verbose: bool = True) -> StudyResult:
    """Run (or resume) every unit of a study and write its tables; no figures.

    ``config``: YAML path, mapping or :class:`StudyConfig`; ``profile``: name or Profile
    (default: ``$CXRLAB_PROFILE``); ``seeds``, ``methods``, ``backbones`` override the config;
    ``caches``: member/cache name -> folder or open Cache. Writes ``out/results.csv``,
    ``out/per_label.csv``, ``out/metrics.json``, ``out/units/...``, ``out/checkpoints/...``.
    """
    cfg = load_study_config(config)
    if methods is not None:
        cfg = dataclasses.replace(cfg, methods=tuple(methods))
    if backbones is not None:
        cfg = dataclasses.replace(cfg, backbones=tuple(backbones))
    if seeds is not None:
        cfg = dataclasses.replace(cfg, seeds=tuple(int(s) for s in seeds))
    _check_config(cfg, "study config")
    prof = _resolve_profile(profile)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    data = load_study_data(cfg, prof, caches=caches, verbose=verbose)
    runner = _Runner(cfg, prof, data, out, overwrite, verbose)
    grid = [Unit(m, b, s) for m in cfg.methods for b in (cfg.backbones or prof.backbones)
            for s in (cfg.seeds or prof.seeds)]
    unit_rows, long_rows, per_label = [], [], []
    for unit in grid:
        done = runner.is_complete(unit)
        if done:
            status, secs = "complete (skipped)", 0.0
        else:
            info = runner.run_unit(unit)
            status, secs = "computed", info["seconds"]
        rec = json.loads((runner.unit_dir(unit) / "metrics.json").read_text())
        if verbose:
            print(f"{unit.name:<40} {status:<20} {secs:6.1f} s")
        unit_rows.append({"unit": unit.name, "method": unit.method, "backbone": unit.backbone,
                          "seed": unit.seed, "status": status, "seconds": secs,
                          "seconds_computed": rec["info"].get("seconds"),
                          "weights": rec["info"].get("weights_id")})
        for r in rec["rows"]:
            long_rows.append({"study": cfg.name, "method": unit.method,
                              "setting": SETTING_NAMES[unit.method], "backbone": unit.backbone,
                              "model": MODEL_NAMES.get(unit.backbone, unit.backbone),
                              "seed": unit.seed, **r, "synthetic": data.synthetic})
        per_label.append(pd.read_csv(runner.unit_dir(unit) / "per_label.csv"))
    results = pd.DataFrame(long_rows, columns=list(RESULT_COLUMNS))
    results.attrs["synthetic"] = data.synthetic
    per_label_df = pd.concat(per_label, ignore_index=True)
    per_label_df.attrs["synthetic"] = data.synthetic
    res = StudyResult(name=cfg.name, out=out, config=cfg.as_dict(), profile=prof.name,
                      synthetic=data.synthetic, results=results, per_label=per_label_df,
                      units=pd.DataFrame(unit_rows), data=data.describe(),
                      source_undefined=source_undefined_labels(data),
                      protocol=data.protocol.describe())
    _write_tables(res, runner)
    return res


def _write_tables(res: StudyResult, runner: _Runner) -> None:
    out = res.out
    atomic_to_csv(res.results, out / "results.csv")
    atomic_to_csv(res.per_label, out / "per_label.csv")
    summary = summarise(res.results)
    atomic_to_csv(summary, out / "summary.csv")
    atomic_write_json(out / "metrics.json", {
        "kind": STUDY_KIND, "name": res.name, "synthetic": res.synthetic,
        "label": "SYNTHETIC" if res.synthetic else "real data", "profile": res.profile,
        "protocol": res.protocol, "config": res.config, "settings": runner.settings,
        "source_undefined_labels": res.source_undefined,
        "units": res.units.to_dict(orient="records"), "data": res.data.to_dict(orient="records"),
        "summary": summary.to_dict(orient="records"),
    })


def run_study(config, out, profile=None, seeds: Sequence[int] | None = None, *,
              overwrite: bool = False, verbose: bool = True, figures: bool = True,
              **kwargs) -> StudyResult:
    """``cxrlab run CONFIG --out DIR``: :func:`run_probe_study`, then figures (PNG) and a
    ``README.md`` report in ``out``. Re-running skips finished units."""
    res = run_probe_study(config, out, profile, seeds, overwrite=overwrite, verbose=verbose,
                          **kwargs)
    if figures:
        res.figures = write_study_figures(res)
    atomic_write_text(res.out / "README.md", study_markdown(res))
    if verbose:
        done = int((res.units["status"] == "computed").sum())
        print(f"study {res.name} ({res.tag}): {len(res.units)} units, {done} computed, "
              f"{len(res.units) - done} already complete; tables, figures and README.md in "
              f"{res.out.name}/")
    return res


def load_study(path) -> StudyResult:
    """A finished study read back from its folder (``metrics.json``, ``results.csv``, ...)."""
    path = Path(path).expanduser()
    f = path / "metrics.json"
    if not f.exists():
        raise FileNotFoundError(f"{path} holds no study (metrics.json is missing); run "
                                "`cxrlab run CONFIG --out DIR` first")
    meta = json.loads(f.read_text())
    if meta.get("kind") != STUDY_KIND:
        raise StudyError(f"{path}/metrics.json is not a cxrlab study summary")
    results = pd.read_csv(path / "results.csv")
    results.attrs["synthetic"] = bool(meta["synthetic"])
    per_label = pd.read_csv(path / "per_label.csv")
    per_label.attrs["synthetic"] = bool(meta["synthetic"])
    return StudyResult(name=meta["name"], out=path, config=meta["config"], profile=meta["profile"],
                       synthetic=bool(meta["synthetic"]), results=results, per_label=per_label,
                       units=pd.DataFrame(meta["units"]), data=pd.DataFrame(meta["data"]),
                       source_undefined=meta.get("source_undefined_labels", []),
                       protocol=meta.get("protocol", ""))


# ============================================================================ tables
def summarise(results: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per (method, backbone, domain, label space, threshold, metric) over seeds.

    One seed: the value and its bootstrap interval (``interval = "bootstrap"``). Several
    seeds: the mean and a t-interval over seeds, clipped to [0, 1] (``interval = "seeds"``;
    the per-seed bootstrap half-widths are averaged into ``boot_halfwidth``).
    """
    keys = ["study", "method", "setting", "backbone", "model", "domain", "role", "label_space",
            "threshold", "metric"]
    keys = [k for k in keys if k in results.columns]
    out = []
    for key, grp in results.groupby(keys, sort=False, dropna=False):
        rec = dict(zip(keys, key))
        vals = grp["value"].to_numpy(dtype=float)
        rec["n_seeds"] = int(grp["seed"].nunique()) if "seed" in grp else len(grp)
        half = np.nanmean((grp["ci_hi"] - grp["ci_lo"]).to_numpy(dtype=float) / 2) \
            if grp["ci_hi"].notna().any() else float("nan")
        if len(vals) == 1:
            rec.update(value=float(vals[0]), ci_lo=float(grp["ci_lo"].iloc[0]),
                       ci_hi=float(grp["ci_hi"].iloc[0]), interval="bootstrap")
        else:
            s = M.summarise_seeds([{"m": v} for v in vals], metrics=["m"], level=level).iloc[0]
            # every metric lives in [0, 1]: a t-interval of few seeds can overshoot, clip it
            rec.update(value=float(s["mean"]), ci_lo=max(0.0, float(s["lo"])),
                       ci_hi=min(1.0, float(s["hi"])), interval="seeds")
        rec["boot_halfwidth"] = float(half)
        rec["synthetic"] = bool(grp["synthetic"].iloc[0]) if "synthetic" in grp else False
        out.append(rec)
    df = pd.DataFrame(out)
    df.attrs["synthetic"] = bool(results.attrs.get("synthetic", df["synthetic"].any()
                                                   if len(df) else False))
    return df


def _model_order(backbones) -> list[str]:
    order = list(MODEL_NAMES)
    return sorted(backbones, key=lambda b: (order.index(b) if b in order else len(order), b))


def _default_domain(results: pd.DataFrame) -> str:
    out = results.loc[results["role"] == "out-of-domain", "domain"]
    if len(out):
        return str(out.iloc[0])
    return str(results["domain"].iloc[0])


def seed000_table(results: pd.DataFrame, label_space: str = "shared7", domain: str | None = None,
                  threshold: str = "tuned_source_val", digits: int = 1,
                  numeric: bool = False) -> pd.DataFrame:
    """Results in seed 000's layout: rows setting x model, columns F1 micro, F1 macro,
    AUC macro, mAP as ``"mean [lo, hi]"`` percentages (bootstrap over patients for one seed,
    t-interval over seeds for several).

    ``results``: a study's long table (or its :func:`summarise`). ``domain``: an evaluation set
    (default: the first out-of-domain one). ``numeric=True`` gives the mean values in percent
    instead of strings. ``table.attrs["caption"]`` says what the numbers are, SYNTHETIC included.
    """
    summ = results if "n_seeds" in results.columns else summarise(results)
    synthetic = bool(results.attrs.get("synthetic", summ["synthetic"].any() if len(summ) else False))
    domain = domain or _default_domain(summ)
    sel = summ[(summ["domain"] == domain) & (summ["label_space"] == label_space)
               & (summ["threshold"] == threshold)]
    if sel.empty:
        raise KeyError(f"no results for domain={domain!r}, label_space={label_space!r}, "
                       f"threshold={threshold!r}; available: domains "
                       f"{sorted(summ['domain'].unique())}, label spaces "
                       f"{sorted(summ['label_space'].unique())}, thresholds {list(THRESHOLDS)}")
    rows = []
    methods = [m for m in METHODS if m in set(sel["method"])]
    for m in methods:
        for b in _model_order(sel.loc[sel["method"] == m, "backbone"].unique()):
            g = sel[(sel["method"] == m) & (sel["backbone"] == b)].set_index("metric")
            rec = {"setting": SETTING_NAMES[m], "model": MODEL_NAMES.get(b, b)}
            for metric, col in METRIC_NAMES.items():
                if metric not in g.index:
                    rec[col] = np.nan if numeric else "n/a"
                    continue
                r = g.loc[metric]
                rec[col] = (round(100 * r["value"], digits) if numeric
                            else M.format_ci(r["value"], r["ci_lo"], r["ci_hi"], digits=digits))
            rows.append(rec)
    table = pd.DataFrame(rows)
    n_seeds = int(sel["n_seeds"].max())
    interval = ("value [95% bootstrap interval over patients], 1 seed" if n_seeds == 1
                else f"mean over {n_seeds} seeds [95% t-interval over seeds]")
    role = sel["role"].iloc[0]
    tag = "SYNTHETIC" if synthetic else "real data"
    table.attrs["synthetic"] = synthetic
    table.attrs["caption"] = (f"ours ({tag}): evaluated on {domain} ({role}), label space "
                              f"{label_space}, threshold {threshold}; % as {interval}")
    return table


def published_seed000_table() -> pd.DataFrame:
    """Seed 000's published numbers (course project slides; REFERENCE.md section 1): MIMIC-CXR
    -> NIH ChestX-ray14, 14 NIH labels, frozen ImageNet backbones, linear probe, batch 128,
    10 epochs; threshold not stated (0.5 presumably); no confidence intervals; %."""
    rows = [
        ("BCE linear probe", "ViT-B/16", 27.84, 7.25, 71.70, 18.82),
        ("BCE linear probe", "EfficientNet-B0", 26.13, 5.21, 64.94, 15.50),
        ("BCE linear probe", "ResNet-50", 19.70, 4.74, 67.83, 16.32),
        ("SupCon + linear probe", "ViT-B/16", 30.06, 9.41, 74.63, 21.79),
        ("SupCon + linear probe", "EfficientNet-B0", 29.14, 7.60, 67.82, 17.47),
        ("SupCon + linear probe", "ResNet-50", 27.95, 6.87, 69.68, 18.22),
    ]
    t = pd.DataFrame(rows, columns=["setting", "model", "F1 micro", "F1 macro", "AUC macro", "mAP"])
    t.attrs["caption"] = ("published (seed 000 slides, MIMIC→NIH, 14 labels, threshold 0.5 "
                          "presumably, no CIs)")
    t.attrs["citation"] = ("Bansal, Hong, Kang, Kim: 'Robust Domain-Generalizable AI for Chest "
                           "X-Ray Disease Classification', CSCI 461 course project slides (seed 000)")
    t.attrs["synthetic"] = False
    return t


def published_cohen2020_table() -> pd.DataFrame:
    """Cross-domain AUROC with NIH ChestX-ray14 as the target (Cohen et al., MIDL 2020;
    DenseNet-121, 3 seeds; values read off the paper's heat-map, +-0.02)."""
    rows = [("Effusion", .84, .85, .89), ("Edema", .87, .87, .82),
            ("Cardiomegaly", .72, .79, .92), ("Consolidation", .69, .75, .76),
            ("Atelectasis", .69, .72, .77), ("Pneumothorax", .64, .67, .78),
            ("Pneumonia", .61, .60, .63)]
    t = pd.DataFrame(rows, columns=["label", "train MIMIC (CheXpert labeler)", "train CheXpert",
                                    "train NIH (in-domain)"])
    t.attrs["caption"] = ("published AUROC on NIH ChestX-ray14 (Cohen et al. 2020; DenseNet-121, "
                          "3 seeds; read off the paper's heat-map, ±0.02)")
    t.attrs["citation"] = ("J. P. Cohen, M. Hashir, R. Brooks, H. Bertrand: 'On the limits of "
                           "cross-domain generalization in automated X-ray prediction', MIDL 2020")
    t.attrs["synthetic"] = False
    return t


def compare_with_published(ours: pd.DataFrame, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our seed-000-layout table and the published one stacked, with a ``source`` column that
    says which is which (published numbers: no intervals; ours: with intervals)."""
    published = published_seed000_table() if published is None else published
    pub = published.copy()
    for c in METRIC_NAMES.values():
        pub[c] = pub[c].map(lambda v: f"{v:.1f}")
    pub.insert(0, "source", published.attrs.get("caption", "published"))
    mine = ours.copy()
    mine.insert(0, "source", ours.attrs.get("caption", "ours"))
    t = pd.concat([pub, mine], ignore_index=True)
    t.attrs["synthetic"] = bool(ours.attrs.get("synthetic", False))
    return t


def unit_summary(path) -> dict:
    """The stored record of one unit (``units/<unit>/metrics.json``) without its result rows."""
    rec = json.loads((Path(path) / "metrics.json").read_text())
    rec.pop("rows", None)
    return rec


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """A GitHub Markdown table of ``df`` (no extra dependency)."""
    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, floatfmt)
        return str(v).replace("|", "\\|")

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


# ============================================================================ reports
def write_study_figures(res: StudyResult, dpi: int = 90) -> dict[str, Path]:
    """The study's PNG figures in ``res.out``: in- vs out-of-domain, fixed vs tuned thresholds,
    14 labels vs shared 7, per-label AUC at the first target."""
    import matplotlib.pyplot as plt

    from cxrlab import plots_study as P
    from cxrlab.plots import save_figure

    summ = summarise(res.results)
    spaces = list(summ["label_space"].unique())
    fair = "shared7" if "shared7" in spaces else spaces[0]
    files = {}
    figs = {"in_vs_out_of_domain": lambda: P.plot_in_vs_out(summ, label_space=fair),
            "thresholds": lambda: P.plot_thresholds(summ, label_space=fair)}
    if len(spaces) > 1:
        figs["label_spaces"] = lambda: P.plot_label_spaces(summ)
    figs["per_label_auc"] = lambda: P.plot_per_label(res.per_label)
    for name, make in figs.items():
        fig = make()
        files[name] = save_figure(fig, res.out / f"{name}.png", dpi=dpi)
        plt.close(fig)
    return files


def _caveats(res: StudyResult) -> list[str]:
    lines = []
    if res.synthetic:
        lines.append("**SYNTHETIC data**: phantoms from `cxrlab.data.synthetic`, not patients. "
                     "These numbers say how methods behave under the simulated shifts only; they "
                     "are not comparable with published results on real data.")
    if res.source_undefined:
        lines.append(f"The source never labels {', '.join(res.source_undefined)}: a model "
                     "trained there cannot learn them. The `nih14` rows include them (chance by "
                     "construction); that is the 14-label pitfall, not a result. Use `shared7`.")
    lines.append("Thresholds (`tuned_source_val`) and model selection come from the source "
                 "validation split only; targets are used for scoring only.")
    return lines


def study_markdown(res: StudyResult) -> str:
    """The README.md of a study folder: what ran, the seed-000-layout tables, caveats."""
    summ = summarise(res.results)
    tag = "SYNTHETIC" if res.synthetic else "real data"
    parts = [f"# Study `{res.name}` ({tag})", "",
             f"Profile `{res.profile}`. Protocol:", "", "```", res.protocol, "```", ""]
    parts += [f"* {c}" for c in _caveats(res)] + [""]
    parts += ["## Sets", "", markdown_table(res.data), ""]
    spaces = list(summ["label_space"].unique())
    for domain in [d for d in summ["domain"].unique()]:
        role = summ.loc[summ["domain"] == domain, "role"].iloc[0]
        for space in spaces:
            for thr in THRESHOLDS:
                t = seed000_table(summ, label_space=space, domain=domain, threshold=thr)
                parts += [f"### {domain} ({role}), {space}, threshold {thr}", "",
                          f"_{t.attrs['caption']}_", "", markdown_table(t), ""]
    pub = published_seed000_table()
    parts += ["## Published numbers (for orientation, not comparable with synthetic results)", "",
              f"_{pub.attrs['caption']}; {pub.attrs['citation']}_", "",
              markdown_table(pub, ".2f"), ""]
    coh = published_cohen2020_table()
    parts += [f"_{coh.attrs['caption']}; {coh.attrs['citation']}_", "", markdown_table(coh, ".2f"),
              ""]
    if res.figures:
        parts += ["## Figures", ""] + [f"![{k}]({Path(v).name})" for k, v in res.figures.items()]
    parts += ["", "## Units", "", markdown_table(res.units), ""]
    return "\n".join(parts) + "\n"


def _find_studies(root: Path) -> list[Path]:
    found = []
    for f in sorted(root.rglob("metrics.json")):
        if "units" in f.relative_to(root).parts:
            continue
        try:
            if json.loads(f.read_text()).get("kind") == STUDY_KIND:
                found.append(f.parent)
        except (OSError, ValueError):
            continue
    return found


def report(results_dir, dpi: int = 90, verbose: bool = True) -> Path:
    """``cxrlab report DIR``: compare every study found under ``DIR`` (a study folder or a folder
    of them). Writes ``DIR/report.md`` and ``DIR/report_auc.png``; returns the report's path."""
    import matplotlib.pyplot as plt

    from cxrlab import plots_study as P
    from cxrlab.plots import save_figure

    root = Path(results_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; pass a study's --out folder or a "
                                "folder holding several")
    studies = [load_study(p) for p in _find_studies(root)]
    if not studies:
        raise FileNotFoundError(f"no study under {root} (looked for metrics.json written by "
                                "`cxrlab run CONFIG --out DIR`)")
    summaries = []
    for s in studies:
        summ = summarise(s.results)
        summ["study"] = f"{s.name} ({s.tag})"
        summaries.append(summ)
    allsum = pd.concat(summaries, ignore_index=True)
    fig = P.plot_study_comparison(allsum)
    png = save_figure(fig, root / "report_auc.png", dpi=dpi)
    plt.close(fig)
    parts = ["# cxrlab report", "",
             f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'} found. Every number: "
             "value [95% interval] in %, fair label space, thresholds tuned on source validation.",
             "", f"![AUC per study]({png.name})", ""]
    for s in studies:
        rel = s.out.relative_to(root) if s.out != root else Path(".")
        summ = summarise(s.results)
        spaces = list(summ["label_space"].unique())
        fair = "shared7" if "shared7" in spaces else spaces[0]
        parts += [f"## {s.name} ({s.tag}) — `{rel}`", "", f"Profile `{s.profile}`.", ""]
        parts += [f"* {c}" for c in _caveats(s)] + [""]
        for domain in summ["domain"].unique():
            t = seed000_table(summ, label_space=fair, domain=domain, threshold="tuned_source_val")
            parts += [f"### {domain}", "", f"_{t.attrs['caption']}_", "", markdown_table(t), ""]
    pub = published_seed000_table()
    parts += ["## Published reference numbers", "",
              f"_{pub.attrs['caption']}; {pub.attrs['citation']}_", "", markdown_table(pub, ".2f"),
              ""]
    out = root / "report.md"
    atomic_write_text(out, "\n".join(parts) + "\n")
    if verbose:
        print(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}: wrote {out} and {png.name}")
    return out
