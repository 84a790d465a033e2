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

#: the GitHub repository (owner/name) every notebook's Colab badge and install cell point at.
#: The one place to change it: edit this line, then `python -m cxrlab.course` rewrites the
#: badge and the install cell of every notebook source (then `make notebooks`).
REPOSITORY = "cxrlab/cxrlab"
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


# ------------------------------------------------------------------ badges and install cells
BADGE_PREFIX = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"


def colab_badge(notebook: str, repository: str = REPOSITORY) -> str:
    """The Markdown badge that opens ``notebooks/<notebook>`` of ``repository`` in Colab."""
    return (f"{BADGE_PREFIX}(https://colab.research.google.com/github/{repository}/blob/main/"
            f"notebooks/{notebook})")


def install_cell(repository: str = REPOSITORY) -> str:
    """The first code cell of every notebook: installs cxrlab (core dependencies only: Colab
    keeps its own PyTorch and gets no desktop tools) only when it is missing."""
    return ("# Colab / a fresh environment: install cxrlab only when it is missing (Colab already has torch)\n"
            "import importlib.util, subprocess, sys\n"
            "if importlib.util.find_spec(\"cxrlab\") is None:\n"
            "    subprocess.check_call([sys.executable, \"-m\", \"pip\", \"install\", \"-q\",\n"
            f"                           \"cxrlab @ git+https://github.com/{repository}.git\"])")


def point_notebooks_at(repository: str = REPOSITORY, folder: str | os.PathLike = "notebooks") -> list[Path]:
    """Rewrite the Colab badge and the install cell of every notebook source in ``folder``
    (``NN_name.py``, jupytext percent format) for ``repository``; returns the changed files."""
    import re

    changed = []
    for src in sorted(Path(folder).glob("[0-9][0-9]_*.py")):
        text = src.read_text()
        nb = src.with_suffix(".ipynb").name
        new = re.sub(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)", colab_badge(nb, repository), text)
        new = re.sub(r"git\+https://github\.com/[^\"]+\.git", f"git+https://github.com/{repository}.git",
                     new)
        if new != text:
            src.write_text(new)
            changed.append(src)
    return changed


if __name__ == "__main__":  # python -m cxrlab.course [OWNER/NAME]
    repo = sys.argv[1] if len(sys.argv) > 1 else REPOSITORY
    for f in point_notebooks_at(repo):
        print(f"{f}: now points at {repo}; run `make notebooks` to store it")
