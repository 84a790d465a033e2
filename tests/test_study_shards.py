"""Scale-out and reports (issue 13): `cxrlab run --shard I/N` from several processes into one
folder, claims and stale locks, a killed study re-run, and `cxrlab report` (Markdown + a
self-contained HTML, the gap table, partial studies listing their missing units).

One tiny study (tests/helpers/studies.py: 4 units of a few seconds each) run as child
processes: once whole (the reference), as two concurrent shards, and killed part-way.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time

import numpy as np
import pandas as pd
import pytest

from cxrlab import cli
from cxrlab.errors import UsageError
from cxrlab.study import StudyError, load_study
from cxrlab.study import shards as SH
from cxrlab.study.gaps import gap_table
from cxrlab.study.runner import _Runner
from tests.helpers import REPO_ROOT, subprocess_env
from tests.helpers.studies import UNITS, write_tiny_study


def _cxrlab(*args) -> list[str]:
    import sys

    return [sys.executable, "-m", "cxrlab", *map(str, args)]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_tiny_study(root)
    return root


@pytest.fixture(scope="module")
def env(root):
    return subprocess_env(CXRLAB_HOME=str(root / "home"), CXRLAB_PROFILE="ci",
                          MPLBACKEND="Agg")


def _report(folder) -> tuple[str, str]:
    assert cli.main(["report", str(folder)]) == 0
    return (folder / "report.md").read_text(), (folder / "report.html").read_text()


@pytest.fixture(scope="module")
def reference(root, env):
    """The whole study in one process, and its report."""
    out = root / "ref"
    p = subprocess.run(_cxrlab("run", root / "tiny.yaml", "--out", out, "--profile", "ci"),
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CXRLAB_HOME", str(root / "home"))
        md, html = _report(out)
    return out, md, html


def _without_images(html: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "IMG", html)


# ----------------------------------------------------------------------------- partition
def test_parse_shard_and_partition():
    assert SH.parse_shard(None) == SH.Shard(1, 1) and SH.parse_shard("2/4") == SH.Shard(2, 4)
    for bad in ("0/2", "3/2", "a/b", "1", "1/0", "-1/2", "1/2/3"):
        with pytest.raises(UsageError, match="--shard wants I/N with 1 <= I <= N"):
            SH.parse_shard(bad)
    items = list(range(11))
    parts = [SH.Shard(i, 3).select(items) for i in (1, 2, 3)]
    assert sorted(sum(parts, [])) == items                    # every unit exactly once
    assert parts[0] == [0, 3, 6, 9] and parts[2] == [2, 5, 8]  # round robin, runner's order
    assert SH.Shard(1, 1).select(items) == items


# ----------------------------------------------------------------------------- claims
def test_claims_and_the_stale_lock_rule(tmp_path, monkeypatch):
    lock = tmp_path / "units" / "u.lock"
    assert SH.try_claim(lock) == (True, {})
    assert SH.lock_state(lock)[0] == "mine" and SH.try_claim(lock)[0]   # re-entrant
    SH.release(lock)
    assert not lock.exists()
    host = socket.gethostname()
    # a live process on this host (our parent) holds it: held, not taken
    lock.write_text(json.dumps({"host": host, "pid": os.getppid(), "since": time.time()}))
    ok, info = SH.try_claim(lock)
    assert not ok and info["pid"] == os.getppid() and SH.lock_state(lock)[0] == "held"
    SH.release(lock)
    assert lock.exists()                                    # not ours: left alone
    # its process died (a crash, a killed job): stale on the same host, taken over at once
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock.write_text(json.dumps({"host": host, "pid": dead.pid, "since": time.time()}))
    assert SH.lock_state(lock)[0] == "stale"
    assert SH.try_claim(lock)[0] and json.loads(lock.read_text())["pid"] == os.getpid()
    # another host: only the heartbeat tells; stale after CXRLAB_LOCK_STALE_S without one
    lock.write_text(json.dumps({"host": "node-17", "pid": 1, "since": 0}))
    assert SH.lock_state(lock)[0] == "held"
    old = time.time() - SH.DEFAULT_STALE_S - 5
    os.utime(lock, (old, old))
    assert SH.lock_state(lock)[0] == "stale" and SH.try_claim(lock)[0]
    monkeypatch.setenv("CXRLAB_LOCK_STALE_S", "soon")
    with pytest.raises(UsageError, match="CXRLAB_LOCK_STALE_S='soon'"):
        SH.stale_after_s()


def test_heartbeat_keeps_a_lock_fresh(tmp_path):
    lock = tmp_path / "u.lock"
    SH.try_claim(lock)
    os.utime(lock, (0, 0))
    with SH.heartbeat(lock, every_s=0.05):
        time.sleep(0.3)
    assert time.time() - lock.stat().st_mtime < 5


def test_torchrun_ranks_share_one_claim(tmp_path, monkeypatch):
    lock = tmp_path / "u.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(),
                                "job": "job-7", "since": time.time()}))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-7")
    assert SH.try_claim(lock)[0]            # rank 1 of the job that holds it: its claim too
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-8")
    assert not SH.try_claim(lock)[0]        # another job waits


# ----------------------------------------------------------------------------- shards
def test_two_shards_as_processes_equal_one_process(root, env, reference):
    ref, ref_md, ref_html = reference
    out = root / "sharded"
    procs = [subprocess.Popen(_cxrlab("run", root / "tiny.yaml", "--out", out, "--profile", "ci",
                                      "--shard", f"{i}/2"),
                              cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0, se
    computed = [sorted(re.findall(r"^(\S+)\s+computed", so, re.M)) for so, _ in outs]
    assert computed == [sorted(UNITS[0::2]), sorted(UNITS[1::2])]   # each unit trained once
    assert not list((out / "units").glob("*.lock")) and not (out / ".study.lock").exists()
    assert (out / "study.json").read_text() == (ref / "study.json").read_text()
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["missing_units"] == [] and [u["unit"] for u in meta["units"]] == UNITS
    a, b = pd.read_csv(ref / "results.csv"), pd.read_csv(out / "results.csv")
    pd.testing.assert_frame_equal(a, b)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CXRLAB_HOME", str(root / "home"))
        md, html = _report(out)
    assert md == ref_md
    assert _without_images(html) == _without_images(ref_html)


def test_a_shard_with_another_config_is_refused(root, reference, capsys, monkeypatch):
    ref, _, _ = reference
    monkeypatch.setenv("CXRLAB_HOME", str(root / "home"))
    other = write_tiny_study(root, probe_epochs=3)
    before = sorted(p.name for p in (ref / "units").iterdir())
    called = []
    monkeypatch.setattr(_Runner, "run_unit", lambda self, u: called.append(u))
    assert cli.main(["run", str(other), "--out", str(ref), "--profile", "ci",
                     "--shard", "2/2"]) == 2
    err = capsys.readouterr().err
    assert "was started with a different configuration" in err and "probe_epochs: 2 -> 3" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not called and sorted(p.name for p in (ref / "units").iterdir()) == before


def test_a_killed_study_reruns_only_the_rest(root, env, reference, monkeypatch, capsys):
    """Killed (os._exit) while its second unit trains, lock left behind; the re-run trains
    the three other units only (the dead process's lock is stale) and reports the same."""
    ref, ref_md, ref_html = reference
    out = root / "killed"
    from tests.helpers import script_command

    p = subprocess.run(script_command("study_dies", root / "tiny.yaml", out, "2"),
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 137 and f"DYING {UNITS[1]}" in p.stdout, p.stderr
    assert (out / "units" / f"{UNITS[1]}.lock").exists()          # the dead claim
    assert [q.parent.name for q in (out / "units").glob("*/metrics.json")] == [UNITS[0]]
    assert cli.main(["report", str(out)]) == 0                    # no tables yet: lists them
    md = (out / "report.md").read_text()
    assert f"Finished units (1): `{UNITS[0]}`" in md
    assert all(f"`{u}`" in md.split("Missing (3):")[1] for u in UNITS[1:])
    monkeypatch.setenv("CXRLAB_HOME", str(root / "home"))
    calls = []
    real = _Runner.run_unit

    def spy(self, unit):
        calls.append(unit.name)
        return real(self, unit)

    monkeypatch.setattr(_Runner, "run_unit", spy)
    assert cli.main(["run", str(root / "tiny.yaml"), "--out", str(out), "--profile", "ci"]) == 0
    assert calls == UNITS[1:]
    monkeypatch.undo()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CXRLAB_HOME", str(root / "home"))
        md, html = _report(out)
    assert md == ref_md and _without_images(html) == _without_images(ref_html)


@pytest.mark.parametrize("holder", ["finishes", "dies"])
def test_a_unit_held_elsewhere_is_waited_for(holder, root, reference, tmp_path, monkeypatch,
                                             capsys):
    """A unit of this share that another host holds: the run finishes its other units, then
    waits; it ends when the holder stores the unit, or takes the unit over once the holder's
    heartbeat has stopped for CXRLAB_LOCK_STALE_S (a requeued SLURM task on another node)."""
    import shutil
    import threading

    ref = reference[0]
    out = tmp_path / "study"
    shutil.copytree(ref, out)
    target = UNITS[1]
    shutil.rmtree(out / "units" / target)
    lock = out / "units" / f"{target}.lock"
    lock.write_text(json.dumps({"host": "node-17", "pid": 4242, "since": time.time()}))
    monkeypatch.setenv("CXRLAB_HOME", str(root / "home"))
    monkeypatch.setenv("CXRLAB_LOCK_STALE_S", "1.5")
    beat = threading.Event()
    if holder == "finishes":  # node-17 keeps its heartbeat, then stores the unit
        def work():
            for _ in range(8):
                os.utime(lock)
                if beat.wait(0.2):
                    return
            shutil.copytree(ref / "units" / target, tmp_path / "stored")
            os.replace(tmp_path / "stored", out / "units" / target)   # whole, as written
            lock.unlink()
        threading.Thread(target=work, daemon=True).start()
    calls = []
    real = _Runner.run_unit

    def spy(self, unit):
        calls.append(unit.name)
        return real(self, unit)

    monkeypatch.setattr(_Runner, "run_unit", spy)
    assert cli.main(["run", str(root / "tiny.yaml"), "--out", str(out), "--profile", "ci"]) == 0
    beat.set()
    printed = capsys.readouterr().out
    assert f"{target:<40} running in node-17:4242" in printed
    assert "waiting for 1 unit(s) held by other processes" in printed
    assert calls == ([] if holder == "finishes" else [target])
    assert json.loads((out / "metrics.json").read_text())["missing_units"] == []
    assert not lock.exists()


# ----------------------------------------------------------------------------- reports
@pytest.fixture(scope="module")
def partial(root, reference):
    """Shard 1/2 of the study alone: a partial study."""
    out = root / "partial"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CXRLAB_HOME", str(root / "home"))
        assert cli.main(["run", str(root / "tiny.yaml"), "--out", str(out), "--profile", "ci",
                         "--shard", "1/2"]) == 0
    return out


def test_a_partial_study_reports_what_is_finished_and_lists_the_rest(root, reference, partial,
                                                                     monkeypatch):
    monkeypatch.setenv("CXRLAB_HOME", str(root / "home"))
    out = partial
    res = load_study(out)
    assert res.grid == UNITS and res.missing == UNITS[1::2]
    assert sorted(res.units["unit"]) == sorted(UNITS[0::2])
    md, html = _report(out)
    assert "**Partial study**: 2 of 4 units finished" in md
    for u in UNITS[1::2]:
        assert f"`{u}`" in md and f"<code>{u}</code>" in html
    assert "--shard I/N" in md
    # the finished units' numbers are the reference's
    ref = load_study(reference[0])
    mine = ref.results[ref.results["seed"] == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(res.results.reset_index(drop=True), mine,
                                  check_dtype=False)


def test_one_report_covers_several_studies_finished_partial_and_untabled(root, reference,
                                                                          partial, tmp_path):
    import shutil

    ref = reference[0]
    shutil.copytree(ref, tmp_path / "a_whole")
    shutil.copytree(partial, tmp_path / "b_partial")             # shard 1/2 only
    stub = tmp_path / "c_started" / "units"                       # started, no tables yet
    shutil.copytree(ref / "units" / UNITS[0], stub / UNITS[0])
    shutil.copy(ref / "study.json", stub.parent / "study.json")
    md, html = _report(tmp_path)
    assert "2 studies with tables, 1 without tables yet" in md
    assert "## tiny_shards (SYNTHETIC) — `a_whole`" in md and "— `b_partial`" in md
    part = md.split("`b_partial`")[1]
    assert "**Partial study**: 2 of 4 units finished" in part
    assert "## Unfinished: `c_started` (no tables yet)" in md
    tail = md.split("## Unfinished")[1]
    assert f"Finished units (1): `{UNITS[0]}`" in tail
    assert "Missing (3): " + ", ".join(f"`{u}`" for u in UNITS[1:]) in tail
    assert "![tiny_shards: in- vs out-of-domain (SYNTHETIC)](a_whole/in_vs_out_of_domain.png)" in md
    assert html.count("data:image/png;base64,") == 3             # comparison + two studies


def test_report_html_is_self_contained_and_labels_synthetic(reference):
    out, md, html = reference
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r"(src|href)=\"(?!data:)", html)      # nothing fetched from anywhere
    assert not re.search(r"https?://", html)
    imgs = re.findall(r"<img [^>]*src=\"data:image/png;base64,([A-Za-z0-9+/=]+)\"", html)
    assert len(imgs) == md.count("![") == 2
    import base64

    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    # every row of our tables says SYNTHETIC (the published table is the only other one)
    ours = md.split("## Published reference numbers")[0]
    rows = [line for line in ours.splitlines() if line.startswith("| ") and "---" not in line
            and not line.startswith("| data |")]
    assert len(rows) == 8 and all("| SYNTHETIC |" in r for r in rows)
    tables = html.split("Published reference numbers")[0]
    body_rows = re.findall(r"<tr><td>.*?</tr>", tables)
    assert len(body_rows) == 8 and all("SYNTHETIC" in r for r in body_rows)
    assert "SYNTHETIC" in re.findall(r"!\[([^\]]*)\]", md)[0]   # the figure's caption too


def test_gap_table_is_source_minus_target(reference):
    from cxrlab.study.tables import drop_table, summarise

    res = load_study(reference[0])
    t = gap_table(res.results, metric="auc_macro")
    assert list(t.columns) == ["data", "setting", "model", "seeds", "source (source test)",
                               "target_nih (target)", "gap target_nih"]
    r = res.results.query("metric == 'auc_macro' and threshold == 'tuned_source_val' and "
                          "label_space == 'shared7' and method == 'bce_probe'")
    piv = r.pivot_table(index="seed", columns="domain", values="value")
    diff = 100 * (piv["source"] - piv["target_nih"]).to_numpy()   # per seed
    d = drop_table(summarise(res.results)).query("setting == 'BCE linear probe'").iloc[0]
    assert np.isclose(d["drop"], diff.mean())                     # source − target
    want = f"{diff.mean():.1f} ± {(d['drop_hi'] - d['drop_lo']) / 2:.1f}"
    assert t.loc[t["setting"] == "BCE linear probe", "gap target_nih"].iloc[0] == want
    src = 100 * piv["source"].mean()
    assert t.loc[0, "source (source test)"].startswith(f"{src:.1f} ± ")
    assert "SYNTHETIC" in t.attrs["caption"] and set(t["data"]) == {"SYNTHETIC"}
    one = res.results[res.results["seed"] == 0]
    t1 = gap_table(one)
    assert "bootstrap" in t1.attrs["caption"] and (t1["seeds"] == 1).all()
    assert np.isclose(float(t1.loc[0, "gap target_nih"].split(" ± ")[0]), round(diff[0], 1))


def test_the_snapshot_is_written_once_and_compared(reference):
    out = reference[0]
    with pytest.raises(StudyError, match="different configuration"):
        SH.check_snapshot(out, {"kind": "x"}, strict=True)
    assert json.loads((out / "study.json").read_text())["grid"] == UNITS


# ----------------------------------------------------------------------------- torchrun
def test_the_same_command_runs_under_torchrun(root, env, reference):
    """`torchrun -m cxrlab run ...`: both ranks train every unit together (one claim per unit
    for the job), rank 0 writes; the probe arm, which DDP does not touch, equals one process."""
    import sys

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("this torch build has no gloo backend")
    out = root / "torchrun"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", "-m", "cxrlab", "run", str(root / "tiny.yaml"),
                        "--out", str(out), "--profile", "ci"],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.findall(r"^(\S+)\s+computed", p.stdout, re.M) == UNITS   # printed once (rank 0)
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["missing_units"] == [] and not list((out / "units").glob("*.lock"))
    a, b = pd.read_csv(reference[0] / "results.csv"), pd.read_csv(out / "results.csv")
    probe = lambda df: df[df["method"] == "bce_probe"].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(probe(a), probe(b))
