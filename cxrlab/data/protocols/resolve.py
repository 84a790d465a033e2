"""Resolving a protocol: open its caches and choose the rows of every member, step by step in
the order :mod:`cxrlab.data.protocols` documents.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlab.data.cache import SPLITS, Cache, CacheError
from cxrlab.data.protocols.query import QueryError, evaluate_query
from cxrlab.data.protocols.spec import LATERAL_VIEWS, DataSpec, Protocol, ProtocolError
from cxrlab.errors import UnknownNameError, UsageError


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
            raise UnknownNameError(f"protocol {self.protocol.name!r} has no data set {name!r}; it has "
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
            raise UnknownNameError(f"{spec.name}: domain(s) {unknown} are not in {cache.path}; it has "
                           f"{cache.domains}")
        keep &= m["domain"].astype(str).isin(spec.domain).to_numpy()
    if spec.query:
        try:
            keep &= evaluate_query(spec.query, m)
        except QueryError as e:  # never pandas eval: a query must not run code
            raise ProtocolError(f"{spec.name}: {e} (manifest of {cache.path})") from None
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


def match_duplicates(cache: Cache, rows: np.ndarray, other: Cache, other_rows: np.ndarray,
                     threshold: float = 0.98, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``cache``'s ``rows``: the row of ``other`` whose image it copies (the best
    thumbnail correlation, when at least ``threshold``; else -1), and that correlation.
    Same fingerprint as :func:`find_duplicates`."""
    match = np.full(len(rows), -1, np.int64)
    best = np.full(len(rows), np.nan, np.float32)
    if len(rows) == 0 or len(other_rows) == 0:
        return match, best
    a = _thumbnails(cache, rows)
    b = _thumbnails(other, other_rows)
    other_rows = np.asarray(other_rows, dtype=np.int64)
    for i in range(0, len(a), chunk):
        sim = a[i:i + chunk] @ b.T
        j = sim.argmax(axis=1)
        s = sim[np.arange(len(j)), j]
        best[i:i + chunk] = s
        match[i:i + chunk] = np.where(s >= threshold, other_rows[j], -1)
    return match, best


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
        raise UsageError(f"{spec.name}: age_rule {spec.age_rule!r} needs ages, but no row of "
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
        raise UsageError(f"protocol {protocol.name!r}: the source {src.name!r} has no training "
                         f"rows in {cache.path} after its filters; check 'domain' / 'query'")
    resolved[src.name] = ResolvedSet(src, cache, rows, ls, log)
    for t in protocol.targets:
        cache = _open(t, data_dir, overrides, opened, protocol.name)
        r, lg = _choose(t, cache, None if t.split == "all" else t.split, ls, resolved, "eval")
        if len(r) == 0:
            raise UsageError(f"protocol {protocol.name!r}: target {t.name!r} has no rows in "
                             f"{cache.path} after its filters; check 'split' / 'domain' / 'query'")
        resolved[t.name] = ResolvedSet(t, cache, {"eval": r}, ls, lg)
    for s in resolved.values():
        for line in s.log:
            if "asked for" in line:
                warnings.warn(f"protocol {protocol.name!r}: {line}", stacklevel=3)
    return ResolvedProtocol(protocol, resolved[src.name],
                            {t.name: resolved[t.name] for t in protocol.targets})
