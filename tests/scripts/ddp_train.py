"""Run ``python -m cxrlab.engine``'s ``main`` once per argument group, recording which
process writes files.

Started by tests/test_ddp_engine.py both under ``torchrun --nproc_per_node=2`` and as a
single process. Every atomic write (checkpoints, history.json) is appended to
``<log_dir>/writes_rank<r>.txt``, so the test can check that only rank 0 writes.

Usage: python -m tests.scripts.ddp_train LOG_DIR -- <engine arguments> [--- <engine arguments of a 2nd run> ...]
"""
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

import cxrlab.io
from cxrlab.engine.__main__ import main

log_dir = Path(sys.argv[1])
assert sys.argv[2] == "--", "usage: python -m tests.scripts.ddp_train LOG_DIR -- ARGS [--- ARGS ...]"
rank = int(os.environ.get("RANK", "0"))
_atomic_path = cxrlab.io.atomic_path


@contextmanager
def recording_atomic_path(path):
    with open(log_dir / f"writes_rank{rank}.txt", "a") as f:
        f.write(f"{path}\n")
    with _atomic_path(path) as tmp:
        yield tmp


cxrlab.io.atomic_path = recording_atomic_path
torch.set_num_threads(1)
groups, cur = [], []
for a in sys.argv[3:]:
    if a == "---":
        groups.append(cur)
        cur = []
    else:
        cur.append(a)
groups.append(cur)
for i, g in enumerate(groups):
    main(g, cleanup=i == len(groups) - 1)
