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


def report(results_dir, dpi: int = 90, verbose: bool = True) -> Path:
    """``cxrlab report DIR``: compare every study found under ``DIR`` (a study folder or a folder
    of them). Writes ``DIR/report.md`` and ``DIR/report_auc.png``; returns the report's path."""
    import matplotlib.pyplot as plt

    from cxrlab.study import plots as P
    from cxrlab.style import save_figure

    root = Path(results_dir).expanduser()
    if not root.is_dir():
        raise MissingInputError(f"{root} is not a folder; pass a study's --out folder or a "
                                "folder holding several")
    studies = [load_study(p) for p in _find_studies(root)]
    if not studies:
        from cxrlab.study.safety import study_inventory

        started = [p.parent.parent.parent for p in root.glob("**/units/*/metrics.json")]
        if started:  # a study killed before its tables were written
            where = started[0]
            raise MissingInputError(
                f"{where} holds an unfinished study ({study_inventory(where)}): it was stopped "
                f"before its tables were written; re-run `cxrlab run CONFIG --out {where}` with "
                "its config (finished units are kept), then `cxrlab report` again")
        raise MissingInputError(f"no study under {root} ({study_inventory(root)}; looked for "
                                "metrics.json written by `cxrlab run CONFIG --out DIR`)")
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
