"""docs/bad_inputs.md is rendered from the hardening tests' cases and must not drift from them."""
from __future__ import annotations

from tests.helpers.bad_inputs import DOC, all_cases, render


def test_bad_inputs_table_matches_the_tests():
    cases = all_cases()
    assert len(cases) >= 60, len(cases)
    assert len({c.id for c in cases}) == len(cases), "two cases share an id"
    assert DOC.read_text() == render(cases), \
        "docs/bad_inputs.md is stale: run `python -m tests.helpers.bad_inputs` and commit it"
