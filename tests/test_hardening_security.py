"""Hardening, security (issue 14): protocol queries cannot run code, credentials stay on their
host, archives cannot write outside their folder, files follow the umask, unverifiable MIMIC
tables are not fetched silently. Servers bind to 127.0.0.1 only."""
from __future__ import annotations

import io
import os
import stat
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cxrlab.cli import main as cli_main
from cxrlab.data.protocols import ProtocolError, load_protocol, protocol_from_dict
from cxrlab.data.protocols.query import QueryError, evaluate_query, parse_query
from cxrlab.data.download import UnsafeArchiveError, basic_auth_header, download_file, extract_tar
from cxrlab.errors import CxrlabError, UsageError

from tests.helpers.bad_inputs import BadInput

CANARY = "__CANARY__"   # replaced by the canary server's URL in the payloads below

# ----------------------------------------------------------------------------- cases
QUERY_CASES = [
    BadInput("protocol query", "API", f"@os.system('curl {CANARY}')", "ProtocolError",
             "'@' references Python variables"),
    BadInput("protocol query", "API", f"@__import__('urllib.request').request.urlopen('{CANARY}')",
             "ProtocolError", "'@' references Python variables"),
    BadInput("protocol query", "API", "exec('import os') == 0",
             "ProtocolError", "calls and indexing are not allowed"),
    BadInput("protocol query", "API", f"__import__('os').system('curl {CANARY}')",
             "ProtocolError", "attribute access is not allowed"),
    BadInput("protocol query", "API", "age.__class__.__mro__", "ProtocolError",
             "attribute access is not allowed"),
    BadInput("protocol query", "API", "sex[0] == 'F'", "ProtocolError",
             "calls and indexing are not allowed"),
    BadInput("protocol query", "API", "age >= ", "ProtocolError",
             "expected a column name or a literal"),
    BadInput("protocol query", "API", "(age > 3", "ProtocolError", "expected ')'"),
    BadInput("protocol query", "API", "age > 3 sex == 'F'", "ProtocolError",
             "expected and / or or the end"),
    BadInput("protocol query", "API", "lambda: 1", "ProtocolError", "unexpected character ':'"),
    BadInput("protocol query", "API", "view in 'PA'", "ProtocolError",
             "a list such as ['PA', 'AP']"),
    BadInput("protocol query", "API", "no_such_column > 3", "ProtocolError",
             "unknown column(s) ['no_such_column']"),
    BadInput("protocol query", "API", "sex > 3", "ProtocolError", "cannot compare with >"),
]
OTHER_CASES = [
    BadInput("protocol query", "CLI", "cxrlab run with an inline protocol whose query is "
             f"@os.system(...)", "exit 2, no command run", "'@' references Python variables"),
    BadInput("protocol override", "API", "./configs/protocols/synthetic.yaml shadowing the "
             "packaged one", "loaded, stdout says so", "overrides the packaged"),
    BadInput("credentials", "API", "download_file(url, auth=...) redirected to another host",
             "followed without credentials", "(no Authorization header at the other host)"),
    BadInput("credentials", "API", "download_file('http://example.org/x', auth=(user, pw))",
             "UsageError", "refusing to send credentials over http://"),
    BadInput("credentials", "API", "download_file(url, headers={'Authorization': ...}) "
             "redirected https -> http on the same host", "followed without credentials",
             "(no Authorization header after the downgrade)"),
    BadInput("tar archive", "API", "symlink chain x -> ., x/y -> .., then y/file",
             "UnsafeArchiveError, nothing extracted", "outside the destination"),
    BadInput("tar archive", "API", "symlink to an absolute path", "UnsafeArchiveError",
             "outside the destination"),
    BadInput("tar archive", "API", "file written through a link already in the destination",
             "UnsafeArchiveError", "outside"),
    BadInput("tar archive", "API", "symlink loop a -> b, b -> a, then a/file",
             "UnsafeArchiveError", "too many levels of links"),
    BadInput("tar archive", "API", "hard link to ../outside", "UnsafeArchiveError",
             "reaches outside the destination"),
    BadInput("tar archive", "API", "member ../../etc/passwd", "UnsafeArchiveError",
             "contains '..'"),
    BadInput("tar archive", "data_download/nih.py", "a mirror serving an images_001.tar.gz "
             "with a symlink chain", "exit 2, nothing extracted", "outside the destination"),
    BadInput("permissions", "API", "atomic write / memmap / download under umask 027",
             "files 0640 (follow the umask)", "(mode checked)"),
    BadInput("MIMIC tables", "data_download/mimic.py",
             "a table missing from SHA256SUMS.txt", "exit 2, nothing fetched",
             "not in SHA256SUMS.txt"),
]
CASES = QUERY_CASES + OTHER_CASES


