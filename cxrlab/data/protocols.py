"""Study protocols as data: which cache trains, which caches test, on which labels.

A protocol is a small YAML file; the course's protocols ship with the package in
``cxrlab/protocols/`` (see the files there; every key is
documented below and unknown keys are refused)::

    name: mimic_to_nih
    description: ...
    citation: ...
    label_space: shared7          # the fair label space (cxrlab.labels.LABEL_SPACES or a list)
    pitfall_label_space: nih14    # optional: reported only to show the pitfall
    source:                       # one data set; its train / val / test splits are used
      name: mimic
      dataset: mimic              # nih | chexpert | mimic | siim | padchest | synthetic
      cache: mimic                # cache folder under the data dir (default: the data set)
    targets:                      # one or more data sets, evaluation only
      - {name: nih, dataset: nih, split: test}
    notes: ...

Keys of a source or target entry:

``name`` (required, unique), ``dataset`` (required), ``cache`` (folder name under the data
dir, or an absolute path; default = ``dataset``), ``domain`` (keep rows of these domains; the
synthetic hospitals are domains of one cache), ``split`` (targets: ``train|val|test|all``,
default ``test``), ``query`` (a pandas query on the manifest, e.g. ``"age >= 60"``),
``frontal_only`` (drop lateral views), ``labeled_only`` (drop rows with no defined label of
the label space), ``exclude_duplicates_of`` (name of another entry: drop images that are
copies of its images, see below), ``duplicate_threshold`` (default 0.98), ``age_rule``
(``above_median`` or ``oldest``, see below), ``one_per_patient`` (keep one random image per
patient), ``sample`` (``{n, prevalence, label, seed}``: a seeded random sample of ``n``
images, optionally with a fixed fraction ``prevalence`` of positives for ``label``; for the
source ``n`` is a mapping split -> count).

Rows are chosen in this order: split, domain, query, frontal_only, labeled_only, duplicate
exclusion, age rule, one image per patient, class-balanced sample. Every step is seeded and
independent of the machine.

**Seed 002's pneumothorax targets** (``pneumothorax_seed002.yaml``) are built as the paper
describes: "remove all SIIM-ACR images from ChestX-ray8 ... and randomly sampled a subset of
4,607 individuals with ages above the median for the dataset", the same for CheXpert-age, and
4,607 images with the source's class balance (22 % pneumothorax) everywhere.

* SIIM-ACR's images are NIH images renamed with DICOM UIDs and no public key maps one onto the
  other, so ``exclude_duplicates_of`` finds them by content: every image is reduced to a
  16 x 16 thumbnail, centred and normalised (which cancels any brightness / contrast change
  between the PNG and the DICOM), and an NIH image whose thumbnail correlates above
  ``duplicate_threshold`` with a SIIM thumbnail is dropped. A follow-up image of the same
  patient in the same pose can also match; dropping it too is the safe side of leakage.
* ``age_rule: above_median`` keeps ages strictly above the median age of the rows left at
  that point (the paper's stated rule). The paper reports mean ages of 71.4 (ChestX-ray8-age)
  and 89.6 (CheXpert-age); on the real metadata (torchxrayvision's copies) the stated rule
  gives about 61 and 75, while ``age_rule: oldest`` (the oldest images of each class) gives
  about 76 and 89.3: CheXpert caps ages at 90, so 89.6 is only reachable that way. The
  shipped protocol follows the text; :meth:`ResolvedProtocol.summary` prints the mean ages so
  the difference is visible.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlab.data.cache import SPLITS, Cache, CacheError
from cxrlab.labels import get_label_space

DATASETS = ("nih", "chexpert", "mimic", "siim", "padchest", "synthetic")
AGE_RULES = ("above_median", "oldest")
TARGET_SPLITS = SPLITS + ("all",)
LATERAL_VIEWS = ("LATERAL", "LL", "RL", "LAT", "LAO", "RAO", "SWIMMERS")

# shipped as package data, so a pip install (Colab) finds them as well as a clone does
_PACKAGED_PROTOCOLS = Path(__file__).resolve().parents[1] / "protocols"


class ProtocolError(ValueError):
    """A protocol file is malformed (unknown key, wrong type, dangling reference...)."""


# ----------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class SampleSpec:
    """A seeded random sample: ``n`` images (per split for the source), optionally with a
    fraction ``prevalence`` of positives for ``label``."""

    n: int | Mapping[str, int]
    prevalence: float | None = None
    label: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class DataSpec:
    """One data set of a protocol (the source or a target) and how its rows are chosen."""

    name: str
    dataset: str
    cache: str
    role: str = "target"
    domain: tuple[str, ...] | None = None
    split: str = "test"
    query: str | None = None
    frontal_only: bool = False
    labeled_only: bool = False
    exclude_duplicates_of: str | None = None
    duplicate_threshold: float = 0.98
    age_rule: str | None = None
    one_per_patient: bool = False
    sample: SampleSpec | None = None
    seed: int = 0

    def cache_path(self, data_dir: str | os.PathLike) -> Path:
        p = Path(self.cache).expanduser()
        return p if p.is_absolute() else Path(data_dir).expanduser() / self.cache


@dataclass(frozen=True)
class Protocol:
    """A study protocol: a source, targets and a label space (load with :func:`load_protocol`)."""

    name: str
    label_space: tuple[str, ...]
    source: DataSpec
    targets: tuple[DataSpec, ...]
    label_space_name: str | None = None
    pitfall_label_space: tuple[str, ...] | None = None
    pitfall_label_space_name: str | None = None
    description: str = ""
    citation: str = ""
    notes: str = ""
    path: Path | None = None

    @property
    def members(self) -> tuple[DataSpec, ...]:
        return (self.source,) + self.targets

    def member(self, name: str) -> DataSpec:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(f"protocol {self.name!r} has no data set {name!r}; it has "
                       f"{[m.name for m in self.members]}")

    def cache_paths(self, data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
        """Member name -> cache folder it reads."""
        data_dir = _default_data_dir(data_dir)
        return {m.name: m.cache_path(data_dir) for m in self.members}

    def resolve(self, data_dir: str | os.PathLike | None = None,
                caches: Mapping[str, Any] | None = None) -> "ResolvedProtocol":
        """Open the caches and choose the rows of every member.

        ``data_dir``: where caches live (default: the profile's ``data_dir``). ``caches``:
        overrides, keyed by a member's ``cache`` key (e.g. ``"synthetic"``) or its name, mapping
        to a folder or an open :class:`Cache`.
        """
        return _resolve(self, _default_data_dir(data_dir), dict(caches or {}))

    def describe(self) -> str:
        """A few lines a notebook can print."""
        lines = [f"protocol {self.name}: {self.description.strip()}".rstrip(": "),
                 f"  label space: {self.label_space_name or list(self.label_space)}"
                 + (f" (pitfall: {self.pitfall_label_space_name or list(self.pitfall_label_space)})"
                    if self.pitfall_label_space else "")]
        for m in self.members:
            bits = [f"dataset={m.dataset}", f"cache={m.cache}"]
            if m.role == "target":
                bits.append(f"split={m.split}")
            for k in ("domain", "query", "age_rule", "exclude_duplicates_of"):
                if getattr(m, k):
                    bits.append(f"{k}={getattr(m, k)}")
            if m.frontal_only:
                bits.append("frontal only")
            if m.one_per_patient:
                bits.append("one image per patient")
            if m.sample:
                bits.append(f"sample n={dict(m.sample.n) if isinstance(m.sample.n, Mapping) else m.sample.n}"
                            + (f" at {m.sample.prevalence:.0%} {m.sample.label}"
                               if m.sample.prevalence is not None else ""))
            lines.append(f"  {m.role:<6} {m.name}: " + ", ".join(bits))
        if self.citation:
            lines.append(f"  source of the protocol: {self.citation.strip()}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- loading
_TOP_KEYS = {"name", "description", "citation", "label_space", "pitfall_label_space", "source",
             "targets", "notes"}
_MEMBER_KEYS = {"name", "dataset", "cache", "domain", "split", "query", "frontal_only",
                "labeled_only", "exclude_duplicates_of", "duplicate_threshold", "age_rule",
                "one_per_patient", "sample", "seed"}
_SAMPLE_KEYS = {"n", "prevalence", "label", "seed"}


def protocol_dirs() -> list[Path]:
    """Folders searched for ``<name>.yaml``, first match wins: ``$CXRLAB_PROTOCOLS``, your own
    ``./configs/protocols``, then the protocols shipped with cxrlab (``cxrlab/protocols``)."""
    dirs = []
    if os.environ.get("CXRLAB_PROTOCOLS"):
        dirs.append(Path(os.environ["CXRLAB_PROTOCOLS"]).expanduser())
    dirs += [Path.cwd() / "configs" / "protocols", _PACKAGED_PROTOCOLS]
    out = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def list_protocols() -> list[str]:
    """Names of the protocols found in :func:`protocol_dirs`."""
    names = set()
    for d in protocol_dirs():
        if d.is_dir():
            names |= {p.stem for p in d.glob("*.yaml")}
    return sorted(names)


def load_protocol(name_or_path: str | os.PathLike) -> Protocol:
    """A protocol by name (``"mimic_to_nih"``) or from a YAML file path; validated."""
    import yaml

    p = Path(name_or_path).expanduser()
    if not (p.suffix in (".yaml", ".yml") or p.exists()):
        for d in protocol_dirs():
            cand = d / f"{name_or_path}.yaml"
            if cand.exists():
                p = cand
                break
        else:
            raise KeyError(f"no protocol called {str(name_or_path)!r}; known protocols are "
                           f"{list_protocols()} (or pass the path of a YAML file)")
    if not p.exists():
        raise FileNotFoundError(f"protocol file {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ProtocolError(f"{p}: not valid YAML ({e})") from None
    return protocol_from_dict(raw, source=str(p), path=p)


def protocol_from_dict(raw: Any, source: str = "<dict>", path: Path | None = None) -> Protocol:
    """Validate a parsed protocol (see the module docstring for the keys)."""
    where = source
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where}: a protocol is a mapping with keys {sorted(_TOP_KEYS)}, "
                            f"got {type(raw).__name__}")
    _no_unknown(raw, _TOP_KEYS, where)
    for k in ("name", "label_space", "source", "targets"):
        if k not in raw:
            raise ProtocolError(f"{where}: required key {k!r} is missing")
    name = _str(raw["name"], "name", where)
    ls, ls_name = _label_space(raw["label_space"], "label_space", where)
    pit, pit_name = (None, None)
    if raw.get("pitfall_label_space") is not None:
        pit, pit_name = _label_space(raw["pitfall_label_space"], "pitfall_label_space", where)
    source = _member(raw["source"], "source", where, ls)
    targets_raw = raw["targets"]
    if not isinstance(targets_raw, list) or not targets_raw:
        raise ProtocolError(f"{where}: 'targets' must be a non-empty list of data sets")
    targets = tuple(_member(t, "target", f"{where}: targets[{i}]", ls)
                    for i, t in enumerate(targets_raw))
    names = [source.name] + [t.name for t in targets]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ProtocolError(f"{where}: data set name(s) {dup} are used twice; names must be unique")
    for i, m in enumerate((source,) + targets):
        if m.exclude_duplicates_of is not None and m.exclude_duplicates_of not in names[:i]:
            raise ProtocolError(f"{where}: {m.name}: exclude_duplicates_of="
                                f"{m.exclude_duplicates_of!r} must name a data set listed before "
                                f"it (the source or an earlier target: {names[:i]})")
    for k in ("description", "citation", "notes"):
        if raw.get(k) is not None and not isinstance(raw[k], str):
            raise ProtocolError(f"{where}: {k!r} must be text")
    return Protocol(name=name, label_space=ls, label_space_name=ls_name, source=source,
                    targets=targets, pitfall_label_space=pit, pitfall_label_space_name=pit_name,
                    description=raw.get("description") or "", citation=raw.get("citation") or "",
                    notes=raw.get("notes") or "", path=path)


def _no_unknown(d: dict, allowed: set, where: str) -> None:
    unknown = sorted(set(map(str, d)) - allowed)
    if unknown:
        raise ProtocolError(f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(allowed)}")


def _str(v, key, where) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ProtocolError(f"{where}: {key!r} must be a non-empty string, got {v!r}")
    return v.strip()


def _bool(v, key, where) -> bool:
    if not isinstance(v, bool):
        raise ProtocolError(f"{where}: {key!r} must be true or false, got {v!r}")
    return v


def _label_space(v, key, where) -> tuple[tuple[str, ...], str | None]:
    try:
        labels = get_label_space(v)
    except (KeyError, TypeError) as e:
        msg = e.args[0] if e.args else e
        raise ProtocolError(f"{where}: {key}: {msg}") from None
    return labels, (v if isinstance(v, str) else None)


def _member(raw, role: str, where: str, label_space: tuple[str, ...]) -> DataSpec:
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where}: a {role} is a mapping with keys {sorted(_MEMBER_KEYS)}, "
                            f"got {raw!r}")
    where = f"{where} ({raw.get('name', role)})" if role == "source" else \
        f"{where} ({raw.get('name', '?')})"
    _no_unknown(raw, _MEMBER_KEYS, where)
    for k in ("name", "dataset"):
        if k not in raw:
            raise ProtocolError(f"{where}: required key {k!r} is missing")
    name = _str(raw["name"], "name", where)
    dataset = _str(raw["dataset"], "dataset", where)
    if dataset not in DATASETS:
        raise ProtocolError(f"{where}: dataset {dataset!r} is unknown; choose one of {list(DATASETS)}")
    kw: dict[str, Any] = {"name": name, "dataset": dataset, "role": role,
                          "cache": _str(raw.get("cache", dataset), "cache", where)}
    if "split" in raw:
        if role == "source":
            raise ProtocolError(f"{where}: the source always uses its train / val / test splits; "
                                "remove 'split' (filter rows with 'query' instead)")
        if raw["split"] not in TARGET_SPLITS:
            raise ProtocolError(f"{where}: split {raw['split']!r} is unknown; choose one of "
                                f"{list(TARGET_SPLITS)}")
        kw["split"] = raw["split"]
    if raw.get("domain") is not None:
        d = raw["domain"]
        doms = [d] if isinstance(d, str) else d
        if not isinstance(doms, list) or not doms or not all(isinstance(x, str) for x in doms):
            raise ProtocolError(f"{where}: 'domain' must be a name or a list of names, got {d!r}")
        kw["domain"] = tuple(doms)
    if raw.get("query") is not None:
        kw["query"] = _str(raw["query"], "query", where)
    for k in ("frontal_only", "labeled_only", "one_per_patient"):
        if k in raw:
            kw[k] = _bool(raw[k], k, where)
    if raw.get("exclude_duplicates_of") is not None:
        kw["exclude_duplicates_of"] = _str(raw["exclude_duplicates_of"], "exclude_duplicates_of", where)
    if "duplicate_threshold" in raw:
        t = raw["duplicate_threshold"]
        if not isinstance(t, (int, float)) or not 0 < t <= 1:
            raise ProtocolError(f"{where}: duplicate_threshold must be in (0, 1], got {t!r}")
        kw["duplicate_threshold"] = float(t)
    if raw.get("age_rule") is not None:
        if raw["age_rule"] not in AGE_RULES:
            raise ProtocolError(f"{where}: age_rule {raw['age_rule']!r} is unknown; choose one of "
                                f"{list(AGE_RULES)}")
        kw["age_rule"] = raw["age_rule"]
    if "seed" in raw:
        if not isinstance(raw["seed"], int) or isinstance(raw["seed"], bool):
            raise ProtocolError(f"{where}: seed must be an integer, got {raw['seed']!r}")
        kw["seed"] = raw["seed"]
    if raw.get("sample") is not None:
        kw["sample"] = _sample(raw["sample"], role, where, label_space)
    if kw.get("age_rule") == "oldest" and (kw.get("sample") is None):
        raise ProtocolError(f"{where}: age_rule 'oldest' needs a 'sample' (how many of the "
                            "oldest to keep)")
    return DataSpec(**kw)


def _sample(raw, role, where, label_space) -> SampleSpec:
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where}: 'sample' is a mapping with keys {sorted(_SAMPLE_KEYS)}")
    _no_unknown(raw, _SAMPLE_KEYS, f"{where}: sample")
    if "n" not in raw:
        raise ProtocolError(f"{where}: sample needs 'n' (how many images)")
    n = raw["n"]
    if role == "source":
        if not isinstance(n, dict) or not n or set(n) - set(SPLITS):
            raise ProtocolError(f"{where}: the source's sample n is a mapping split -> count, "
                                f"e.g. {{train: 936, val: 234, test: 4607}}; got {n!r}")
        for k, v in n.items():
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ProtocolError(f"{where}: sample n[{k}] must be a positive integer, got {v!r}")
        n = dict(n)
    elif not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise ProtocolError(f"{where}: sample n must be a positive integer, got {n!r}")
    prev = raw.get("prevalence")
    if prev is not None and (not isinstance(prev, (int, float)) or not 0 < prev < 1):
        raise ProtocolError(f"{where}: sample prevalence must be in (0, 1), got {prev!r}")
    label = raw.get("label")
    if prev is not None:
        if label is None:
            if len(label_space) != 1:
                raise ProtocolError(f"{where}: sample prevalence needs 'label' (the label space "
                                    f"has {len(label_space)} labels)")
            label = label_space[0]
        if label not in label_space:
            raise ProtocolError(f"{where}: sample label {label!r} is not in the label space "
                                f"{list(label_space)}")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ProtocolError(f"{where}: sample seed must be an integer, got {seed!r}")
    return SampleSpec(n=n, prevalence=None if prev is None else float(prev), label=label, seed=seed)


def _default_data_dir(data_dir) -> Path:
    if data_dir is not None:
        return Path(data_dir).expanduser()
    from cxrlab.config import get_profile

    return Path(get_profile().data_dir).expanduser()


# ----------------------------------------------------------------------------- resolving
@dataclass
class ResolvedSet:
    """One member of a resolved protocol: its open cache and the chosen rows per split.

    ``rows`` has keys ``train``, ``val``, ``test`` for the source and ``eval`` for a target.
    """

    spec: DataSpec
    cache: Cache
    rows: dict[str, np.ndarray]
    label_space: tuple[str, ...]
    log: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def eval_rows(self) -> np.ndarray:
        """Rows a model is scored on: ``test`` for the source, ``eval`` for a target."""
        return self.rows["test" if self.role == "source" else "eval"]

    def labels(self, part: str | None = None, space=None) -> np.ndarray:
        """float32 [n, L] labels (NaN = missing) of ``part`` (default: the evaluation rows)."""
        rows = self.eval_rows if part is None else self.rows[part]
        return self.cache.labels(space if space is not None else self.label_space, rows)

    def summary(self) -> pd.DataFrame:
        """Per part: images, patients, mean age, and positives / prevalence of each label."""
        out = []
        m = self.cache.manifest
        for part, rows in self.rows.items():
            sub = m.iloc[rows]
            rec = {"set": self.name, "role": self.role, "part": part, "images": len(rows),
                   "patients": int(sub["patient_id"].nunique()) if len(rows) else 0,
                   "age_mean": float(pd.to_numeric(sub["age"], errors="coerce").mean())
                   if len(rows) else float("nan")}
            y = self.cache.labels(self.label_space, rows)
            for j, lab in enumerate(self.label_space):
                col = y[:, j]
                known = ~np.isnan(col)
                rec[f"{lab}_pos"] = int(np.nansum(col)) if known.any() else 0
                rec[f"{lab}_prev"] = float(col[known].mean()) if known.any() else float("nan")
            out.append(rec)
        return pd.DataFrame(out)


@dataclass
class ResolvedProtocol:
    """A protocol with its caches open and rows chosen (from :meth:`Protocol.resolve`)."""

    protocol: Protocol
    source: ResolvedSet
    targets: dict[str, ResolvedSet]

    def __iter__(self) -> Iterator[ResolvedSet]:
        yield self.source
        yield from self.targets.values()

    def __getitem__(self, name: str) -> ResolvedSet:
        if name == self.source.name:
            return self.source
        try:
            return self.targets[name]
        except KeyError:
            raise KeyError(f"protocol {self.protocol.name!r} has no data set {name!r}; it has "
                           f"{[s.name for s in self]}") from None

    def summary(self) -> pd.DataFrame:
        return pd.concat([s.summary() for s in self], ignore_index=True)

    @property
    def synthetic(self) -> bool:
        """True when any cache holds synthetic images (results must be labelled synthetic)."""
        return any(s.cache.synthetic for s in self)


def _prepare_hint(spec: DataSpec, path: Path) -> str:
    if spec.dataset == "synthetic":
        return f"create it with `cxrlab data synth --out {path}`"
    return (f"prepare it with `cxrlab data prepare {spec.dataset} --root RAW_{spec.dataset.upper()}"
            f"_FOLDER --out {path}` (how to download the raw data: data_download/README.md)")


def _open(spec: DataSpec, data_dir: Path, overrides: dict, opened: dict,
          protocol_name: str) -> Cache:
    ov = overrides.get(spec.name, overrides.get(spec.cache))
    if isinstance(ov, Cache):
        return ov
    path = Path(ov).expanduser() if ov is not None else spec.cache_path(data_dir)
    key = str(path.resolve()) if path.exists() else str(path)
    if key in opened:
        return opened[key]
    if not (path / "meta.json").exists():
        state = "is unfinished" if (path / "progress.npy").exists() else "is missing"
        raise CacheError(f"protocol {protocol_name!r}: the {spec.dataset} cache for {spec.name!r} "
                         f"{state} at {path}; {_prepare_hint(spec, path)}")
    cache = Cache(path)
    opened[key] = cache
    return cache


def _base_rows(spec: DataSpec, cache: Cache, split: str | None,
               label_space: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    log = []
    m = cache.manifest
    keep = np.ones(len(m), bool)
    if split is not None:
        keep &= (m["split"] == split).to_numpy()
    if spec.domain is not None:
        unknown = sorted(set(spec.domain) - set(cache.domains))
        if unknown:
            raise KeyError(f"{spec.name}: domain(s) {unknown} are not in {cache.path}; it has "
                           f"{cache.domains}")
        keep &= m["domain"].astype(str).isin(spec.domain).to_numpy()
    if spec.query:
        try:
            keep &= m.eval(spec.query).to_numpy(dtype=bool)
        except Exception as e:  # pandas raises many types for a bad expression
            raise ProtocolError(f"{spec.name}: query {spec.query!r} failed on the manifest of "
                                f"{cache.path} ({type(e).__name__}: {e}); columns are "
                                f"{list(m.columns)[:16]}...") from None
    if spec.frontal_only:
        view = m["view"].astype(str).str.strip().str.upper()
        keep &= ~view.isin(LATERAL_VIEWS).to_numpy()
    if spec.labeled_only:
        y = cache.labels(label_space)
        keep &= ~np.all(np.isnan(y), axis=1)
    rows = np.flatnonzero(keep)
    log.append(f"{len(rows)} rows after split/domain/query/view/label filters")
    return rows, log


def _thumbnails(cache: Cache, rows: np.ndarray, grid: int = 16, chunk: int = 2048) -> np.ndarray:
    """Centred, unit-norm ``grid x grid`` block means of cache images (float32 [n, grid*grid])."""
    from cxrlab.progress import progress

    s = cache.image_size
    b = s // grid
    out = np.zeros((len(rows), grid * grid), np.float32)
    order = np.argsort(rows)  # read the memmap in file order
    srt = rows[order]
    for i in progress(range(0, len(rows), chunk), desc=f"fingerprints {cache.path.name}"):
        block = np.asarray(cache.images[srt[i:i + chunk]], dtype=np.float32)[:, :b * grid, :b * grid]
        t = block.reshape(len(block), grid, b, grid, b).mean(axis=(2, 4)).reshape(len(block), -1)
        t -= t.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(t, axis=1, keepdims=True)
        out[order[i:i + chunk]] = t / np.where(norm > 0, norm, 1.0)
    return out


def find_duplicates(cache: Cache, rows: np.ndarray, other: Cache, other_rows: np.ndarray,
                    threshold: float = 0.98, chunk: int = 1024) -> np.ndarray:
    """Boolean [len(rows)]: which of ``cache``'s ``rows`` are (near-)copies of an image among
    ``other``'s ``other_rows`` (thumbnail correlation above ``threshold``)."""
    if len(rows) == 0 or len(other_rows) == 0:
        return np.zeros(len(rows), bool)
    a = _thumbnails(cache, rows)
    b = _thumbnails(other, other_rows)
    dup = np.zeros(len(rows), bool)
    for i in range(0, len(a), chunk):
        sim = a[i:i + chunk] @ b.T
        dup[i:i + chunk] = sim.max(axis=1) >= threshold
    return dup


def _age_filter(spec: DataSpec, cache: Cache, rows: np.ndarray) -> tuple[np.ndarray, str]:
    age = pd.to_numeric(cache.manifest["age"].iloc[rows], errors="coerce").to_numpy(float)
    known = ~np.isnan(age)
    if not known.any():
        raise ValueError(f"{spec.name}: age_rule {spec.age_rule!r} needs ages, but no row of "
                         f"{cache.path} has one")
    if spec.age_rule == "above_median":
        med = float(np.median(age[known]))
        keep = rows[known & (age > med)]
        return keep, f"{len(keep)} rows older than the median age {med:g}"
    # "oldest": keep all aged rows; the sampler takes the oldest of each class
    return rows[known], f"{known.sum()} rows with a known age (the oldest are sampled)"


def _one_per_patient(cache: Cache, rows: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pids = cache.manifest["patient_id"].astype(str).to_numpy()[rows]
    perm = rng.permutation(len(rows))
    _, first = np.unique(pids[perm], return_index=True)
    return np.sort(rows[perm[first]])


def _draw(rng, rows: np.ndarray, k: int, oldest_age: np.ndarray | None) -> np.ndarray:
    if k >= len(rows):
        return rows
    if oldest_age is None:
        return rng.choice(rows, size=k, replace=False)
    order = np.lexsort((rng.random(len(rows)), -oldest_age))  # oldest first, ties at random
    return rows[order[:k]]


def _sample_rows(spec: DataSpec, cache: Cache, rows: np.ndarray, n: int, seed: int,
                 where: str) -> tuple[np.ndarray, list[str]]:
    s = spec.sample
    rng = np.random.default_rng(seed)
    log = []
    age = None
    if spec.age_rule == "oldest":
        age = pd.to_numeric(cache.manifest["age"].iloc[rows], errors="coerce").to_numpy(float)
    if s.prevalence is None:
        picked = _draw(rng, rows, n, age)
        if len(picked) < n:
            log.append(f"{where}: asked for {n} images, only {len(rows)} available")
        return np.sort(picked), log
    y = cache.labels([s.label], rows)[:, 0]
    pos, neg = rows[y == 1], rows[y == 0]
    dropped = int(np.isnan(y).sum())
    if dropped:
        log.append(f"{where}: {dropped} rows without a {s.label} label left out of the sample")
    n_pos = int(round(n * s.prevalence))
    n_neg = n - n_pos
    if n_pos > len(pos) or n_neg > len(neg):
        # keep the prevalence, shrink the sample to what the rarer class allows
        scale = min(len(pos) / n_pos if n_pos else np.inf, len(neg) / n_neg if n_neg else np.inf)
        new_n = int(np.floor(n * scale))
        log.append(f"{where}: asked for {n} images at {s.prevalence:.0%} {s.label}, but only "
                   f"{len(pos)} positives and {len(neg)} negatives are available: sampled "
                   f"{new_n} images at the same prevalence")
        n_pos = int(round(new_n * s.prevalence))
        n_neg = min(new_n - n_pos, len(neg))
        n_pos = min(n_pos, len(pos))
    a_pos = None if age is None else age[y == 1]
    a_neg = None if age is None else age[y == 0]
    picked = np.concatenate([_draw(rng, pos, n_pos, a_pos), _draw(rng, neg, n_neg, a_neg)])
    return np.sort(picked), log


def _choose(spec: DataSpec, cache: Cache, split: str | None, label_space, resolved: dict,
            part: str) -> tuple[np.ndarray, list[str]]:
    rows, log = _base_rows(spec, cache, split, label_space)
    if spec.exclude_duplicates_of is not None:
        other = resolved.get(spec.exclude_duplicates_of)
        if other is None:
            raise ProtocolError(f"{spec.name}: exclude_duplicates_of={spec.exclude_duplicates_of!r} "
                                "must name a data set listed before it (the source, or an "
                                "earlier target)")
        # all of the other data set's images (within its domains), not only the ones it
        # samples: seed 002 removes *all* SIIM-ACR images from ChestX-ray8
        other_rows = (np.arange(len(other.cache)) if other.spec.domain is None
                      else other.cache.select(domain=list(other.spec.domain)))
        dup = find_duplicates(cache, rows, other.cache, other_rows, spec.duplicate_threshold)
        rows = rows[~dup]
        log.append(f"{int(dup.sum())} images dropped as copies of {spec.exclude_duplicates_of}'s "
                   f"images -> {len(rows)}")
    if spec.age_rule is not None:
        rows, msg = _age_filter(spec, cache, rows)
        log.append(msg)
    if spec.one_per_patient:
        rows = _one_per_patient(cache, rows, spec.seed)
        log.append(f"{len(rows)} rows after keeping one image per patient")
    if spec.sample is not None:
        n = spec.sample.n[part] if isinstance(spec.sample.n, Mapping) else spec.sample.n
        if isinstance(spec.sample.n, Mapping) and part not in spec.sample.n:
            return rows, log
        seed = spec.sample.seed + (SPLITS.index(part) if part in SPLITS else 0) * 1000
        rows, more = _sample_rows(spec, cache, rows, n, seed, f"{spec.name}/{part}")
        log += more
        log.append(f"sampled {len(rows)} images")
    return rows, log


def _resolve(protocol: Protocol, data_dir: Path, overrides: dict) -> ResolvedProtocol:
    import warnings

    opened: dict[str, Cache] = {}
    resolved: dict[str, ResolvedSet] = {}
    ls = protocol.label_space
    src = protocol.source
    cache = _open(src, data_dir, overrides, opened, protocol.name)
    rows, log = {}, []
    for split in SPLITS:
        r, lg = _choose(src, cache, split, ls, resolved, split)
        rows[split] = r
        log += [f"{split}: {x}" for x in lg]
    if len(rows["train"]) == 0:
        raise ValueError(f"protocol {protocol.name!r}: the source {src.name!r} has no training "
                         f"rows in {cache.path} after its filters; check 'domain' / 'query'")
    resolved[src.name] = ResolvedSet(src, cache, rows, ls, log)
    for t in protocol.targets:
        cache = _open(t, data_dir, overrides, opened, protocol.name)
        r, lg = _choose(t, cache, None if t.split == "all" else t.split, ls, resolved, "eval")
        if len(r) == 0:
            raise ValueError(f"protocol {protocol.name!r}: target {t.name!r} has no rows in "
                             f"{cache.path} after its filters; check 'split' / 'domain' / 'query'")
        resolved[t.name] = ResolvedSet(t, cache, {"eval": r}, ls, lg)
    for s in resolved.values():
        for line in s.log:
            if "asked for" in line:
                warnings.warn(f"protocol {protocol.name!r}: {line}", stacklevel=3)
    return ResolvedProtocol(protocol, resolved[src.name],
                            {t.name: resolved[t.name] for t in protocol.targets})


def protocol_to_dict(protocol: Protocol) -> dict:
    """A plain dict of the protocol (for logging next to results)."""
    d = dataclasses.asdict(protocol)
    d["path"] = str(protocol.path) if protocol.path else None
    return d
