"""Running a study: every (method, backbone, seed) unit, resumable, each stored atomically."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlab.io import atomic_path, atomic_to_csv, atomic_write_json, atomic_write_text
from cxrlab.study.config import (Arm, StudyConfig, StudyError, _check_config, _json_default,
                                 check_backbones,
                                 _label_space_names, _space_key, load_study_config)
from cxrlab.study.sets import StudyData, load_study_data, source_undefined_labels
from cxrlab.study.scoring import evaluate_predictions
from cxrlab.study.report import study_markdown, write_study_figures
from cxrlab.study.result import STUDY_KIND, StudyResult
from cxrlab.study.safety import check_not_fewer
from cxrlab.study.tables import RESULT_COLUMNS, summarise

#: part of every unit's config hash: bump it when what a unit stores changes meaning, so that
#: units written before are seen as another configuration (see _Runner.is_complete)
UNIT_VERSION = 2
#: the most epochs a linear probe trains when it stops on its own (probe_patience)
PROBE_EPOCH_CAP = 300
#: the probe's default minibatch: at least this many cached embeddings (no backbone runs, so a
#: large batch costs nothing and the probe converges in fewer, cheaper steps)
PROBE_MIN_BATCH = 256


#: the status of a unit another live process is training
_HELD = "running in"


def config_hash(config: dict) -> str:
    """The 16-hex-digit identity of a unit's configuration (stored in its metrics.json)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def unit_is_complete(unit_dir: Path, want: dict, overwrite: bool, where: str) -> bool:
    """True when ``unit_dir/metrics.json`` was written for configuration ``want``; False when it
    is absent or unreadable, or (with ``overwrite``) written for another one; otherwise a
    :class:`StudyError` naming the differences. Study units and course-part units alike."""
    f = Path(unit_dir) / "metrics.json"
    if not f.exists():
        return False
    try:
        stored = json.loads(f.read_text())
    except (OSError, ValueError):
        return False
    if stored.get("config_hash") == config_hash(want):
        return True
    if overwrite:
        return False
    diffs = _dict_diff(stored.get("config", {}), want)
    raise StudyError(
        f"{where} holds results of a different configuration "
        f"(differences: {'; '.join(diffs[:4]) or 'unknown'}). Write this study to another "
        f"--out folder, delete that unit folder, or pass --overwrite (overwrite=True) to "
        "recompute.")


