"""A study's figures and Markdown reports (``README.md`` of a study, ``cxrlab report DIR``)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cxrlab.errors import MissingInputError
from cxrlab.io import atomic_write_text
from cxrlab.study.config import THRESHOLDS
from cxrlab.study.result import STUDY_KIND, StudyResult, load_study
from cxrlab.study.tables import (markdown_table, published_cohen2020_table,
                                 published_seed000_table, seed000_table, summarise)


def write_study_figures(res: StudyResult, dpi: int = 90) -> dict[str, Path]:
    """The study's PNG figures in ``res.out``: in- vs out-of-domain, fixed vs tuned thresholds,
    14 labels vs shared 7, per-label AUC at the first target."""
    import matplotlib.pyplot as plt

    from cxrlab.study import plots as P
    from cxrlab.style import save_figure

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
    if res.missing:
        parts += [f"**Partial study**: {len(res.missing)} of {len(res.grid)} units are not "
                  "finished yet (other shards still running, or stopped); the tables above cover "
                  "the finished ones. Missing: " + ", ".join(f"`{u}`" for u in res.missing), ""]
    return "\n".join(parts) + "\n"


def _find_studies(root: Path) -> list[Path]:
    found = []
    for f in sorted(root.rglob("metrics.json")):
        if "units" in f.relative_to(root).parts:
            continue
        try:
            if json.loads(f.read_text()).get("kind") == STUDY_KIND:
                found.append(f.parent)
        except ValueError:
            found.append(f.parent)  # truncated: load_study says what is there and what to do
        except (OSError, AttributeError):
            continue
    return found


def _unfinished(root: Path, tabled: list[Path]) -> list[Path]:
    """Study folders whose units started but whose tables were never written."""
    seen = {p.resolve() for p in tabled}
    out = []
    for f in sorted(root.glob("**/units/*/metrics.json")):
        study = f.parent.parent.parent
        if study.resolve() not in seen and study not in out:
            out.append(study)
    return out


def _grid_of(path: Path) -> list[str]:
    """The unit names of a study's grid, from its ``study.json`` (empty when unknown)."""
    try:
        return list(json.loads((path / "study.json").read_text()).get("grid") or [])
    except (OSError, ValueError, AttributeError):
        return []


def _rel(p: Path, root: Path) -> str:
    return str(p.relative_to(root)) if p != root else "."


def _missing_blocks(done: list[str], missing: list[str], path: Path) -> list:
    total = len(done) + len(missing)
    return [("p", f"**Partial study**: {len(done)} of {total} units finished; the tables above "
                  f"cover the finished units only. Missing ({len(missing)}): "
                  + ", ".join(f"`{m}`" for m in missing) + "."),
            ("p", f"To finish it, re-run `cxrlab run CONFIG --out {path}` with the study's config "
                  "(add `--shard I/N` to split the rest; finished units are kept).")]


def study_blocks(s: StudyResult, root: Path) -> list:
    """One study's section of a report: its gap tables, the four metrics at every set, its
    in- vs out-of-domain figure and, when partial, the units still missing."""
    from cxrlab.study.gaps import fair_label_space, gap_table

    blocks = []
    space = fair_label_space(s.results)
    blocks += [("h", 2, f"{s.name} ({s.tag}) — `{_rel(s.out, root)}`"),
               ("p", f"Profile `{s.profile}`; {len(s.units)} of {len(s.grid) or len(s.units)} "
                     f"units finished.")]
    blocks.append(("ul", _caveats(s)))
    for metric in ("auc_macro", "f1_macro"):
        g = gap_table(s.results, metric=metric, label_space=space)
        blocks += [("h", 3, f"{'AUC' if metric == 'auc_macro' else 'F1'} macro: source, "
                            "targets and the gap"),
                   ("table", g, g.attrs["caption"])]
    summ = summarise(s.results)
    for domain in summ["domain"].unique():
        t = seed000_table(summ, label_space=space, domain=domain,
                          threshold="tuned_source_val")
        t.insert(0, "data", s.tag)
        blocks += [("h", 3, f"All four metrics at {domain}"), ("table", t, t.attrs["caption"])]
    own = s.out / "in_vs_out_of_domain.png"
    if own.is_file():
        blocks.append(("img", own, f"{s.name}: in- vs out-of-domain ({s.tag})"))
    if s.missing:
        blocks += _missing_blocks(list(s.units["unit"]) if len(s.units) else [], s.missing,
                                  s.out)
    return blocks


