"""Every lesson has the same frame (COURSE.md, issue #10): goals and time per profile at the top,
"What we saw" (numbers quoted from its outputs, checked by claims) and "What transfers to real
data" at the end, and every exercise followed by a solution cell that a student can reveal
(source hidden in Jupyter) and that CI executes like any other cell."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: the lessons built to this frame
FRAMED = ("00", "01", "02", "03", "04", "05", "06")
SOURCES = [p for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")) if p.name[:2] in FRAMED]

EXERCISE = re.compile(r"^#{2,4} Exercise (\d+)\b", re.M)


def _check(nb) -> list[str]:
    """What is missing from a notebook's frame (empty when it is complete)."""
    problems = []
    md = [c.source for c in nb.cells if c.cell_type == "markdown"]
    top = "\n".join(md[:2])
    if not re.search(r"(?i)learning goals|what you will learn", top):
        problems.append("no learning goals in the first markdown cells")
    time_line = re.search(r"(?im)^.*\btime\b.*$", top)
    if not time_line or not all(p in top for p in ("`ci`", "`cpu`", "`gpu`")):
        problems.append("no time per profile (`ci`, `cpu`, `gpu`) at the top")
    heads = "\n".join(md)
    for head in ("What we saw", "What transfers to real data"):
        if not re.search(rf"(?m)^#+ .*{head}", heads):
            problems.append(f"no '{head}' section")
    # every exercise heading is followed (before the next exercise) by a hidden solution cell
    current, solved = None, {}
    for c in nb.cells:
        if c.cell_type == "markdown":
            for m in EXERCISE.finditer(c.source):
                current = int(m.group(1))
                solved.setdefault(current, False)
        elif current is not None and "solution" in c.metadata.get("tags", []):
            hidden = c.metadata.get("jupyter", {}).get("source_hidden")
            if not hidden:
                problems.append(f"exercise {current}'s solution is not hidden (jupyter.source_hidden)")
            solved[current] = True
    if not solved:
        problems.append("no '### Exercise N' sections")
    problems += [f"exercise {k} has no solution cell (tags=[\"solution\"])"
                 for k, ok in solved.items() if not ok]
    return problems


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_lesson_has_goals_time_summary_and_solved_exercises(source):
    problems = _check(jupytext.read(source))
    assert not problems, f"{source.name}: " + "; ".join(problems)


def test_the_check_sees_an_unsolved_exercise():
    text = '''# %% [markdown]
# # 99 · Test
# What you will learn here: x. **Time**: `ci` 1 min, `cpu` 2 min, `gpu` 3 min.

# %% [markdown]
# ## What we saw
# ## What transfers to real data
# ### Exercise 1 · a

# %% tags=["solution"] jupyter={"source_hidden": true}
x = 1

# %% [markdown]
# ### Exercise 2 · b

# %%
y = 2
'''
    problems = _check(jupytext.reads(text, fmt="py:percent"))
    assert problems == ['exercise 2 has no solution cell (tags=["solution"])']
    assert not _check(jupytext.reads(text.replace("# %%\ny = 2", '# %% tags=["solution"] '
                                                  'jupyter={"source_hidden": true}\ny = 2'),
                                     fmt="py:percent"))
