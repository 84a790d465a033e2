"""Hardening, configuration and the command line (issue 14): environment variables and flags
name themselves, config values are checked for type and range at load time, the CLI prints one
line for every error it expects (exit 2), Ctrl-C asks to re-run (130), a bug keeps its
traceback, a full disk is found before writing, and finished results are never replaced by
fewer without --overwrite."""
from __future__ import annotations

import errno
import json
import math

import pytest
import yaml

from cxrlab.cli import build_parser
from cxrlab.cli import main as cli_main
from cxrlab.profiles import get_profile
from cxrlab.errors import CxrlabError
from cxrlab.study import StudyError, load_study_config

from tests.helpers.bad_inputs import BadInput

# ----------------------------------------------------------------------------- cases
ENV_CASES = [
    BadInput("environment", "CLI", "CXRLAB_IMAGE_SIZE=abc", "exit 2",
             "environment variable CXRLAB_IMAGE_SIZE='abc'"),
    BadInput("environment", "CLI", "CXRLAB_SEEDS=0,x", "exit 2",
             "environment variable CXRLAB_SEEDS='0,x'"),
    BadInput("environment", "CLI", "CXRLAB_EPOCHS=abc", "exit 2",
             "environment variable CXRLAB_EPOCHS='abc'"),
    BadInput("environment", "CLI", "CXRLAB_LR=nan", "exit 2", "lr must be a finite number > 0"),
    BadInput("environment", "CLI", "CXRLAB_LR=-0.1", "exit 2", "lr must be a finite number > 0"),
    BadInput("environment", "CLI", "CXRLAB_PRETRAINED=maybe", "exit 2", "wants true/false"),
    BadInput("environment", "CLI", "CXRLAB_BOOTSTRAP=1", "exit 2",
             "bootstrap must be 0 (no intervals) or >= 2"),
    BadInput("environment", "CLI", "CXRLAB_IMAGE_SIZE=16", "exit 2",
             "image_size must be at least 32 px"),
    BadInput("environment", "CLI", "CXRLAB_PROFILE=nope", "exit 2", "unknown profile 'nope'"),
]
FLAG_CASES = [
    BadInput("flags", "CLI", "cxrlab run CONFIG --seeds 0,x", "exit 2",
             "--seeds='0,x': expected comma-separated integers"),
    BadInput("flags", "CLI", "cxrlab run CONFIG --seeds ,", "exit 2",
             "expected comma-separated integers"),
    BadInput("flags", "CLI", "cxrlab run configs/ (a folder)", "exit 2",
             "is a folder; pass a study config YAML file"),
    BadInput("flags", "CLI", "cxrlab run missing.yaml", "exit 2", "does not exist"),
    BadInput("flags", "CLI", "cxrlab report /no/such/folder", "exit 2", "is not a folder"),
    BadInput("flags", "CLI", "cxrlab run CONFIG --shard 0/2", "exit 2",
             "--shard '0/2': out of range; --shard wants I/N with 1 <= I <= N"),
    BadInput("flags", "CLI", "cxrlab run CONFIG --shard 3/2", "exit 2",
             "--shard '3/2': out of range"),
    BadInput("flags", "CLI", "cxrlab run CONFIG --shard a/b", "exit 2",
             "--shard 'a/b': not two integers"),
]
PROFILE_CASES = [
    BadInput("profile", "API", "get_profile(lr=-1)", "UsageError", "lr must be a finite number"),
    BadInput("profile", "API", "get_profile(lr=float('nan'))", "UsageError",
             "lr must be a finite number"),
    BadInput("profile", "API", "get_profile(epochs=True)", "UsageError", "wants a number"),
    BadInput("profile", "API", "get_profile(epochs=2.5)", "UsageError", "wants an integer"),
    BadInput("profile", "API", "get_profile(bootstrap=-5)", "UsageError", "bootstrap must be"),
    BadInput("profile", "API", "get_profile(seeds='')", "UsageError", "seeds must be one or more"),
]
STUDY_CASES = [  # (YAML text of one setting) -> message
    BadInput("study config", "CLI", "bootstrap: many", "exit 2", "bootstrap must be an integer"),
    BadInput("study config", "API", "probe_lr: fast", "StudyError", "probe_lr must be a number > 0"),
    BadInput("study config", "API", "probe_lr: 0", "StudyError", "probe_lr must be a number > 0"),
    BadInput("study config", "API", "lr: -0.1", "StudyError", "lr must be a number > 0"),
    BadInput("study config", "API", "lr: .nan", "StudyError", "lr must be a number > 0"),
    BadInput("study config", "API", "weight_decay: -5", "StudyError",
             "weight_decay must be a number >= 0"),
    BadInput("study config", "API", "probe_weight_decay: lots", "StudyError",
             "probe_weight_decay must be a number >= 0"),
    BadInput("study config", "API", "epochs: true", "StudyError",
             "epochs must be a positive integer"),
    BadInput("study config", "API", "finetune_epochs: 0", "StudyError",
             "finetune_epochs must be a positive integer"),
    BadInput("study config", "API", "embed_batch_size: 0", "StudyError",
             "embed_batch_size must be a positive integer"),
    BadInput("study config", "API", "probe_pos_weight: bogus", "StudyError",
             "probe_pos_weight must be 'balanced'"),
    BadInput("study config", "CLI", "pretrained: \"no\"", "exit 2",
             "pretrained must be true or false"),
    BadInput("study config", "API", "name: 3", "StudyError", "name must be text"),
    BadInput("study config", "API", "bootstrap: 1", "StudyError", "bootstrap must be 0"),
    BadInput("study config", "API", "methods: [dance]", "StudyError", "unknown method 'dance'"),
    BadInput("study config", "API", "seeds: [-1]", "StudyError", "seeds must be non-negative"),
    BadInput("study config", "API", "target_split: everything", "StudyError",
             "target_split must be"),
    BadInput("study config", "API", "epoch: 3", "StudyError", "did you mean 'epochs'"),
    BadInput("study config", "API", "mask_source_labels: [Flu]", "StudyError",
             "unknown label(s) ['Flu']"),
    BadInput("study config", "CLI", "backbones: [resnt50]", "exit 2",
             "unknown backbone 'resnt50' (did you mean 'resnet50'?)"),
    BadInput("study config", "API", "weights: {resnet5: w.pth}", "StudyError",
             "weights: unknown backbone 'resnet5'"),
    BadInput("study config", "CLI", "weights: {tiny_cnn: /no/such/w.pth}", "exit 2",
             "weights for 'tiny_cnn': /no/such/w.pth does not exist"),
    BadInput("study config", "CLI", "caches: {synthetik: /tmp}", "exit 2",
             "caches: unknown name(s) 'synthetik' (did you mean 'synthetic'?)"),
    BadInput("study config", "CLI", "caches: {synthetic: /no/such/cache}", "exit 2",
             "the synthetic cache for 'source' is missing at /no/such/cache"),
]
FAULT_CASES = [
    BadInput("faults", "CLI", "diverging run (lr: 1e30): NonFiniteLossError", "exit 2, one line",
             "became"),
    BadInput("faults", "CLI", "Ctrl-C during cxrlab run", "exit 130",
             "interrupted; re-run the same command to resume"),
    BadInput("faults", "CLI", "disk full while writing (ENOSPC)", "exit 2, one line",
             "no space left on the device"),
    BadInput("faults", "CLI", "output folder not writable (EACCES)", "exit 2, one line",
             "permission denied; choose a folder you can write"),
    BadInput("faults", "CLI", "read-only file system (EROFS)", "exit 2, one line",
             "read-only file system; choose a writable folder"),
    BadInput("faults", "CLI", "a file vanished (ENOENT)", "exit 2, one line",
             "no such file or folder"),
    BadInput("faults", "CLI", "cxrlab data synth onto a 5 MB file system", "exit 2, nothing "
             "allocated", "but only"),
    BadInput("faults", "CLI", "a real bug (KeyError inside the package)",
             "traceback (not swallowed)", "(the exception propagates)"),
]
STUDY_RUN_CASES = [
    BadInput("study results", "CLI", "cxrlab run into a folder holding a bigger study "
             "(other methods and name)", "exit 2, nothing rewritten",
             "pass --overwrite to replace them"),
    BadInput("study data", "API", "mask_source_labels: every label of the label space",
             "StudyError", "no training label is left at the source"),
]
CASES = ENV_CASES + FLAG_CASES + PROFILE_CASES + STUDY_CASES + FAULT_CASES + STUDY_RUN_CASES


