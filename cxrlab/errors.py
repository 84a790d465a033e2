"""The one base class of every error cxrlab raises on purpose.

The command line catches :class:`CxrlabError` and prints its message; anything else is a bug
and keeps its traceback. Each package error also derives from the builtin it refines
(``ValueError``, ``KeyError`` ...), so ``except ValueError`` keeps working.
"""
from __future__ import annotations


class CxrlabError(Exception):
    """Base of every error cxrlab raises on purpose (bad input, missing data, ...)."""
