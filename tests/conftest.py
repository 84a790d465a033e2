"""Shared test set-up: CI-safe environment defaults, the ``one_thread`` fixture, session-scoped
caches that several test modules read (written once per run, never modified by a test), and
the ``slow`` marker.

Slow tests (``@pytest.mark.slow``: the extra seeds of tests/test_learnability.py) are skipped by
default so that ``make test`` stays quick; run them with ``pytest -m slow`` (only them),
``pytest -m "slow or not slow"`` (everything), or everything with ``CXRLAB_FULL_TESTS=1``.
"""
import os

import pytest
import torch

# CI-safe defaults for every test: no progress bars, headless plots, no model hub.
os.environ.setdefault("CXRLAB_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def full_tests_requested() -> bool:
    """``CXRLAB_FULL_TESTS=1`` (or true/yes) asks for the slow tests too."""
    return os.environ.get("CXRLAB_FULL_TESTS", "").strip().lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config, items):
    """Skip ``slow`` tests unless they were asked for by ``-m`` or ``CXRLAB_FULL_TESTS=1``."""
    if full_tests_requested() or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or CXRLAB_FULL_TESTS=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module's tests (tiny models on two shared cores gain nothing
    from more), restored afterwards so that heavier modules (test_learnability) keep both
    cores. Use as ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- shared caches
# Written once per test session. Tests only read them: write outputs to tmp_path.

@pytest.fixture(scope="session")
def signal_cache(tmp_path_factory):
    """128 learnable 32-px images (a bright patch per positive SHARED7 label, 10 % NaN
    labels), domain "source", 96 train + 32 val rows: :func:`tests.helpers.engine.make_cache`.
    Read by the engine and embedding tests."""
    from tests.helpers.engine import make_cache

    return make_cache(tmp_path_factory.mktemp("signal") / "cache")


@pytest.fixture(scope="session")
def fake_hospitals(tmp_path_factory):
    """Three hand-made hospitals with known brightness and noise, lung and lesion masks:
    :func:`tests.helpers.hospitals.make_fake_cache`. Read by the shift and plot tests."""
    from tests.helpers.hospitals import make_fake_cache

    return make_fake_cache(tmp_path_factory.mktemp("fake_hospitals") / "cache")
