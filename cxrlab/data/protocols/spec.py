"""Protocol specs: the YAML files read, checked and turned into :class:`Protocol` objects.

The keys and what they mean: :mod:`cxrlab.data.protocols`.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from cxrlab.data.cache import SPLITS
from cxrlab.errors import CxrlabError, MissingInputError, UnknownNameError
from cxrlab.labels import get_label_space

if TYPE_CHECKING:
    from cxrlab.data.protocols.resolve import ResolvedProtocol

DATASETS = ("nih", "chexpert", "mimic", "siim", "padchest", "synthetic")
AGE_RULES = ("above_median", "oldest")
TARGET_SPLITS = SPLITS + ("all",)
LATERAL_VIEWS = ("LATERAL", "LL", "RL", "LAT", "LAO", "RAO", "SWIMMERS")

# shipped as package data, so a pip install (Colab) finds them as well as a clone does
_PACKAGED_PROTOCOLS = Path(__file__).resolve().parent  # the YAML files beside this code


class ProtocolError(CxrlabError, ValueError):
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
        raise UnknownNameError(f"protocol {self.name!r} has no data set {name!r}; it has "
                       f"{[m.name for m in self.members]}")

    def cache_paths(self, data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
        """Member name -> cache folder it reads."""
        data_dir = _default_data_dir(data_dir)
        return {m.name: m.cache_path(data_dir) for m in self.members}

    def resolve(self, data_dir: str | os.PathLike | None = None,
                caches: Mapping[str, Any] | None = None) -> ResolvedProtocol:
        """Open the caches and choose the rows of every member.

        ``data_dir``: where caches live (default: the profile's ``data_dir``). ``caches``:
        overrides, keyed by a member's ``cache`` key (e.g. ``"synthetic"``) or its name, mapping
        to a folder or an open :class:`Cache`.
        """
        from cxrlab.data.protocols.resolve import _resolve

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
    ``./configs/protocols``, then the protocols shipped with cxrlab (``cxrlab/data/protocols``)."""
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
                packaged = _PACKAGED_PROTOCOLS / f"{name_or_path}.yaml"
                if d != _PACKAGED_PROTOCOLS and packaged.exists():
                    print(f"protocol {str(name_or_path)!r}: using {cand}, which overrides the "
                          f"packaged {packaged}")
                break
        else:
            raise UnknownNameError(f"no protocol called {str(name_or_path)!r}; known protocols are "
                           f"{list_protocols()} (or pass the path of a YAML file)")
    if not p.exists():
        raise MissingInputError(f"protocol file {p} does not exist")
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
        from cxrlab.data.protocols.query import QueryError, parse_query

        try:  # syntax at load time: a query is data (a filter), never code
            parse_query(kw["query"])
        except QueryError as e:
            raise ProtocolError(f"{where}: {e}") from None
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
    from cxrlab.profiles import get_profile

    return Path(get_profile().data_dir).expanduser()


def protocol_to_dict(protocol: Protocol) -> dict:
    """A plain dict of the protocol (for logging next to results)."""
    d = dataclasses.asdict(protocol)
    d["path"] = str(protocol.path) if protocol.path else None
    return d
