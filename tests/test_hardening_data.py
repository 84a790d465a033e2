"""Hardening, data (issue 14): damaged caches name the file and the fix, prepare's options and
re-runs, the real-data bugs (--limit in proportion on the shipped real metadata, PadChest,
CheXpert, NIH, SIIM stage-2 RLE) and `cxrlab report` on unfinished or damaged study folders."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlab.cli import _parse_value
from cxrlab.cli import main as cli_main
from cxrlab.data.cache import CacheError, CacheWriter, open_cache
from cxrlab.data.readers import toy

from tests.helpers.bad_inputs import BadInput

SIZE = 32

# ----------------------------------------------------------------------------- cases
CACHE_CASES = [
    BadInput("cache", "API", "images.npy truncated", "CacheError", "is unreadable"),
    BadInput("cache", "API", "images.npy of another shape (another cache's)", "CacheError",
             "but meta.json says"),
    BadInput("cache", "API", "images.npy with a zeroed header", "CacheError", "is unreadable"),
    BadInput("cache", "API", "images.npy deleted", "CacheError", "images.npy is missing"),
    BadInput("cache", "API", "meta.json cut short", "CacheError", "is corrupt (not JSON"),
    BadInput("cache", "API", "meta.json holding a list", "CacheError",
             "is corrupt (not a JSON object)"),
    BadInput("cache", "API", "manifest.csv deleted", "CacheError", "manifest.csv is missing"),
    BadInput("embedding cache", "API", "a corrupt <backbone>-<key>.pt", "warning, recomputed",
             "is unreadable"),
    BadInput("weights", "API", "create_backbone(weights='truncated.safetensors')",
             "WeightsMismatchError", "probably truncated"),
]
PREPARE_CASES = [
    BadInput("prepare", "CLI", "cxrlab data prepare nih --opt colour=red", "exit 2",
             "unknown reader option(s) ['colour']"),
    BadInput("prepare", "CLI", "cxrlab data prepare nih --opt no_equals_sign", "exit 2",
             "--opt wants KEY=VALUE"),
    BadInput("prepare", "CLI", "cxrlab data prepare nih --opt split=random", "exit 2",
             "unknown split='random'"),
    BadInput("prepare", "CLI", "cxrlab data prepare nih --limit 0", "exit 2",
             "limit must be a positive number"),
    BadInput("prepare", "CLI", "cxrlab data prepare nih --workers 0", "exit 2",
             "workers must be >= 1"),
    BadInput("prepare", "CLI", "cxrlab data prepare nih --out FILE", "exit 2", "is a file"),
    BadInput("prepare", "CLI", "cxrlab data prepare mimic --root /missing", "exit 2",
             "does not exist"),
    BadInput("prepare", "CLI", "NIH copy without test_list.txt", "exit 2",
             "pass --opt split=hash"),
    BadInput("prepare", "CLI", "re-run into an OUT whose meta.json is corrupt", "exit 2",
             "is corrupt (not JSON)"),
    BadInput("prepare", "CLI", "re-run after adding a file that was missing", "exit 0, the "
             "skipped row is retried", "retrying the 2 skipped rows"),
    BadInput("prepare", "CLI", "re-run while files are still missing", "exit 0, nothing to do",
             "rows are still skipped"),
    BadInput("prepare", "CLI", "cxrlab data prepare chexpert --opt blank=nan", "exit 0, "
             "blanks are NaN", "(the option reaches the reader as the word 'nan')"),
]
REAL_CASES = [
    BadInput("real data", "API", "PadChest row with Labels=['']", "all labels missing (NaN)",
             "(not all 0)"),
    BadInput("real data", "API", "CheXpert frontal image with AP/PA = LL", "kept, view FRONTAL",
             "(not dropped as lateral)"),
    BadInput("real data", "API", "SIIM stage_2_train.csv (absolute 1-based RLE)",
             "detected and decoded as absolute", "(mask equal to the drawn one)"),
    BadInput("real data", "API", "SIIM RLE read with the wrong format", "DataLayoutError",
             "--opt rle="),
]
REPORT_CASES = [
    BadInput("report", "CLI", "cxrlab report on an empty folder", "exit 2",
             "no study under"),
    BadInput("report", "CLI", "cxrlab report on a study whose results.csv is header only",
             "exit 2", "has no rows (header only)"),
    BadInput("report", "CLI", "cxrlab report on a study whose metrics.json is cut short",
             "exit 2", "is truncated or corrupt"),
    BadInput("report", "CLI", "cxrlab report on a study whose per_label.csv is missing",
             "exit 2", "per_label.csv is missing or unreadable"),
    BadInput("report", "CLI", "cxrlab report on a metrics.json without its fields", "exit 2",
             "lacks"),
]
CASES = CACHE_CASES + PREPARE_CASES + REAL_CASES + REPORT_CASES


def _one_line_error(capsys, says: str) -> str:
    err = capsys.readouterr().err
    assert says in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


# ----------------------------------------------------------------------------- caches
def _cache(path, n=6):
    w = CacheWriter(path, n, SIZE)
    w.write(0, np.full((n, SIZE, SIZE), 7, np.uint8))
    man = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)],
                        "patient_id": [f"p{i}" for i in range(n)], "split": "train",
                        "domain": "toy", "Effusion": np.arange(n) % 2})
    return w.finalize(man, meta={"synthetic": True})


def _damage(path, given):
    img = path / "images.npy"
    if given == "images.npy truncated":
        img.write_bytes(img.read_bytes()[:-SIZE * SIZE * 2])
    elif given.startswith("images.npy of another shape"):
        np.save(img, np.zeros((6, SIZE + 8, SIZE + 8), np.uint8))
    elif given == "images.npy with a zeroed header":
        b = bytearray(img.read_bytes())
        b[:128] = bytes(128)
        img.write_bytes(bytes(b))
    elif given == "images.npy deleted":
        img.unlink()
    elif given == "meta.json cut short":
        (path / "meta.json").write_text((path / "meta.json").read_text()[:40])
    elif given == "meta.json holding a list":
        (path / "meta.json").write_text("[1, 2]")
    elif given == "manifest.csv deleted":
        (path / "manifest.csv").unlink()


@pytest.mark.parametrize("case", CACHE_CASES[:7], ids=lambda c: c.given)
def test_damaged_cache_names_the_file_and_the_fix(case, tmp_path):
    _cache(tmp_path / "c")
    _damage(tmp_path / "c", case.given)
    with pytest.raises(CacheError) as e:
        c = open_cache(tmp_path / "c")
        np.asarray(c.images[:1])
    msg = str(e.value)
    assert case.says in msg and str(tmp_path / "c") in msg
    assert "re-create" in msg and "allow_pickle" not in msg


def test_corrupt_embedding_cache_is_recomputed(tmp_path):
    from cxrlab.probe.embeddings import extract_embeddings
    from cxrlab.models import create_backbone

    cache = _cache(tmp_path / "c")
    bb = create_backbone("tiny_cnn", image_size=SIZE)
    a, info = extract_embeddings(bb, cache, device="cpu", cache_dir=tmp_path / "e",
                                 return_info=True)
    path = tmp_path / "e" / info["path"].rsplit("/", 1)[-1]
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match=CACHE_CASES[7].says):
        b, info = extract_embeddings(bb, cache, device="cpu", cache_dir=tmp_path / "e",
                                     return_info=True)
    assert not info["hit"] and torch.equal(a, b)
    c, info = extract_embeddings(bb, cache, device="cpu", cache_dir=tmp_path / "e",
                                 return_info=True)
    assert info["hit"] and torch.equal(a, c)                   # rewritten whole


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    from cxrlab.models import WeightsMismatchError, create_backbone

    bb = create_backbone("tiny_cnn", image_size=SIZE)
    f = tmp_path / "tiny_cnn.safetensors"
    save_file({k: v.contiguous() for k, v in bb.state_dict().items()}, str(f))
    f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2])
    with pytest.raises(WeightsMismatchError) as e:
        create_backbone("tiny_cnn", image_size=SIZE, weights=f)
    assert CACHE_CASES[8].says in str(e.value) and str(f) in str(e.value)


# ----------------------------------------------------------------------------- prepare
def _nih_rows(n_patients=6, missing=(1, 4)):
    rows = []
    for p in range(1, n_patients + 1):
        for k in range(2):
            rows.append(dict(image=f"{p:08d}_{k:03d}.png", patient=p, findings="No Finding",
                             list="test" if p % 3 == 0 else "train_val"))
    for i in missing:
        rows[i]["file"] = "missing"
    return rows


@pytest.mark.parametrize("case", PREPARE_CASES[:9], ids=lambda c: c.given)
def test_bad_prepare_input(case, tmp_path, capsys):
    root = toy.nih_tree(tmp_path / "raw", _nih_rows(3, missing=()))
    out = tmp_path / "out"
    base = ["data", "prepare", "nih", "--root", str(root), "--out", str(out), "--size",
            str(SIZE), "--workers", "1"]
    g = case.given
    if "--opt" in g:
        argv = base + ["--opt", g.split("--opt ")[1]]
    elif "--limit" in g:
        argv = base + ["--limit", "0"]
    elif "--workers" in g:
        argv = base[:-1] + ["0"]
    elif "--out FILE" in g:
        out.write_text("x")
        argv = base
    elif "--root /missing" in g:
        argv = ["data", "prepare", "mimic", "--root", str(tmp_path / "missing"), "--out",
                str(out)]
    elif "test_list" in g:
        (root / "test_list.txt").unlink()
        argv = base
    else:  # corrupt meta.json of a finished prepare
        assert cli_main(base) == 0
        capsys.readouterr()
        (out / "meta.json").write_text("{")
        argv = base
    assert cli_main(argv) == 2
    _one_line_error(capsys, case.says)


def test_rerun_retries_skipped_rows(tmp_path, capsys):
    rows = _nih_rows()
    root = toy.nih_tree(tmp_path / "raw", rows)
    argv = ["data", "prepare", "nih", "--root", str(root), "--out", str(tmp_path / "out"),
            "--size", str(SIZE), "--workers", "1"]
    assert cli_main(argv) == 0
    assert "10 written, 2 skipped" in capsys.readouterr().out
    assert cli_main(argv) == 0                                # still missing: nothing to do
    out = capsys.readouterr().out
    assert "2 " + PREPARE_CASES[10].says in out and "nothing to do" in out
    before = open_cache(tmp_path / "out")
    kept = {i: np.asarray(before.images[k]).copy()
            for k, i in enumerate(before.manifest["image_id"])}
    for r in rows:                                             # the files arrive
        r.pop("file", None)
    toy.nih_tree(tmp_path / "raw", rows)
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert PREPARE_CASES[9].says in out and "12 written, 0 skipped" in out
    after = open_cache(tmp_path / "out")
    assert len(after) == 12 and (after.path / "skipped.csv").read_text().count("\n") == 1
    for k, i in enumerate(after.manifest["image_id"]):
        if i in kept:                                          # rows prepared before: unchanged
            assert np.array_equal(after.images[k], kept[i])
    ref = __import__("cxrlab.data.prepare", fromlist=["prepare"]).prepare(
        "nih", root, tmp_path / "ref", image_size=SIZE, workers=1, verbose=False)
    assert np.array_equal(np.asarray(ref.images), np.asarray(after.images))
    assert ref.manifest.equals(after.manifest)


def test_opt_blank_nan_reaches_the_reader(tmp_path, capsys):
    assert _parse_value("nan") == "nan" and _parse_value("inf") == "inf"
    assert _parse_value("0.5") == 0.5
    train = [dict(patient=1, ap_pa="AP", labels={"Edema": 1}),
             dict(patient=2, ap_pa="PA", labels={"Edema": 0})]
    root = toy.chexpert_tree(tmp_path / "raw", train, [dict(patient=64541, labels={"Edema": 1})])
    assert cli_main(["data", "prepare", "chexpert", "--root", str(root), "--out",
                     str(tmp_path / "out"), "--size", str(SIZE), "--workers", "1",
                     "--opt", "blank=nan"]) == 0
    m = open_cache(tmp_path / "out").manifest
    assert m["Pneumonia"].isna().all() and set(m["Edema"].dropna()) == {0.0, 1.0}
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["reader_options"] == \
        {"blank": "nan"}


# ----------------------------------------------------------------------------- real data
@pytest.mark.parametrize("name", ["nih", "chexpert", "padchest"])
def test_limit_keeps_every_split_in_proportion_on_real_metadata(name):
    from cxrlab.data.metadata import load_shipped_metadata
    from cxrlab.data.prepare import _limit_rows

    m = load_shipped_metadata(name)
    full = m["split"].value_counts(normalize=True)
    first = None
    for limit in (500, 5000):
        sub = _limit_rows(m, limit)
        first = sub if first is None else first
        share = sub["split"].value_counts(normalize=True)
        assert abs(len(sub) - limit) <= 0.05 * limit, (name, limit, len(sub))
        for split in ("train", "val", "test"):
            assert abs(share.get(split, 0) - full[split]) < 0.03, (name, limit, dict(share))
        per_patient = sub.groupby("patient_id")["split"].nunique()
        assert (per_patient == 1).all()
        got = sub["patient_id"].value_counts()                 # whole patients only
        assert (got == m["patient_id"].value_counts().reindex(got.index)).all()
    assert _limit_rows(m, 500).equals(first)                  # seeded: the same rows again


def test_padchest_empty_label_list_is_missing(tmp_path):
    from cxrlab.data.readers import padchest

    root = toy.padchest_tree(tmp_path, [
        dict(image_id="a.png", patient_id="p1", labels=[""]),
        dict(image_id="b.png", patient_id="p2", labels=["normal"]),
        dict(image_id="c.png", patient_id="p3", labels=["pleural effusion"])])
    m = padchest.read_manifest(root).set_index("image_id")
    assert m.loc["a.png", "Effusion"] != m.loc["a.png", "Effusion"]        # NaN
    assert m.loc["b.png", "Effusion"] == 0 and m.loc["c.png", "Effusion"] == 1


def test_chexpert_frontal_ll_is_kept(tmp_path):
    from cxrlab.data.protocols.spec import LATERAL_VIEWS
    from cxrlab.data.readers import chexpert

    train = [dict(patient=1, ap_pa="LL"), dict(patient=2, ap_pa="PA"),
             dict(patient=3, ap_pa="RL"), dict(patient=4, lateral=True)]
    root = toy.chexpert_tree(tmp_path, train, [dict(patient=64541)])
    m = chexpert.read_manifest(root)
    assert len(m) == 4 and list(m["view"][:3]) == ["FRONTAL", "PA", "FRONTAL"]
    assert not m["view"].isin(LATERAL_VIEWS).any()
    assert "LATERAL" in set(chexpert.read_manifest(root, frontal_only=False)["view"])


def _blobs(h=64, w=64):
    m = np.zeros((h, w), np.uint8)
    m[5:20, 3:9] = 1
    m[40:60, 30:50] = 1
    m[2:4, 60:64] = 1
    return m


def test_siim_stage2_absolute_rle_is_detected_and_decoded(tmp_path):
    from cxrlab.data.readers import siim

    mask = _blobs()
    rel, ab = siim.encode_rle(mask), siim.encode_rle(mask, fmt="absolute")
    assert np.array_equal(siim.decode_rle(ab, 64, 64, "absolute"), mask)
    assert np.array_equal(siim.decode_rle(rel, 64, 64, "relative"), mask)
    assert siim.detect_rle_format([ab, "-1"], "stage_2_train.csv") == "absolute"
    assert siim.detect_rle_format([rel, "-1"], "stage_2_train.csv") == "relative"
    assert siim.detect_rle_format(["-1"], "stage_2_train.csv") == "absolute"   # by name
    assert siim.detect_rle_format(["-1"], "train-rle.csv") == "relative"
    # a whole stage-2 tree, read and prepared: the mask in the cache is the drawn one
    root = toy.siim_tree(tmp_path / "raw", [dict(image_id="1.2.3", rles=[ab], patient_id="p1"),
                                            dict(image_id="1.2.4", patient_id="p2")])
    (root / "train-rle.csv").rename(root / "stage_2_train.csv")
    m = siim.read_manifest(root)
    assert set(m["_rle_format"]) == {"absolute"}
    got = siim.load_masks(root, m.set_index("image_id").loc["1.2.3"], (64, 64))
    assert np.array_equal(got, mask)


def test_siim_rle_read_with_the_wrong_format_says_so():
    from cxrlab.data.readers import siim
    from cxrlab.data.readers._base import DataLayoutError

    mask = np.zeros((64, 64), np.uint8)
    mask[:, 50:] = 1                                           # late in column-major order
    mask[10:12, 60] = 0
    ab = siim.encode_rle(mask, fmt="absolute")
    with pytest.raises(DataLayoutError, match=REAL_CASES[3].says):
        siim.decode_rle(ab, 64, 64, "relative")


def test_shipped_siim_table_is_stage1_relative_and_decodes():
    from cxrlab.data.metadata import shipped_metadata_path
    from cxrlab.data.readers import siim

    t = pd.read_csv(shipped_metadata_path("siim"))
    rles = t[t.columns[-1]].astype(str)
    assert siim.detect_rle_format(rles, "siim-pneumothorax-train-rle.csv.gz") == "relative"
    pos = [r for r in rles if r.strip() != "-1"][:200]
    assert all(siim.decode_rle(r, 1024, 1024, "relative").any() for r in pos)


def test_letterbox_windows_after_downscaling():
    """Same picture as windowing first (within a few grey levels), at a fraction of the cost;
    the speed is measured in `cxrlab bench`, not asserted here."""
    from PIL import Image

    from cxrlab.data.resize import letterbox, letterbox_geometry, to_uint8

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:900, 0:700]
    img = (20000 + 15000 * np.sin(xx / 90) * np.cos(yy / 120)
           + rng.normal(0, 800, (900, 700))).clip(0, 65535).astype(np.uint16)
    win = to_uint8(img)
    g = letterbox_geometry(*img.shape, 64)
    old = np.zeros((64, 64), np.uint8)
    old[g.top:g.top + g.new_height, g.left:g.left + g.new_width] = np.asarray(
        Image.fromarray(win).resize((g.new_width, g.new_height), Image.Resampling.LANCZOS,
                                    reducing_gap=2.0))
    new = letterbox(img, 64)
    diff = np.abs(old.astype(int) - new.astype(int))
    assert new.dtype == np.uint8 and new.shape == (64, 64)
    assert diff.mean() < 4 and np.array_equal(new[:, :g.left], old[:, :g.left])
    assert new.max() >= 250 and new[g.top:g.top + g.new_height].min() <= 5   # full range used
    assert np.array_equal(letterbox(win, 64), old)             # 8-bit input: unchanged path


# ----------------------------------------------------------------------------- report
def _study(path, results="method,auc\nbce,0.7\n", per_label="label\nx\n", meta=None):
    path.mkdir(parents=True)
    m = {"kind": "cxrlab-study", "name": "s", "synthetic": True, "config": {}, "profile": "ci",
         "units": [{"unit": "u1"}], "data": []}
    (path / "metrics.json").write_text(json.dumps(m if meta is None else meta))
    if results is not None:
        (path / "results.csv").write_text(results)
    if per_label is not None:
        (path / "per_label.csv").write_text(per_label)


@pytest.mark.parametrize("case", REPORT_CASES, ids=lambda c: c.given)
def test_report_on_unfinished_or_damaged_folders(case, tmp_path, capsys):
    d = tmp_path / "study"
    g = case.given
    if "empty folder" in g:
        d.mkdir()
    elif "header only" in g:
        _study(d, results="method,auc\n")
    elif "cut short" in g:
        _study(d)
        (d / "metrics.json").write_text((d / "metrics.json").read_text()[:30])
    elif "per_label" in g:
        _study(d, per_label=None)
    else:
        _study(d, meta={"kind": "cxrlab-study"})
    assert cli_main(["report", str(d)]) == 2
    err = _one_line_error(capsys, case.says)
    if "header only" in g or "cut short" in g:
        assert "present:" in err and "missing:" in err and "re-run" in err



def test_report_on_a_study_killed_before_its_tables_lists_what_it_has(tmp_path, capsys):
    d = tmp_path / "study"
    (d / "units" / "bce_probe-tiny_cnn-seed000").mkdir(parents=True)
    (d / "units" / "bce_probe-tiny_cnn-seed000" / "metrics.json").write_text("{}")
    assert cli_main(["report", str(d)]) == 0
    md = (d / "report.md").read_text()
    assert "Unfinished" in md and "`bce_probe-tiny_cnn-seed000`" in md
    assert "Its grid is unknown (no study.json)" in md and (d / "report.html").exists()


def test_bench_resize_quick_reports_the_ratio():
    from cxrlab.bench import GROUPS
    from cxrlab.bench.resize import run

    assert GROUPS["resize"] == "cxrlab.bench.resize"
    res = run(quick=True)
    assert set(res) == {"resize16_window_after_speedup", "resize16_ms_per_image",
                        "resize16_window_first_ms_per_image", "resize16_mean_abs_diff"}
    assert res["resize16_ms_per_image"] > 0 and res["resize16_mean_abs_diff"] < 4
