"""The whole course as one run (issue 13, items 1-2): configs/course.yaml's four parts (shift,
probe / SupCon / fine-tune, masking, attention) on a tiny version of the synthetic hospitals
(tests/helpers/course.py), resumable, shardable, checked before any training, and `make demo`'s
report with every synthetic number labelled SYNTHETIC."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from cxrlab import cli
from cxrlab.errors import CxrlabError, MissingInputError
from cxrlab.study import StudyError
from cxrlab.study.course_plan import load_course_config, run_course
from cxrlab.study.part_kinds import AttentionPart, ShiftPart
from cxrlab.study.parts import PART_KINDS
from tests.helpers.course import COURSE_CONFIG, TINY


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    h = tmp_path_factory.mktemp("course_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CXRLAB_HOME", str(h))
        mp.setenv("CXRLAB_PROFILE", "ci")
        yield h


@pytest.fixture(scope="module")
def reference(home, tmp_path_factory):
    """The tiny course in one uninterrupted run, and its report."""
    out = tmp_path_factory.mktemp("course") / "ref"
    res = run_course(COURSE_CONFIG, out, "ci", overrides=TINY, verbose=False)
    return out, res, (out / "report.md").read_text()


def _strip_images(html: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "IMG", html)


def _statuses(res) -> dict:
    """unit name -> status, over every part of a run_course result."""
    out = {}
    for name, r in res["results"].items():
        if hasattr(r, "units"):  # a study
            out.update({f"{name}/{u}": s for u, s in zip(r.units["unit"], r.units["status"])})
        else:
            out.update({f"{name}/{u}": s for u, s in r.status.items()})
    return out


# ----------------------------------------------------------------------------- the config
def test_course_config_covers_the_four_parts_and_the_profiles_shrink_it():
    plan = load_course_config(COURSE_CONFIG, "ci")
    kinds = {p.name: p.kind for p in plan.parts}
    assert kinds == {"shift": "shift", "probe_supcon": "study", "masking": "study",
                     "attention": "attention"}
    assert {"shift", "attention"} <= set(PART_KINDS)
    parts = {p.name: p for p in plan.parts}
    masking = parts["masking"].settings
    arms = {m["method"] for m in masking["methods"]}
    assert arms == {"bce_finetune", "rrr", "actdiff"}
    masks = {m["hparams"].get("mask") for m in masking["methods"]}
    assert {"lung_periphery", "abnormality"} <= masks
    assert masking["synthetic"]["shortcut"] is True      # from masking_seed002.yaml
    assert masking["synthetic"]["n_per_hospital"] == 2000 and masking["seeds"] == [0, 1, 2]  # ci
    cpu = {p.name: p for p in load_course_config(COURSE_CONFIG, "cpu").parts}
    assert cpu["masking"].settings["synthetic"]["n_per_hospital"] == 5000
    assert parts["probe_supcon"].settings["methods"] == ["bce_probe", "supcon", "bce_finetune"]
    assert parts["probe_supcon"].published == "seed000" and parts["masking"].published == "seed002"


def _write(tmp_path, raw: dict) -> Path:
    p = tmp_path / "course.yaml"
    base = yaml.safe_load(COURSE_CONFIG.read_text())
    base.update(raw)
    p.write_text(yaml.safe_dump(base))
    for f in ("study_ci.yaml", "masking_seed002.yaml"):
        shutil.copy(COURSE_CONFIG.parent / f, tmp_path / f)
    return p


@pytest.mark.parametrize("over, match", [
    ({"partz": []}, r"unknown key\(s\) 'partz' \(did you mean 'parts'\?\)"),
    ({"profiles": {"ci": {"maskng": {"seeds": [0]}}}},
     r"unknown part\(s\) 'maskng' \(did you mean 'masking'\?\)"),
])
def test_top_level_typos_are_named(tmp_path, over, match):
    with pytest.raises(StudyError, match=match):
        load_course_config(_write(tmp_path, over), "ci")


@pytest.mark.parametrize("part, over, err, match", [
    ("masking", {"finetune_epoch": 3}, StudyError, r"part 'masking'.*'finetune_epoch' \(did you "
                                                    r"mean 'finetune_epochs'\?\)"),
    ("probe_supcon", {"methods": ["bce_probe", "supcom"]}, StudyError,
     r"part 'probe_supcon'.*unknown method 'supcom' \(did you mean 'supcon'\?\)"),
    ("probe_supcon", {"backbones": ["tiny_cnnn"]}, StudyError, r"unknown backbone 'tiny_cnnn'"),
    ("shift", {"methods": ["gap", "domian_cnn"]}, StudyError,
     r"part 'shift'.*unknown method 'domian_cnn' \(did you mean 'domain_cnn'\?\)"),
    ("shift", {"backbones": ["resnet5"]}, StudyError, r"unknown backbone 'resnet5'"),
    ("shift", {"epoch": 2}, StudyError, r"part 'shift'.*'epoch' \(did you mean 'epochs'\?\)"),
    ("attention", {"methods": [{"name": "x", "method": "rrrr"}]}, StudyError,
     r"part 'attention'.*unknown method 'rrrr'"),
    ("attention", {"explain_label": "Pneumothrax"}, StudyError, r"unknown label 'Pneumothrax'"),
    ("masking", {"caches": {"synthetic": "/no/such/folder"}}, MissingInputError,
     r"part 'masking'.*data folder .*missing at /no/such/folder"),
    ("probe_supcon", {"kind": "studdy"}, StudyError, r"unknown kind 'studdy' \(did you mean 'study'"),
])
def test_part_errors_name_the_culprit(part, over, err, match):
    with pytest.raises(err, match=match):
        load_course_config(COURSE_CONFIG, "ci", overrides={part: over})


def test_a_real_data_part_without_its_data_fails_naming_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRLAB_HOME", str(tmp_path / "empty_home"))
    shutil.copy(COURSE_CONFIG.parent / "mimic_to_nih.yaml", tmp_path / "mimic_to_nih.yaml")
    cfg = {"name": "c", "parts": [{"name": "real", "kind": "study", "config": "mimic_to_nih.yaml"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(MissingInputError, match=r"part 'real'.*mimic data folder .* missing at "
                                                r".*empty_home"):
        load_course_config(tmp_path / "c.yaml", "ci")


def test_a_bad_last_part_fails_before_the_first_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CXRLAB_HOME", str(tmp_path / "home"))
    cfg = _write(tmp_path, {"parts": yaml.safe_load(COURSE_CONFIG.read_text())["parts"][:1] + [
        {"name": "bad", "kind": "attention", "methods": [{"name": "a", "method": "erm"}]}],
        "profiles": {}})
    out = tmp_path / "out"
    assert cli.main(["run", str(cfg), "--out", str(out), "--profile", "ci"]) == 2
    err = capsys.readouterr().err
    assert "part 'bad'" in err and "unknown method 'erm'" in err, err
    assert not (out / "shift" / "units").exists()  # nothing trained
    with pytest.raises(CxrlabError, match="--seeds applies to one study"):
        cli._cmd_run(cli.build_parser().parse_args(["run", str(COURSE_CONFIG), "--out",
                                                    str(out), "--seeds", "0"]))


def test_part_kinds_check_their_settings():
    from cxrlab.profiles import get_profile

    prof = get_profile("ci")
    with pytest.raises(StudyError, match="target_split must be 'all' or 'test'"):
        ShiftPart("s", {"target_split": "val"}, prof)
    with pytest.raises(StudyError, match="explain_label 'Edema' must be one of labels"):
        AttentionPart("a", {"methods": ["bce_finetune"], "explain_label": "Edema"}, prof)
    grid = [u.name for u in ShiftPart("s", {"backbones": ["tiny_cnn", "tiny_resnet"],
                                             "seeds": [0, 1]}, prof).grid()]
    assert "domain_logreg__features__seed1" in grid and len(grid) == 2 * 2 + 2 * 2 + 2


# ----------------------------------------------------------------------------- running
def test_the_course_runs_every_part_and_report_rebuilds_the_same(reference, home, capsys):
    out, res, md = reference
    assert set(res["results"]) == {"shift", "probe_supcon", "masking", "attention"}
    st = _statuses(res)
    assert st and set(st.values()) == {"computed"}, st
    for f in ("course.json", "report.md", "report.html", "report_auc.png",
              "shift/results.csv", "shift/units/gap__tiny_cnn__seed0/table.csv",
              "attention/units/erm_shortcut__tiny_cnn__seed0/metrics.json",
              "masking/results.csv", "probe_supcon/results.csv"):
        assert (out / f).is_file(), f
    for part in ("shift", "probe_supcon", "masking", "attention"):
        assert f"`{part}/`" in md
    assert "published AUROC % (seed 002" in md and "student project slides" in md
    assert "Cohen et al. 2020" in md
    html = (out / "report.html").read_text()
    assert cli.main(["report", str(out)]) == 0  # `cxrlab report DIR` of a course folder
    assert (out / "report.md").read_text() == md
    assert _strip_images((out / "report.html").read_text()) == _strip_images(html)
    printed = capsys.readouterr().out
    assert "Headline (SYNTHETIC" in printed and f"report: {out / 'report.md'}" in printed


def test_cxrlab_run_of_a_course_config_gives_the_same_report(reference, home, tmp_path, capsys):
    """`cxrlab run COURSE.yaml --out DIR`: the tiny sizes from the config's own profiles section."""
    _, _, ref_md = reference
    cfg = _write(tmp_path, {"profiles": {"ci": TINY}})
    out = tmp_path / "cli"
    assert cli.main(["run", str(cfg), "--out", str(out), "--profile", "ci"]) == 0
    assert (out / "report.md").read_text() == ref_md
    assert "Headline (SYNTHETIC" in capsys.readouterr().out


