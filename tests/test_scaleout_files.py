"""The files instructors copy (issue 13): the SLURM example, the CI workflow, and BENCHMARKS.md
stay in step with the code. The SLURM script is run with stand-ins for `sbatch` and `cxrlab`
that record their arguments, and every cxrlab command line it issues is parsed by the real
CLI parser; the workflow is valid YAML that runs `make test`; every bench key is documented."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from cxrlab.cli import build_parser
from cxrlab.study.shards import parse_shard
from tests.helpers import REPO_ROOT

SBATCH = REPO_ROOT / "scripts" / "slurm" / "run_study.sbatch"
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "test.yml"

_RECORDER = """#!/bin/sh
{ printf '%s' "$(basename "$0")"; for a in "$@"; do printf '\\t%s' "$a"; done; echo; } >> "$LOG"
case "$(basename "$0")" in sbatch) echo 4242 ;; esac
"""


@pytest.fixture
def stand_ins(tmp_path):
    """A bin/ folder whose `sbatch`, `torchrun` and `cxrlab` record their argument lists."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name in ("sbatch", "torchrun", "cxrlab"):
        (bin_ / name).write_text(_RECORDER)
        (bin_ / name).chmod(0o755)
    log = tmp_path / "calls.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{bin_}{os.pathsep}{env['PATH']}", LOG=str(log))
    return env, log


def _calls(log) -> list[list[str]]:
    """One argument list per call (the stand-ins separate arguments with tabs)."""
    return [line.split("\t") for line in log.read_text().splitlines()]


def test_sbatch_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SBATCH)]).returncode == 0


def test_sbatch_submits_an_array_and_a_dependent_report(stand_ins):
    env, log = stand_ins
    p = subprocess.run(["bash", str(SBATCH), "configs/study_ci.yaml", "results/ci", "3"],
                       env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    array, rep = _calls(log)
    assert array[0] == rep[0] == "sbatch"
    assert "--array=1-3" in array and array[-3:] == ["configs/study_ci.yaml", "results/ci", "3"]
    assert "--dependency=afterany:4242" in rep
    wrap = next(a for a in rep if a.startswith("--wrap="))[len("--wrap="):]
    argv = shlex.split(wrap)
    assert argv[0] == "cxrlab"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "report" and args.results_dir == "results/ci"


@pytest.mark.parametrize("gpus", ["1", "4"])
def test_each_array_task_runs_its_shard_with_the_real_parser(stand_ins, gpus):
    env, log = stand_ins
    env = dict(env, SLURM_ARRAY_TASK_ID="2", SLURM_ARRAY_TASK_COUNT="3", GPUS_PER_TASK=gpus)
    p = subprocess.run(["bash", str(SBATCH), "configs/study_ci.yaml", "results/ci", "3"],
                       env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    (call,) = _calls(log)
    if gpus == "1":
        assert call[0] == "cxrlab"
        argv = call[1:]
    else:  # torchrun --standalone --nproc_per_node=4 -m cxrlab run ...
        assert call[0] == "torchrun" and f"--nproc_per_node={gpus}" in call
        argv = call[call.index("cxrlab") + 1:]
    args = build_parser().parse_args(argv)
    assert (args.command, args.config, args.out) == ("run", "configs/study_ci.yaml", "results/ci")
    assert parse_shard(args.shard).label == "2/3"


def test_readme_command_lines_parse():
    """Every `cxrlab run|report ...` line of the README's bash blocks parses (the scale-out
    section's shards, report and torchrun lines among them)."""
    text = (REPO_ROOT / "README.md").read_text()
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S))
    lines = re.findall(r"^\s*(?:\w+=\S+\s+)*(?:torchrun [^\n]*?-m )?(cxrlab (?:run|report) [^\n#]+)",
                       blocks, re.M)
    assert len(lines) >= 5 and any("--shard 2/4" in x for x in lines), lines
    for line in lines:
        argv = shlex.split(line.replace("$SLURM_ARRAY_TASK_ID", "1")
                           .replace("$SLURM_ARRAY_TASK_COUNT", "4"))
        build_parser().parse_args(argv[1:])


def test_ci_workflow_is_valid_and_runs_make_test():
    wf = yaml.safe_load(WORKFLOW.read_text())
    on = wf.get("on", wf.get(True))          # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(on)
    (job,) = wf["jobs"].values()
    assert job["runs-on"].startswith("ubuntu")
    assert job["env"]["CXRLAB_PROFILE"] == "ci"
    setup = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/setup-python"))
    assert setup["with"]["python-version"] == "3.11" and setup["with"]["cache"] == "pip"
    runs = [s["run"] for s in job["steps"] if "run" in s]
    assert any(re.match(r"\s*make test(\s|$)", r) for r in runs), runs
    cpu = " ".join(runs)
    assert "whl/cpu" in cpu                   # the CPU build of PyTorch, not the CUDA one
    readme = (REPO_ROOT / "README.md").read_text()
    assert "## Running the course's tests in your own CI" in readme
    assert ".github/workflows/test.yml" in readme


def test_every_bench_key_is_in_benchmarks_md():
    from cxrlab.bench import GROUPS, all_keys

    doc = (REPO_ROOT / "BENCHMARKS.md").read_text()
    keys = all_keys()
    assert set(keys) == set(GROUPS)
    missing = [k for ks in keys.values() for k in ks if f"`{k}`" not in doc]
    assert not missing, f"BENCHMARKS.md does not document {missing}"


def test_a_group_reports_only_its_declared_keys():
    from cxrlab.bench import synth

    assert set(synth.run(quick=True)) <= set(synth.KEYS)
