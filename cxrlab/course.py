"""What every course notebook does first, after its install cell: one call.

    from cxrlab.course import setup
    prof = setup()                     # the profile of $CXRLAB_PROFILE (default ci)
    prof = setup("cpu")                # or choose one here
    prof = setup(home="~/cxrlab")      # where data caches, checkpoints and results go

On Colab, ``setup()`` mounts Google Drive and keeps everything under
``MyDrive/cxrlab`` (unless ``CXRLAB_HOME`` is already set or ``drive=False``), so a
disconnected runtime loses nothing: caches and finished epochs are found again on the next run.
It also sets the course's figure and table defaults, and prints one line saying what runs.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

#: where ``setup()`` keeps the course's files on Colab (inside the mounted Google Drive)
COLAB_DRIVE_HOME = "/content/drive/MyDrive/cxrlab"
#: the resolution of every figure the course shows (the issue asked for >= 100)
FIGURE_DPI = 100


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


def short_path(path: str | os.PathLike) -> str:
    """``path`` as a learner should read it: relative to the working folder when inside it,
    else with the home folder as ``~`` (stored notebook outputs carry no machine paths)."""
    p = Path(path).expanduser().resolve()
    for base, prefix in ((Path.cwd().resolve(), "."), (Path.cwd().resolve().parent, ".."),
                         (Path.home().resolve(), "~")):
        try:
            rel = p.relative_to(base)
        except ValueError:
            continue
        return prefix if str(rel) == "." else f"{prefix}/{rel}"
    return str(p)


def setup(profile: str | None = None, *, home: str | os.PathLike | None = None,
          drive: bool | None = None, dpi: int = FIGURE_DPI, verbose: bool = True):
    """Choose the profile and the home folder, set figure and table defaults; returns the
    :class:`~cxrlab.profiles.Profile` every later cell reads its sizes from.

    profile : ``"ci"``, ``"cpu"`` or ``"gpu"`` (default: ``$CXRLAB_PROFILE``, else ``ci``).
    home : the folder for data caches, checkpoints and results (``$CXRLAB_HOME``; default
        ``./.cxrlab``, or Google Drive on Colab).
    drive : on Colab, mount Google Drive and use :data:`COLAB_DRIVE_HOME` as home
        (default: yes, unless ``CXRLAB_HOME`` is set or ``home`` is given).
    """
    from cxrlab.profiles import PROFILE_NAMES, get_profile

    if profile is not None:
        if profile not in PROFILE_NAMES:
            raise ValueError(f"unknown profile {profile!r}; choose one of {list(PROFILE_NAMES)}")
        os.environ["CXRLAB_PROFILE"] = profile
    if home is None and drive is not False and in_colab() and "CXRLAB_HOME" not in os.environ:
        from google.colab import drive as google_drive  # type: ignore[import-not-found]

        google_drive.mount("/content/drive")
        home = COLAB_DRIVE_HOME
    if home is not None:
        os.environ["CXRLAB_HOME"] = str(Path(home).expanduser())
        Path(os.environ["CXRLAB_HOME"]).mkdir(parents=True, exist_ok=True)
    _style(dpi)
    prof = get_profile()
    if verbose:
        print(f"profile {prof.name}: data={prof.data}, {prof.image_size} px, "
              f"backbones={list(prof.backbones)}, pretrained={prof.pretrained}, "
              f"seeds={list(prof.seeds)}, device={prof.device}; files under "
              f"{short_path(Path(prof.data_dir).parent)}")
    return prof


def _style(dpi: int) -> None:
    import matplotlib as mpl
    import pandas as pd

    mpl.rcParams.update({"figure.dpi": int(dpi), "savefig.dpi": int(dpi),
                         "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8,
                         "ytick.labelsize": 8, "legend.fontsize": 8, "figure.titlesize": 10})
    pd.set_option("display.precision", 3)
    pd.set_option("display.width", 160)
