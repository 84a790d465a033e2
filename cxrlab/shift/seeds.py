"""The source-to-target gap over several training seeds, with intervals a student can trust.

One training run is one draw: another seed gives another batch order and another initial head,
and another AUC. And the test images are one draw of patients: other patients give another AUC.
:func:`gap_over_seeds` trains the small CNN of :func:`~cxrlab.shift.source_target_gap` once per
seed (and per cache, e.g. without and with a shortcut) and keeps every score, so that any AUC,
and any *difference* of AUCs, gets an interval that covers both sources of error:

* **seeds**: a t-interval over the per-seed values, ``t_{k-1} * sd / sqrt(k)``;
* **patients**: a percentile bootstrap that resamples the patients of each hospital (all their
  images together; the same resample for every seed and every run, so paired comparisons stay
  paired), applied to the seed-mean;
* the two half-widths are combined in quadrature (independent errors):
  ``half = sqrt(half_seeds**2 + half_patients**2)``.

A claimed difference is one whose whole interval lies on one side of zero
(:meth:`cxrlab.claims.Interval.excludes`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlab.claims import Interval, interval
from cxrlab.data.cache import Cache
from cxrlab.data.dataset import load_arrays
from cxrlab.errors import UsageError
from cxrlab.labels import get_label_space
from cxrlab.metrics import _rank_metrics_weighted
from cxrlab.progress import progress
from cxrlab.shift.gap import (DEFAULT_GAP_LABELS, _resolve_targets, evaluation_rows,
                              train_at_source)

MACRO = "macro"


def combined_interval(per_seed: np.ndarray, replicates: np.ndarray, level: float = 0.95) -> Interval:
    """The mean over seeds of a quantity, with a seed t-interval and a patient-bootstrap
    interval combined in quadrature.

    per_seed : [k] the quantity per seed on all test patients (NaN seeds are dropped).
    replicates : [k, B] the quantity per seed and bootstrap replicate (same resamples for every
        seed); the bootstrap interval is taken over the replicates' seed-means.
    With one seed the interval is the bootstrap's alone.
    """
    from scipy import stats

    per_seed = np.asarray(per_seed, dtype=np.float64)
    replicates = np.asarray(replicates, dtype=np.float64)
    if per_seed.ndim != 1 or replicates.ndim != 2 or replicates.shape[0] != per_seed.shape[0]:
        raise UsageError(f"per_seed must be [k] and replicates [k, B]; got {per_seed.shape} "
                         f"and {replicates.shape}")
    if not 0 < level < 1:
        raise UsageError(f"level must be in (0, 1), e.g. 0.95; got {level}")
    ok = ~np.isnan(per_seed)
    if not ok.any():
        return Interval(float("nan"), float("nan"), float("nan"))
    v, rep = per_seed[ok], replicates[ok]
    k = v.size
    mean = float(v.mean())
    seed_half = (float(stats.t.ppf(0.5 + level / 2, k - 1) * v.std(ddof=1) / math.sqrt(k))
                 if k > 1 else 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate where every seed is NaN
        means = np.nanmean(rep, axis=0)
    means = means[~np.isnan(means)]
    a = (1 - level) / 2
    boot_half = float((np.quantile(means, 1 - a) - np.quantile(means, a)) / 2) if means.size > 1 else 0.0
    half = math.sqrt(seed_half ** 2 + boot_half ** 2)
    return interval(mean, mean - half, mean + half)


@dataclass
class SeededGap:
    """AUCs of the small CNN trained at the source with several seeds (one or more runs, e.g.
    ``{"shortcut off": cache, "shortcut on": cache_sc}``), scored on every hospital, with the
    patient-bootstrap replicates needed for intervals. Built by :func:`gap_over_seeds`.

    ``auc[(run, domain)]`` is [k seeds, L labels], ``boot[(run, domain)]`` [k, B, L];
    ``n`` / ``n_pos[(run, domain)]`` count the scored images and positives per label.
    """

    runs: list[str]
    seeds: list[int]
    source: str
    domains: list[str]
    labels: list[str]
    level: float
    auc: dict = field(repr=False)
    boot: dict = field(repr=False)
    n: dict = field(repr=False)
    n_pos: dict = field(repr=False)
    best_epochs: dict = field(repr=False)
    synthetic: bool = False
    target_split: str = "all"
    #: ``{(run, seed): ImageClassifier}`` when built with ``keep_models=True``
    models: dict = field(default_factory=dict, repr=False)
    #: ``{(run, domain): patient ids of the scored rows}`` and how the bootstrap was drawn: two
    #: runs are paired when both match
    patients: dict = field(default_factory=dict, repr=False)
    boot_seed: int = 0
    n_boot: int = 0

    @classmethod
    def combine(cls, *gaps: "SeededGap") -> "SeededGap":
        """One :class:`SeededGap` holding the runs of several, e.g. a run trained earlier and
        one trained now, so that :meth:`difference` and :meth:`drop_change` compare them. The
        runs must be *paired*: the same seeds, hospitals, labels, level and bootstrap
        (``boot_seed``, ``n_boot``) and the same patients scored at every hospital; otherwise
        a :class:`~cxrlab.errors.UsageError` says what differs."""
        if not gaps:
            raise UsageError("combine needs at least one SeededGap")
        first = gaps[0]
        runs = [r for g in gaps for r in g.runs]
        if len(set(runs)) != len(runs):
            raise UsageError(f"run names must differ to combine, got {runs}")
        for g in gaps[1:]:
            for attr in ("seeds", "source", "domains", "labels", "level", "boot_seed", "n_boot",
                         "target_split"):
                if getattr(g, attr) != getattr(first, attr):
                    raise UsageError(f"cannot combine: {attr} differs ({getattr(first, attr)!r} vs "
                                     f"{getattr(g, attr)!r}); train both with the same settings")
            for d in first.domains:
                a, b = first.patients[(first.runs[0], d)], g.patients[(g.runs[0], d)]
                if not np.array_equal(a, b):
                    raise UsageError(f"cannot combine: the patients scored at {d!r} differ, so the "
                                     "runs are not paired (draw both caches with the same seed)")
        merged = {k: {} for k in ("auc", "boot", "n", "n_pos", "best_epochs", "models", "patients")}
        for g in gaps:
            for k in merged:
                merged[k].update(getattr(g, k))
        return cls(runs=runs, seeds=list(first.seeds), source=first.source,
                   domains=list(first.domains), labels=list(first.labels), level=first.level,
                   synthetic=first.synthetic, target_split=first.target_split,
                   boot_seed=first.boot_seed, n_boot=first.n_boot, **merged)

    # ---------------------------------------------------------------- one number
    def _values(self, run: str, domain: str, label: str) -> tuple[np.ndarray, np.ndarray]:
        key = (run, domain)
        if key not in self.auc:
            raise KeyError(f"no run {run!r} at domain {domain!r}; runs {self.runs}, "
                           f"domains {self.domains}")
        a, b = self.auc[key], self.boot[key]
        if label == MACRO:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                return np.nanmean(a, axis=1), np.nanmean(b, axis=2)
        if label not in self.labels:
            raise KeyError(f"label {label!r} was not trained; labels are {self.labels}")
        j = self.labels.index(label)
        return a[:, j], b[:, :, j]

    def _run(self, run: str | None) -> str:
        if run is None:
            if len(self.runs) != 1:
                raise UsageError(f"this gap has several runs {self.runs}: name one")
            return self.runs[0]
        if run not in self.runs:
            raise KeyError(f"unknown run {run!r}; runs are {self.runs}")
        return run

    def score(self, domain: str, label: str = MACRO, run: str | None = None) -> Interval:
        """The AUC at ``domain`` (mean over seeds) with its interval (clipped to [0, 1], the
        range of an AUC)."""
        v, r = self._values(self._run(run), domain, label)
        iv = combined_interval(v, r, self.level)
        return iv if np.isnan(iv.value) else interval(iv.value, max(iv.lo, 0.0), min(iv.hi, 1.0))

    def difference(self, a: tuple, b: tuple) -> Interval:
        """AUC of ``a`` minus AUC of ``b``, each ``(run, domain, label)``, with its interval
        (paired per seed and per bootstrap replicate)."""
        va, ra = self._values(self._run(a[0]), a[1], a[2] if len(a) > 2 else MACRO)
        vb, rb = self._values(self._run(b[0]), b[1], b[2] if len(b) > 2 else MACRO)
        return combined_interval(va - vb, ra - rb, self.level)

    def drop(self, target: str, label: str = MACRO, run: str | None = None) -> Interval:
        """Source AUC minus ``target`` AUC (positive = worse away from home)."""
        run = self._run(run)
        return self.difference((run, self.source, label), (run, target, label))

    def _mean_target_drop(self, run: str, label: str) -> tuple[np.ndarray, np.ndarray]:
        targets = [d for d in self.domains if d != self.source]
        vs, rs = self._values(run, self.source, label)
        vt = np.mean([self._values(run, t, label)[0] for t in targets], axis=0)
        rt = np.mean([self._values(run, t, label)[1] for t in targets], axis=0)
        return vs - vt, rs - rt

    def mean_target_drop(self, label: str = MACRO, run: str | None = None) -> Interval:
        """Source AUC minus the mean AUC over the targets."""
        v, r = self._mean_target_drop(self._run(run), label)
        return combined_interval(v, r, self.level)

    def drop_change(self, run_a: str, run_b: str, label: str = MACRO) -> Interval:
        """How much the mean source-to-target drop grows from ``run_a`` to ``run_b`` (e.g. from
        "shortcut off" to "shortcut on"), paired per seed and bootstrap replicate."""
        va, ra = self._mean_target_drop(self._run(run_a), label)
        vb, rb = self._mean_target_drop(self._run(run_b), label)
        return combined_interval(vb - va, rb - ra, self.level)

    # ---------------------------------------------------------------- tables
    def table(self, run: str | None = None) -> pd.DataFrame:
        """One row per domain and label (``macro`` included): ``auc, lo, hi`` (mean over seeds
        and its interval), the per-seed AUCs, the scored images ``n`` and positives ``n_pos``."""
        run = self._run(run)
        rows = []
        for d in self.domains:
            for lab in self.labels + [MACRO]:
                iv = self.score(d, lab, run)
                v, _ = self._values(run, d, lab)
                npos = (int(self.n_pos[(run, d)][self.labels.index(lab)]) if lab != MACRO
                        else np.nan)
                rows.append({"domain": d, "label": lab, "auc": iv.value, "lo": iv.lo,
                             "hi": iv.hi, "per_seed": " ".join(f"{x:.3f}" for x in v),
                             "n": int(self.n[(run, d)]), "n_pos": npos})
        out = pd.DataFrame(rows)
        out.attrs.update(run=run, seeds=list(self.seeds), synthetic=self.synthetic,
                         level=self.level, source=self.source, target_split=self.target_split)
        return out

    def drops(self, label: str = MACRO, run: str | None = None) -> pd.DataFrame:
        """One row per target: ``drop`` (source minus target AUC), ``lo, hi`` and whether the
        interval excludes zero (``clear``)."""
        run = self._run(run)
        rows = []
        for t in self.domains:
            if t == self.source:
                continue
            iv = self.drop(t, label, run)
            rows.append({"target": t, "drop": iv.value, "lo": iv.lo, "hi": iv.hi,
                         "clear": iv.excludes(0.0)})
        return pd.DataFrame(rows)

    def per_seed(self, run: str | None = None) -> pd.DataFrame:
        """One row per seed and domain: the macro AUC and one column per label."""
        run = self._run(run)
        rows = []
        for i, s in enumerate(self.seeds):
            for d in self.domains:
                a = self.auc[(run, d)][i]
                row = {"seed": s, "domain": d, "best_epoch": self.best_epochs[(run, s)],
                       "auc_macro": float(np.nanmean(a)) if np.isfinite(a).any() else np.nan}
                row.update({f"auc_{lab}": float(x) for lab, x in zip(self.labels, a)})
                rows.append(row)
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return (f"SeededGap(runs={self.runs}, seeds={self.seeds}, source={self.source!r}, "
                f"domains={self.domains}, labels={self.labels}, level={self.level})")


def _patient_weights(patients: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, n] row weights: patients drawn with replacement, all images of a patient kept."""
    _, idx = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    n_pat = int(idx.max()) + 1 if idx.size else 0
    if n_pat == 0:
        return np.zeros((n_boot, 0))
    counts = rng.multinomial(n_pat, np.full(n_pat, 1.0 / n_pat), size=n_boot)
    return counts[:, idx].astype(np.float64)


