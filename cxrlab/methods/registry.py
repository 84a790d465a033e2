"""Name -> training method. ``fit`` and the studies look methods up here by name.

The registry is the one place a method is known: each method registers itself with the
:func:`register_algorithm` decorator in its own module, and carries its display names and how a
study scores it (:attr:`~cxrlab.methods.base.Algorithm.scoring`). Studies, their tables and
their figures derive everything from here, so a new method (RRR, ActDiff, ...) is one new
file; importing :mod:`cxrlab.methods` imports the built-in ones."""
from __future__ import annotations

import difflib
from typing import Any, Mapping

import torch
from torch import nn

from cxrlab.methods.base import SCORINGS, Algorithm

#: every registered training method, by name, in the order they were registered
ALGORITHMS: dict[str, type[Algorithm]] = {}


def register_algorithm(name: str, cls: type[Algorithm] | None = None, *, overwrite: bool = False):
    """Add a method to :data:`ALGORITHMS`. Use as a function or a class decorator::

        @register_algorithm("rrr")
        class RRR(Algorithm): ...
    """
    def _register(c: type[Algorithm]) -> type[Algorithm]:
        if not (isinstance(c, type) and issubclass(c, Algorithm)):
            raise TypeError(f"register_algorithm({name!r}) needs a subclass of "
                            f"cxrlab.methods.base.Algorithm, got {c!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"algorithm name must be a non-empty string, got {name!r}")
        if c.scoring not in SCORINGS:
            raise ValueError(f"{c.__name__}.scoring = {c.scoring!r}; choose one of {SCORINGS}")
        if name in ALGORITHMS and ALGORITHMS[name] is not c and not overwrite:
            raise ValueError(f"an algorithm named {name!r} is already registered "
                             f"({ALGORITHMS[name].__name__}); pick another name or pass "
                             "overwrite=True")
        c.name = name
        if "display_name" not in vars(c) or not c.display_name:
            c.display_name = name
        if "short_name" not in vars(c) or not c.short_name:
            c.short_name = c.display_name
        ALGORITHMS[name] = c
        return c

    return _register if cls is None else _register(cls)


def get_algorithm(name: str) -> type[Algorithm]:
    """The class registered as ``name``; an unknown name lists the known ones."""
    try:
        return ALGORITHMS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(ALGORITHMS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown algorithm {name!r}.{hint} Registered: "
                       f"{', '.join(sorted(ALGORITHMS))}") from None


def create_algorithm(name: str, backbone: nn.Module, num_labels: int,
                     hparams: Mapping[str, Any] | None = None, seed: int | None = 0) -> Algorithm:
    """``get_algorithm(name)(backbone, num_labels, hparams)``, with the new heads initialised
    from ``seed`` (without touching the global random state; ``None``: from the global state).

    Like ``create_backbone(..., seed=)``, this makes two processes build the same model, which
    is what lets a killed run and its resumption be compared with an uninterrupted one.
    """
    cls = get_algorithm(name)
    if seed is None:
        return cls(backbone, num_labels, hparams)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return cls(backbone, num_labels, hparams)
