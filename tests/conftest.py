import os

import pytest
import torch

# CI-safe defaults for every test: no progress bars, headless plots, no model hub.
os.environ.setdefault("CXRLAB_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module's tests (tiny models on two shared cores gain nothing
    from more), restored afterwards so that heavier modules (test_learnability) keep both
    cores. Use as ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
