"""cxrlab.data.download and data_download/nih.py against a local HTTP server on 127.0.0.1.

The server serves small fake .tar.gz archives, honours ``Range: bytes=N-`` and can be told to
cut a transfer short, so resuming, checksums and extraction are tested without any network.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cxrlab.data.download import (ChecksumError, DownloadError, Expect, NoNetworkError,
                             UnsafeArchiveError, check_layout, download_file, extract_tar,
                             extract_zip, file_digest, is_extracted, read_checksum_file)

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- fake server
class FakeFiles:
    """What the server serves, and how it misbehaves."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_first: dict[str, int] = {}     # path -> bytes sent before the 1st response dies
        self.ignore_range: set[str] = set()     # paths served whole even when a range is asked
        self.status: dict[str, int] = {}        # path -> forced HTTP status
        self.log: list[tuple[str, str | None]] = []  # (path, Range header) per request
        self.auth: str | None = None            # required Authorization header, if any
        self.lock = threading.Lock()


def make_handler(state: FakeFiles):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            path = self.path.split("?")[0]
            rng = self.headers.get("Range")
            with state.lock:
                state.log.append((path, rng))
                cut = state.cut_first.pop(path, None)
            if state.auth is not None and self.headers.get("Authorization") != state.auth:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="fake"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path in state.status:
                self.send_response(state.status[path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = state.files.get(path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            if rng and path not in state.ignore_range:
                assert rng.startswith("bytes=") and rng.endswith("-"), rng
                start = int(rng[6:-1])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if cut is not None:  # announce the whole length, send part of it, hang up
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture(autouse=True)
def _no_proxy_for_localhost(monkeypatch):
    """urllib honours $http_proxy; make sure requests to the local test server never use one."""
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")


@pytest.fixture
def server():
    state = FakeFiles()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True)
    t.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def fake_archive(names, seed=0, size=3000) -> bytes:
    """A .tar.gz of incompressible fake 'PNG' files (random bytes), so cuts land mid-stream."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for n in names:
            payload = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            info = tarfile.TarInfo(n)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ----------------------------------------------------------------------------- download_file
def test_truncated_transfer_resumes_with_range(server, tmp_path):
    data = fake_archive([f"images/{i:08d}_000.png" for i in range(20)])
    server.files["/a.tar.gz"] = data
    server.cut_first["/a.tar.gz"] = len(data) // 3
    dest = download_file(server.url + "/a.tar.gz", tmp_path / "a.tar.gz", md5=md5(data),
                         sha256=hashlib.sha256(data).hexdigest(), chunk=1024, backoff=0.01)
    assert dest.read_bytes() == data
    assert not (tmp_path / "a.tar.gz.part").exists()
    ranges = [r for p, r in server.log if p == "/a.tar.gz"]
    assert ranges[0] is None and len(ranges) == 2
    assert ranges[1] == f"bytes={len(data) // 3}-"  # the second request resumed, not restarted


def test_part_file_from_a_killed_session_is_resumed(server, tmp_path):
    data = fake_archive(["images/x.png"], seed=1)
    server.files["/b.tar.gz"] = data
    (tmp_path / "b.tar.gz.part").write_bytes(data[:1000])
    download_file(server.url + "/b.tar.gz", tmp_path / "b.tar.gz", md5=md5(data))
    assert (tmp_path / "b.tar.gz").read_bytes() == data
    assert server.log == [("/b.tar.gz", "bytes=1000-")]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = fake_archive(["images/x.png"], seed=2)
    server.files["/c.tar.gz"] = data
    server.ignore_range.add("/c.tar.gz")
    (tmp_path / "c.tar.gz.part").write_bytes(b"garbage" * 50)
    download_file(server.url + "/c.tar.gz", tmp_path / "c.tar.gz", md5=md5(data))
    assert (tmp_path / "c.tar.gz").read_bytes() == data


def test_complete_part_file_answered_416_is_finished(server, tmp_path):
    data = fake_archive(["images/x.png"], seed=3)
    server.files["/d.tar.gz"] = data
    (tmp_path / "d.tar.gz.part").write_bytes(data)
    download_file(server.url + "/d.tar.gz", tmp_path / "d.tar.gz", md5=md5(data))
    assert (tmp_path / "d.tar.gz").read_bytes() == data


def test_bad_checksum_fails_and_leaves_no_corrupt_file(server, tmp_path):
    data = fake_archive(["images/x.png"], seed=4)
    server.files["/e.tar.gz"] = data
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as exc:
        download_file(server.url + "/e.tar.gz", tmp_path / "e.tar.gz", md5=wrong)
    msg = str(exc.value)
    assert wrong in msg and md5(data) in msg and "expected" in msg
    assert not (tmp_path / "e.tar.gz").exists()
    assert not (tmp_path / "e.tar.gz.part").exists()


def test_existing_final_file_is_verified_not_downloaded(server, tmp_path):
    data = b"hello world" * 10
    dest = tmp_path / "f.bin"
    dest.write_bytes(data)
    download_file(server.url + "/f.bin", dest, md5=md5(data))
    assert server.log == []
    dest.write_bytes(b"something else")
    with pytest.raises(ChecksumError, match="delete it"):
        download_file(server.url + "/f.bin", dest, md5=md5(data))


def test_unreachable_host_says_no_network_and_where_to_put_the_file(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/images_001.tar.gz"
    dest = tmp_path / "images_001.tar.gz"
    with pytest.raises(NoNetworkError) as exc:
        download_file(url, dest, md5="0" * 32, retries=1, backoff=0.01, timeout=5,
                      manual_hint="See the NIH Box folder.")
    msg = str(exc.value)
    assert "network" in msg and str(dest) in msg and url in msg and "NIH Box" in msg
    assert not dest.exists()


def test_access_denied_names_credentials(server, tmp_path):
    server.status["/secret.csv"] = 403
    with pytest.raises(DownloadError, match="credentials") as exc:
        download_file(server.url + "/secret.csv", tmp_path / "s.csv", manual_hint="Sign the DUA.")
    assert "Sign the DUA." in str(exc.value)
    assert len(server.log) == 1  # no pointless retries on 403


def test_checksum_file_parsing(tmp_path):
    f = tmp_path / "sums.txt"
    f.write_text(f"# comment\n{'a' * 32}  images_001.tar.gz\n{'B' * 64} *files/p10/x.jpg\n")
    sums = read_checksum_file(f)
    assert sums["images_001.tar.gz"] == "a" * 32
    assert sums["files/p10/x.jpg"] == "b" * 64 and sums["x.jpg"] == "b" * 64
    f.write_text("not a checksum line\n")
    with pytest.raises(ValueError, match="sums.txt:1"):
        read_checksum_file(f)


# ----------------------------------------------------------------------------- archives
def test_extract_tar_unpacks_once_and_marks_done(tmp_path):
    arch = tmp_path / "images_001.tar.gz"
    arch.write_bytes(fake_archive(["images/a.png", "images/b.png"]))
    out = tmp_path / "out"
    extract_tar(arch, out)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.png", "b.png"]
    assert is_extracted(arch, out)
    (out / "images" / "a.png").unlink()
    arch.unlink()                      # the marker alone makes a re-run skip the archive
    extract_tar(arch, out)
    assert not (out / "images" / "a.png").exists()


def _tar_with(member: tarfile.TarInfo, payload: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        if member.isfile():
            member.size = len(payload)
            tf.addfile(member, io.BytesIO(payload))
        else:
            tf.addfile(member)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink_out"])
def test_extract_tar_refuses_members_outside_dest(tmp_path, kind):
    if kind == "dotdot":
        m = tarfile.TarInfo("images/../../evil.txt")
    elif kind == "absolute":
        m = tarfile.TarInfo(str(tmp_path / "evil.txt"))
    else:
        m = tarfile.TarInfo("images/link")
        m.type = tarfile.SYMTYPE
        m.linkname = "../../../etc/passwd"
    arch = tmp_path / "bad.tar.gz"
    arch.write_bytes(_tar_with(m))
    out = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeArchiveError):
        extract_tar(arch, out)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()
    assert not is_extracted(arch, out)


def test_truncated_archive_gives_a_clear_error(tmp_path):
    data = fake_archive([f"images/{i}.png" for i in range(5)])
    arch = tmp_path / "cut.tar.gz"
    arch.write_bytes(data[: len(data) // 2])
    with pytest.raises(DownloadError, match="download it again"):
        extract_tar(arch, tmp_path / "out")


def test_extract_zip_safe(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("CheXpert-v1.0-small/train.csv", "Path\n")
    extract_zip(good, tmp_path / "out")
    assert (tmp_path / "out" / "CheXpert-v1.0-small" / "train.csv").exists()
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(UnsafeArchiveError):
        extract_zip(bad, tmp_path / "out2")
    assert not (tmp_path / "escape.txt").exists()


def test_check_layout_lists_what_is_missing(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"x")
    exp = [Expect("images/*.png", "images", 2), Expect("list.txt", "the list")]
    problems = check_layout(tmp_path, exp)
    assert len(problems) == 2
    assert "need at least 2, found 1" in problems[0] and "the list" in problems[1]
    (tmp_path / "images" / "b.png").write_bytes(b"x")
    (tmp_path / "list.txt").write_text("")
    assert check_layout(tmp_path, exp) == []


# ----------------------------------------------------------------------------- nih.py
def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"dd_{name}", REPO / "data_download" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_nih_script_downloads_resumes_verifies_and_unpacks(server, tmp_path, capsys):
    nih = load_script("nih")
    assert len(nih.ARCHIVES) == 12 and all(len(a[2]) == 32 for a in nih.ARCHIVES)
    archives = {f"images_00{i}.tar.gz": fake_archive([f"images/0000000{i}_00{k}.png"
                                                      for k in range(3)], seed=i)
                for i in (1, 2)}
    for name, data in archives.items():
        server.files["/mirror/" + name] = data
    server.cut_first["/mirror/images_002.tar.gz"] = 500
    sums = tmp_path / "md5.txt"
    sums.write_text("".join(f"{md5(d)}  {n}\n" for n, d in archives.items()))
    out = tmp_path / "nih"
    rc = nih.main(["--out", str(out), "--only", "1,2", "--mirror", server.url + "/mirror",
                   "--checksums", str(sums), "--retries", "2"])
    text = capsys.readouterr().out
    assert len(list((out / "images").glob("*.png"))) == 6
    assert not list((out / "archives").glob("*.tar.gz*"))      # deleted after unpacking
    assert ("/mirror/images_002.tar.gz", "bytes=500-") in server.log
    # metadata: the two tables come from torchxrayvision's bundled copies, the lists do not
    assert (out / "Data_Entry_2017_v2020.csv").read_text().startswith("Image Index,")
    assert rc == 1 and "train_val_list.txt" in text and "test_list.txt" in text
    # a re-run downloads nothing and, once the lists are there, reports success
    n_requests = len(server.log)
    (out / "train_val_list.txt").write_text("")
    (out / "test_list.txt").write_text("")
    assert nih.main(["--out", str(out), "--only", "1,2", "--mirror", server.url + "/mirror",
                     "--checksums", str(sums)]) == 0
    assert len(server.log) == n_requests


def test_nih_script_bad_checksum_exits_2_with_message(server, tmp_path, capsys):
    nih = load_script("nih")
    server.files["/m/images_001.tar.gz"] = fake_archive(["images/1.png"])
    sums = tmp_path / "md5.txt"
    sums.write_text(f"{'f' * 32}  images_001.tar.gz\n")
    rc = nih.main(["--out", str(tmp_path / "nih"), "--only", "1", "--mirror",
                   server.url + "/m", "--checksums", str(sums)])
    err = capsys.readouterr().err
    assert rc == 2 and "md5 mismatch" in err and "f" * 32 in err
    assert not list((tmp_path / "nih" / "archives").glob("images_001*"))


def test_nih_script_without_network_exits_2(tmp_path, capsys):
    nih = load_script("nih")
    rc = nih.main(["--out", str(tmp_path / "nih"), "--only", "1", "--mirror",
                   f"http://127.0.0.1:{closed_port()}", "--retries", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "network" in err and "images_001.tar.gz" in err


def test_file_digest_matches_hashlib(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"abc" * 1000)
    assert file_digest(p, "md5") == md5(b"abc" * 1000)


# ----------------------------------------------------------------------------- gated data sets
def _gz_csv(df) -> bytes:
    import gzip

    return gzip.compress(df.to_csv(index=False).encode())


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def serve_mimic(server):
    import pandas as pd

    meta = pd.DataFrame({"dicom_id": ["d1", "d2", "d3", "d4"],
                         "subject_id": [10000032, 10000032, 10000764, 10000764],
                         "study_id": [50414267, 50414267, 57375967, 57375967],
                         "ViewPosition": ["PA", "LATERAL", "AP", "PA"]})
    tables = {
        "mimic-cxr-2.0.0-metadata.csv.gz": _gz_csv(meta),
        "mimic-cxr-2.0.0-split.csv.gz": _gz_csv(meta[["dicom_id", "subject_id", "study_id"]]
                                                .assign(split=["train", "train", "test", "test"])),
        "mimic-cxr-2.0.0-chexpert.csv.gz": _gz_csv(pd.DataFrame({"subject_id": [1], "study_id": [2]})),
        "mimic-cxr-2.0.0-negbio.csv.gz": _gz_csv(pd.DataFrame({"subject_id": [1], "study_id": [2]})),
        "mimic-cxr-2.1.0-test-set-labeled.csv": b"study_id\n1\n",
    }
    mimic = load_script("mimic")
    jpgs = {mimic.image_path(a, b, c): f"jpeg {c}".encode() * 100
            for a, b, c in zip(meta.subject_id, meta.study_id, meta.dicom_id)}
    files = {**tables, **jpgs}
    for rel, data in files.items():
        server.files["/mimic/" + rel] = data
    server.files["/mimic/SHA256SUMS.txt"] = "".join(f"{sha(d)} {r}\n" for r, d in files.items()).encode()
    return mimic, jpgs


def test_mimic_script_needs_credentials_and_says_how_to_get_them(server, tmp_path, monkeypatch, capsys):
    mimic, _ = serve_mimic(server)
    monkeypatch.delenv("PHYSIONET_USER", raising=False)
    rc = mimic.main(["--out", str(tmp_path / "m"), "--base-url", server.url + "/mimic/"])
    err = capsys.readouterr().err
    assert rc == 2 and "CITI" in err and "physionet.org/register" in err and "PHYSIONET_USER" in err
    assert server.log == []


def test_mimic_script_fetches_tables_and_frontal_images_with_auth(server, tmp_path, monkeypatch, capsys):
    from cxrlab.data.download import basic_auth_header

    mimic, jpgs = serve_mimic(server)
    server.auth = basic_auth_header("alice", "s3cret")
    monkeypatch.setenv("PHYSIONET_USER", "alice")
    monkeypatch.setenv("PHYSIONET_PASSWORD", "wrong")
    out = tmp_path / "m"
    rc = mimic.main(["--out", str(out), "--base-url", server.url + "/mimic/"])
    assert rc == 2 and "access denied" in capsys.readouterr().err
    monkeypatch.setenv("PHYSIONET_PASSWORD", "s3cret")
    rc = mimic.main(["--out", str(out), "--base-url", server.url + "/mimic/", "--max-patients", "1"])
    assert rc == 0
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg"))
    assert got == ["files/p10/p10000032/s50414267/d1.jpg"]          # patient 1, frontal only
    rc = mimic.main(["--out", str(out), "--base-url", server.url + "/mimic/", "--workers", "2"])
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg"))
    assert rc == 0 and len(got) == 3 and not any("d2" in g for g in got)   # no lateral
    for rel in got:
        assert (out / rel).read_bytes() == jpgs[rel]
    assert mimic.main(["--out", str(out), "--verify-only"]) == 0
    (out / got[0]).unlink()
    assert mimic.main(["--out", str(out), "--verify-only"]) == 1
    assert "1 JPEGs" in capsys.readouterr().out


def test_chexmask_script_fetches_original_resolution_csvs(server, tmp_path, capsys):
    chexmask = load_script("chexmask")
    header = "Image Index,Dice RCA (Mean),Dice RCA (Max),Landmarks,Left Lung,Right Lung,Heart,Height,Width\n"
    orig = (header + "00000001_000.png,0.9,0.95,\"1,2\",1 5,9 5,,4,4\n").encode()
    files = {"OriginalResolution/ChestX-Ray8.csv": orig, "Preprocessed/ChestX-Ray8.csv": b"x",
             "README.md": b"readme"}
    for rel, data in files.items():
        server.files["/cm/" + rel] = data
    server.files["/cm/SHA256SUMS.txt"] = "".join(f"{sha(d)} {r}\n" for r, d in files.items()).encode()
    out = tmp_path / "cm"
    rc = chexmask.main(["--out", str(out), "--datasets", "nih", "--base-url", server.url + "/cm/"])
    assert rc == 0 and (out / "OriginalResolution" / "ChestX-Ray8.csv").read_bytes() == orig
    assert not (out / "Preprocessed").exists()
    assert chexmask.main(["--out", str(out), "--datasets", "nih,chexpert", "--verify-only"]) == 1
    server.status["/cm2/SHA256SUMS.txt"] = 403
    rc = chexmask.main(["--out", str(tmp_path / "cm2"), "--base-url", server.url + "/cm2/"])
    err = capsys.readouterr().err
    assert rc == 2 and "access denied" in err and "sign in to PhysioNet" in err


def test_chexpert_script_unpacks_and_verifies(tmp_path, capsys):
    chexpert = load_script("chexpert")
    rels = ["train/patient00001/study1/view1_frontal.jpg", "train/patient00001/study1/view2_lateral.jpg"]
    arch = tmp_path / "CheXpert-v1.0-small.zip"
    with zipfile.ZipFile(arch, "w") as zf:
        zf.writestr("CheXpert-v1.0-small/train.csv",
                    "Path,Sex\n" + "".join(f"CheXpert-v1.0-small/{r},F\n" for r in rels))
        zf.writestr("CheXpert-v1.0-small/valid.csv",
                    "Path,Sex\nCheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,M\n")
        for r in rels + ["valid/patient64541/study1/view1_frontal.jpg"]:
            zf.writestr("CheXpert-v1.0-small/" + r, b"jpeg")
    root = tmp_path / "chexpert"
    assert chexpert.main(["--root", str(root)]) == 1
    assert "Research Use Agreement" in capsys.readouterr().out
    assert chexpert.main(["--root", str(root), "--archive", str(arch)]) == 0
    (root / "CheXpert-v1.0-small" / rels[1]).unlink()
    assert chexpert.main(["--root", str(root)]) == 1
    assert "1 of 2 images listed in train.csv" in capsys.readouterr().out


def test_siim_script_finds_nested_layout_and_missing_dicoms(tmp_path, capsys):
    siim = load_script("siim")
    root = tmp_path / "siim"
    folder = root / "pneumothorax"
    folder.mkdir(parents=True)
    (folder / "train-rle.csv").write_text("ImageId, EncodedPixels\n1.2.3,-1\n1.2.4,5 3\n1.2.4,9 2\n1.2.5,-1\n")
    for uid in ("1.2.3", "1.2.4"):
        d = folder / "dicom-images-train" / "s" / uid
        d.mkdir(parents=True)
        (d / f"{uid}.dcm").write_bytes(b"DICM")
    assert siim.main(["--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "3 labelled images" in out and "1 with pneumothorax" in out and "1.2.5.dcm" in out
    assert str(folder) in out
    (folder / "dicom-images-train" / "s" / "1.2.4" / "1.2.5.dcm").write_bytes(b"DICM")
    assert siim.main(["--root", str(root)]) == 0
    assert siim.main(["--root", str(tmp_path / "empty")]) == 1
    assert "Kaggle" in capsys.readouterr().out
