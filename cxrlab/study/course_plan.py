"""The whole course as one run: ``cxrlab run configs/course.yaml --out DIR [--shard I/N]``.

A course config lists *parts*, each one folder of ``DIR``:

* ``kind: study`` - a study config (``config: study_ci.yaml``, relative to the course config)
  plus any study-config keys that override it; run by :func:`cxrlab.study.run_study`.
* a registered part kind (:data:`cxrlab.study.parts.PART_KINDS`: ``shift``, ``attention``) -
  its own settings, run by :func:`cxrlab.study.parts.run_part`.

``profiles: {ci: {PART: {KEY: VALUE}}}`` shrinks or grows parts per profile. Everything is
checked (keys, methods, backbones, data folders) before the first unit trains. Every unit is
stored on its own, so a re-run (or another shard) skips what is done; ``course.json`` records
what the folder holds and :func:`course_report` writes ``report.md`` + ``report.html`` + PNGs.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from cxrlab.errors import MissingInputError
from cxrlab.io import atomic_write_json, atomic_write_text
from cxrlab.study.config import StudyError, check_backbones, load_study_config
from cxrlab.study.parts import PART_KINDS, gather_part, run_part

#: the file that marks a folder as a course run
COURSE_FILE = "course.json"
COURSE_KIND = "cxrlab-course"
_TOP_KEYS = {"name", "description", "parts", "profiles"}
_STUDY_PART_KEYS = {"name", "kind", "config", "title", "published"}
PUBLISHED = ("seed000", "seed002", "cohen2020", None)


@dataclass
class PartSpec:
    """One part of a course: its name (its folder), kind, title, which published table sits
    beside it, and its resolved settings (a study config mapping, or the part kind's)."""

    name: str
    kind: str
    title: str
    published: str | None
    settings: dict

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "title": self.title,
                "published": self.published, "settings": self.settings}


@dataclass
class CoursePlan:
    name: str
    description: str
    parts: list[PartSpec] = field(default_factory=list)

    def as_dict(self) -> dict:
        return json.loads(json.dumps({"kind": COURSE_KIND, "name": self.name,
                                      "description": self.description,
                                      "parts": [p.as_dict() for p in self.parts]}, default=str))


