"""A real two-process CPU torchrun: distributed SupCon == one process on the whole batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

SCRIPT = Path(__file__).with_name("ddp_supcon_script.py")


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with the gloo backend is not available in this build")
def test_two_process_torchrun_matches_single_process(tmp_path):
    out = tmp_path / "ddp.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(SCRIPT), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env,
                          cwd=Path(__file__).parent.parent)
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
