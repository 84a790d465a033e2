"""What a study runs: :class:`StudyConfig`, read from YAML and checked before any training."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cxrlab.errors import CxrlabError, MissingInputError
from cxrlab.labels import ALL_LABELS, NIH14, defined_labels, get_label_space

#: threshold kinds reported for F1: the fixed 0.5, and per-label F1-optimal on source val
THRESHOLDS = ("fixed0.5", "tuned_source_val")


class StudyError(CxrlabError, ValueError):
    """A study config is invalid, or an output folder holds a different study."""


@dataclass(frozen=True)
class StudyConfig:
    """What a study runs. Load from YAML with :func:`load_study_config`; ``None`` = the profile's
    value. Unknown keys are refused.

    protocol: a protocol name (``cxrlab/data/protocols/<name>.yaml``: ``synthetic``,
        ``mimic_to_nih``, ``chexpert_to_nih``), a YAML path, or an inline mapping.
    target_split: override every target's split (``train|val|test|all``). Target images are
        never used for training, thresholds or selection, so ``all`` is honest and gives
        tighter intervals on small synthetic hospitals.
    mask_source_labels: labels set to *missing* at the source (train, val and test), e.g.
        ``mimic``: the 7 NIH labels MIMIC-CXR does not define. On the synthetic hospitals
        (which draw all 14) this emulates a MIMIC-like source, to show the 14-label pitfall.
    label_spaces: evaluated label spaces (default: the protocol's, then its pitfall space).
    methods: the study's *arms*, in table order: a registered method name
        (:data:`cxrlab.methods.ALGORITHMS`), or a mapping ``{name, method, hparams, display}``
        to run one method several ways, e.g. ``{name: rrr_periphery, method: rrr,
        hparams: {mask: lung_periphery}}`` (see :class:`Arm`).
    backbones, seeds: the rest of the grid (backbone names of :mod:`cxrlab.models`).
    pretrained, weights: ImageNet weights (profile), or local weight files per backbone.
    synthetic: ``{n_per_hospital, image_size, seed, shortcut}`` of the synthetic cache when the
        protocol reads one (default: the profile's sizes, seed 0, no shortcut).
    caches: member or cache name -> folder (overrides the protocol's cache locations).
    epochs: probe epochs; finetune_epochs: the budget of *both* ``bce_finetune`` and
        ``supcon``; batch_size, lr: of the engine runs; probe_*: of the linear probe (by
        default calibrated: bias from prevalence, epoch kept by source-validation BCE, trained
        until that loss stops improving; see :func:`cxrlab.probe.train_linear_probe`).
    hparams: per-method hyper-parameters (``cxrlab.methods``), e.g. ``{supcon: {temperature: 0.1}}``;
        they apply to every arm of that method, and an arm's own ``hparams`` override them.
    bootstrap: resamples for the 95 % intervals (0: none); bootstrap_unit: ``patient`` or ``image``.
    """

    name: str = "study"
    description: str = ""
    protocol: Any = "synthetic"
    target_split: str | None = None
    mask_source_labels: Any = ()
    label_spaces: tuple | None = None
    methods: tuple = ("bce_probe",)
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
    #: the probe trains until the source-validation score has not improved for this many epochs
    #: (probe_epochs, default 300, is then a cap); null: exactly probe_epochs epochs
    probe_patience: int | None = 10
    #: the source-validation score that keeps an epoch: "val_loss" (BCE; sees calibration) or
    #: "val_auc" (the seed project's)
    probe_select: str = "val_loss"
    #: the probe's starting bias: "prevalence" (logit of each label's base rate) or "zero"
    probe_init_bias: str = "prevalence"
    hparams: dict = field(default_factory=dict)
    bootstrap: int | None = None
    bootstrap_unit: str = "patient"
    embed_batch_size: int = 256

    def as_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=_json_default))

    def arms(self) -> list["Arm"]:
        """The study's arms, in table order (see :func:`study_arms`)."""
        return study_arms(self)


@dataclass(frozen=True)
class Arm:
    """One row group of a study's tables: a registered method run with some hyper-parameters.

    ``name`` keys the units and the results (column ``method``); ``method`` is the registry name
    (column ``algorithm``); ``display`` is the table row name (column ``setting``).
    """

    name: str
    method: str
    hparams: dict
    display: str

    @property
    def algorithm(self):
        """The registered :class:`~cxrlab.methods.base.Algorithm` class."""
        from cxrlab.methods import get_algorithm

        return get_algorithm(self.method)


_ARM_KEYS = {"name", "method", "hparams", "display"}


def study_arms(cfg: "StudyConfig", where: str = "study config") -> list[Arm]:
    """Resolve ``cfg.methods`` into :class:`Arm` objects, checking every name against the
    registry (an unknown method lists the registered ones)."""
    from cxrlab.methods import ALGORITHMS

    arms = []
    for entry in cfg.methods:
        if isinstance(entry, str):
            entry = {"name": entry, "method": entry}
        if not isinstance(entry, Mapping):
            raise StudyError(f"{where}: each entry of 'methods' is a method name or a mapping "
                             f"{{name, method, hparams}}; got {entry!r}")
        unknown = sorted(set(entry) - _ARM_KEYS)
        if unknown:
            raise StudyError(f"{where}: methods entry {dict(entry)!r}: unknown key(s) {unknown}; "
                             f"allowed {sorted(_ARM_KEYS)}")
        method = entry.get("method", entry.get("name"))
        name = entry.get("name", method)
        if not isinstance(method, str) or not isinstance(name, str) or not name:
            raise StudyError(f"{where}: methods entry {dict(entry)!r} needs a 'method' (a "
                             "registered method name) and a 'name'")
        if method not in ALGORITHMS:
            import difflib

            close = difflib.get_close_matches(method, list(ALGORITHMS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise StudyError(f"{where}: unknown method {method!r}{hint}; registered methods: "
                             f"{list(ALGORITHMS)}")
        own = entry.get("hparams") or {}
        if not isinstance(own, Mapping):
            raise StudyError(f"{where}: hparams of arm {name!r} must be a mapping, got {own!r}")
        hp = {**cfg.hparams.get(method, {}), **own}
        cls = ALGORITHMS[method]
        cls.resolve_hparams(hp)  # unknown names raise HParamError
        display = entry.get("display") or (cls.display_name if name == method
                                           else f"{cls.display_name} ({name})")
        arms.append(Arm(name=name, method=method, hparams=hp, display=str(display)))
    names = [a.name for a in arms]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise StudyError(f"{where}: arm name(s) {dupes} appear twice in 'methods'; give each "
                         "arm its own 'name'")
    return arms


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
            raise MissingInputError(f"study config {p} does not exist (see configs/study_ci.yaml "
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
    if "methods" in kw:
        m = kw["methods"]
        kw["methods"] = (tuple(m) if isinstance(m, (list, tuple)) and any(
            isinstance(x, Mapping) for x in m) else _as_tuple(m, "methods"))
    if "backbones" in kw:
        kw["backbones"] = _as_tuple(kw["backbones"], "backbones")
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

    _check_values(cfg, where)
    if not cfg.methods:
        raise StudyError(f"{where}: 'methods' is empty; choose from {list(ALGORITHMS)}")
    unknown_hp = sorted(set(cfg.hparams) - set(ALGORITHMS))
    if unknown_hp:
        raise StudyError(f"{where}: hparams for unknown method(s) {unknown_hp}; registered "
                         f"methods: {list(ALGORITHMS)}")
    for m, hp in cfg.hparams.items():
        if not isinstance(hp, dict):
            raise StudyError(f"{where}: hparams[{m!r}] must be a mapping")
        ALGORITHMS[m].resolve_hparams(hp)  # unknown names raise HParamError
    study_arms(cfg, where)
    if cfg.backbones is not None:
        check_backbones(cfg.backbones, where)
    for name, path in cfg.weights.items():
        check_backbones([name], f"{where}: weights")
        if path is not None and not Path(str(path)).expanduser().exists():
            raise MissingInputError(f"{where}: weights for {name!r}: {path} does not exist; pass "
                                    "a local weight file (.safetensors / .pth) or leave it out")
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
    for k in ("epochs", "finetune_epochs", "batch_size", "probe_epochs", "probe_batch_size",
              "probe_patience"):
        v = getattr(cfg, k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise StudyError(f"{where}: {k} must be a positive integer, got {v!r}")
    if cfg.label_spaces is not None:
        for ls in cfg.label_spaces:
            try:
                get_label_space(ls)
            except KeyError as e:
                raise StudyError(f"{where}: label_spaces: {e.args[0]}") from None
    mask_labels(cfg.mask_source_labels)  # validates


def check_backbones(names, where: str) -> None:
    """Every name a registered backbone (:mod:`cxrlab.models`); else a :class:`StudyError`
    naming it, the closest registered name and the list."""
    from cxrlab.models import list_backbones

    known = list_backbones()
    if not names:
        raise StudyError(f"{where}: 'backbones' is empty; choose from {known}")
    for name in names:
        if name not in known:
            import difflib

            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise StudyError(f"{where}: unknown backbone {name!r}{hint}; registered backbones: "
                             f"{known}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_values(cfg: StudyConfig, where: str) -> None:
    """Types and ranges of the scalar settings (a YAML typo fails here, before any data loads)."""
    for k in ("lr", "probe_lr"):
        v = getattr(cfg, k)
        if v is not None and not (_is_number(v) and v > 0):
            raise StudyError(f"{where}: {k} must be a number > 0 (e.g. 1e-3), got {v!r}; leave it "
                             "out to use the profile's")
    for k in ("weight_decay", "probe_weight_decay"):
        v = getattr(cfg, k)
        if not (_is_number(v) and v >= 0):
            raise StudyError(f"{where}: {k} must be a number >= 0, got {v!r}")
    if cfg.bootstrap is not None and (not isinstance(cfg.bootstrap, int)
                                      or isinstance(cfg.bootstrap, bool)):
        raise StudyError(f"{where}: bootstrap must be an integer (0 for no intervals, or the "
                         f"number of resamples, e.g. 1000), got {cfg.bootstrap!r}")
    if not isinstance(cfg.embed_batch_size, int) or isinstance(cfg.embed_batch_size, bool) \
            or cfg.embed_batch_size < 1:
        raise StudyError(f"{where}: embed_batch_size must be a positive integer, got "
                         f"{cfg.embed_batch_size!r}")
    if cfg.pretrained is not None and not isinstance(cfg.pretrained, bool):
        raise StudyError(f"{where}: pretrained must be true or false (unquoted), got "
                         f"{cfg.pretrained!r}")
    for k, allowed in (("probe_select", ("val_loss", "val_auc")),
                       ("probe_init_bias", ("prevalence", "zero"))):
        if getattr(cfg, k) not in allowed:
            raise StudyError(f"{where}: {k} must be one of {list(allowed)}, got "
                             f"{getattr(cfg, k)!r}")
    if cfg.probe_pos_weight not in (None, "balanced"):
        raise StudyError(f"{where}: probe_pos_weight must be 'balanced' or left out, got "
                         f"{cfg.probe_pos_weight!r}")
    for k in ("name", "description"):
        if not isinstance(getattr(cfg, k), str):
            raise StudyError(f"{where}: {k} must be text, got {getattr(cfg, k)!r}")
    if not cfg.name.strip():
        raise StudyError(f"{where}: name must not be empty")


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


def _label_space_names(cfg: StudyConfig, protocol) -> list:
    if cfg.label_spaces is not None:
        return list(cfg.label_spaces)
    out = [protocol.label_space_name or tuple(protocol.label_space)]
    if protocol.pitfall_label_space is not None:
        out.append(protocol.pitfall_label_space_name or tuple(protocol.pitfall_label_space))
    return out


def _space_key(space) -> str:
    return space if isinstance(space, str) else "+".join(space)
