"""Readers: tiny trees in each official layout (real PNG / JPEG / DICOM / gzipped CSV files),
read back and checked against what the test wrote."""
from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlab.data.cache import CacheError
from cxrlab.data.readers import READERS, get_reader, toy
from cxrlab.data.readers._base import DataLayoutError, patient_split
from cxrlab.data.resize import letterbox, letterbox_geometry, letterbox_mask, to_uint8
from cxrlab.labels import ALL_LABELS, CHEXPERT14, NIH14

nih = get_reader("nih")
chexpert = get_reader("chexpert")
mimic = get_reader("mimic")
siim = get_reader("siim")


def test_registry():
    assert set(READERS) >= {"nih", "chexpert", "mimic", "siim"}
    for name in READERS:
        r = get_reader(name)
        assert callable(r.read_manifest) and callable(r.load_image)
    with pytest.raises(KeyError, match="choose one of"):
        get_reader("vindr")


# ----------------------------------------------------------------------------- NIH
NIH_ROWS = [
    dict(image="00000001_000.png", findings="Effusion|Mass", patient=1, age=57, sex="M"),
    dict(image="00000001_001.png", findings="No Finding", patient=1, age=58, view="AP"),
    dict(image="00000002_000.png", findings="Hernia", patient=2, sex="F", list="test"),
    dict(image="00000002_001.png", findings="Pleural_Thickening|Pneumothorax", patient=2,
         view="AP", list="test"),
    dict(image="00000003_000.png", findings="Cardiomegaly", patient=3, age=1,
         list=None),  # in neither official list: not part of the data set
]


def test_nih_official_layout(tmp_path):
    root = toy.nih_tree(tmp_path / "nih", NIH_ROWS)
    m = nih.read_manifest(root)
    assert list(m["image_id"]) == [r["image"] for r in NIH_ROWS[:4]]
    # all views, all images per patient
    assert list(m["view"]) == ["PA", "AP", "PA", "AP"]
    assert list(m["patient_id"]) == ["1", "1", "2", "2"]
    # official test list -> test; train_val -> train/val, never test
    assert list(m["split"][2:]) == ["test", "test"]
    assert set(m["split"][:2]) <= {"train", "val"} and m["split"][0] == m["split"][1]
    # labels: the |-joined findings, 1/0 for NIH14; CheXpert-only labels are missing (NaN)
    row = m.iloc[0]
    assert row["Effusion"] == 1 and row["Mass"] == 1 and row["Atelectasis"] == 0
    assert m.iloc[1][list(NIH14)].sum() == 0
    assert m.iloc[3]["Pleural_Thickening"] == 1 and m.iloc[3]["Pneumothorax"] == 1
    for lab in set(ALL_LABELS) - set(NIH14):
        assert m[lab].isna().all(), lab
    assert m.loc[0, "age"] == 57 and m.loc[2, "sex"] == "F"
    assert m["path"].tolist()[0] == "images/00000001_000.png"
    img = nih.load_image(root, m.iloc[0])
    assert img.dtype == np.uint8 and img.shape == (64, 64)
    assert np.array_equal(img, np.asarray(Image.open(root / "images/00000001_000.png")))
    # view filter
    assert list(nih.read_manifest(root, views="PA")["view"]) == ["PA", "PA"]
    with pytest.raises(ValueError, match="unknown view"):
        nih.read_manifest(root, views=["LATERAL"])


def test_nih_kaggle_layout_and_val_split(tmp_path):
    rows = [dict(image=f"{p:08d}_000.png", patient=p) for p in range(1, 41)]
    root = toy.nih_tree(tmp_path / "k", rows, kaggle_layout=True)
    m = nih.read_manifest(root, val_fraction=0.3, seed=1)
    assert m["path"].str.startswith("images_001/images/").all()
    counts = m["split"].value_counts()
    assert 4 <= counts["val"] <= 20 and "test" not in counts
    # the hash split depends on (seed, patient) only, not on row order
    again = nih.read_manifest(root, val_fraction=0.3, seed=1)
    assert again["split"].tolist() == m["split"].tolist()
    other = nih.read_manifest(root, val_fraction=0.3, seed=2)
    assert other["split"].tolist() != m["split"].tolist()