def test_a_killed_course_reruns_only_the_rest(reference, home, tmp_path, monkeypatch):
    from cxrlab.study import runner

    ref_out, ref_res, ref_md = reference
    out = tmp_path / "killed"
    real = runner._Runner.run_unit
    victim = "rrr_periphery__tiny_cnn__seed0"  # the masking part's second unit

    def dies(self, unit):
        if unit.name == victim:
            raise KeyboardInterrupt("killed")
        return real(self, unit)

    monkeypatch.setattr(runner._Runner, "run_unit", dies)
    with pytest.raises(KeyboardInterrupt):
        run_course(COURSE_CONFIG, out, "ci", overrides=TINY, verbose=False)
    assert not (out / "report.md").exists()
    monkeypatch.setattr(runner._Runner, "run_unit", real)
    res = run_course(COURSE_CONFIG, out, "ci", overrides=TINY, verbose=False)
    st = _statuses(res)
    computed = sorted(u for u, s in st.items() if s == "computed")
    assert computed == sorted([f"masking/{victim}", "attention/erm_clean__tiny_cnn__seed0",
                               "attention/erm_shortcut__tiny_cnn__seed0"]), st
    assert set(st) == set(_statuses(ref_res))
    assert (out / "report.md").read_text() == ref_md
    assert _strip_images((out / "report.html").read_text()) == _strip_images(
        (ref_out / "report.html").read_text())


