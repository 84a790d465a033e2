"""Mask geometry of seed 002: lung periphery, scaled abnormality, attribution_mask."""
from __future__ import annotations

import numpy as np
import pytest

from cxrlab.masks import attribution_mask, lung_periphery, mask_coverage, scale_mask


def two_lungs(size: int = 64) -> np.ndarray:
    """Two ellipses, like a right and a left lung, in a size x size image."""
    yy, xx = np.mgrid[:size, :size]
    m = np.zeros((size, size), np.uint8)
    for cx in (0.3 * size, 0.7 * size):
        m |= (((xx - cx) / (0.14 * size)) ** 2 + ((yy - 0.5 * size) / (0.32 * size)) ** 2 <= 1)
    return m


def test_periphery_is_a_band_inside_the_lung():
    lung = two_lungs()
    per = lung_periphery(lung, 0.25)
    assert per.dtype == np.uint8 and set(np.unique(per)) <= {0, 1}
    assert np.all(per <= lung)                       # never outside the lung
    assert per[32, int(0.3 * 64)] == 0 and per[32, int(0.7 * 64)] == 0   # centres excluded
    ys, xs = np.nonzero(lung)
    top = ys.min()                                   # the apex is periphery
    assert per[top, xs[ys == top][0]] == 1
    assert 0.3 < per.sum() / lung.sum() < 0.95


def test_periphery_grows_with_width_and_covers_the_lung_at_half():
    lung = two_lungs()
    areas = [lung_periphery(lung, f).sum() for f in (0.1, 0.2, 0.3)]
    assert areas[0] < areas[1] < areas[2]
    assert np.array_equal(lung_periphery(lung, 0.5), lung)


def test_periphery_scales_with_image_size():
    small, big = two_lungs(64), two_lungs(128)
    f_small = lung_periphery(small, 0.2).sum() / small.sum()
    f_big = lung_periphery(big, 0.2).sum() / big.sum()
    assert abs(f_small - f_big) < 0.08


def test_periphery_batch_matches_singles_and_handles_empty_and_edges():
    lung = two_lungs()
    edge = np.zeros((64, 64), np.uint8)
    edge[:, :20] = 1                                  # a lung cut off by the image edge
    batch = np.stack([lung, np.zeros_like(lung), edge])
    out = lung_periphery(batch, 0.25)
    assert out.shape == batch.shape
    assert np.array_equal(out[0], lung_periphery(lung, 0.25))
    assert out[1].sum() == 0
    assert out[2][:, 0].all()                         # the image border counts as outside
    assert out[2][32, 10] == 0                        # 10 px from every border of a 20 px lung
    with pytest.raises(ValueError):
        lung_periphery(lung, 0)


def test_scale_mask_fills_touched_blocks():
    m = np.zeros((16, 16), np.uint8)
    m[5, 5] = 1
    s = scale_mask(m, 4)
    assert s.sum() == 16 and s[4:8, 4:8].all()
    assert np.array_equal(scale_mask(m, 1), m)
    assert np.all(scale_mask(m, 3) >= m)
    odd = np.zeros((2, 10, 13), bool)
    odd[1, 9, 12] = True
    s = scale_mask(odd, 4)
    assert s.shape == (2, 10, 13) and s[0].sum() == 0 and s[1, 8:, 12].all() and s[1].sum() == 2
    with pytest.raises(ValueError):
        scale_mask(m, 0)


def test_attribution_mask_kinds():
    lung = two_lungs()
    lesion = np.zeros_like(lung)
    lesion[10:14, 15:18] = 1
    ab = attribution_mask("abnormality", lesion=lesion)
    sc = attribution_mask("scaled_abnormality", lesion=lesion, scale_factor=8)
    per = attribution_mask("lung_periphery", lung=lung)
    assert np.array_equal(ab, lesion)
    assert mask_coverage(sc) > mask_coverage(ab) and np.all(sc >= ab)
    assert np.array_equal(per, lung_periphery(lung, 0.25))
    assert np.array_equal(attribution_mask("lung", lung=lung), lung)
    # the default coarse grid is size-independent: 64 px / 16 cells = 4 px blocks
    assert np.array_equal(attribution_mask("scaled_abnormality", lesion=lesion),
                          scale_mask(lesion, 4))
    with pytest.raises(ValueError, match="lung masks"):
        attribution_mask("lung_periphery", lesion=lesion)
    with pytest.raises(ValueError, match="lesion masks"):
        attribution_mask("abnormality", lung=lung)
    with pytest.raises(KeyError):
        attribution_mask("gaze", lung=lung)