def test_nih_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*data_download"):
        nih.read_manifest(tmp_path / "nowhere")
    root = toy.nih_tree(tmp_path / "nih", NIH_ROWS)
    (root / "test_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="test_list.txt.*data_download"):
        nih.read_manifest(root)
    root = toy.nih_tree(tmp_path / "nih2", NIH_ROWS)
    (root / "Data_Entry_2017_v2020.csv").unlink()
    with pytest.raises(FileNotFoundError, match="Data_Entry_2017_v2020.csv"):
        nih.read_manifest(root)
    root = toy.nih_tree(tmp_path / "nih3", NIH_ROWS)
    t = pd.read_csv(root / "Data_Entry_2017_v2020.csv")
    t = t.drop(columns=["Patient Age", "View Position"])
    t.to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    with pytest.raises(DataLayoutError, match=r"\['Patient Age', 'View Position'\]"):
        nih.read_manifest(root)
    with pytest.raises(ValueError, match="unknown split"):
        nih.read_manifest(toy.nih_tree(tmp_path / "nih4", NIH_ROWS), split="random")


def test_nih_patient_in_two_official_splits_is_refused(tmp_path):
    rows = [dict(image="00000009_000.png", patient=9), dict(image="00000009_001.png", patient=9,
                                                           list="test")]
    root = toy.nih_tree(tmp_path / "leak", rows)
    with pytest.raises(CacheError, match="more than one split"):
        nih.read_manifest(root)


# ----------------------------------------------------------------------------- CheXpert
CHX_TRAIN = [
    dict(patient=1, labels={"Pleural Effusion": -1, "Cardiomegaly": 1, "Edema": 0}, age=70),
    dict(patient=1, lateral=True, labels={"Cardiomegaly": 1}),
    dict(patient=2, study=2, ap_pa="PA", sex="Male", labels={"No Finding": 1, "Atelectasis": -1}),
]
CHX_VALID = [dict(patient=64541, labels={"Edema": 1, "Support Devices": 1})]


@pytest.mark.parametrize("folder", ["CheXpert-v1.0-small", "CheXpert-v1.0"])
def test_chexpert_layout_views_splits(tmp_path, folder):
    root = toy.chexpert_tree(tmp_path, CHX_TRAIN, CHX_VALID, folder=folder)
    m = chexpert.read_manifest(root)
    assert list(m["patient_id"]) == ["patient00001", "patient00002", "patient64541"]
    assert list(m["view"]) == ["AP", "PA", "AP"]           # frontal only by default
    assert m["split"].iloc[2] == "test"                      # valid.csv -> test
    assert set(m["split"].iloc[:2]) <= {"train", "val"}
    assert m["path"].iloc[0] == f"{folder}/train/patient00001/study1/view1_frontal.jpg"
    img = chexpert.load_image(root, m.iloc[0])
    assert img.dtype == np.uint8 and img.shape == (80, 64)
    assert m.loc[0, "sex"] == "F" and m.loc[1, "sex"] == "M" and m.loc[0, "age"] == 70
    for lab in set(ALL_LABELS) - set(CHEXPERT14):
        assert m[lab].isna().all(), lab
    both = chexpert.read_manifest(root, frontal_only=False)
    assert "LATERAL" in set(both["view"]) and len(both) == 4
    # the dataset folder itself as root works too
    m2 = chexpert.read_manifest(root / folder)
    assert m2["path"].iloc[0] == "train/patient00001/study1/view1_frontal.jpg"
    assert chexpert.load_image(root / folder, m2.iloc[0]).shape == (80, 64)


def test_chexpert_uncertain_and_blank_policies(tmp_path):
    root = toy.chexpert_tree(tmp_path, CHX_TRAIN, CHX_VALID)
    get = lambda **kw: chexpert.read_manifest(root, **kw).iloc[0]  # noqa: E731
    r = get()  # defaults: uncertain ignore (-1 -> NaN), blank zeros
    assert np.isnan(r["Effusion"]) and r["Cardiomegaly"] == 1 and r["Edema"] == 0
    assert r["Pneumonia"] == 0                                   # blank -> 0 by default
    assert np.isnan(r["Hernia"])                                 # not defined -> NaN always
    assert get(uncertain="zeros")["Effusion"] == 0
    assert get(uncertain="ones")["Effusion"] == 1
    r = get(blank="nan")
    assert np.isnan(r["Pneumonia"]) and r["Edema"] == 0 and r["Cardiomegaly"] == 1
    per = chexpert.read_manifest(root, uncertain={"Atelectasis": "ones"})
    assert per.loc[1, "Atelectasis"] == 1 and np.isnan(per.loc[0, "Effusion"])
    with pytest.raises(ValueError, match="uncertain='maybe'"):
        chexpert.read_manifest(root, uncertain="maybe")
    with pytest.raises(ValueError, match="blank"):
        chexpert.read_manifest(root, blank="ones")
    with pytest.raises(ValueError, match="unknown label"):
        chexpert.read_manifest(root, uncertain={"Pleural Effusion": "ones"})


def test_chexpert_missing_csv(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="train.csv.*data_download"):
        chexpert.read_manifest(tmp_path / "empty")


# ----------------------------------------------------------------------------- MIMIC
MIMIC_IMAGES = [
    dict(dicom_id="d1", subject_id=10000032, study_id=50414267, split="train", view="PA"),
    dict(dicom_id="d2", subject_id=10000032, study_id=50414267, split="train", view="LATERAL"),
    dict(dicom_id="d3", subject_id=10000032, study_id=53189527, split="train", view="AP"),
    dict(dicom_id="d4", subject_id=11000011, study_id=51000001, split="validate", view="AP"),
    dict(dicom_id="d5", subject_id=12000012, study_id=52000002, split="test", view="PA"),
]
MIMIC_STUDIES = [
    dict(subject_id=10000032, study_id=50414267, labels={"Pneumothorax": 1, "Atelectasis": -1}),
    dict(subject_id=10000032, study_id=53189527, labels={"No Finding": 1}),
    dict(subject_id=12000012, study_id=52000002, labels={"Pleural Effusion": 1}),
    # study 51000001 has no label row: its labels are unknown, not negative
]


def test_mimic_official_layout(tmp_path):
    root = toy.mimic_tree(tmp_path, MIMIC_IMAGES, MIMIC_STUDIES,
                          patients=[dict(subject_id=10000032, gender="F", anchor_age=52)])
    with gzip.open(root / "mimic-cxr-2.0.0-split.csv.gz", "rt") as f:  # really gzipped
        assert f.readline().startswith("dicom_id")
    m = mimic.read_manifest(root)
    assert list(m["image_id"]) == ["d1", "d3", "d4", "d5"]      # lateral dropped
    assert list(m["split"]) == ["train", "train", "val", "test"]  # official, validate -> val
    assert list(m["view"]) == ["PA", "AP", "AP", "PA"]
    assert m.loc[0, "Pneumothorax"] == 1 and np.isnan(m.loc[0, "Atelectasis"])
    assert m.loc[0, "Edema"] == 0                      # blank -> 0
    assert m.loc[1, "No_Finding"] == 1 and m.loc[1, "Pneumothorax"] == 0
    assert m.iloc[2][list(CHEXPERT14)].isna().all()    # study without labels -> all NaN
    assert m.loc[3, "Effusion"] == 1
    assert m.loc[0, "age"] == 52 and m.loc[0, "sex"] == "F" and np.isnan(m.loc[2, "age"])
    assert m.loc[0, "path"] == "files/p10/p10000032/s50414267/d1.jpg"
    assert mimic.load_image(root, m.iloc[0]).shape == (72, 64)
    assert mimic.read_manifest(root, uncertain="ones").loc[0, "Atelectasis"] == 1
    assert len(mimic.read_manifest(root, frontal_only=False)) == 5
    assert list(mimic.read_manifest(root, views="AP")["image_id"]) == ["d3", "d4"]


def test_mimic_errors_and_leakage(tmp_path):
    root = toy.mimic_tree(tmp_path / "a", MIMIC_IMAGES, MIMIC_STUDIES)
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match="split table.*mimic-cxr-2.0.0-split.csv.gz"):
        mimic.read_manifest(root)
    leaky = [dict(MIMIC_IMAGES[0]), dict(MIMIC_IMAGES[2], split="test")]
    root = toy.mimic_tree(tmp_path / "b", leaky, MIMIC_STUDIES)
    with pytest.raises(CacheError, match="more than one split"):
        mimic.read_manifest(root)


