"""Attention metrics, tables, figures and the synthetic shortcut mask, on maps whose answers
are known."""

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from cxrlab.explain import (MaskShapeError, bootstrap_mean, centre_of_mass, com_spread,
                            energy_share, pointing_game, rank_correlation, top_region, topk_iou)

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("one_thread")


def blob(cy, cx, size=32, sigma=3.0):
    y, x = np.mgrid[:size, :size]
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma ** 2))


def test_energy_share_and_pointing_game_on_known_maps():
    cams = np.stack([blob(8, 8), blob(24, 24), np.zeros((32, 32))])
    mask = np.zeros((3, 32, 32), bool)
    mask[:, :16, :16] = True  # top-left quadrant
    share = energy_share(cams, mask)
    assert share[0] > 0.98 and share[1] < 0.02 and np.isnan(share[2])  # Gaussian tails
    assert energy_share(cams[:2], np.zeros((2, 32, 32), bool)).tolist() == [0.0, 0.0]
    hit = pointing_game(cams[:2], mask[:2])
    assert hit.tolist() == [1.0, 0.0]
    near = np.zeros((2, 32, 32), bool)
    near[:, 24, 27] = True  # 3 px right of the second peak
    assert pointing_game(cams[:2], near).tolist() == [0.0, 0.0]
    assert pointing_game(cams[:2], near, tolerance=3).tolist() == [0.0, 1.0]
    assert np.isnan(pointing_game(cams[:1], np.zeros((1, 32, 32), bool))[0])


def test_mask_size_mismatch_is_a_clear_error():
    with pytest.raises(MaskShapeError, match="does not match"):
        energy_share(np.zeros((2, 32, 32)), np.zeros((2, 64, 64), bool))
    with pytest.raises(MaskShapeError, match="differ in shape"):
        topk_iou(np.zeros((2, 32, 32)), np.zeros((2, 16, 16)))
    from cxrlab.errors import CxrlabError
    assert issubclass(MaskShapeError, CxrlabError) and issubclass(MaskShapeError, ValueError)


def test_agreement_rank_correlation_and_topk_iou():
    a = np.stack([blob(10, 10), blob(10, 10)])
    b = np.stack([blob(10, 10) * 3 + 1, blob(22, 22)])  # same ranking, then another place
    rc = rank_correlation(a, b)
    assert rc[0] == pytest.approx(1.0, abs=1e-4) and rc[1] < 0.2  # (ties of float rounding)
    iou = topk_iou(a, b, 0.1)
    assert iou[0] == pytest.approx(1.0) and iou[1] == 0.0
    assert top_region(a, 0.1)[0].sum() == round(0.1 * 32 * 32)
    assert rank_correlation(a, -a)[0] == pytest.approx(-1.0)


def test_centre_of_mass_in_lung_coordinates_and_spread():
    lung = np.zeros((3, 32, 32), bool)
    lung[:, 8:24, 4:28] = True  # box centre (15.5, 15.5), half-size (7.5, 11.5)
    cams = np.stack([blob(15.5, 15.5, sigma=2), blob(15.5, 27, sigma=1), blob(8, 15.5, sigma=1)])
    com = centre_of_mass(cams, lung)
    assert com[0] == pytest.approx([0, 0], abs=1e-6)
    assert com[1, 0] == pytest.approx(1.0, abs=0.02) and abs(com[1, 1]) < 1e-6  # right edge
    assert com[2, 1] == pytest.approx(-1.0, abs=0.02)  # top edge
    assert com_spread(np.zeros((5, 2))) == 0.0
    assert com_spread([[1, 0], [-1, 0], [np.nan, 0]]) == pytest.approx(1.0)


def test_bootstrap_mean_interval_contains_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, big = rng.normal(0.5, 0.1, 20), rng.normal(0.5, 0.1, 2000)
    m, lo, hi = bootstrap_mean(small, n_boot=500)
    M, LO, HI = bootstrap_mean(big, n_boot=500)
    assert lo < m < hi and LO < M < HI and (HI - LO) < (hi - lo) / 5
    assert np.isnan(bootstrap_mean([np.nan, np.nan])[0])


def test_synthetic_shortcut_mask_covers_exactly_the_drawn_drain():
    from cxrlab.data.synthetic import get_hospital, shortcut_masks
    from cxrlab.data.synthetic.generator import render_block

    spec = get_hospital("source")
    with_drain = render_block(spec, 0, 0, 48, 64, True)
    without = render_block(spec, 0, 0, 48, 64, False)
    masks = shortcut_masks(spec, 0, 0, 48, 64, True)
    marker = with_drain.meta["shortcut_marker"].to_numpy()
    assert marker.sum() >= 3
    assert np.array_equal(masks.reshape(48, -1).any(1), marker == 1)
    diff = np.abs(with_drain.images.astype(int) - without.images.astype(int))
    assert diff[marker == 0].sum() == 0  # the same images apart from the drain
    assert (diff * masks).sum() / diff.sum() > 0.99  # every changed pixel lies in the mask
    lung = with_drain.lung_masks > 0
    assert (masks.astype(bool) & lung).sum() / masks.sum() < 0.1  # outside the lungs
    assert not shortcut_masks(spec, 0, 0, 48, 64, False).any()


