"""Profiles, labels, seeding, atomic IO and the cache format."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlab import profiles, labels
from cxrlab.data.cache import Cache, CacheError, CacheWriter, check_patient_splits
from cxrlab.io import atomic_path, atomic_write_json
from cxrlab.seeding import loader_seeding, seed_everything


# ---------------------------------------------------------------- profiles
def test_profiles_exist_and_differ():
    ci, cpu, gpu = (profiles.get_profile(n) for n in ("ci", "cpu", "gpu"))
    assert ci.image_size < gpu.image_size and ci.n_per_hospital < cpu.n_per_hospital
    assert gpu.backbones == ("resnet50", "efficientnet_b0", "vit_base_patch16_224")
    assert gpu.pretrained and ci.pretrained and gpu.precision == "bf16"


def test_profile_from_env_and_overrides(monkeypatch):
    monkeypatch.setenv("CXRLAB_PROFILE", "cpu")
    monkeypatch.setenv("CXRLAB_IMAGE_SIZE", "128")
    monkeypatch.setenv("CXRLAB_SEEDS", "3,4")
    p = profiles.get_profile()
    assert p.name == "cpu" and p.image_size == 128 and p.seeds == (3, 4)
    q = profiles.get_profile(epochs=1, pretrained="false")
    assert q.epochs == 1 and q.pretrained is False and q.image_size == 128
    assert p.replace(batch_size=7).batch_size == 7


def test_profile_errors(monkeypatch):
    monkeypatch.delenv("CXRLAB_PROFILE", raising=False)
    with pytest.raises(KeyError, match="unknown profile 'laptop'"):
        profiles.get_profile("laptop")
    with pytest.raises(KeyError, match="unknown profile field"):
        profiles.get_profile("ci", image_sise=64)
    with pytest.raises(ValueError, match="at least 32"):
        profiles.get_profile("ci", image_size=16)
    with pytest.raises(ValueError, match="true/false"):
        profiles.get_profile("ci", pretrained="maybe")


# ---------------------------------------------------------------- labels
def test_label_spaces():
    assert len(labels.NIH14) == 14 and len(labels.CHEXPERT14) == 14 and len(labels.SHARED7) == 7
    assert set(labels.SHARED7) == set(labels.NIH14) & set(labels.CHEXPERT14)
    missing_in_chexpert = set(labels.NIH14) - set(labels.defined_labels("mimic"))
    assert missing_in_chexpert == {"Emphysema", "Fibrosis", "Hernia", "Infiltration", "Mass",
                                   "Nodule", "Pleural_Thickening"}
    assert labels.LABEL_MAP["chexpert"]["Pleural Effusion"] == "Effusion"
    t = labels.mapping_table()
    assert t.set_index("label").loc["Hernia", "chexpert"] == ""
    assert t["shared7"].sum() == 7


def test_label_errors():
    with pytest.raises(KeyError, match="unknown label space"):
        labels.get_label_space("nih15")
    with pytest.raises(KeyError, match="unknown label name"):
        labels.get_label_space(["Effusion", "Efusion"])
    with pytest.raises(KeyError, match="unknown data set"):
        labels.defined_labels("padchestx")


def test_lesion_bits_roundtrip():
    m = np.zeros((4, 4), np.uint16)
    m[0, 0] |= 1 << labels.lesion_bit("Pneumothorax")
    m[1, 1] |= 1 << labels.lesion_bit("Effusion")
    assert labels.lesion_mask_for(m, "Pneumothorax").sum() == 1
    assert labels.lesion_mask_for(m).sum() == 2


# ---------------------------------------------------------------- seeding
def test_seed_everything_repeats():
    seed_everything(5)
    a = (np.random.rand(3), torch.rand(3))
    seed_everything(5)
    b = (np.random.rand(3), torch.rand(3))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError):
        seed_everything(-1)


def _worker_values(seed):
    ds = torch.utils.data.TensorDataset(torch.arange(8))

    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return float(np.random.rand())

    dl = torch.utils.data.DataLoader(Noisy(), batch_size=2, num_workers=2, shuffle=True,
                                     **loader_seeding(seed))
    del ds
    return [x.tolist() for x in dl]


def test_dataloader_workers_are_seeded():
    a, b, c = _worker_values(1), _worker_values(1), _worker_values(2)
    assert a == b and a != c
    flat = sum(a, [])
    assert len(set(flat)) == len(flat)  # workers do not repeat each other's random draws


# ---------------------------------------------------------------- atomic io
def test_atomic_write_keeps_old_file_on_crash(tmp_path):
    f = tmp_path / "x.json"
    atomic_write_json(f, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(f) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(f.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


# ---------------------------------------------------------------- cache
def _manifest(n, patients=None, splits=None):
    patients = patients or [f"p{i // 2}" for i in range(n)]
    splits = splits or ["train" if int(p[1:]) % 3 else "test" for p in patients]
    return pd.DataFrame({"image_id": [f"im{i}" for i in range(n)], "patient_id": patients,
                         "split": splits, "domain": "d", "Effusion": [1.0, 0.0] * (n // 2),
                         "No_Finding": np.nan})


def test_cache_roundtrip_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (6, 32, 32), dtype=np.uint8)
    w = CacheWriter(tmp_path / "c", n=6, image_size=32, lung_masks=True, lesion_masks=True)
    w.write(0, imgs[:4], lung_masks=np.ones((4, 32, 32), np.uint8),
            lesion_masks=np.zeros((4, 32, 32), np.uint16))
    w.write(4, imgs[4:], lung_masks=np.ones((2, 32, 32), np.uint8),
            lesion_masks=np.zeros((2, 32, 32), np.uint16))
    c = w.finalize(_manifest(6), meta={"synthetic": True})
    c2 = Cache(tmp_path / "c")
    assert np.array_equal(np.asarray(c2.images), imgs) and c2.synthetic
    y = c2.labels("shared7")
    assert y.shape == (6, 7)
    assert np.isnan(y[:, 0]).all()  # Atelectasis never given -> missing, not 0
    assert np.array_equal(y[:, 4], [1, 0, 1, 0, 1, 0])
    assert list(c2.select(split="test")) == list(np.flatnonzero(c.manifest["split"] == "test"))
    assert not (tmp_path / "c" / "progress.npy").exists()
    with pytest.raises(KeyError, match="unknown domain"):
        c2.select(domain="nowhere")


def test_cache_writer_resumes(tmp_path):
    imgs = np.arange(4 * 32 * 32, dtype=np.uint32).reshape(4, 32, 32).astype(np.uint8)
    w = CacheWriter(tmp_path / "c", n=4, image_size=32)
    w.write(0, imgs[:2])
    w.flush()
    del w  # "crash" after two rows
    w = CacheWriter(tmp_path / "c", n=4, image_size=32, resume=True)
    assert w.resumed and list(w.done) == [True, True, False, False]
    with pytest.raises(CacheError, match="never written"):
        w.finalize(_manifest(4))
    w.write(2, imgs[2:])
    c = w.finalize(_manifest(4))
    assert np.array_equal(np.asarray(c.images), imgs)


def test_cache_refuses_patient_leak_and_bad_input(tmp_path):
    m = _manifest(4, patients=["a", "a", "b", "b"], splits=["train", "test", "train", "train"])
    with pytest.raises(CacheError, match="more than one split"):
        check_patient_splits(m)
    w = CacheWriter(tmp_path / "c", n=4, image_size=32)
    w.write(0, np.zeros((4, 32, 32), np.uint8))
    with pytest.raises(CacheError, match="more than one split"):
        w.finalize(m)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        CacheWriter(f, n=1, image_size=32)
    with pytest.raises(ValueError, match="at least 32"):
        CacheWriter(tmp_path / "d", n=1, image_size=16)
    with pytest.raises(ValueError, match=">= 0"):
        CacheWriter(tmp_path / "d", n=-1, image_size=32)


def test_open_missing_or_unfinished_cache_says_what_to_do(tmp_path):
    with pytest.raises(CacheError, match="cxrlab data synth"):
        Cache(tmp_path / "nope")
    w = CacheWriter(tmp_path / "half", n=2, image_size=32)
    w.flush()
    with pytest.raises(CacheError, match="resume"):
        Cache(tmp_path / "half")


# ---------------------------------------------------------------- command line
def test_cli_info_json():
    out = subprocess.run([sys.executable, "-m", "cxrlab", "info", "--json"], check=True,
                         capture_output=True, text=True).stdout
    d = json.loads(out)
    assert d["profile"] in profiles.PROFILE_NAMES and "torch" in d and d["device"]


def test_cli_reports_errors_cleanly():
    r = subprocess.run([sys.executable, "-m", "cxrlab", "info", "--profile", "nope"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown profile" in r.stderr and "Traceback" not in r.stderr


def test_cli_prepare_reader_options(tmp_path):
    from cxrlab.cli import _parse_value, main

    assert _parse_value("0.1") == 0.1 and _parse_value("3") == 3 and _parse_value("true") is True
    assert _parse_value("PA,AP") == ["PA", "AP"] and _parse_value("ones") == "ones"
    rc = main(["data", "prepare", "nih", "--root", str(tmp_path), "--out", str(tmp_path / "o"),
               "--opt", "no_equals_sign"])
    assert rc == 2


def test_one_colour_per_hospital_and_per_model_whatever_the_order():
    from cxrlab.style import color_of, colors

    a = colors(["source", "target_nih", "tiny_vit"])
    b = colors(["tiny_vit", "target_old", "target_nih", "source"])
    assert all(a[k] == b[k] for k in a)
    assert color_of("tiny_resnet") == color_of("resnet50") != color_of("tiny_vit")
    assert color_of("nih") == color_of("target_nih") and color_of("NIH") == color_of("nih")
    assert len({color_of(h) for h in ("source", "target_nih", "target_old", "target_lowres")}) == 4
    assert color_of("some new arm") == color_of("some new arm")  # stable for unknown names too


def test_profile_table_reads_the_profiles_and_their_overrides(monkeypatch):
    t = profiles.profile_table()
    assert list(t.columns) == list(profiles.PROFILE_NAMES)
    assert list(t.index) == list(profiles.TABLE_FIELDS)
    for name in profiles.PROFILE_NAMES:
        p = profiles.get_profile(name)
        assert t.loc["epochs", name] == p.epochs and t.loc["image_size", name] == p.image_size
        assert t.loc["seeds", name] == ", ".join(map(str, p.seeds))
    monkeypatch.setenv("CXRLAB_EPOCHS", "7")
    assert (profiles.profile_table().loc["epochs"] == 7).all()
    with pytest.raises(KeyError, match="unknown profile field"):
        profiles.profile_table(fields_=("epoch",))


def test_nested_bars_stay_quiet_in_a_log_file(monkeypatch, capsys):
    import sys

    from cxrlab import progress as P

    monkeypatch.setenv("CXRLAB_PROGRESS", "1")
    monkeypatch.setattr(P, "_live_display", lambda: False)  # stderr is a file (a CI log)
    outer = P.progress(range(3), desc="outer")
    assert not outer.disable
    inner = P.progress(range(3), desc="inner")
    assert inner.disable  # nested inside `outer`: off in a log
    inner.close()
    outer.close()
    monkeypatch.setattr(P, "_live_display", lambda: True)  # a terminal redraws in place
    outer = P.progress(range(3), desc="outer")
    inner = P.progress(range(3), desc="inner")
    assert not inner.disable
    inner.close()
    outer.close()
