"""CheXmask RLE decoding and lung masks written into a tiny real-style cache."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cxrlab.data.cache import CacheError, CacheWriter, open_cache
from cxrlab.data.chexmask import (add_lung_masks, decode_rle, encode_rle, image_key,
                                  letterbox_rle, lung_mask, read_chexmask, sample_rle)
from cxrlab.data.resize import letterbox_mask

S = 64


def test_rle_is_one_based_row_major():
    m = np.array([[0, 1, 1], [1, 0, 0]], np.uint8)
    assert encode_rle(m) == "2 3"                       # flat [0 1 1 1 0 0]: starts at 2, runs 3
    assert np.array_equal(decode_rle("2 3", 2, 3), m)
    assert np.array_equal(decode_rle("1 1 6 1", 2, 3), [[1, 0, 0], [0, 0, 1]])
    for empty in ("", float("nan"), None, "-1"):
        assert decode_rle(empty, 2, 3).sum() == 0
    with pytest.raises(ValueError, match="pairs"):
        decode_rle("1 2 3", 2, 3)
    with pytest.raises(ValueError, match="past the end"):
        decode_rle("5 4", 2, 3)
    with pytest.raises(ValueError, match="1-based"):
        decode_rle("0 2", 2, 3)


@pytest.mark.parametrize("shape", [(7, 5), (40, 33), (1, 9)])
def test_rle_round_trip(shape):
    rng = np.random.default_rng(sum(shape))
    m = (rng.random(shape) < 0.4).astype(np.uint8)
    assert np.array_equal(decode_rle(encode_rle(m), *shape), m)


def test_sampled_decoding_matches_full_decoding():
    rng = np.random.default_rng(1)
    m = (rng.random((50, 37)) < 0.3).astype(np.uint8)
    rle = encode_rle(m)
    rows, cols = np.array([0, 3, 3, 49]), np.array([0, 5, 36, 17, 2])
    assert np.array_equal(sample_rle(rle, 50, 37, rows, cols), m[rows[:, None], cols[None, :]])
    # overlapping and unsorted runs (not produced by CheXmask, but legal RLE) decode the same
    messy = "20 10 5 30 100 3 101 1"
    full = decode_rle(messy, 10, 20)
    r, c = np.arange(10), np.arange(20)
    assert np.array_equal(sample_rle(messy, 10, 20, r, c), full)


@pytest.mark.parametrize("hw", [(200, 160), (150, 240), (128, 128)])
def test_letterboxed_rle_equals_letterbox_of_the_decoded_mask(hw):
    h, w = hw
    yy, xx = np.mgrid[:h, :w]
    m = (((yy - h / 2) / (h / 3)) ** 2 + ((xx - w / 3) / (w / 5)) ** 2 <= 1).astype(np.uint8)
    assert np.array_equal(letterbox_rle(encode_rle(m), h, w, S), letterbox_mask(m, S))


def test_image_keys_meet_across_id_forms():
    assert image_key("00000001_000.png", "nih") == image_key("images/00000001_000.png", "nih")
    assert image_key("CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg", "chexpert") == \
        image_key("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "chexpert") == \
        "patient00001/study1/view1_frontal"
    assert image_key("files/p10/p10000032/s50414267/02aa804e-bde0afdd.jpg", "mimic") == \
        "02aa804e-bde0afdd"
    with pytest.raises(KeyError):
        image_key("x", "siim")


# ----------------------------------------------------------------------------- CSV + cache
def lungs(h, w, shift=0):
    yy, xx = np.mgrid[:h, :w]
    right = ((xx - 0.3 * w - shift) / (0.12 * w)) ** 2 + ((yy - 0.5 * h) / (0.3 * h)) ** 2 <= 1
    left = ((xx - 0.7 * w - shift) / (0.12 * w)) ** 2 + ((yy - 0.5 * h) / (0.3 * h)) ** 2 <= 1
    return left.astype(np.uint8), right.astype(np.uint8)


def write_chexmask_csv(path, entries, idcol="Path"):
    """entries: (image id, height, width, shift, dice)."""
    rows = []
    for iid, h, w, shift, dice in entries:
        left, right = lungs(h, w, shift)
        rows.append({idcol: iid, "Dice RCA (Mean)": dice, "Dice RCA (Max)": dice + 0.05,
                     "Landmarks": "1,2,3,4", "Left Lung": encode_rle(left),
                     "Right Lung": encode_rle(right), "Heart": "", "Height": h, "Width": w})
    pd.DataFrame(rows).to_csv(path, index=False)


def tiny_cache(path, image_ids, synthetic=False):
    n = len(image_ids)
    w = CacheWriter(path, n=n, image_size=S)
    w.write(0, np.full((n, S, S), 100, np.uint8))
    manifest = pd.DataFrame({"image_id": image_ids, "patient_id": [f"p{i}" for i in range(n)],
                             "split": ["train"] * n, "domain": ["chexpert"] * n,
                             "age": [50.0] * n, "sex": ["M"] * n, "view": ["PA"] * n,
                             "path": [f"x/{i}.jpg" for i in range(n)], "Pneumothorax": [0.0] * n})
    return w.finalize(manifest, meta={"synthetic": synthetic})


CHEXPERT_IDS = [f"patient0000{i}/study1/view1_frontal" for i in range(5)]


def test_read_chexmask_filters_ids_and_quality(tmp_path):
    csv = tmp_path / "CheXpert.csv"
    write_chexmask_csv(csv, [(f"CheXpert-v1.0/train/{CHEXPERT_IDS[i]}.jpg", 120, 100, 0, d)
                             for i, d in enumerate([0.9, 0.5, 0.8])])
    df = read_chexmask(csv, "chexpert")
    assert list(df.index) == CHEXPERT_IDS[:3]
    assert {"left_lung", "right_lung", "height", "width", "dice_rca_mean"} <= set(df.columns)
    assert list(read_chexmask(csv, "chexpert", min_dice=0.7).index) == [CHEXPERT_IDS[0], CHEXPERT_IDS[2]]
    assert list(read_chexmask(csv, "chexpert", ids=[CHEXPERT_IDS[1]]).index) == [CHEXPERT_IDS[1]]
    left, right = lungs(120, 100)
    assert np.array_equal(lung_mask(df.iloc[0]), left | right)
    with pytest.raises(ValueError, match="id column"):
        read_chexmask(csv, "mimic")


def test_add_lung_masks_writes_aligned_masks_and_marks_missing(tmp_path):
    cache_dir = tmp_path / "cache"
    tiny_cache(cache_dir, CHEXPERT_IDS)
    csv = tmp_path / "CheXpert.csv.gz"   # CheXmask ships gzipped CSVs too
    entries = [(f"CheXpert-v1.0/train/{CHEXPERT_IDS[0]}.jpg", 300, 240, 0, 0.9),
               (f"CheXpert-v1.0/valid/{CHEXPERT_IDS[2]}.jpg", 200, 260, 10, 0.85),
               (f"CheXpert-v1.0/train/{CHEXPERT_IDS[3]}.jpg", 300, 240, 0, 0.4),   # low quality
               ("CheXpert-v1.0/train/patient99999/study1/view1_frontal.jpg", 300, 240, 0, 0.9)]
    write_chexmask_csv(csv, entries)
    with pytest.warns(UserWarning, match="3 of 5 images have no usable"):
        report = add_lung_masks(cache_dir, csv, "chexpert")
    assert report == {"n": 5, "with_mask": 2, "no_entry": 2, "low_quality": 1, "empty": 0}
    cache = open_cache(cache_dir)
    assert cache.lung_masks.shape == (5, S, S) and cache.lung_masks.dtype == np.uint8
    for row, (h, w, shift) in ((0, (300, 240, 0)), (2, (200, 260, 10))):
        left, right = lungs(h, w, shift)
        assert np.array_equal(cache.lung_masks[row], letterbox_mask(left | right, S))
    assert cache.lung_masks[[1, 3, 4]].sum() == 0
    assert cache.manifest["has_lung_mask"].tolist() == [1, 0, 1, 0, 0]
    dice = cache.manifest["lung_mask_dice"].to_numpy()
    assert np.allclose(dice[[0, 2, 3]], [0.9, 0.85, 0.4]) and np.isnan(dice[[1, 4]]).all()
    meta = json.loads((cache_dir / "meta.json").read_text())
    assert meta["has_lung_masks"] and "lung_masks" in meta["arrays"]
    assert meta["lung_masks_missing"] == 3 and meta["lung_mask_source"]["name"] == "CheXmask"
    assert not list(cache_dir.glob("*partial*"))
    # the rest of the cache is untouched and still opens
    assert cache.images.shape == (5, S, S) and cache.manifest["image_id"].tolist() == CHEXPERT_IDS
    with pytest.raises(FileExistsError, match="overwrite"):
        add_lung_masks(cache_dir, csv, "chexpert")
    with pytest.warns(UserWarning):
        report = add_lung_masks(cache_dir, csv, "chexpert", min_dice=None, overwrite=True)
    assert report["with_mask"] == 3 and open_cache(cache_dir).manifest["has_lung_mask"].sum() == 3


def test_add_lung_masks_resumes_an_interrupted_run(tmp_path):
    cache_dir = tmp_path / "cache"
    tiny_cache(cache_dir, CHEXPERT_IDS[:2])
    csv = tmp_path / "CheXpert.csv"
    write_chexmask_csv(csv, [(f"x/{CHEXPERT_IDS[i]}.jpg", 100, 100, 0, 0.9) for i in range(2)])
    # a previous run finished row 0 (with a recognisable mask) and was killed
    masks = np.lib.format.open_memmap(cache_dir / "lung_masks.partial.npy", mode="w+",
                                      dtype=np.uint8, shape=(2, S, S))
    masks[0] = 1
    np.save(cache_dir / "lung_masks.partial-state.npy", np.array([1, 0], np.uint8))
    np.save(cache_dir / "lung_masks.partial-dice.npy", np.array([0.9, np.nan], np.float32))
    del masks
    report = add_lung_masks(cache_dir, csv, "chexpert")
    cache = open_cache(cache_dir)
    assert report["with_mask"] == 2
    assert cache.lung_masks[0].all()                  # kept from the first run, not redone
    left, right = lungs(100, 100)
    assert np.array_equal(cache.lung_masks[1], letterbox_mask(left | right, S))


def test_add_lung_masks_refuses_synthetic_caches_and_bad_inputs(tmp_path):
    tiny_cache(tmp_path / "syn", CHEXPERT_IDS[:2], synthetic=True)
    csv = tmp_path / "CheXpert.csv"
    write_chexmask_csv(csv, [(f"x/{CHEXPERT_IDS[0]}.jpg", 100, 100, 0, 0.9)])
    with pytest.raises(CacheError, match="synthetic"):
        add_lung_masks(tmp_path / "syn", csv, "chexpert")
    tiny_cache(tmp_path / "real", CHEXPERT_IDS[:2])
    with pytest.raises(FileNotFoundError, match="data_download/chexmask.py"):
        add_lung_masks(tmp_path / "real", tmp_path / "nope.csv", "chexpert")
    with pytest.raises(KeyError, match="siim"):
        add_lung_masks(tmp_path / "real", csv, "siim")