# ----------------------------------------------------------------------------- SIIM
def rle_encode_reference(mask: np.ndarray) -> str:
    """Independent encoder written from the competition's description: walk the pixels in
    column-major order and emit (start relative to the end of the previous run, length)."""
    flat = mask.flatten(order="F")
    runs, prev_end, i = [], 0, 0
    while i < len(flat):
        if flat[i]:
            j = i
            while j < len(flat) and flat[j]:
                j += 1
            runs += [i - prev_end, j - i]
            prev_end, i = j, j
        else:
            i += 1
    return " ".join(map(str, runs)) if runs else "-1"


def test_siim_rle_is_column_major_and_relative():
    mask = np.zeros((6, 5), dtype=np.uint8)   # non-square: catches a transposition
    mask[1:3, 0] = 1                          # column 0, rows 1-2
    mask[0, 1] = 1                            # column 1, row 0
    rle = rle_encode_reference(mask)
    assert rle == "1 2 3 1"                   # starts 1 and 6 (=0*6+... column-major), relative
    assert np.array_equal(siim.decode_rle(rle, 6, 5), mask)
    assert siim.encode_rle(mask) == rle
    assert siim.decode_rle("-1", 6, 5).sum() == 0
    with pytest.raises(DataLayoutError, match="outside"):
        siim.decode_rle("25 10", 6, 5)


