"""Every course notebook has one source a course author edits as Python (jupytext percent
format, ``notebooks/NN_name.py``) and a stored ``.ipynb`` with its ci-profile outputs. They must
hold the same cells: ``make notebooks`` writes the .ipynb from the source; editing one without
the other fails here."""
from __future__ import annotations

from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
import nbformat  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
STORED = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_every_notebook_has_a_source_and_the_other_way_round():
    assert SOURCES, "no notebook sources found"
    assert [p.stem for p in SOURCES] == [p.stem for p in STORED]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_stored_notebook_matches_its_source(source):
    stored = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    from_source = jupytext.read(source)
    want, have = _cells(from_source), _cells(stored)
    for i, (w, h) in enumerate(zip(want, have)):
        assert w == h, (f"{source.name}: cell {i} differs from {source.with_suffix('.ipynb').name}; "
                        f"run `make notebooks NB={source.name[:2]}`\nsource: {w[1][:200]!r}\n"
                        f"stored: {h[1][:200]!r}")
    assert len(want) == len(have), (f"{source.name} has {len(want)} cells, the stored notebook "
                                    f"{len(have)}; run `make notebooks NB={source.name[:2]}`")
    code = [c for c in stored.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), (
        f"{source.with_suffix('.ipynb').name} is stored without (or with partial) outputs; "
        f"run `make notebooks NB={source.name[:2]}`")


def test_the_check_catches_a_changed_cell(tmp_path):
    source = SOURCES[0]
    text = source.read_text().replace("# %%\n", "# %%\nx_added_by_the_test = 1\n", 1)
    edited = jupytext.reads(text, fmt="py:percent")
    stored = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    assert _cells(edited) != _cells(stored)