def _one_line_error(capsys, says: str) -> str:
    err = capsys.readouterr().err
    assert says in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


# ----------------------------------------------------------------------------- environment
@pytest.mark.parametrize("case", ENV_CASES, ids=lambda c: c.given)
def test_bad_environment_variable_is_named(case, monkeypatch, capsys):
    key, _, value = case.given.partition("=")
    monkeypatch.setenv(key, value)
    assert cli_main(["info"]) == 2
    _one_line_error(capsys, case.says)


@pytest.mark.parametrize("case", FLAG_CASES, ids=lambda c: c.given)
def test_bad_flags_and_paths(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\n")
    (tmp_path / "configs").mkdir()
    argv = {
        "cxrlab run CONFIG --seeds 0,x": ["run", str(cfg), "--out", "o", "--seeds", "0,x"],
        "cxrlab run CONFIG --seeds ,": ["run", str(cfg), "--out", "o", "--seeds", ","],
        "cxrlab run configs/ (a folder)": ["run", "configs", "--out", "o"],
        "cxrlab run missing.yaml": ["run", "missing.yaml", "--out", "o"],
        "cxrlab report /no/such/folder": ["report", str(tmp_path / "no" / "such")],
        **{f"cxrlab run CONFIG --shard {x}": ["run", str(cfg), "--out", "o", "--shard", x]
           for x in ("0/2", "3/2", "a/b")},
    }[case.given]
    assert cli_main(argv) == 2
    _one_line_error(capsys, case.says)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", PROFILE_CASES, ids=lambda c: c.given)
def test_bad_profile_overrides(case):
    kw = eval(case.given[len("get_profile("):-1].join(["dict(", ")"]))  # noqa: S307 - our own text
    with pytest.raises(CxrlabError) as e:
        get_profile("ci", **kw)
    assert case.says in str(e.value) and isinstance(e.value, ValueError)


def test_good_profile_overrides_still_work(monkeypatch):
    monkeypatch.setenv("CXRLAB_SEEDS", "0, 1,2")
    monkeypatch.setenv("CXRLAB_LR", "3e-4")
    p = get_profile("ci", epochs=2.0)
    assert p.seeds == (0, 1, 2) and math.isclose(p.lr, 3e-4) and p.epochs == 2


# ----------------------------------------------------------------------------- study config
@pytest.mark.parametrize("case", STUDY_CASES, ids=lambda c: c.given)
def test_bad_study_config_value_is_refused_at_load(case, tmp_path, capsys):
    setting = yaml.safe_load(case.given)
    if case.entry == "CLI":
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"name: bad\n{case.given}\n")
        assert cli_main(["run", str(cfg), "--out", str(tmp_path / "o"), "--profile", "ci"]) == 2
        _one_line_error(capsys, case.says)
        assert not (tmp_path / "o" / "units").exists()   # refused before any data or training
    else:
        with pytest.raises(StudyError) as e:
            load_study_config({"name": "bad", **setting} if "name" not in setting else setting)
        assert case.says in str(e.value)


