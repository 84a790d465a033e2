"""Helpers to write the course notebooks from Python (so they can be regenerated and reviewed).

Every notebook starts the same way: a title, a Colab badge, and an install cell that installs
cxrlab only when it is missing (Colab ships torch; nothing else is reinstalled).
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = "cxrlab/cxrlab"  # GitHub owner/name the Colab badge and install cell point at

INSTALL_CELL = f'''# Colab / a fresh environment: install cxrlab only when it is missing (Colab already has torch)
import importlib.util, subprocess, sys
if importlib.util.find_spec("cxrlab") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",
                           "cxrlab @ git+https://github.com/{REPO}.git"])'''


def header(filename: str, title: str, intro: str) -> list:
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"(https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{filename})")
    return [new_markdown_cell(f"# {title}\n\n{badge}\n\n{intro}"), new_code_cell(INSTALL_CELL)]


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(src: str, check_output: bool = False):
    src = src.strip("\n")
    if check_output:
        src = "# NBVAL_CHECK_OUTPUT\n" + src
    return new_code_cell(src)


def write(path: str | Path, cells: list) -> Path:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path = Path(path)
    nbformat.write(nb, path)
    return path
