"""A real two-process CPU torchrun: distributed SupCon == one process on the whole batch."""
import json
import subprocess
import sys

import pytest
import torch.distributed as dist

from tests.helpers import REPO_ROOT, subprocess_env


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with the gloo backend is not available in this build")
def test_two_process_torchrun_matches_single_process(tmp_path):
    out = tmp_path / "ddp.json"
    env = subprocess_env()
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "tests.scripts.ddp_supcon", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env,
                          cwd=REPO_ROOT)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    res = json.loads(out.read_text())
    assert res["world_size"] == 2
    for key in ("equal/any", "equal/jaccard", "unequal/any", "unequal/jaccard"):
        r = res[key]
        assert r["weight_grad_norm"] > 1e-3, "degenerate test: reference gradient is ~0"
        assert r["loss_abs_diff"] < 1e-10, (key, r)
        assert r["weight_grad_max_diff"] < 1e-10, (key, r)
        assert r["bias_grad_max_diff"] < 1e-10, (key, r)
        assert r["feature_grad_max_diff"] < 1e-10, (key, r)
