"""Progress bars (tqdm.auto) that stay quiet in CI and under nbval."""
from __future__ import annotations

import os


def progress_enabled() -> bool:
    """False when ``CXRLAB_PROGRESS=0`` or when running in CI (``CI`` set), True otherwise."""
    flag = os.environ.get("CXRLAB_PROGRESS")
    if flag is not None:
        return flag.strip().lower() not in ("0", "false", "no", "off", "")
    return not os.environ.get("CI")


def _live_display() -> bool:
    """True when bars are redrawn in place: a terminal, or a Jupyter kernel (widgets)."""
    import sys

    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _open_bars() -> int:
    from tqdm.std import tqdm as base

    return len(getattr(base, "_instances", ()))


def progress(iterable=None, **kwargs):
    """``tqdm.auto.tqdm`` with ``disable`` defaulting to :func:`progress_enabled`.

    Written to a log file (not a terminal, not a notebook), a bar nested inside another one is
    turned off: nested bars redraw with cursor-up codes that a file keeps as ``[A`` litter, while
    the outer bar (one tick per study unit) stays readable."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", not progress_enabled())
    if not kwargs["disable"] and _open_bars() and not _live_display():
        kwargs["disable"] = True
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