def report_blocks(studies: list[StudyResult], root: Path, figure: Path | None,
                  unfinished: list[Path] = ()) -> list:
    """The cross-study report as blocks (see :mod:`cxrlab.study.html`), Markdown and HTML alike."""
    n = len(studies)
    any_synth = any(s.synthetic for s in studies)
    blocks = [("h", 1, "cxrlab report" + (" (SYNTHETIC data)" if any_synth else "")),
              ("p", f"{n} stud{'y' if n == 1 else 'ies'} with tables"
                    + (f", {len(unfinished)} without tables yet" if unfinished else "")
                    + ". Every number: % as mean ± half-width of its 95 % interval (t over seeds; "
                      "one seed: bootstrap over patients), fair label space, thresholds tuned on "
                      "the source validation split; the gap is source − target, its interval "
                      "treating the two test sets as independent samples.")]
    if any_synth:
        blocks.append(("p", "**SYNTHETIC**: every number of a study marked SYNTHETIC comes from "
                            "the synthetic hospitals (phantoms, not patients) and is not comparable "
                            "with published results on real data."))
    if figure is not None:
        blocks.append(("img", figure, "AUC macro per study and evaluation set"
                                      + (" (SYNTHETIC)" if any_synth else "")))
    for s in studies:
        blocks += study_blocks(s, root)
    for path in unfinished:
        done = sorted(p.parent.name for p in (path / "units").glob("*/metrics.json"))
        grid = _grid_of(path)
        missing = [u for u in grid if u not in done]
        blocks += [("h", 2, f"Unfinished: `{_rel(path, root)}` (no tables yet)"),
                   ("p", f"Finished units ({len(done)}): " + ", ".join(f"`{u}`" for u in done)
                         + ". " + (f"Missing ({len(missing)}): "
                                   + ", ".join(f"`{u}`" for u in missing) + "." if grid else
                                   "Its grid is unknown (no study.json)."))]
        blocks.append(("p", f"Its tables are written when a `cxrlab run CONFIG --out {path}` "
                            "finishes (re-run it with the study's config; finished units are "
                            "kept)."))
    pub = published_seed000_table()
    blocks += [("h", 2, "Published reference numbers (not ours)"),
               ("table", pub, f"{pub.attrs['caption']}; {pub.attrs['citation']}", ".2f")]
    return blocks


def markdown_of(blocks: list, root: Path) -> str:
    """Blocks as GitHub Markdown (figures by their path relative to ``root``, the folder of the
    report)."""
    import os

    parts = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            parts += ["#" * b[1] + " " + b[2], ""]
        elif kind == "p":
            parts += [b[1], ""]
        elif kind == "ul":
            parts += [f"* {x}" for x in b[1]] + [""]
        elif kind == "table":
            if len(b) > 2 and b[2]:
                parts += [f"_{b[2]}_", ""]
            parts += [markdown_table(b[1], b[3] if len(b) > 3 else ".3f"), ""]
        elif kind == "img":
            parts += [f"![{b[2]}]({Path(os.path.relpath(b[1], root)).as_posix()})", ""]
        elif kind == "code":
            parts += ["```", str(b[1]), "```", ""]
    return "\n".join(parts).rstrip() + "\n"


def comparison_figure(studies: list[StudyResult], root: Path, dpi: int = 90) -> Path | None:
    """``root/report_auc.png``: AUC macro of every study per evaluation set (one panel per
    study, :func:`~cxrlab.study.plots.plot_study_comparison`); None when no study has tables."""
    if not studies:
        return None
    import matplotlib.pyplot as plt

    from cxrlab.study import plots as P
    from cxrlab.style import save_figure

    summaries = []
    for s in studies:
        summ = summarise(s.results)
        summ["study"] = f"{s.name} ({s.tag})"
        summaries.append(summ)
    fig = P.plot_study_comparison(pd.concat(summaries, ignore_index=True))
    png = save_figure(fig, root / "report_auc.png", dpi=dpi)
    plt.close(fig)
    return png


def report(results_dir, dpi: int = 90, verbose: bool = True, html: bool = True) -> Path:
    """``cxrlab report DIR``: compare every study found under ``DIR`` (a study folder or a folder
    of them). Writes ``DIR/report.md`` with ``DIR/report_auc.png`` beside it and the same report
    as one self-contained ``DIR/report.html`` (figures embedded); returns the Markdown's path.

    A partial study (other shards still running, a crash) is reported as far as it is finished,
    and its missing units are listed by name; a study with units but no tables yet is listed
    with what it has and what it lacks.
    """
    from cxrlab.study.html import render_html

    root = Path(results_dir).expanduser()
    if not root.is_dir():
        raise MissingInputError(f"{root} is not a folder; pass a study's --out folder or a "
                                "folder holding several")
    if (root / "course.json").is_file():  # a whole course run (cxrlab.study.course_plan)
        from cxrlab.study.course_plan import course_report

        return course_report(root, dpi=dpi, verbose=verbose, html=html)
    found = _find_studies(root)
    studies = [load_study(p) for p in found]
    unfinished = _unfinished(root, found)
    if not studies:
        from cxrlab.study.safety import study_inventory

        if not unfinished:
            raise MissingInputError(f"no study under {root} ({study_inventory(root)}; looked "
                                    "for metrics.json written by `cxrlab run CONFIG --out DIR`)")
    png = comparison_figure(studies, root, dpi)
    blocks = report_blocks(studies, root, png, unfinished)
    out = root / "report.md"
    atomic_write_text(out, markdown_of(blocks, root))
    if html:
        atomic_write_text(root / "report.html", render_html(blocks, "cxrlab report"))
    if verbose:
        extra = f", {len(unfinished)} unfinished" if unfinished else ""
        print(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}{extra}: wrote {out}"
              f"{', ' + png.name if png else ''}{' and report.html' if html else ''}")
    return out