def test_pretrained_no_is_not_true():
    with pytest.raises(StudyError, match="unquoted"):
        load_study_config({"pretrained": "no"})
    assert load_study_config({"pretrained": False}).pretrained is False
    assert load_study_config({"probe_lr": 0.01}).probe_lr == 0.01


# ----------------------------------------------------------------------------- faults
def _fail_with(monkeypatch, exc):
    import cxrlab.study

    def boom(*a, **k):
        raise exc
    monkeypatch.setattr(cxrlab.study, "run_study", boom)


@pytest.mark.parametrize("case", FAULT_CASES[:6], ids=lambda c: c.given)
def test_faults_print_one_line(case, tmp_path, capsys, monkeypatch):
    from cxrlab.engine import NonFiniteLossError
    from cxrlab.engine.guards import non_finite_message

    path = str(tmp_path / "out" / "results.csv")
    exc, rc = {
        FAULT_CASES[0].given: (NonFiniteLossError(non_finite_message(float("nan"), 0, 3, 3)), 2),
        FAULT_CASES[1].given: (KeyboardInterrupt(), 130),
        FAULT_CASES[2].given: (OSError(errno.ENOSPC, "No space left on device", path), 2),
        FAULT_CASES[3].given: (PermissionError(errno.EACCES, "Permission denied", path), 2),
        FAULT_CASES[4].given: (OSError(errno.EROFS, "Read-only file system", path), 2),
        FAULT_CASES[5].given: (FileNotFoundError(errno.ENOENT, "No such file", path), 2),
    }[case.given]
    _fail_with(monkeypatch, exc)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\n")
    assert cli_main(["run", str(cfg), "--out", str(tmp_path / "out")]) == rc
    err = _one_line_error(capsys, case.says)
    if isinstance(exc, OSError):
        assert path in err                                   # names the path