# ----------------------------------------------------------------------------- servers
class _Canary(BaseHTTPRequestHandler):
    """Records every request; a payload that ran code would call it."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.hits.append((self.path, self.headers.get("Authorization")))
        target = self.server.routes.get(self.path)
        if target is not None:
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")


def _serve():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Canary)   # loopback only
    httpd.hits, httpd.routes, httpd.files = [], {}, {}
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    return httpd


def _local_server():
    httpd = _serve()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


# two independent servers on 127.0.0.1: a canary that must never be reached, and a second host
canary = pytest.fixture(_local_server, name="canary")
other_host = pytest.fixture(_local_server, name="other_host")


# ----------------------------------------------------------------------------- queries
MANIFEST = pd.DataFrame({"age": [70.0, 50.0, np.nan, 64.0], "sex": ["F", "M", "F", "M"],
                         "view": ["PA", "LL", "AP", "PA"], "split": ["train"] * 4})


def test_query_grammar_filters_rows():
    q = evaluate_query
    assert q("age >= 60 and sex == 'F'", MANIFEST).tolist() == [True, False, False, False]
    assert q("view in ['PA', 'AP'] and not (sex == 'M')", MANIFEST).tolist() == \
        [True, False, True, False]
    assert q("view not in ('LL',) or age < 55", MANIFEST).tolist() == [True, True, True, True]
    assert q("age != 70", MANIFEST).tolist() == [False, True, True, True]   # NaN != 70
    assert q("age > 60 | sex == \"F\"", MANIFEST).tolist() == [True, False, True, True]
    assert q("~(age > 60) & sex == 'M'", MANIFEST).tolist() == [False, True, False, False]


def _poisoned(tmp_path, query):
    from tests.test_protocols import make_cache

    make_cache(tmp_path / "mimic", 20, dataset="mimic")
    make_cache(tmp_path / "nih", 20, dataset="nih", seed=2)
    return {"name": "t", "label_space": "shared7", "source": {"name": "src", "dataset": "mimic"},
            "targets": [{"name": "nih", "dataset": "nih", "split": "all", "query": query}]}


@pytest.mark.parametrize("case", QUERY_CASES, ids=lambda c: c.given[:40])
def test_bad_or_hostile_query_is_refused_and_runs_nothing(case, canary, tmp_path):
    query = case.given.replace(CANARY, canary.url + "/pwned")
    with pytest.raises(QueryError) as e:
        evaluate_query(query, MANIFEST)
    assert case.says in str(e.value) and isinstance(e.value, CxrlabError)
    d = _poisoned(tmp_path, query)
    syntax_ok = True
    try:
        parse_query(query)
    except QueryError:
        syntax_ok = False
    with pytest.raises(ProtocolError) as e:   # at load when the syntax is wrong, else at resolve
        protocol_from_dict(d).resolve(tmp_path) if syntax_ok else protocol_from_dict(d)
    assert case.says in str(e.value)
    assert canary.hits == [] and not (tmp_path / "pwned").exists()


def test_cli_run_with_a_hostile_inline_protocol_exits_2_and_runs_nothing(canary, tmp_path,
                                                                         capsys, monkeypatch):
    monkeypatch.setenv("CXRLAB_HOME", str(tmp_path / "home"))
    marker = tmp_path / "pwned"
    proto = {"name": "evil", "label_space": "nih14",
             "source": {"name": "source", "dataset": "synthetic", "cache": "synthetic",
                        "domain": "source",
                        "query": f"@os.system('touch {marker}; curl {canary.url}/pwned')"},
             "targets": [{"name": "t", "dataset": "synthetic", "cache": "synthetic",
                          "domain": "target_nih", "split": "test"}]}
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(yaml.safe_dump({"name": "evil", "protocol": proto}))
    rc = cli_main(["run", str(cfg), "--out", str(tmp_path / "out"), "--profile", "ci"])
    err = capsys.readouterr().err
    assert rc == 2 and OTHER_CASES[0].says in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert canary.hits == [] and not marker.exists()


def test_working_folder_protocol_override_is_announced(tmp_path, monkeypatch, capsys, canary):
    case = OTHER_CASES[1]
    import cxrlab.data.protocols.spec as P

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CXRLAB_PROTOCOLS", raising=False)
    own = tmp_path / "configs" / "protocols"
    own.mkdir(parents=True)
    raw = yaml.safe_load((P._PACKAGED_PROTOCOLS / "synthetic.yaml").read_text())
    (own / "synthetic.yaml").write_text(yaml.safe_dump(raw))
    assert load_protocol("synthetic").path == own / "synthetic.yaml"
    out = capsys.readouterr().out
    assert case.says in out and str(own / "synthetic.yaml") in out
    # the same file with a hostile query: refused at load, nothing runs
    raw["source"]["query"] = f"@os.system('curl {canary.url}/pwned')"
    (own / "synthetic.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ProtocolError, match="not allowed"):
        load_protocol("synthetic")
    assert canary.hits == []
    # a protocol of another name: nothing to announce
    (own / "mine.yaml").write_text(yaml.safe_dump({**raw, "name": "mine"}))
    capsys.readouterr()
    with pytest.raises(ProtocolError):
        load_protocol("mine")
    assert "overrides" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- credentials
def test_credentials_are_not_forwarded_to_another_host(canary, other_host, tmp_path):
    auth = basic_auth_header("alice", "s3cret")
    other_host.files["/file"] = b"payload"
    canary.routes["/file"] = other_host.url + "/file"           # another port: another origin
    download_file(canary.url + "/file", tmp_path / "f", auth=("alice", "s3cret"), retries=0)
    assert (tmp_path / "f").read_bytes() == b"payload"
    assert canary.hits == [("/file", auth)]
    assert other_host.hits == [("/file", None)]


def test_credentials_follow_a_redirect_on_the_same_host(canary, tmp_path):
    auth = basic_auth_header("alice", "s3cret")
    canary.files["/real"] = b"data"
    canary.routes["/file"] = canary.url + "/real"
    download_file(canary.url + "/file", tmp_path / "f", auth=("alice", "s3cret"), retries=0)
    assert canary.hits == [("/file", auth), ("/real", auth)]


def test_credentials_over_plain_http_are_refused(tmp_path):
    case = OTHER_CASES[3]
    with pytest.raises(UsageError) as e:
        download_file("http://example.org/x", tmp_path / "x", auth=("alice", "s3cret"),
                      retries=0)
    assert case.says in str(e.value) and not (tmp_path / "x.part").exists()
    with pytest.raises(UsageError, match="https://"):
        download_file("http://example.org/x", tmp_path / "x", retries=0,
                      headers={"Authorization": basic_auth_header("a", "b")})


def test_redirect_handler_drops_credentials_on_downgrade():
    import urllib.request

    from cxrlab.data.download import _CredentialRedirectHandler

    h = _CredentialRedirectHandler("https://physionet.org/files/x", "Basic abc")
    req = urllib.request.Request("https://physionet.org/files/x",
                                 headers={"Authorization": "Basic abc"})
    same = h.redirect_request(req, None, 302, "Found", {}, "https://physionet.org/files/y")
    assert same.get_header("Authorization") == "Basic abc"
    down = h.redirect_request(req, None, 302, "Found", {}, "http://physionet.org/files/y")
    other = h.redirect_request(req, None, 302, "Found", {}, "https://evil.example/files/y")
    assert down.get_header("Authorization") is None and other.get_header("Authorization") is None


# ----------------------------------------------------------------------------- tar
def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, target
                tf.addfile(info)
            elif kind == "lnk":
                info.type, info.linkname = tarfile.LNKTYPE, target
                tf.addfile(info)
            else:
                data = b"owned"
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


TAR_CASES = {
    "chain": ([("x", "sym", "."), ("x/y", "sym", ".."), ("y/file", "file", None)],
              OTHER_CASES[5].says),
    "absolute": ([("abs", "sym", "/etc"), ("abs/passwd", "file", None)], OTHER_CASES[6].says),
    "loop": ([("a", "sym", "b"), ("b", "sym", "a"), ("a/file", "file", None)],
             OTHER_CASES[8].says),
    "hardlink": ([("h", "lnk", "../outside")], OTHER_CASES[9].says),
    "dotdot": ([("../../etc/passwd", "file", None)], OTHER_CASES[10].says),
    "deep_chain": ([("a", "sym", "."), ("a/b", "sym", "."), ("a/b/c", "sym", ".."),
                    ("c/escaped", "file", None)], OTHER_CASES[5].says),
}


@pytest.mark.parametrize("kind", sorted(TAR_CASES))
def test_tar_members_are_resolved_through_links_before_anything_is_written(tmp_path, kind):
    members, says = TAR_CASES[kind]
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar(members))
    dest = tmp_path / "work" / "dest"
    with pytest.raises(UnsafeArchiveError) as e:
        extract_tar(archive, dest)
    assert says in str(e.value)
    assert list(dest.iterdir()) == []                              # nothing extracted
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["dest"]


def test_tar_refuses_writing_through_a_link_already_in_dest(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "up").symlink_to("..")
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar([("up/escaped", "file", None)]))
    with pytest.raises(UnsafeArchiveError, match=OTHER_CASES[7].says):
        extract_tar(archive, dest)
    assert not (tmp_path / "escaped").exists()


def test_tar_with_safe_internal_links_still_extracts(tmp_path):
    archive = tmp_path / "ok.tar.gz"
    archive.write_bytes(_tar([("d/f", "file", None), ("cur", "sym", "d"),
                              ("d/alias", "sym", "f"), ("hard", "lnk", "d/f")]))
    extract_tar(archive, tmp_path / "dest")
    assert (tmp_path / "dest" / "cur" / "alias").read_bytes() == b"owned"


# ----------------------------------------------------------------------------- permissions
def test_written_files_follow_the_umask(tmp_path, canary):
    from cxrlab.data.cache import CacheWriter
    from cxrlab.io import atomic_write_json

    canary.files["/blob"] = b"x" * 100
    for mask, want in ((0o027, 0o640), (0o022, 0o644)):
        old = os.umask(mask)
        try:
            d = tmp_path / f"m{mask:o}"
            f = atomic_write_json(d / "a.json", {"a": 1})
            w = CacheWriter(d / "cache", n=2, image_size=32)
            got = download_file(canary.url + "/blob", d / "blob", retries=0)
        finally:
            os.umask(old)
        for p in (f, d / "cache" / "images.npy", got):
            assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(p.stat().st_mode), mask)
        del w


# ----------------------------------------------------------------------------- MIMIC tables
def test_mimic_tables_missing_from_the_checksum_list_are_not_fetched_silently(
        tmp_path, monkeypatch, capsys):
    from tests import test_download as td

    state = td.FakeFiles()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), td.make_handler(state))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        mimic, _ = td.serve_mimic(state)
        sums = state.files["/mimic/SHA256SUMS.txt"].decode().splitlines()
        state.files["/mimic/SHA256SUMS.txt"] = "\n".join(
            ln for ln in sums if "chexpert.csv.gz" not in ln).encode() + b"\n"
        monkeypatch.setenv("PHYSIONET_USER", "alice")
        monkeypatch.setenv("PHYSIONET_PASSWORD", "pw")
        out = tmp_path / "m"
        rc = mimic.main(["--out", str(out), "--base-url", state.url + "/mimic/", "--tables-only"])
        err = capsys.readouterr().err
        assert rc == 2 and OTHER_CASES[13].says in err and "--allow-unverified" in err
        assert not (out / "mimic-cxr-2.0.0-chexpert.csv.gz").exists()
        assert [p for p, _ in state.log if p.endswith(".csv.gz")] == []
        rc = mimic.main(["--out", str(out), "--base-url", state.url + "/mimic/", "--tables-only",
                         "--allow-unverified"])
        err = capsys.readouterr().err
        assert rc == 0 and "fetched unverified" in err
        assert (out / "mimic-cxr-2.0.0-chexpert.csv.gz").exists()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_nih_script_refuses_a_hostile_archive(tmp_path, capsys):
    import hashlib

    from tests import test_download as td

    case = OTHER_CASES[11]
    state = td.FakeFiles()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), td.make_handler(state))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        data = _tar([("x", "sym", "."), ("x/y", "sym", ".."), ("y/escaped.png", "file", None)])
        state.files["/m/images_001.tar.gz"] = data
        sums = tmp_path / "md5.txt"
        sums.write_text(f"{hashlib.md5(data).hexdigest()}  images_001.tar.gz\n")
        out = tmp_path / "work" / "nih"
        rc = td.load_script("nih").main(["--out", str(out), "--only", "1", "--mirror",
                                         state.url + "/m", "--checksums", str(sums)])
        err = capsys.readouterr().err
        assert rc == 2 and case.says in err and "Traceback" not in err
        assert not (out / "x").exists() and not (tmp_path / "work" / "escaped.png").exists()
        assert not list(tmp_path.rglob("escaped.png"))
    finally:
        httpd.shutdown()
        httpd.server_close()
