"""Data-parallel training: two torchrun processes (gloo, CPU) take the same steps as one
process with the whole batch, for BCE and for SupCon (whose loss gathers the projections of
both ranks), and only rank 0 writes files."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from cxrlab.engine import load_checkpoint
from cxrlab.engine.__main__ import main as engine_main

from tests.helpers import REPO_ROOT, subprocess_env
from tests.helpers.engine import make_cache, nobn_backbone

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                 reason="this torch build has no gloo backend")]

RUNS = {
    "bce_finetune": ["--algorithm", "bce_finetune", "--hparams", json.dumps({"augment": "none"})],
    "supcon": ["--algorithm", "supcon", "--hparams", json.dumps({"augment": "none"})],
}


def _runs(cache, root: Path) -> list[list[str]]:
    """``python -m cxrlab.engine`` arguments of each run (4 SGD steps of a global batch of 32)."""
    base = ["--cache", str(cache.path), "--backbone", "tests.helpers.engine:nobn_backbone",
            "--epochs", "2", "--batch-size", "32", "--lr", "0.05", "--optimizer", "sgd",
            "--device", "cpu", "--precision", "fp32", "--val-split", "none", "--num-workers", "0",
            "--log-every", "1", "--quiet"]
    return [base + extra + ["--out", str(root / name)] for name, extra in RUNS.items()]


def test_two_ranks_match_one_process_and_only_rank0_writes(tmp_path):
    # no missing labels: the masked BCE mean per rank then equals the global mean
    cache = make_cache(tmp_path / "cache", n_train=64, n_val=16, nan_frac=0.0)
    env = subprocess_env()
    for d in ("ddp", "single", "logs_ddp"):
        (tmp_path / d).mkdir()
    ddp = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "tests.scripts.ddp_train", str(tmp_path / "logs_ddp"), "--",
         *[a for i, run in enumerate(_runs(cache, tmp_path / "ddp"))
           for a in (["---"] if i else []) + run]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO_ROOT)
    try:
        # meanwhile, the same runs in this process (one rank, the whole batch per step)
        for run in _runs(cache, tmp_path / "single"):
            assert engine_main(run) == 0
        out, _ = ddp.communicate(timeout=300)
    finally:
        if ddp.poll() is None:
            ddp.kill()
    assert ddp.returncode == 0, out

    init = nobn_backbone().state_dict()
    for name in RUNS:
        a = load_checkpoint(tmp_path / "ddp" / name / "last.pt")
        b = load_checkpoint(tmp_path / "single" / name / "last.pt")
        assert a["config"]["world_size"] == 2 and b["config"]["world_size"] == 1
        assert len(a["rng"]) == 2 and len(b["rng"]) == 1  # every rank's generators are saved
        assert a["global_step"] == b["global_step"] == 4  # 2 epochs x 64 // 32
        for k, v in b["model"].items():
            torch.testing.assert_close(a["model"][k], v, atol=1e-5, rtol=1e-4,
                                       msg=lambda m: f"{name}: {k}: {m}")
        # ... and training did move the weights, so agreement is not trivial
        moved = max(float((b["model"][f"backbone.{k}"] - v).abs().max()) for k, v in init.items())
        assert moved > 1e-4, name
        for ha, hb in zip(a["history"], b["history"]):
            assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-4, abs=1e-6), name

    rank0 = (tmp_path / "logs_ddp" / "writes_rank0.txt").read_text().split()
    assert any(p.endswith("last.pt") for p in rank0) and any(p.endswith("history.json") for p in rank0)
    assert not (tmp_path / "logs_ddp" / "writes_rank1.txt").exists(), "rank 1 wrote files"
