"""Progress bars (tqdm.auto) that stay quiet in CI and under nbval."""
from __future__ import annotations

import os


def progress_enabled() -> bool:
    """False when ``CXRLAB_PROGRESS=0`` or when running in CI (``CI`` set), True otherwise."""
    flag = os.environ.get("CXRLAB_PROGRESS")
    if flag is not None:
        return flag.strip().lower() not in ("0", "false", "no", "off", "")
    return not os.environ.get("CI")


def progress(iterable=None, **kwargs):
    """``tqdm.auto.tqdm`` with ``disable`` defaulting to :func:`progress_enabled`."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