def _auc_columns(y: np.ndarray, scores: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-label AUC on all rows [L] and per bootstrap replicate [B, L]; NaN-labelled rows are
    left out per label, as in :mod:`cxrlab.metrics`."""
    L = y.shape[1]
    point = np.full(L, np.nan)
    boot = np.full((w.shape[0], L), np.nan)
    for j in range(L):
        m = ~np.isnan(y[:, j])
        yj, sj = y[m, j], scores[m, j]
        if yj.size == 0 or yj.min() == yj.max():
            continue  # no positive or no negative: AUC undefined, the label is left out
        point[j] = _rank_metrics_weighted(yj, sj, np.ones((1, yj.size)))[0][0]
        boot[:, j] = _rank_metrics_weighted(yj, sj, w[:, m])[0]
    return point, boot


def gap_over_seeds(caches: Cache | Mapping[str, Cache], seeds: Sequence[int] = (0, 1, 2), *,
                   source: str = "source", targets: Sequence[str] | None = None,
                   labels: Sequence[str] = DEFAULT_GAP_LABELS, epochs: int = 5,
                   lr: float = 3e-3, batch_size: int = 32, backbone: str | None = None,
                   pretrained: bool = False, device: str = "cpu",
                   target_split: str | None = None, n_boot: int = 200, level: float = 0.95,
                   boot_seed: int = 0, keep_models: bool = False) -> SeededGap:
    """Train at ``source`` once per seed (and per cache) and score every hospital.

    caches : one cache, or ``{run name: cache}`` to compare runs (e.g. without and with the
        shortcut). Runs whose hospitals hold the same patients share their bootstrap resamples,
        so their difference is a paired comparison.
    seeds : training seeds (batch order and initialisation); at least two for a seed interval.
    Everything else as in :func:`cxrlab.shift.source_target_gap` (``target_split=None``: every
    image of a target is scored). ``n_boot`` patient-bootstrap replicates per hospital.
    ``keep_models=True`` keeps every trained model in ``SeededGap.models[(run, seed)]`` (for
    further evaluation, e.g. on a stratum of the test images).
    Returns a :class:`SeededGap`.
    """
    runs = {"run": caches} if isinstance(caches, Cache) else dict(caches)
    if not runs:
        raise UsageError("caches is empty: give a cache or {run name: cache}")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"seeds must be distinct and at least one, got {seeds}")
    if n_boot < 2:
        raise UsageError(f"n_boot must be >= 2 (200 is enough for a 95 % interval), got {n_boot}")
    labels = list(get_label_space(labels))
    first = next(iter(runs.values()))
    doms = [source] + _resolve_targets(first, source, targets)
    for name, c in runs.items():
        missing = sorted(set(doms) - set(c.domains))
        if missing:
            raise UsageError(f"run {name!r}: cache {c.path} has no domain(s) {missing}")
    rng = np.random.default_rng(boot_seed)
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # domain -> (patients, weights)
    auc, boot, n, n_pos, best, models, patients = {}, {}, {}, {}, {}, {}, {}
    data = {}
    for name, c in runs.items():
        for d in doms:
            rows = evaluation_rows(c, d, "source" if d == source else "target", target_split)
            x, y = load_arrays(c, rows, labels)
            pats = c.manifest["patient_id"].to_numpy()[rows].astype(str)
            if d not in weights or not np.array_equal(weights[d][0], pats):
                weights[d] = (pats, _patient_weights(pats, n_boot, rng))
            data[(name, d)] = (x, np.asarray(y, dtype=np.float64), weights[d][1])
            patients[(name, d)] = pats
            n[(name, d)] = len(rows)
            yy = np.asarray(y, dtype=np.float64)
            n_pos[(name, d)] = np.nansum(yy == 1, axis=0).astype(int)
    units = [(name, s) for name in runs for s in seeds]
    per = {key: ([], []) for key in data}
    for name, s in progress(units, desc="seeds x runs", total=len(units)):
        model = train_at_source(runs[name], source, labels, epochs=epochs, seed=s, lr=lr,
                                batch_size=batch_size, backbone=backbone, device=device,
                                pretrained=pretrained)
        best[(name, s)] = model.best_epoch
        if keep_models:
            models[(name, s)] = model
        for d in doms:
            x, y, w = data[(name, d)]
            p, b = _auc_columns(y, model.predict_proba(x).astype(np.float64), w)
            per[(name, d)][0].append(p)
            per[(name, d)][1].append(b)
    for key, (p, b) in per.items():
        auc[key] = np.stack(p)
        boot[key] = np.stack(b)
    return SeededGap(runs=list(runs), seeds=seeds, source=source, domains=doms, labels=labels,
                     level=level, auc=auc, boot=boot, n=n, n_pos=n_pos, best_epochs=best,
                     synthetic=bool(getattr(first, "synthetic", False)),
                     target_split=target_split or "all", models=models, patients=patients,
                     boot_seed=int(boot_seed), n_boot=int(n_boot))


__all__ = ["SeededGap", "combined_interval", "gap_over_seeds"]
