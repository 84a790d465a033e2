"""Claims as checks: every quantitative sentence a notebook prints is computed next to it.

A lesson that says "every target loses AUC" is only true of the outputs it was written against.
:func:`claim` prints the sentence with the numbers that support it, and raises
:class:`ClaimError` the day they stop supporting it, so ``nbval`` (``make test``) fails on that
cell instead of a student reading prose that its own figure contradicts::

    from cxrlab.claims import claim, interval

    claim("every target loses AUC", (drops > 0).all(), **drops)
    claim("the stand-in beats random init by at least 0.10 AUC", gain >= 0.10, gain=gain)
    claim("the drop is larger than its interval", interval(lo, hi).above(0), drop=interval(lo, hi))

:func:`claim` returns a :class:`Claim` record (text, held, numbers) so a notebook can collect its
claims into a "What we saw" table with :func:`claims_table`.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxrlab.errors import CxrlabError

#: every claim checked in this process, in order (a notebook's "What we saw" reads them back)
CHECKED: list["Claim"] = []


class ClaimError(CxrlabError, AssertionError):
    """A sentence of the course is no longer supported by the numbers computed next to it."""


@dataclass(frozen=True)
class Interval:
    """A point estimate with a (lo, hi) interval; prints as ``0.812 [0.790, 0.833]``."""

    value: float
    lo: float
    hi: float

    def above(self, x: float) -> bool:
        """The whole interval lies above ``x``."""
        return self.lo > x

    def below(self, x: float) -> bool:
        """The whole interval lies below ``x``."""
        return self.hi < x

    def excludes(self, x: float) -> bool:
        return self.above(x) or self.below(x)

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.value:{spec}} [{self.lo:{spec}}, {self.hi:{spec}}]"

    def __str__(self) -> str:
        return format(self)


def interval(value: float, lo: float, hi: float) -> Interval:
    """An :class:`Interval`; ``lo <= hi`` is checked (a swapped pair is a bug upstream)."""
    value, lo, hi = float(value), float(lo), float(hi)
    if lo > hi:
        raise ValueError(f"interval with lo {lo} > hi {hi}")
    return Interval(value, lo, hi)


@dataclass(frozen=True)
class Claim:
    text: str
    held: bool
    numbers: dict = field(default_factory=dict)

    def __str__(self) -> str:
        mark = "holds" if self.held else "FAILS"
        nums = ", ".join(f"{k} {_fmt(v)}" for k, v in self.numbers.items())
        return f"[claim {mark}] {self.text}" + (f" ({nums})" if nums else "")


def _fmt(v: Any) -> str:
    if isinstance(v, Interval):
        return str(v)
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, numbers.Integral):
        return f"{int(v):,}"
    if isinstance(v, numbers.Real):  # float and NumPy scalars (float32 from image statistics)
        v = float(v)
        if math.isnan(v):
            return "nan"
        return f"{v:.3f}" if abs(v) < 100 else f"{v:,.1f}"
    return str(v)


def claim(text: str, held: Any, *, quiet: bool = False, **numbers: Any) -> Claim:
    """Check that ``held`` is true; print ``text`` with ``numbers``; raise :class:`ClaimError`
    (naming the sentence and the numbers) when it is false.

    ``held`` may be a bool, a NumPy bool or a 0-d array; anything whose truth is ambiguous (a
    multi-element array) is refused, so ``claim(..., drops > 0)`` must say ``.all()`` or ``.any()``.
    """
    if hasattr(held, "shape") and getattr(held, "shape", ()) not in ((), (1,)):
        raise TypeError(f"claim {text!r}: `held` has shape {held.shape}; say .all() or .any()")
    ok = bool(held)
    record = Claim(text, ok, dict(numbers))
    CHECKED.append(record)
    if not ok:
        raise ClaimError(f"{record}\nThe text next to this cell says so, and these numbers no "
                         "longer support it: find out why, or rewrite the sentence to say what "
                         "the outputs show.")
    if not quiet:
        print(record)
    return record


def claims_table(records: list[Claim] | None = None):
    """The claims checked so far (or ``records``) as a DataFrame: claim, held, numbers."""
    import pandas as pd

    records = CHECKED if records is None else records
    return pd.DataFrame([{"claim": c.text, "held": c.held,
                          "numbers": ", ".join(f"{k} {_fmt(v)}" for k, v in c.numbers.items())}
                         for c in records])


__all__ = ["claim", "interval", "Interval", "Claim", "ClaimError", "claims_table", "CHECKED"]