@dataclass(frozen=True)
class Unit:
    """One (arm, backbone, seed) run of a study; ``method`` is the arm's name (see
    :class:`~cxrlab.study.config.Arm`)."""

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
        from cxrlab.profiles import resolve_device

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
            "probe_epochs": cfg.probe_epochs or cfg.epochs
            or (PROBE_EPOCH_CAP if cfg.probe_patience else profile.epochs),
            "probe_patience": cfg.probe_patience, "probe_select": cfg.probe_select,
            "probe_init_bias": cfg.probe_init_bias,
            "probe_lr": cfg.probe_lr or cfg.lr or profile.lr,
            "probe_batch_size": cfg.probe_batch_size
            or max(cfg.batch_size or profile.batch_size, PROBE_MIN_BATCH),
            "probe_weight_decay": cfg.probe_weight_decay, "probe_pos_weight": cfg.probe_pos_weight,
            "pretrained": self.pretrained, "precision": self.precision,
            "bootstrap": self.n_boot, "bootstrap_unit": cfg.bootstrap_unit,
            "label_spaces": [_space_key(s) for s in self.label_spaces],
        }
        self.embedding_dir = Path(profile.checkpoint_dir).expanduser() / "embeddings"
        self.source_defined = data.source_defined()
        self.arms = {a.name: a for a in cfg.arms()}

    # ------------------------------------------------------------------ identity
    def unit_config(self, unit: Unit) -> dict:
        arm = self.arms[unit.method]
        weights = self.cfg.weights.get(unit.backbone)
        d = {"version": UNIT_VERSION, "method": unit.method, "backbone": unit.backbone,
             "seed": unit.seed, "settings": self.settings, "hparams": arm.hparams,
             "weights": None if weights is None else str(weights),
             "data": self.data.fingerprint()}
        if arm.method != arm.name:
            d["algorithm"] = arm.method
        if arm.algorithm.scoring == "embed_probe":  # no engine run: its budget does not enter
            d["settings"] = {k: v for k, v in self.settings.items()
                             if k not in ("finetune_epochs", "batch_size", "lr", "weight_decay")}
        return json.loads(json.dumps(d, default=_json_default))

    config_hash = staticmethod(config_hash)

    def unit_dir(self, unit: Unit) -> Path:
        return self.out / "units" / unit.name

    def is_complete(self, unit: Unit) -> bool:
        """True when the unit's metrics.json exists for this very configuration; raises
        :class:`StudyError` when it exists for another one (and ``overwrite`` is off)."""
        return unit_is_complete(self.unit_dir(unit), self.unit_config(unit), self.overwrite,
                                where=f"{self.out.name}/units/{unit.name}")

    def snapshot(self, grid: Sequence[Unit]) -> dict:
        """What every process writing into this folder must agree on (``study.json``)."""
        return {"kind": "cxrlab-study-snapshot", "name": self.cfg.name,
                "config": self.cfg.as_dict(), "profile": self.profile.name,
                "settings": self.settings, "data": self.data.fingerprint(),
                "unit_version": UNIT_VERSION, "grid": [u.name for u in grid]}

    def run_claimed(self, unit: Unit, say: bool = True) -> tuple[str, float]:
        """Run ``unit`` unless it is complete or claimed by another live process (see
        :mod:`cxrlab.study.shards`); ``(status, seconds)``, printed unless ``say=False``."""
        from cxrlab.study.shards import describe, heartbeat, release, try_claim

        said = self._said if say else (lambda u, st, secs: (st, secs))
        if self.is_complete(unit):
            return said(unit, "complete (skipped)", 0.0)
        lock = self.out / "units" / f"{unit.name}.lock"
        ok, holder = try_claim(lock)
        if not ok:
            return said(unit, f"{_HELD} {describe(holder)}", 0.0)
        try:
            with heartbeat(lock):
                if self.is_complete(unit):  # finished by another process meanwhile
                    return said(unit, "complete (other process)", 0.0)
                info = self.run_unit(unit)
        finally:
            release(lock)
        return said(unit, "computed", info["seconds"])

    def _said(self, unit: Unit, status: str, secs: float) -> tuple[str, float]:
        if self.verbose and _is_writer():
            print(f"{unit.name:<40} {status:<20} {secs:6.1f} s")
        return status, secs

    # ------------------------------------------------------------------ models
    def backbone(self, unit: Unit):
        from cxrlab.models import create_backbone

        size = self.data.sets["train"].cache.image_size
        return create_backbone(unit.backbone, pretrained=self.pretrained,
                               weights=self.cfg.weights.get(unit.backbone), image_size=size,
                               seed=unit.seed)

    def _arrays(self, name: str, needs: Sequence[str] = ()):
        """Images, labels (and the masks in ``needs``) of a set for the engine: in memory when
        small, else a Dataset."""
        import torch

        s = self.data.sets[name]
        y = torch.from_numpy(self.data.labels(name))
        with_masks = bool(set(needs) & {"lung_mask", "lesion_mask"})
        if with_masks and (s.cache.lung_masks is None or s.cache.lesion_masks is None):
            raise StudyError(f"a method of this study needs lung and lesion masks, but the "
                             f"cache of {name!r} ({s.cache.path}) has none; use the synthetic "
                             "hospitals or add masks (cxrlab data lungmasks ...)")
        if len(s.rows) * s.cache.image_size ** 2 <= (1 << 30):
            from cxrlab.data.dataset import load_arrays, load_masks

            images, _ = load_arrays(s.cache, s.rows, list(self.data.train_labels))
            if not with_masks:
                return (images, y)
            return {"image": images, "labels": y, **load_masks(s.cache, s.rows)}
        from cxrlab.data.dataset import CacheDataset

        ds = CacheDataset(s.cache, s.rows, list(self.data.train_labels), with_masks=with_masks)
        ds.labels = y  # the source's masked labels
        return ds

    def embeddings(self, backbone, cache_dir) -> dict:
        from cxrlab.probe.embeddings import extract_embeddings

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
            batch_size=st["probe_batch_size"], seed=unit.seed, pos_weight=st["probe_pos_weight"],
            init_bias=st["probe_init_bias"], select=st["probe_select"],
            patience=st["probe_patience"])
        scores = {name: predict_proba(probe, e) for name, e in emb.items() if name != "train"}
        info = {"probe_best_epoch": probe.best_epoch, "probe_history": probe.history}
        return scores, info

    def embed_and_probe(self, encoder, cache_dir, unit: Unit, info: dict) -> dict:
        """Embeddings of every set by the frozen ``encoder``, then the linear probe; the
        probe's scores per set (``info`` gets the timings and the probe's history)."""
        t0 = time.perf_counter()
        emb = self.embeddings(encoder, cache_dir)
        info["seconds_embed"] = round(time.perf_counter() - t0, 2)
        scores, extra = self.probe_scores(emb, unit)
        info.update(extra)
        return scores

    def fit(self, unit: Unit, arm: Arm, backbone, monitor: bool):
        from cxrlab.engine import fit, make_val_fn
        from cxrlab.methods import create_algorithm

        st = self.settings
        alg = create_algorithm(arm.method, backbone, num_labels=len(self.data.train_labels),
                               hparams=arm.hparams, seed=unit.seed)
        val_fn = make_val_fn(self._arrays("val"), precision=self.precision) if monitor else None
        result = fit(alg, self._arrays("train", alg.needs), epochs=st["finetune_epochs"],
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
        arm = self.arms[unit.method]
        scoring = arm.algorithm.scoring
        if scoring == "embed_probe":
            scores = self.embed_and_probe(bb, self.embedding_dir, unit, info)
        elif scoring == "probe":
            alg, res = self.fit(unit, arm, bb, monitor=False)
            info.update(_fit_info(res))
            scores = self.embed_and_probe(alg.encoder,
                                          self.out / "checkpoints" / unit.name / "embeddings",
                                          unit, info)
        else:  # "predict"
            from cxrlab.engine import load_weights, predict_scores

            alg, res = self.fit(unit, arm, bb, monitor=True)
            info.update(_fit_info(res))
            if res.best_path is not None and Path(res.best_path).exists():
                load_weights(alg, res.best_path)  # best epoch on source validation AUC
            scores = {}
            for name in self.data.sets:
                if name == "train":
                    continue
                scores[name], _ = predict_scores(alg, self._arrays(name), precision=self.precision,
                                                 num_workers=self.profile.num_workers)
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
        if not _is_writer():
            return
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
        arm = self.arms[unit.method]
        for col, val in (("method", unit.method), ("setting", arm.display),
                         ("backbone", unit.backbone), ("seed", unit.seed)):
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


def _resolve_profile(profile):
    from cxrlab.profiles import Profile, get_profile

    return profile if isinstance(profile, Profile) else get_profile(profile)


def run_probe_study(config, out, profile=None, seeds: Sequence[int] | None = None, *,
                    methods: Sequence[str] | None = None, backbones: Sequence[str] | None = None,
                    caches: Mapping | None = None, overwrite: bool = False,
                    verbose: bool = True, shard=None, figures: bool = False,
                    readme: bool = False) -> StudyResult:
    """Run (or resume) the units of a study and write its tables (and, asked for, its figures
    and ``README.md``).

    ``config``: YAML path, mapping or :class:`StudyConfig`; ``profile``: name or Profile
    (default: ``$CXRLAB_PROFILE``); ``seeds``, ``methods``, ``backbones`` override the config;
    ``caches``: member/cache name -> folder or open Cache; ``shard``: ``"I/N"`` or a
    :class:`~cxrlab.study.shards.Shard`: run only that share of the grid (see
    :mod:`cxrlab.study.shards` for how several processes share one folder). Writes
    ``out/results.csv``, ``out/per_label.csv``, ``out/metrics.json`` (with the units still
    missing, if any), ``out/study.json``, ``out/units/...``, ``out/checkpoints/...``.
    """
    from cxrlab.study.shards import Shard, check_snapshot, exclusive, parse_shard

    shard = shard if isinstance(shard, Shard) else parse_shard(shard)
    cfg = load_study_config(config)
    if methods is not None:
        cfg = dataclasses.replace(cfg, methods=tuple(methods))
    if backbones is not None:
        cfg = dataclasses.replace(cfg, backbones=tuple(backbones))
    if seeds is not None:
        cfg = dataclasses.replace(cfg, seeds=tuple(int(s) for s in seeds))
    _check_config(cfg, "study config")
    prof = _resolve_profile(profile)
    check_backbones(cfg.backbones or prof.backbones, f"profile {prof.name!r}")
    out = Path(out).expanduser()
    grid = [Unit(a.name, b, s) for a in cfg.arms()
            for b in (cfg.backbones or prof.backbones) for s in (cfg.seeds or prof.seeds)]
    check_not_fewer(out, [u.name for u in grid], cfg.name, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out / ".data.lock", "loading the study's data"):  # one writer of a new cache
        data = load_study_data(cfg, prof, caches=caches, verbose=verbose)
    runner = _Runner(cfg, prof, data, out, overwrite, verbose)
    check_snapshot(out, runner.snapshot(grid), strict=not shard.whole and not overwrite)
    status = {}
    mine = shard.select(grid)
    if verbose and not shard.whole:
        print(f"shard {shard.label}: {len(mine)} of the study's {len(grid)} units")
    from cxrlab.progress import progress

    bar = progress(mine, desc=cfg.name, unit="unit")  # one tick per unit (CXRLAB_PROGRESS=0: off)
    for unit in bar:
        bar.set_postfix_str(unit.name)
        status[unit.name] = runner.run_claimed(unit)
    _wait_for_held(runner, mine, status, verbose)
    with exclusive(out / ".study.lock", "writing the study's tables"):
        res = _gather(cfg, prof, data, runner, grid, status)
        if len(res.results):
            if _is_writer():
                _write_tables(res, runner)
                if figures:
                    res.figures = write_study_figures(res)
                if readme:
                    atomic_write_text(res.out / "README.md", study_markdown(res))
    return res


def _wait_for_held(runner: "_Runner", units, status: dict, verbose: bool) -> None:
    """Units of this share that another process held: wait until each is stored, or take it
    over when its lock turns stale (see :mod:`cxrlab.study.shards`)."""
    import time

    from cxrlab.study.shards import poll_s

    held = [u for u in units if status[u.name][0].startswith(_HELD)]
    if held and verbose and _is_writer():
        print(f"waiting for {len(held)} unit(s) held by other processes (until stored, or "
              "taken over when their lock turns stale)")
    while held:
        time.sleep(poll_s())
        left = []
        for u in held:
            st = runner.run_claimed(u, say=False)
            if st[0].startswith(_HELD):
                left.append(u)
            else:
                status[u.name] = runner._said(u, st[0], st[1])
        held = left


def _is_writer() -> bool:
    """Under ``torchrun`` every rank runs the same units; only rank 0 writes files."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _gather(cfg, prof, data, runner: "_Runner", grid, status: dict) -> StudyResult:
    """The study as far as it is stored: every complete unit of the grid, in grid order."""
    from cxrlab.models import display_name

    unit_rows, long_rows, per_label, missing = [], [], [], []
    for unit in grid:
        if not runner.is_complete(unit):
            missing.append(unit.name)
            continue
        rec = json.loads((runner.unit_dir(unit) / "metrics.json").read_text())
        st, secs = status.get(unit.name, ("complete (other process)", 0.0))
        unit_rows.append({"unit": unit.name, "method": unit.method, "backbone": unit.backbone,
                          "seed": unit.seed, "status": st, "seconds": secs,
                          "seconds_computed": rec["info"].get("seconds"),
                          "weights": rec["info"].get("weights_id")})
        arm = runner.arms[unit.method]
        for r in rec["rows"]:
            long_rows.append({"study": cfg.name, "method": unit.method, "algorithm": arm.method,
                              "setting": arm.display, "backbone": unit.backbone,
                              "model": display_name(unit.backbone),
                              "seed": unit.seed, **r, "synthetic": data.synthetic})
        per_label.append(pd.read_csv(runner.unit_dir(unit) / "per_label.csv"))
    results = pd.DataFrame(long_rows, columns=list(RESULT_COLUMNS))
    results.attrs["synthetic"] = data.synthetic
    per_label_df = pd.concat(per_label, ignore_index=True) if per_label else pd.DataFrame()
    per_label_df.attrs["synthetic"] = data.synthetic
    return StudyResult(name=cfg.name, out=runner.out, config=cfg.as_dict(), profile=prof.name,
                       synthetic=data.synthetic, results=results, per_label=per_label_df,
                       units=pd.DataFrame(unit_rows), data=data.describe(),
                       source_undefined=source_undefined_labels(data),
                       protocol=data.protocol.describe(), grid=[u.name for u in grid],
                       missing=missing)


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
        "grid": res.grid, "missing_units": res.missing,
    })


def run_study(config, out, profile=None, seeds: Sequence[int] | None = None, *,
              overwrite: bool = False, verbose: bool = True, figures: bool = True,
              **kwargs) -> StudyResult:
    """``cxrlab run CONFIG --out DIR [--shard I/N]``: :func:`run_probe_study`, then figures
    (PNG) and a ``README.md`` report in ``out``. Re-running skips finished units."""
    res = run_probe_study(config, out, profile, seeds, overwrite=overwrite, verbose=verbose,
                          figures=figures, readme=True, **kwargs)
    if verbose and _is_writer():
        st = res.units["status"] if len(res.units) else pd.Series(dtype=str)
        done = int((st == "computed").sum())
        left = f"; {len(res.missing)} still missing (other shards or processes)" \
            if res.missing else ""
        where = (f"tables, figures and README.md in {res.out.name}/" if len(res.results) else
                 "no unit is finished yet, so no tables were written; the process that "
                 "finishes one writes them")
        print(f"study {res.name} ({res.tag}): {len(res.grid)} units, {done} computed here, "
              f"{len(res.units) - done} already complete{left}; {where}")
    return res
