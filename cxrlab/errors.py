"""The one base class of the errors cxrlab raises on purpose.

Every error the package raises on purpose derives from :class:`CxrlabError` (most also keep a
builtin base such as ``ValueError`` so that ``except ValueError`` keeps working). The command line
prints the message of a ``CxrlabError`` in one line and exits with status 2; anything else that
escapes is a bug and prints its traceback.
"""
from __future__ import annotations


class CxrlabError(Exception):
    """Every error the package raises on purpose derives from this class.

    The CLI prints its message in one line (``cxrlab: error: <message>``) and exits 2; any other
    exception is a bug and prints its traceback. A message says what is wrong and what to do.
    """


class UsageError(CxrlabError, ValueError):
    """A value the user chose (flag, environment variable, option, config field) is invalid."""


class UnknownNameError(CxrlabError, KeyError):
    """A name (profile, label, data set, backbone, split...) is not among the known ones."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class MissingInputError(CxrlabError, FileNotFoundError):
    """A file or folder the user pointed at (or that a step needs) does not exist."""


class OutputExistsError(CxrlabError, FileExistsError):
    """An output folder already holds something that would be replaced or lost."""


class NotAFolderError(CxrlabError, NotADirectoryError):
    """A path that must be a folder is a file."""


class DiskSpaceError(CxrlabError, OSError):
    """Not enough free space for the files a step is about to write."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RunError(CxrlabError, RuntimeError):
    """A step could not finish for a reason outside the code (data, environment, workers)."""


__all__ = ["CxrlabError", "UsageError", "UnknownNameError", "MissingInputError",
           "OutputExistsError", "NotAFolderError", "DiskSpaceError", "RunError"]