def test_cache_shortcut_masks_and_region_masks(tmp_path):
    from cxrlab.data.synthetic import get_hospital, shortcut_masks, write_synthetic_cache
    from cxrlab.data.synthetic.writer import cache_shortcut_masks
    from cxrlab.explain.analysis import region_masks

    cache = write_synthetic_cache(tmp_path / "c", hospitals=["source", "target_nih"],
                                  n_per_hospital=300, image_size=32, shortcut=True)
    rows = np.array([299, 0, 280, 5, 300, 599])
    got = cache_shortcut_masks(cache, rows)
    spec = get_hospital("source")
    direct = shortcut_masks(spec, 0, 1, 300 - 256, 32, True)  # rows 256..299 = block 1
    assert np.array_equal(got[0], direct[299 - 256]) and np.array_equal(got[2], direct[280 - 256])
    marker = cache.manifest["shortcut_marker"].to_numpy()[rows]
    assert np.array_equal(got.reshape(len(rows), -1).any(1), marker == 1)
    r = region_masks(cache, rows, "Pneumothorax")
    assert r["images"].shape == (6, 1, 32, 32) and r["lung"].dtype == bool
    assert r["lesion"].shape == (6, 32, 32) and np.array_equal(r["shortcut"], got > 0)
    with pytest.raises(IndexError):
        cache_shortcut_masks(cache, [600])


class Region(torch.nn.Module):
    """A one-conv model; label 0 reads the left half, label 1 the right half."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1, bias=False)
        torch.nn.init.ones_(self.conv.weight)
        self.num_labels = 2
        self.name = "region_test"

    def forward(self, x):
        a = torch.relu(self.conv(x))
        w = a.shape[-1] // 2
        return torch.stack([a[..., :w].mean((1, 2, 3)), a[..., w:].mean((1, 2, 3))], 1)


@pytest.fixture
def registered_region():
    from cxrlab.explain.layers import TARGET_LAYERS, TargetLayers, register_target_layer

    register_target_layer("region_test")(lambda net: TargetLayers([net.conv]))
    yield
    TARGET_LAYERS.pop("region_test")


def test_tables_summaries_and_faithfulness(registered_region):
    from cxrlab.explain import analysis as A

    x = torch.rand(12, 1, 16, 16, generator=torch.Generator().manual_seed(0)) + 0.05
    left = np.zeros((12, 16, 16), bool)
    left[:, :, :8] = True
    models = {"m": Region()}
    df, cams = A.attention_table(models, x, 0, lung=np.ones_like(left), lesion=left,
                                 shortcut=~left)
    assert len(df) == 12 and set(df["model"]) == {"m"}
    # HiResCAM (gradient x activation) is exact here: label 0 has no gradient on the right
    dfh, _ = A.attention_table(models, x, 0, lesion=left, shortcut=~left, method="hirescam")
    assert dfh["share_lesion"].min() > 0.99 and dfh["share_shortcut"].max() < 0.01
    s = A.summarize(dfh, n_boot=100)
    row = s[s.metric == "share_lesion"].iloc[0]
    assert row["lo"] <= row["mean"] <= row["hi"] and row["n"] == 12
    agree = A.agreement_table({"a": cams["m"], "b": cams["m"]}, n_boot=50)
    assert agree[agree.metric == "rank_corr"]["mean"].iloc[0] == pytest.approx(1.0)
    cons = A.consistency_table(df, n_boot=50)
    assert cons["spread"].iloc[0] >= 0 and cons["n"].iloc[0] == 12
    _, hires = A.attention_table(models, x, 0, method="hirescam")
    faith = A.faithfulness_table(models, x, 0, hires, n_boot=50).set_index("maps")
    assert faith.loc["cam", "mean"] > faith.loc["random", "mean"], faith


def test_figures_and_overlay():
    from cxrlab.explain import plots as XP

    img = np.full((16, 16), 128, np.uint8)
    cam = np.zeros((16, 16))
    cam[4, 4] = 1.0
    rgb = XP.overlay_rgb(img, cam, alpha=0.0)
    assert np.allclose(rgb, 128 / 255)
    full = XP.overlay_rgb(img, cam, alpha=1.0)
    assert not np.allclose(full[4, 4], full[0, 0])  # the peak has another colour
    with pytest.raises(MaskShapeError):
        XP.overlay_rgb(img, np.zeros((8, 8)))
    fig = XP.plot_cam_grid(np.stack([img, img]), {"a": np.stack([cam, cam]), "b": np.stack([cam, cam])},
                           col_titles=["x", "y"], contours={"lesion": np.stack([cam > 0] * 2)})
    assert len(fig.axes) == 4 and fig.axes[0].get_ylabel() == "a"
    summary = pd.DataFrame({"model": ["a", "a", "b", "b"], "metric": ["share_lung", "share_shortcut"] * 2,
                            "mean": [0.5, 0.2, 0.6, 0.1], "lo": [0.4, 0.1, 0.5, 0.05],
                            "hi": [0.6, 0.3, 0.7, 0.15]})
    fig2 = XP.plot_attention_shares(summary, metrics=("share_shortcut", "share_lung"))
    heights = sorted(round(p.get_height(), 2) for p in fig2.axes[0].patches)
    assert heights == [0.1, 0.2, 0.5, 0.6]
    df = pd.DataFrame({"model": ["a", "b"], "com_x": [0.1, -0.2], "com_y": [0.0, 0.3]})
    fig3 = XP.plot_centres(df)
    assert len(fig3.axes[0].collections) == 2
    import matplotlib.pyplot as plt
    plt.close("all")