def test_siim_multi_mask_union_and_dicom(tmp_path):
    a = np.zeros((64, 64), np.uint8)
    a[10:20, 5:9] = 1
    b = np.zeros((64, 64), np.uint8)
    b[40:50, 30:60] = 1
    b[12:14, 7:12] = 1                                   # overlaps a
    deep = (toy.toy_image(7, 64, 64, bits=12)).astype(np.uint16)
    images = [
        dict(image_id="1.2.9.1", rles=[rle_encode_reference(a), rle_encode_reference(b)],
             patient_id="pat-a", age="061Y", sex="F", view="AP"),
        dict(image_id="1.2.9.2", patient_id="pat-b"),
        dict(image_id="1.2.9.3", patient_id="pat-c", photometric="MONOCHROME1", pixels=deep),
    ]
    root = toy.siim_tree(tmp_path, images, gzip=True)
    m = siim.read_manifest(root)
    assert list(m["image_id"]) == ["1.2.9.1", "1.2.9.2", "1.2.9.3"]
    assert list(m["Pneumothorax"]) == [1, 0, 0] and list(m["has_mask"]) == [True, False, False]
    assert m.loc[0, "n_masks"] == 2
    assert list(m["patient_id"]) == ["pat-a", "pat-b", "pat-c"]
    assert m.loc[0, "age"] == 61 and m.loc[0, "sex"] == "F" and m.loc[0, "view"] == "AP"
    assert m[sorted(set(ALL_LABELS) - {"Pneumothorax"})].isna().all().all()
    img = siim.load_image(root, m.iloc[0])
    assert img.dtype == np.uint8 and img.shape == (64, 64)
    union = siim.load_masks(root, m.iloc[0], img.shape)
    assert np.array_equal(union, a | b)
    assert siim.load_masks(root, m.iloc[1], img.shape).sum() == 0
    # MONOCHROME1 12-bit: inverted (bright where the stored value is low), then windowable
    inv = siim.load_image(root, m.iloc[2])
    assert np.corrcoef(inv.ravel(), deep.ravel().astype(float))[0, 1] < -0.99
    assert to_uint8(inv).dtype == np.uint8


