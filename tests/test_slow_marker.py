"""The ``slow`` switch of tests/conftest.py: skipped by default, run when asked for."""
import pytest

from tests.conftest import pytest_collection_modifyitems


class _Config:
    def __init__(self, markexpr=""):
        self.markexpr = markexpr

    def getoption(self, name):
        assert name == "markexpr"
        return self.markexpr


class _Item:
    def __init__(self, *keywords):
        self.keywords = set(keywords)
        self.markers = []

    def add_marker(self, marker):
        self.markers.append(marker)


def _skipped(markexpr="", full=None, monkeypatch=None):
    if full is None:
        monkeypatch.delenv("CXRLAB_FULL_TESTS", raising=False)
    else:
        monkeypatch.setenv("CXRLAB_FULL_TESTS", full)
    slow, quick = _Item("slow", "test_a"), _Item("test_b")
    pytest_collection_modifyitems(_Config(markexpr), [slow, quick])
    assert quick.markers == []
    return [m.name for m in slow.markers] == ["skip"]


def test_slow_tests_are_skipped_unless_asked_for(monkeypatch):
    assert _skipped(monkeypatch=monkeypatch)
    assert _skipped(full="0", monkeypatch=monkeypatch)
    assert not _skipped("slow", monkeypatch=monkeypatch)
    assert not _skipped("slow or not slow", monkeypatch=monkeypatch)
    assert not _skipped(full="1", monkeypatch=monkeypatch)
    assert not _skipped(full="yes", monkeypatch=monkeypatch)


def test_slow_marker_is_registered(pytestconfig):
    assert any(m.startswith("slow:") for m in pytestconfig.getini("markers"))
