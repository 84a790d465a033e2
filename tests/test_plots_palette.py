"""Figures of notebooks 00/01: one colour per hospital everywhere (style.color_of), a neutral
pair for compared runs, chance lines and intervals on AUC plots, and the shortcut (the chest
drain) outlined in the gallery where the generator drew it."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from cxrlab import shift, style
from cxrlab.data import plots as data_plots
from cxrlab.shift import plots as shift_plots

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shortcut_cache(tmp_path_factory):
    from cxrlab.data.synthetic import write_synthetic_cache

    return write_synthetic_cache(tmp_path_factory.mktemp("sc") / "c", hospitals=["source"],
                                 n_per_hospital=60, image_size=32, shortcut=True)


def _contour_colors(ax) -> set[str]:
    out = set()
    for coll in ax.collections:
        for c in np.atleast_2d(coll.get_edgecolor()):
            if len(c):
                out.add(to_hex(c))
    return out


def test_gallery_outlines_the_drain_where_the_generator_drew_it(shortcut_cache):
    cache = shortcut_cache
    marker = cache.manifest["shortcut_marker"].to_numpy()
    with_drain = np.flatnonzero(marker == 1)[:2].tolist()
    without = np.flatnonzero(marker == 0)[:2].tolist()
    assert len(with_drain) == 2 and len(without) == 2
    fig = data_plots.plot_gallery(cache, rows=with_drain + without, show_masks=False)
    axes = fig.axes[:4]
    yellow = to_hex(data_plots.SHORTCUT_COLOR)
    assert [yellow in _contour_colors(ax) for ax in axes] == [True, True, False, False]
    assert ["[drain]" in ax.get_title() for ax in axes] == [True, True, False, False]
    assert "shortcut" in fig._suptitle.get_text()
    assert to_hex(axes[0].title.get_color()) == style.color_of("source")  # hospital colour
    # the outline is the generator's own drain geometry
    outl = data_plots.shortcut_outlines(cache, with_drain + without)
    assert outl.shape == (4, 32, 32) and outl[:2].any(axis=(1, 2)).all() and not outl[2:].any()
    off = data_plots.plot_gallery(cache, rows=with_drain, show_shortcut=False, show_masks=False)
    assert yellow not in _contour_colors(off.axes[0])
    plt.close("all")


def test_gallery_refuses_a_shortcut_it_cannot_show(fake_hospitals):
    assert data_plots.shortcut_outlines(fake_hospitals, [0, 1]) is None
    with pytest.raises(ValueError, match="no shortcut"):
        data_plots.plot_gallery(fake_hospitals, rows=[0], show_shortcut=True)
    data_plots.plot_gallery(fake_hospitals, rows=[0])  # default: nothing to show, no error
    plt.close("all")


def test_gap_comparison_uses_a_neutral_pair_and_hospital_coloured_names():
    gap = pd.DataFrame({"domain": ["source", "target_nih"], "role": ["source", "target"],
                        "auc_Pneumothorax": [0.9, 0.6]})
    gap.attrs.update(source="source", synthetic=True)
    fig = shift_plots.plot_gap_comparison({"shortcut off": gap, "shortcut on": gap},
                                          label="Pneumothorax")
    ax = fig.axes[0]
    bars = [p for p in ax.patches]
    assert {to_hex(b.get_facecolor()) for b in bars} == {style.RUN_SHADES[0], style.RUN_SHADES[1]}
    ticks = {t.get_text(): to_hex(t.get_color()) for t in ax.get_xticklabels()}
    assert ticks == {"source": style.color_of("source"), "target_nih": style.color_of("target_nih")}
    assert any(line.get_ydata()[0] == 0.5 for line in ax.get_lines())  # chance
    assert ax.get_xlabel() and ax.get_ylabel()
    plt.close("all")


def test_seeded_plots_draw_intervals_chance_and_hospital_colours(fake_hospitals):
    g = shift.gap_over_seeds({"off": fake_hospitals, "on": fake_hospitals}, seeds=(0, 1),
                             source="alpha", labels=["Effusion"], epochs=1, n_boot=20)
    fig = shift_plots.plot_seeded_gap(g, run="off")
    ax = fig.axes[0]
    colours = {to_hex(p.get_facecolor()[:3]) for p in ax.patches}
    assert colours == {style.color_of(d) for d in ("alpha", "beta", "gamma")}
    assert any(line.get_ydata()[0] == 0.5 for line in ax.get_lines())
    from matplotlib.container import BarContainer

    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 3 and all(c.errorbar is not None for c in bars)  # one per hospital
    assert "SYNTHETIC" in ax.get_title() and "2 seeds" in ax.get_title()
    fig2 = shift_plots.plot_seeded_comparison(g, "Effusion")
    ax2 = fig2.axes[0]
    assert {to_hex(p.get_facecolor()[:3]) for p in ax2.patches} == set(style.RUN_SHADES[:2])
    assert ax2.get_xlabel() == "hospital" and "AUC" in ax2.get_ylabel()
    plt.close("all")


def test_prevalence_and_demographics_use_the_hospital_colours():
    from cxrlab.data.summary import ManifestSummary, plot_demographics, plot_prevalence

    prev = pd.DataFrame({"nih": [0.1, 0.2], "chexpert": [0.3, np.nan]}, index=["Edema", "Hernia"])
    fig = plot_prevalence(ManifestSummary(prevalence=prev, counts=pd.DataFrame(),
                                          demographics=pd.DataFrame(), by="domain"))
    colours = {to_hex(p.get_facecolor()[:3]) for p in fig.axes[0].patches}
    assert colours == {style.color_of("nih"), style.color_of("chexpert")}
    m = pd.DataFrame({"domain": ["target_old"] * 4 + ["source"] * 4, "age": [70, 80, 75, 72, 50, 60, 55, 40],
                      "sex": list("MFMFMFMF"), "view": ["AP"] * 8, "patient_id": list("abcdefgh")})
    fig = plot_demographics(m)
    sex_bars = {to_hex(p.get_facecolor()[:3]) for p in fig.axes[1].patches}
    assert sex_bars == {style.color_of("target_old"), style.color_of("source")}
    plt.close("all")