# ----------------------------------------------------------------------------- PadChest
def test_padchest_layout_labels_views(tmp_path):
    padchest = get_reader("padchest")
    rows = [
        dict(image_id="a.png", patient_id="P1", labels=["laminar atelectasis", "cardiomegaly",
                                                         "kyphosis"], birth=1950.0,
             study_date=20150914, sex="M"),
        dict(image_id="b.png", patient_id="P1", projection="L", labels=["normal"]),
        dict(image_id="c.png", patient_id="P2", folder=3, projection="AP_horizontal",
             labels=["normal"]),
        dict(image_id="d.png", patient_id="P3", labels=["exclude"]),
        dict(image_id="e.png", patient_id="P4", labels=None),
    ]
    root = toy.padchest_tree(tmp_path, rows)
    m = padchest.read_manifest(root)
    assert list(m["image_id"]) == ["a.png", "c.png", "e.png"]   # lateral, excluded dropped
    assert list(m["view"]) == ["PA", "AP_SUPINE", "PA"]
    assert m.loc[0, "Atelectasis"] == 1 and m.loc[0, "Cardiomegaly"] == 1
    assert m.loc[0, "Effusion"] == 0 and m.loc[0, "No_Finding"] == 0
    assert np.isnan(m.loc[0, "Support_Devices"])              # no PadChest term: undefined
    assert m.loc[1, "No_Finding"] == 1 and m.loc[1, "path"] == "3/c.png"
    assert m.iloc[2][list(ALL_LABELS)].isna().all()           # no label list: unknown
    assert m.loc[0, "age"] == 65 and m.loc[0, "sex"] == "M"
    img = padchest.load_image(root, m.iloc[0])
    assert img.dtype == np.uint16 and to_uint8(img).dtype == np.uint8
    assert len(padchest.read_manifest(root, frontal_only=False)) == 4


# ----------------------------------------------------------------------------- resize
def test_letterbox_preserves_aspect_and_masks_stay_binary():
    img = np.full((40, 80), 200, np.uint8)                # wide: pad top and bottom
    out = letterbox(img, 32)
    assert out.shape == (32, 32) and out.dtype == np.uint8
    g = letterbox_geometry(40, 80, 32)
    assert (g.new_height, g.new_width, g.top, g.left) == (16, 32, 8, 0)
    assert out[:8].max() == 0 and out[24:].max() == 0 and out[8:24].min() == 200
    tall = letterbox(np.full((90, 30), 9, np.uint8), 30)
    assert tall[:, :10].max() == 0 and tall[:, 10:20].min() == 9 and tall[:, 20:].max() == 0
    mask = np.zeros((40, 80), np.uint8)
    mask[10:30, 20:60] = 1
    mm = letterbox_mask(mask, 32)
    assert set(np.unique(mm)) == {0, 1}
    assert abs(int(mm.sum()) - 20 * 40 * g.scale ** 2) <= 16
    # antialiased: a 1-px checkerboard averages to grey instead of aliasing to black or white
    checker = (np.indices((256, 256)).sum(0) % 2 * 255).astype(np.uint8)
    small = letterbox(checker, 32)
    assert abs(float(small.mean()) - 127.5) < 5 and small.std() < 10


def test_to_uint8_windows_deep_images(tmp_path):
    from cxrlab.data.readers._image import load_raster

    deep = np.linspace(1000, 3000, 64 * 64).reshape(64, 64).astype(np.uint16)
    deep[0, 0] = 60000                                    # one hot pixel does not ruin contrast
    Image.fromarray(deep).save(tmp_path / "deep.png")     # a real 16-bit PNG (PadChest-like)
    loaded = load_raster(tmp_path / "deep.png")
    assert loaded.dtype == np.uint16 and np.array_equal(loaded, deep)
    u8 = to_uint8(loaded)
    assert u8.dtype == np.uint8 and u8.min() == 0 and u8.max() == 255
    assert np.percentile(u8, 50) == pytest.approx(127, abs=3)


def test_patient_split_is_patient_level():
    pids = pd.Series([f"p{i // 3}" for i in range(300)])
    s = patient_split(pids, val_fraction=0.2, test_fraction=0.2, seed=0)
    per_patient = pd.DataFrame({"p": pids, "s": s}).groupby("p")["s"].nunique()
    assert (per_patient == 1).all()
    frac = pd.Series(s).value_counts(normalize=True)
    assert 0.1 < frac["val"] < 0.3 and 0.1 < frac["test"] < 0.3
