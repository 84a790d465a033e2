"""The data of a study: the protocol resolved into source train / val / test and target sets."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlab.labels import ALL_LABELS, get_label_space
from cxrlab.study.config import StudyConfig, StudyError, _label_space_names, mask_labels


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

    def positives(self, labels: Sequence[str] | None = None, flag_below: int = 10) -> pd.DataFrame:
        """Positives per label (rows) in every set (columns), counted among labelled images; a
        label the set does not define shows as ``<NA>``. ``attrs["few"]`` lists the (label, set)
        pairs with fewer than ``flag_below`` positives: their AUC, F1 and tuned thresholds rest
        on a handful of images. :meth:`positives_styled` marks them for display."""
        names = list(self.train_labels) if labels is None else list(labels)
        unknown = [lab for lab in names if lab not in self.train_labels]
        if unknown:
            from cxrlab.errors import UnknownNameError
            raise UnknownNameError(f"labels {unknown} are not among this study's labels "
                                   f"{list(self.train_labels)}")
        idx = [list(self.train_labels).index(lab) for lab in names]
        table = {}
        for name in self.sets:
            y = self.labels(name)[:, idx]
            defined = (~np.isnan(y)).any(0)
            table[name] = pd.array([int(np.nansum(y[:, j])) if defined[j] else pd.NA
                                    for j in range(len(idx))], dtype="Int64")
        df = pd.DataFrame(table, index=pd.Index(names, name="label"))
        df.attrs["flag_below"] = int(flag_below)
        df.attrs["few"] = [(lab, col) for col in df.columns for lab in names
                           if not pd.isna(df.at[lab, col]) and df.at[lab, col] < flag_below]
        return df

    def positives_styled(self, labels: Sequence[str] | None = None, flag_below: int = 10):
        """:meth:`positives` as text, a count under ``flag_below`` marked ``"7 (<10)"``."""
        df = self.positives(labels, flag_below)
        return df.astype(object).apply(lambda col: [
            "n/a" if pd.isna(v) else (f"{v} (<{flag_below})" if v < flag_below else str(v))
            for v in col])

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
    _check_cache_names(overrides, proto)
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
    data = StudyData(resolved, train_labels, mask_labels(cfg.mask_source_labels),
                     cfg.bootstrap_unit)
    if not any(data.source_defined().values()):
        raise StudyError(f"no training label is left at the source: mask_source_labels="
                         f"{cfg.mask_source_labels!r} (and the source's own missing labels) leave "
                         f"every one of {train_labels} missing, so nothing can be learnt; mask "
                         "fewer labels or evaluate another label space")
    return data


def _check_cache_names(overrides: Mapping, proto) -> None:
    """A ``caches:`` key must name one of the protocol's caches or members (a typo would
    silently train on the default cache)."""
    known = list(dict.fromkeys([m.cache for m in proto.members] + [m.name for m in proto.members]))
    unknown = [k for k in overrides if k not in known]
    if unknown:
        import difflib

        hints = [f"{u!r}" + (f" (did you mean {c[0]!r}?)" if (c := difflib.get_close_matches(
            str(u), known, n=1)) else "") for u in unknown]
        raise StudyError(f"caches: unknown name(s) {', '.join(hints)}; protocol "
                         f"{proto.name!r} reads the caches / members {known}")


def source_undefined_labels(data: StudyData) -> list[str]:
    """Labels the source never annotates: a model trained there cannot learn them."""
    return [lab for lab, ok in data.source_defined().items() if not ok]
