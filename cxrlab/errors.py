"""The one base class of every error cxrlab raises on purpose (bad input, missing data ...).

The command line catches :class:`CxrlabError` and prints its message; anything else is a bug
and keeps its traceback. Concrete errors also derive from the closest built-in
(``ValueError``, ``LookupError`` ...) so ``except ValueError`` keeps working.
"""
from __future__ import annotations


class CxrlabError(Exception):
    """Base of every error cxrlab raises deliberately, with a message saying what to do."""
