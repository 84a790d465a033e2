"""cxrlab.course.setup: the one call every notebook makes after its install cell."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import matplotlib as mpl
import pytest

from cxrlab import course


def test_setup_picks_profile_home_and_figure_style(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CXRLAB_HOME", raising=False)
    monkeypatch.setenv("CXRLAB_PROFILE", "ci")
    prof = course.setup("cpu", home=tmp_path / "h")
    assert prof.name == "cpu" and Path(prof.data_dir) == tmp_path / "h" / "data"
    assert (tmp_path / "h").is_dir()
    assert mpl.rcParams["figure.dpi"] == course.FIGURE_DPI >= 100
    out = capsys.readouterr().out
    assert out.startswith("profile cpu:") and "files under ./h" in out and str(tmp_path) not in out
    with pytest.raises(ValueError, match="unknown profile 'laptop'"):
        course.setup("laptop")


def test_setup_on_colab_mounts_drive_once_and_keeps_files_there(monkeypatch, tmp_path):
    mounted = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=lambda where: mounted.append(where))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setattr(course, "COLAB_DRIVE_HOME", str(tmp_path / "drive" / "cxrlab"))
    monkeypatch.delenv("CXRLAB_HOME", raising=False)
    prof = course.setup("ci", verbose=False)
    assert mounted == ["/content/drive"]
    assert Path(prof.checkpoint_dir) == tmp_path / "drive" / "cxrlab" / "checkpoints"
    # a home chosen by the user (or already in the environment) is never overridden
    course.setup("ci", verbose=False)
    assert mounted == ["/content/drive"]
    monkeypatch.delenv("CXRLAB_HOME")
    course.setup("ci", drive=False, verbose=False)
    assert mounted == ["/content/drive"]


def test_short_path_never_shows_the_machine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert course.short_path(tmp_path / "a" / "b") == "./a/b"
    assert course.short_path(tmp_path) == "."
    assert course.short_path(Path.home() / "x").startswith(("~/x", "./", "../"))


def test_every_notebook_points_at_the_one_repository():
    nb_dir = Path(__file__).resolve().parents[1] / "notebooks"
    sources = sorted(nb_dir.glob("[0-9][0-9]_*.py"))
    assert sources
    for src in sources:
        text = src.read_text()
        badge = course.colab_badge(src.with_suffix(".ipynb").name)
        assert badge in text, f"{src.name}: its Colab badge does not point at {course.REPOSITORY}"
        cell = "\n".join(line for line in course.install_cell().splitlines())
        assert cell in text, f"{src.name}: its install cell differs from cxrlab.course.install_cell()"


def test_point_notebooks_at_rewrites_badge_and_install_cell(tmp_path):
    src = tmp_path / "07_x.py"
    src.write_text(f"# %% [markdown]\n# # 07\n#\n# {course.colab_badge('07_x.ipynb', 'a/b')}\n\n"
                   f"# %%\n{course.install_cell('a/b')}\n")
    assert course.point_notebooks_at("me/course", tmp_path) == [src]
    text = src.read_text()
    assert course.colab_badge("07_x.ipynb", "me/course") in text
    assert course.install_cell("me/course") in text and "a/b" not in text
    assert course.point_notebooks_at("me/course", tmp_path) == []
