"""The bad inputs the hardening tests try, as data: each ``tests/test_hardening_*.py`` lists its
cases as :class:`BadInput` rows and runs them; ``docs/bad_inputs.md`` is rendered from the same
rows (``python -m tests.helpers.bad_inputs`` rewrites it; ``test_hardening_doc`` fails when it
drifts).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "bad_inputs.md"
MODULES = ("test_hardening_security", "test_hardening_config", "test_hardening_data")


@dataclass(frozen=True)
class BadInput:
    """One bad input: where it enters, what it is, and what the user gets back."""

    topic: str
    entry: str      # "CLI", "API" or a script name
    given: str      # the input, as a user would type or write it
    gets: str       # the outcome: exit status or exception class
    says: str       # text the message must contain (checked by the test that runs the case)

    @property
    def id(self) -> str:
        return f"{self.topic}: {self.given}"[:80]


def all_cases() -> list[BadInput]:
    out = []
    for name in MODULES:
        out += list(importlib.import_module(f"tests.{name}").CASES)
    return out


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(cases: list[BadInput]) -> str:
    lines = [
        "# Bad inputs and what each gets",
        "",
        "Generated from the cases of `tests/test_hardening_*.py` by",
        "`python -m tests.helpers.bad_inputs`;",
        "`tests/test_hardening_doc.py` fails when this file and the tests disagree. Every row is",
        "run by a test that checks the outcome and that the message contains the quoted text.",
        "Through the command line an error the package raises on purpose prints one line",
        "`cxrlab: error: <message>` and exits 2; Ctrl-C exits 130; anything else is a bug and",
        "prints its traceback. `__CANARY__` stands for the URL of a canary HTTP server on",
        "127.0.0.1 that a payload which ran would call (the tests check it is never called). A",
        "text in parentheses is what the test checks where there is no message.",
        "",
        f"{len(cases)} bad inputs.",
        "",
        "| # | topic | entry | bad input | gets | message contains |",
        "|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(cases, 1):
        lines.append(f"| {i} | {_cell(c.topic)} | {c.entry} | `{_cell(c.given)}` | "
                     f"{_cell(c.gets)} | {_cell(c.says)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    DOC.write_text(render(all_cases()))
    print(f"wrote {DOC}")