def test_a_real_bug_keeps_its_traceback(tmp_path, monkeypatch):
    _fail_with(monkeypatch, KeyError("x"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\n")
    with pytest.raises(KeyError):
        cli_main(["run", str(cfg), "--out", str(tmp_path / "out")])


def test_full_disk_is_found_before_allocating(tmp_path, capsys, monkeypatch):
    import shutil
    from collections import namedtuple

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(5 << 20, 5 << 20, 5 << 20))
    out = tmp_path / "synth"
    rc = cli_main(["data", "synth", "--out", str(out), "--n", "400", "--size", "64"])
    assert rc == 2
    _one_line_error(capsys, FAULT_CASES[6].says)
    assert not (out / "images.npy").exists()


# ----------------------------------------------------------------------------- study runs
def _tiny_config(tmp_path, **extra) -> dict:
    return {"name": "tiny", "methods": ["bce_probe"], "backbones": ["tiny_cnn"], "seeds": [0],
            "synthetic": {"n_per_hospital": 100, "image_size": 32}, "target_split": "all",
            **extra}


def test_results_are_not_replaced_by_fewer_without_overwrite(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CXRLAB_HOME", str(tmp_path / "home"))
    out = tmp_path / "study"
    out.mkdir()
    units = [{"unit": f"{m}-tiny_cnn-seed{s:03d}"} for m in ("bce_probe", "supcon")
             for s in range(3)]
    before = json.dumps({"kind": "cxrlab-study", "name": "big", "units": units})
    (out / "metrics.json").write_text(before)
    (out / "results.csv").write_text("a\n1\n")
    cfg = tmp_path / "small.yaml"
    cfg.write_text(yaml.safe_dump(_tiny_config(tmp_path)))
    rc = cli_main(["run", str(cfg), "--out", str(out), "--profile", "ci"])
    err = _one_line_error(capsys, STUDY_RUN_CASES[0].says)
    assert rc == 2 and "would drop 6 of them" in err
    assert (out / "metrics.json").read_text() == before and not (out / "units").exists()
    args = build_parser().parse_args(["run", str(cfg), "--out", str(out), "--overwrite"])
    assert args.overwrite is True                          # the flag the message names exists
    from cxrlab.study.safety import check_not_fewer

    check_not_fewer(out, ["bce_probe-tiny_cnn-seed000"], "tiny", overwrite=True)  # allowed


def test_masking_every_source_label_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRLAB_HOME", str(tmp_path / "home"))
    from cxrlab.labels import get_label_space
    from cxrlab.study import load_study_data

    cfg = load_study_config(_tiny_config(tmp_path, label_spaces=["shared7"],
                                         mask_source_labels=list(get_label_space("shared7"))))
    with pytest.raises(StudyError) as e:
        load_study_data(cfg, get_profile("ci"), verbose=False)
    assert STUDY_RUN_CASES[1].says in str(e.value) and "mask fewer labels" in str(e.value)