def test_two_shards_give_the_uninterrupted_report(reference, home, tmp_path):
    _, ref_res, ref_md = reference
    out = tmp_path / "sharded"
    first = run_course(COURSE_CONFIG, out, "ci", shard="1/2", overrides=TINY, verbose=False)
    md1 = (out / "report.md").read_text()
    assert "Partial study" in md1 or "Missing" in md1  # shard 1 alone: the rest is listed
    second = run_course(COURSE_CONFIG, out, "ci", shard="2/2", overrides=TINY, verbose=False)
    done1 = {u for u, s in _statuses(first).items() if s == "computed"}
    done2 = {u for u, s in _statuses(second).items() if s == "computed"}
    assert done1 and done2 and not done1 & done2
    assert done1 | done2 == set(_statuses(ref_res))
    assert (out / "report.md").read_text() == ref_md
    with pytest.raises(StudyError, match="different configuration"):  # a shard of another config
        run_course(COURSE_CONFIG, out, "ci", shard="1/2",
                   overrides={**TINY, "shift": {**TINY["shift"], "epochs": 2}}, verbose=False)


# ----------------------------------------------------------------------------- make demo
def _tables(md: str):
    """(caption, header cells, rows) of every Markdown table of a report."""
    lines = md.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):
            cap = next((lines[j] for j in range(i - 1, max(i - 4, -1), -1) if lines[j].strip()), "")
            header = [c.strip() for c in line.strip("|").split("|")]
            rows, j = [], i + 2
            while j < len(lines) and lines[j].startswith("|"):
                rows.append([c.strip() for c in lines[j].strip("|").split("|")])
                j += 1
            out.append((cap, header, rows))
    return out


def test_demo_writes_a_report_with_every_synthetic_number_labelled(home, tmp_path, capsys,
                                                                    monkeypatch):
    from cxrlab import demo

    monkeypatch.setenv("CXRLAB_N_PER_HOSPITAL", "60")  # the gallery's cache: small
    out = tmp_path / "demo_out"
    r = demo.run_demo(out, "ci", overrides=TINY)
    md = (out / "report.md").read_text()
    assert r["report"] == out / "report.md" and (out / "report.html").is_file()
    assert md.startswith("# cxrlab course report: course (SYNTHETIC data)")
    tables = _tables(md)
    assert len(tables) >= 10
    for cap, header, rows in tables:
        if cap.lstrip("_").startswith("published"):
            assert header[0] != "data" and "SYNTHETIC" not in " ".join(sum(rows, [])), cap
            continue
        assert header[0] == "data", (cap, header)  # ours: a data column on every row ...
        assert rows and all(row[0] == "SYNTHETIC" for row in rows), (cap, rows)
        assert "SYNTHETIC" in cap or cap.startswith("_ours"), cap  # ... and a caption saying so
    for png in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / png).is_file(), png
    assert "gallery.png" in md
    printed = capsys.readouterr().out
    assert "Headline (SYNTHETIC data" in printed and "report.html" in printed