def is_course_config(path) -> bool:
    """True when the YAML file at ``path`` is a course config (it lists ``parts``)."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and "parts" in raw


def _merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) \
            else copy.deepcopy(v)
    return out


def _close(name, known) -> str:
    import difflib

    c = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {c[0]!r}?)" if c else ""


def load_course_config(config, profile=None, overrides: Mapping | None = None) -> CoursePlan:
    """A :class:`CoursePlan` from a YAML path or mapping, with the profile's section and
    ``overrides`` (``{part: {key: value}}``) applied and every part checked."""
    import yaml

    from cxrlab.profiles import Profile, get_profile

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    base = Path.cwd()
    where = "course config"
    if isinstance(config, (str, os.PathLike)):
        p = Path(config).expanduser()
        if not p.is_file():
            raise MissingInputError(f"course config {p} does not exist (see configs/course.yaml)")
        where, base = f"course config {p.name}", p.parent
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise StudyError(f"{where}: not valid YAML ({e})") from None
    else:
        raw = copy.deepcopy(dict(config))
    if not isinstance(raw, dict):
        raise StudyError(f"{where}: expected a mapping with 'parts'")
    bad = sorted(set(raw) - _TOP_KEYS)
    if bad:
        raise StudyError(f"{where}: unknown key(s) " + ", ".join(
            f"{b!r}{_close(b, _TOP_KEYS)}" for b in bad) + f"; allowed {sorted(_TOP_KEYS)}")
    parts = raw.get("parts")
    if not isinstance(parts, list) or not parts:
        raise StudyError(f"{where}: 'parts' must be a non-empty list of parts")
    names = [p.get("name") if isinstance(p, Mapping) else None for p in parts]
    if any(not isinstance(n, str) or not n for n in names):
        raise StudyError(f"{where}: every part needs a 'name' (its folder), got {names}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise StudyError(f"{where}: part name(s) {dupes} appear twice")
    profiles = raw.get("profiles") or {}
    section = dict(profiles.get(prof.name) or {})
    for extra in (section, overrides or {}):
        unknown = sorted(set(extra) - set(names))
        if unknown:
            raise StudyError(f"{where}: profile/override for unknown part(s) " + ", ".join(
                f"{u!r}{_close(u, names)}" for u in unknown) + f"; parts are {names}")
    plan = CoursePlan(str(raw.get("name", "course")), str(raw.get("description", "")))
    for part in parts:
        part = _merge(dict(part), section.get(part["name"], {}))
        part = _merge(part, (overrides or {}).get(part["name"], {}))
        plan.parts.append(_check_part(part, base, prof, where))
    return plan


def _check_part(part: dict, base: Path, prof, where: str) -> PartSpec:
    name, kind = part["name"], part.get("kind")
    known = ["study", *PART_KINDS]
    if kind not in known:
        raise StudyError(f"{where}: part {name!r}: unknown kind {kind!r}{_close(kind, known)}; "
                         f"kinds: {known}")
    published = part.get("published")
    if published not in PUBLISHED:
        raise StudyError(f"{where}: part {name!r}: published must be one of "
                         f"{[p for p in PUBLISHED if p]} or left out, got {published!r}")
    title = str(part.get("title") or name)
    if kind != "study":
        settings = {k: v for k, v in part.items() if k not in ("name", "kind")}
        PART_KINDS[kind](name, settings, prof, where)  # checks every setting
        return PartSpec(name, kind, title, published, settings)
    if "config" not in part:
        raise StudyError(f"{where}: part {name!r} (study) needs 'config': a study config file")
    cfg_path = (base / part["config"]).expanduser()
    if not cfg_path.is_file():
        raise MissingInputError(f"{where}: part {name!r}: study config {cfg_path} does not exist")
    import yaml

    study = yaml.safe_load(cfg_path.read_text()) or {}
    study = _merge(study, {k: v for k, v in part.items() if k not in _STUDY_PART_KEYS})
    study["name"] = name
    try:
        cfg = load_study_config(study)
    except StudyError as e:
        raise StudyError(f"{where}: part {name!r} ({cfg_path.name}): {e}") from None
    check_backbones(cfg.backbones or prof.backbones, f"{where}: part {name!r}")
    _check_data(cfg, prof, f"{where}: part {name!r}")
    return PartSpec(name, "study", title, published, cfg.as_dict())


def _check_data(cfg, prof, where: str) -> None:
    """Every real-data cache the study reads exists (synthetic ones are drawn on demand)."""
    from cxrlab.data.protocols import load_protocol, protocol_from_dict
    from cxrlab.data.protocols.resolve import _prepare_hint

    proto = (protocol_from_dict(cfg.protocol, source=f"{where}: protocol")
             if isinstance(cfg.protocol, dict) else load_protocol(cfg.protocol))
    for m in proto.members:
        ov = cfg.caches.get(m.name, cfg.caches.get(m.cache))
        if m.dataset == "synthetic" and ov is None:
            continue
        path = Path(str(ov)).expanduser() if ov is not None else m.cache_path(
            Path(prof.data_dir).expanduser())
        if not (path / "meta.json").exists():
            raise MissingInputError(f"{where}: the {m.dataset} data folder for {m.name!r} is "
                                    f"missing at {path}; {_prepare_hint(m, path)}")


# ----------------------------------------------------------------------------- running
def _write_course_file(out: Path, plan: CoursePlan, prof, strict: bool) -> None:
    from cxrlab.study.shards import exclusive

    snap = {**plan.as_dict(), "profile": prof.name}
    f = out / COURSE_FILE
    with exclusive(out / ".course.lock", "course description"):
        if f.exists() and strict:
            try:
                old = json.loads(f.read_text())
            except (OSError, ValueError):
                old = None
            if old is not None and old != snap:
                from cxrlab.study.runner import _dict_diff

                diffs = _dict_diff(old, snap)
                raise StudyError(f"{out.name}/ holds a course run with a different configuration "
                                 f"(differences: {'; '.join(diffs[:4])}); every shard must run the "
                                 "same config and profile. Use another --out or --overwrite")
        atomic_write_json(f, snap)


def run_course(config, out, profile=None, shard=None, overrides: Mapping | None = None,
               overwrite: bool = False, verbose: bool = True, report: bool = True) -> dict:
    """Run (or resume) every part of a course config into ``out`` (one folder per part) and
    write the course report. Returns ``{"plan", "results": {part: result}, "report"}``."""
    from cxrlab.profiles import Profile, get_profile
    from cxrlab.study.runner import run_study
    from cxrlab.study.shards import Shard, parse_shard

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    shard = shard if isinstance(shard, Shard) else parse_shard(shard)
    plan = load_course_config(config, prof, overrides)  # every part checked before training
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    _write_course_file(out, plan, prof, strict=not shard.whole and not overwrite)
    results = {}
    for k, spec in enumerate(plan.parts, 1):
        if verbose:
            print(f"== part {k}/{len(plan.parts)}: {spec.title} ({spec.kind}) -> {out / spec.name}")
        if spec.kind == "study":
            results[spec.name] = run_study(spec.settings, out / spec.name, prof, shard=shard,
                                           overwrite=overwrite, verbose=verbose)
        else:
            part = PART_KINDS[spec.kind](spec.name, _part_settings(spec), prof)
            part.out = out / spec.name
            results[spec.name] = run_part(part, out / spec.name, shard=shard,
                                          overwrite=overwrite, verbose=verbose)
    path = course_report(out, verbose=verbose) if report else None
    return {"plan": plan, "results": results, "report": path}


def _part_settings(spec: PartSpec) -> dict:
    return {k: v for k, v in spec.settings.items() if k not in ("title", "published")} | {
        "title": spec.title, "published": spec.published}


# ----------------------------------------------------------------------------- report
def _load_parts(root: Path):
    """``(plan, profile, [(spec, result or None)])`` of a course folder."""
    from cxrlab.profiles import get_profile
    from cxrlab.study.result import load_study

    meta = json.loads((root / COURSE_FILE).read_text())
    prof = get_profile(meta.get("profile"))
    plan = CoursePlan(meta["name"], meta.get("description", ""),
                      [PartSpec(**{k: p[k] for k in ("name", "kind", "title", "published",
                                                     "settings")}) for p in meta["parts"]])
    loaded = []
    for spec in plan.parts:
        folder = root / spec.name
        if spec.kind == "study":
            ok = (folder / "metrics.json").is_file()
            loaded.append((spec, load_study(folder) if ok else None))
        else:
            part = PART_KINDS[spec.kind](spec.name, _part_settings(spec), prof)
            res = gather_part(part, folder) if folder.is_dir() else None
            loaded.append((spec, (part, res)))
    return plan, prof, loaded


def study_headline(res) -> str:
    """AUC macro (fair label space, tuned thresholds) per arm: the source test split and the
    mean over targets (over backbones and seeds)."""
    from cxrlab.study.gaps import fair_label_space

    r = res.results
    sel = r[(r["metric"] == "auc_macro") & (r["threshold"] == "tuned_source_val")
            & (r["label_space"] == fair_label_space(r))]
    bits = []
    for setting, g in sel.groupby("setting", sort=False):
        src = g.loc[g["role"] == "in-domain", "value"].mean()
        tgt = g.loc[g["role"] == "out-of-domain", "value"].mean()
        bits.append(f"{setting} {src:.3f} → {tgt:.3f}")
    return "AUC macro at the source → mean over targets: " + "; ".join(bits)


def _published_blocks(spec: PartSpec, res) -> list:
    from cxrlab.study.gaps import fair_label_space
    from cxrlab.study.tables import (published_seed000_table, published_seed002_table,
                                     seed002_table)

    if spec.published == "seed000":
        pub = published_seed000_table()
        return [("h", 3, "Published beside ours: seed 000"),
                ("table", pub, f"{pub.attrs['caption']}; {pub.attrs['citation']} (real data, not "
                               "ours; ours are the tables above)", ".2f")]
    if spec.published == "seed002":
        ours = seed002_table(res.results, label_space=fair_label_space(res.results))
        ours = ours[[c for c in ours.columns if not c.endswith((" mean", " halfwidth"))]]
        ours.insert(0, "data", "SYNTHETIC" if res.synthetic else "real data")
        pub = published_seed002_table("masks")
        pub = pub[[c for c in pub.columns if not c.endswith((" mean", " halfwidth"))]]
        return [("h", 3, "Published beside ours: seed 002"),
                ("table", ours, ours.attrs["caption"]),
                ("table", pub, f"{pub.attrs['caption']}; {pub.attrs['citation']} (real data, "
                               "not ours)")]
    return []


def course_blocks(root: Path) -> tuple[list, list[str]]:
    """The course report as blocks and its headline lines."""
    from cxrlab.study.report import _missing_blocks, comparison_figure, study_blocks

    plan, prof, loaded = _load_parts(root)
    head, body = [], []
    studies = [r for s, r in loaded if s.kind == "study" and r is not None and len(r.results)]
    for k, (spec, res) in enumerate(loaded, 1):
        body.append(("h", 2, f"Part {k} · {spec.title} — `{spec.name}/`"))
        if spec.kind == "study":
            if res is None or not len(res.results):
                body.append(("p", f"**Not run yet**: no unit of `{spec.name}` is finished. Re-run "
                                  f"`cxrlab run CONFIG --out {root}` to compute it."))
                head.append(f"{spec.title}: not run yet")
                continue
            head.append(f"{spec.title}: {study_headline(res)}")
            body += study_blocks(res, root)[1:]  # its own heading replaced by the part's
            body += _published_blocks(spec, res)
            continue
        part, pres = res
        if pres is None or pres.results.empty:
            body.append(("p", f"**Not run yet**: no unit of `{spec.name}` is finished."))
            head.append(f"{spec.title}: not run yet")
            continue
        head.append(f"{spec.title}: {part.headline(pres.results)}")
        body += part.blocks(pres.results, root / spec.name)
        if pres.missing:
            done = [u for u in pres.grid if u not in pres.missing]
            body += _missing_blocks(done, pres.missing, root)
    blocks = [("h", 1, f"cxrlab course report: {plan.name} (SYNTHETIC data)"),
              ("p", f"Profile `{prof.name}`. {plan.description}".strip()),
              ("p", "**SYNTHETIC**: every number below that is not marked *published* comes from "
                    "the synthetic hospitals of `cxrlab.data.synthetic` (phantoms, not patients): "
                    "it shows how the methods behave under the simulated shifts only and is not "
                    "comparable with the published numbers on real data printed beside it."),
              ("h", 2, "Headline (SYNTHETIC)"), ("ul", head)]
    if (root / "gallery.png").is_file():  # written by `make demo`
        blocks.append(("img", root / "gallery.png", "the synthetic hospitals, with lung and "
                                                    "lesion masks (SYNTHETIC)"))
    png = comparison_figure(studies, root, dpi=80)
    if png is not None:
        blocks.append(("img", png, "AUC macro per study part and evaluation set (SYNTHETIC)"))
    return blocks + body, head


def course_report(root, dpi: int = 80, verbose: bool = True, html: bool = True) -> Path:
    """``report.md`` (+ ``report.html``, PNG figures) of a course folder; prints the headline
    and where the report is. A partial run reports what is finished and names what is not."""
    from cxrlab.study.html import render_html
    from cxrlab.study.report import markdown_of

    root = Path(root).expanduser()
    if not (root / COURSE_FILE).is_file():
        raise MissingInputError(f"{root} holds no course run ({COURSE_FILE} is missing); run "
                                "`cxrlab run configs/course.yaml --out DIR` first")
    blocks, head = course_blocks(root)
    out = atomic_write_text(root / "report.md", markdown_of(blocks, root))
    if html:
        atomic_write_text(root / "report.html", render_html(blocks, "cxrlab course report"))
    if verbose:
        print("\nHeadline (SYNTHETIC data: phantoms, not patients)")
        for line in head:
            print(f"  * {line}")
        print(f"report: {out}" + (f" (and {root / 'report.html'})" if html else ""))
    return Path(out)


def headline(root) -> list[str]:
    """The course report's headline lines (for notebooks)."""
    return course_blocks(Path(root))[1]


__all__ = ["CoursePlan", "PartSpec", "course_report", "headline", "is_course_config",
           "load_course_config", "run_course"]
