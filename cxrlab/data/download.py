"""Fetching and unpacking data set files: resumable, verified, atomic, with clear errors.

Everything the ``data_download/`` scripts do goes through this module (standard library only):

* :func:`download_file` fetches one URL into ``dest``. Bytes go to ``dest.part``; an
  interrupted transfer (a dropped connection, a killed session) resumes from where it stopped
  with an HTTP ``Range: bytes=N-`` request. When the last byte is in, the checksum (MD5 or
  SHA-256) is checked and only then is ``dest.part`` renamed onto ``dest``: a file under its
  final name is always complete and verified. A wrong checksum deletes the ``.part`` (it is
  corrupt, so resuming it would only repeat the error) and raises :class:`ChecksumError`
  naming the expected and the actual digest.
* :func:`extract_tar` / :func:`extract_zip` unpack an archive safely (no member may land
  outside the destination: no ``..``, no absolute paths, no links pointing out, no device
  files) and leave a marker file, so that a re-run skips archives already unpacked.
* :func:`check_layout` compares a folder against what a data set should look like and says
  what is missing.

Without a network, :func:`download_file` raises :class:`NoNetworkError` with a message that
says so and where to put a hand-downloaded copy (a copy placed at ``dest`` is verified and
used; nothing is downloaded again).
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import http.client
import os
import shutil
import socket
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Sequence

from cxrlab.errors import CxrlabError, MissingInputError, UsageError
from cxrlab.progress import progress

#: sent with every request: some hosts refuse Python's default agent
USER_AGENT = "cxrlab-downloader/1 (+https://github.com; urllib)"


class DownloadError(CxrlabError, RuntimeError):
    """A file could not be fetched (HTTP error, access denied, repeated failures)."""


class NoNetworkError(DownloadError):
    """The host could not be reached at all (no network, DNS failure, refused connection)."""


class ChecksumError(DownloadError):
    """A complete file does not have the expected digest."""


class UnsafeArchiveError(CxrlabError, RuntimeError):
    """An archive member would be written outside the destination folder."""


# ----------------------------------------------------------------------------- checksums
_ALGOS = ("md5", "sha256")


def file_digest(path: str | os.PathLike, algo: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file (``algo``: "md5" or "sha256"), read in chunks (constant memory)."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_checksum_file(path: str | os.PathLike) -> dict[str, str]:
    """Parse ``md5sum`` / ``sha256sum`` output (``HEX  name`` or ``HEX *name`` per line).

    Returns ``{name: hex}`` keyed by the name as written and by its base name, lower-case hex.
    Blank lines and ``#`` comments are skipped; a malformed line is an error that names it.
    """
    out: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not all(c in "0123456789abcdefABCDEF" for c in parts[0]) \
                or len(parts[0]) not in (32, 64):
            raise UsageError(f"{path}:{n}: expected 'HEXDIGEST  filename', got {line!r}")
        digest, name = parts[0].lower(), parts[1].strip().lstrip("*")
        out[name] = digest
        out.setdefault(PurePosixPath(name).name, digest)
    return out


def checksum_kind(digest: str) -> str:
    """"md5" for a 32-hex digest, "sha256" for a 64-hex one."""
    if len(digest) == 32:
        return "md5"
    if len(digest) == 64:
        return "sha256"
    raise UsageError(f"{digest!r} is neither an MD5 (32 hex) nor a SHA-256 (64 hex) digest")


def verify_file(path: str | os.PathLike, *, md5: str | None = None,
                sha256: str | None = None) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the given digest(s)."""
    for algo, want in (("md5", md5), ("sha256", sha256)):
        if want:
            got = file_digest(path, algo)
            if got != want.lower():
                raise ChecksumError(f"{Path(path).name}: {algo} mismatch: expected {want.lower()}, "
                                    f"got {got}")


# ----------------------------------------------------------------------------- download
def basic_auth_header(user: str, password: str) -> str:
    """The value of an HTTP ``Authorization`` header for basic authentication."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _origin(url: str) -> tuple[str, str, int | None]:
    u = urllib.parse.urlsplit(url)
    port = u.port or {"http": 80, "https": 443}.get(u.scheme)
    return u.scheme.lower(), (u.hostname or "").lower(), port


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


def check_credentials_url(url: str) -> None:
    """Credentials travel only over HTTPS (a loopback test server excepted)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme != "https" and not _is_loopback(url):
        raise UsageError(f"{url}: refusing to send credentials over {scheme or 'a plain'}:// "
                         "(anyone on the way could read them); use the https:// address")


class _CredentialRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but send the ``Authorization`` header only back to the origin host
    (same scheme, host and port); a redirect to another host or to plain HTTP gets none."""

    def __init__(self, origin_url: str, authorization: str | None):
        super().__init__()
        self.origin = _origin(origin_url)
        self.authorization = authorization

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is None:
            return None
        new.remove_header("Authorization")
        if self.authorization is not None and _origin(newurl) == self.origin:
            new.add_header("Authorization", self.authorization)
        return new


def _is_unreachable(err: BaseException) -> bool:
    """True for errors that mean "no route to the host at all", not "the transfer broke"."""
    if not isinstance(err, urllib.error.URLError) or isinstance(err, urllib.error.HTTPError):
        return False
    reason = err.reason
    return isinstance(reason, (socket.gaierror, ConnectionRefusedError, TimeoutError,
                               socket.timeout)) or (
        isinstance(reason, OSError) and getattr(reason, "errno", None) in (101, 113, 65, 51))


def _no_network_message(url: str, dest: Path, err: BaseException, manual_hint: str | None) -> str:
    reason = getattr(err, "reason", err)
    msg = (f"could not reach {_host(url)} ({type(reason).__name__}: {reason}). Is there a network "
           f"connection? This machine may have none (many clusters do not).\n"
           f"  Download by hand instead: fetch\n      {url}\n  on a machine with network "
           f"access and put the file at\n      {dest}\n  then run the same command again: it "
           "checks the file's checksum and skips the download.")
    if manual_hint:
        msg += f"\n  {manual_hint}"
    return msg


def _http_error_message(url: str, code: int, reason: str, manual_hint: str | None) -> str:
    if code in (401, 403):
        what = (f"access denied by {_host(url)} (HTTP {code} {reason}): this file needs an "
                "account, credentials or an accepted licence")
    elif code == 404:
        what = f"{url} does not exist (HTTP 404): the host may have moved the file"
    else:
        what = f"{_host(url)} answered HTTP {code} {reason} for {url}"
    return what + (f".\n  {manual_hint}" if manual_hint else "")


class _Hashers:
    """Running digests that always describe exactly the bytes of the ``.part`` file."""

    def __init__(self, algos: Sequence[str]):
        self.algos = tuple(algos)
        self.reset()

    def reset(self) -> None:
        self.h = {a: hashlib.new(a) for a in self.algos}
        self.nbytes = 0

    def update(self, block: bytes) -> None:
        for h in self.h.values():
            h.update(block)
        self.nbytes += len(block)

    def catch_up(self, part: Path, chunk: int) -> None:
        """Re-read the ``.part`` file when the digests do not cover it (a resumed run)."""
        size = part.stat().st_size if part.exists() else 0
        if self.nbytes == size:
            return
        self.reset()
        if size and self.algos:
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(chunk), b""):
                    self.update(block)
        self.nbytes = size

    def hexdigest(self, algo: str) -> str:
        return self.h[algo].hexdigest()


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """(start, total) from ``Content-Range: bytes START-END/TOTAL`` (total None for ``*``)."""
    if not value or not value.startswith("bytes "):
        return None
    try:
        span, _, total = value[6:].partition("/")
        start = int(span.split("-")[0])
        return start, (int(total) if total.strip() not in ("", "*") else None)
    except ValueError:
        return None


def _transfer(req, part: Path, hashers: "_Hashers", offset: int, *, size: int | None,
              timeout: float, chunk: int, desc: str, url: str, opener=None) -> None:
    """One HTTP request appending to ``part``; raises IncompleteRead if it ends early."""
    open_url = opener.open if opener is not None else urllib.request.urlopen
    with open_url(req, timeout=timeout) as resp:
        status = getattr(resp, "status", 200)
        length = resp.headers.get("Content-Length")
        if offset and status == 206:
            cr = _content_range(resp.headers.get("Content-Range"))
            if cr is not None and cr[0] != offset:  # the server sent another range: restart
                part.unlink(missing_ok=True)
                hashers.reset()
                raise http.client.HTTPException(f"server resumed at byte {cr[0]}, not {offset}")
        elif offset:                               # server ignored the range (200): start again
            part.unlink(missing_ok=True)
            hashers.reset()
            offset = 0
        expected_total = offset + int(length) if length is not None else None
        if size is not None and expected_total is not None and expected_total != size:
            warnings.warn(f"{url}: the server announces {expected_total} bytes, this script "
                          f"expected {size}; continuing (the checksum decides)", stacklevel=3)
        total = expected_total if expected_total is not None else size
        with open(part, "ab") as f, progress(total=total, initial=offset, unit="B",
                                             unit_scale=True, unit_divisor=1024,
                                             desc=desc) as bar:
            while True:
                block = resp.read(chunk)
                if not block:
                    break
                f.write(block)
                hashers.update(block)
                bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
        if expected_total is not None and hashers.nbytes < expected_total:
            raise http.client.IncompleteRead(b"", expected_total - hashers.nbytes)


def download_file(url: str, dest: str | os.PathLike, sha256: str | None = None,
                  md5: str | None = None, *, chunk: int = 1 << 20, retries: int = 3,
                  timeout: float = 60, headers: dict | None = None,
                  auth: tuple[str, str] | None = None, size: int | None = None,
                  manual_hint: str | None = None, backoff: float = 1.0,
                  desc: str | None = None) -> Path:
    """Download ``url`` to ``dest`` (resumable, verified, atomic); return ``dest``.

    * A finished ``dest`` is verified (when a checksum is given) and kept: nothing is fetched.
    * Otherwise bytes go to ``dest.part``. If it exists, the transfer resumes from its size
      with ``Range: bytes=N-``; a server that ignores ranges (HTTP 200) restarts from zero, and
      one that answers 416 (nothing left to send) means the ``.part`` is already whole.
    * A dropped or short transfer (fewer bytes than ``Content-Length``) is retried up to
      ``retries`` times, each time resuming where it stopped; ``backoff`` seconds doubles
      between tries. An unreachable host (DNS failure, refused connection) gets one retry.
    * When complete, ``md5`` / ``sha256`` are checked (digests are computed while the bytes
      arrive). A mismatch deletes the ``.part`` and raises :class:`ChecksumError`; a match
      renames ``.part`` onto ``dest`` atomically.
    * ``size`` (optional, bytes) is the expected length, for the progress bar and as a sanity
      check: a server announcing another length gets a warning (the checksum decides).
    * ``auth=(user, password)`` sends HTTP basic authentication (e.g. PhysioNet) to the host of
      ``url`` only: a redirect elsewhere (or to plain HTTP) is followed without it, and an
      ``http://`` URL with credentials is refused (:func:`check_credentials_url`).

    Errors: :class:`NoNetworkError` (host unreachable: the message says where to put a
    hand-downloaded copy), :class:`DownloadError` (HTTP errors: 401/403 name the need for
    credentials or a licence; ``manual_hint`` is appended to every message),
    :class:`ChecksumError`.
    """
    dest = Path(dest)
    algos = [a for a, v in (("md5", md5), ("sha256", sha256)) if v]
    want = {"md5": (md5 or "").lower(), "sha256": (sha256 or "").lower()}
    if dest.exists():
        try:
            verify_file(dest, md5=md5, sha256=sha256)
        except ChecksumError as e:
            raise ChecksumError(f"{e}. {dest} exists but is not the expected file; delete it "
                                "and run again to download it afresh") from None
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    hashers = _Hashers(algos)
    hdrs = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
    if auth is not None:
        hdrs["Authorization"] = basic_auth_header(*auth)
    authorization = next((v for k, v in hdrs.items() if k.lower() == "authorization"), None)
    if authorization is not None:
        check_credentials_url(url)
    opener = urllib.request.build_opener(_CredentialRedirectHandler(url, authorization))

    attempt = 0
    while True:
        hashers.catch_up(part, chunk)
        offset = hashers.nbytes
        req_headers = dict(hdrs)
        if offset:
            req_headers["Range"] = f"bytes={offset}-"
        req = urllib.request.Request(url, headers=req_headers)
        try:
            _transfer(req, part, hashers, offset, size=size, timeout=timeout, chunk=chunk,
                      desc=desc or dest.name, url=url, opener=opener)
            break
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:          # nothing left to send: the .part is whole
                break
            if e.code in (401, 403, 404, 410):
                raise DownloadError(_http_error_message(url, e.code, e.reason, manual_hint)) \
                    from None
            last_err: BaseException = e
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                TimeoutError, OSError) as e:
            last_err = e
        attempt += 1
        # an unreachable host (DNS failure, refused, no route) rarely comes back within
        # seconds: give up after one retry instead of backing off through all of them
        unreachable = _is_unreachable(last_err)
        if attempt > retries or (unreachable and attempt > min(retries, 1)):
            if unreachable:
                raise NoNetworkError(_no_network_message(url, dest, last_err, manual_hint)) \
                    from None
            kept = part.stat().st_size if part.exists() else 0
            raise DownloadError(
                f"{url}: transfer failed {attempt} times ({type(last_err).__name__}: {last_err}). "
                f"{kept} bytes are kept in {part}; run the same command again to resume."
                + (f"\n  {manual_hint}" if manual_hint else "")) from None
        time.sleep(backoff * 2 ** (attempt - 1))

    hashers.catch_up(part, chunk)
    for algo in algos:
        got = hashers.hexdigest(algo)
        if got != want[algo]:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"{dest.name}: {algo} mismatch: expected {want[algo]}, got {got}. The download "
                f"is corrupt and was deleted ({part}); run again to download it afresh. If it "
                "fails again, the file on the server differs from the published checksum.")
    os.replace(part, dest)
    return dest


# ----------------------------------------------------------------------------- archives
def _marker(archive: Path, dest: Path) -> Path:
    return dest / f".extracted-{archive.name}"


def is_extracted(archive: str | os.PathLike, dest: str | os.PathLike) -> bool:
    """True when :func:`extract_tar` / :func:`extract_zip` finished ``archive`` into ``dest``
    (the archive itself may since have been deleted)."""
    return _marker(Path(archive), Path(dest)).exists()


def _safe_target(dest: Path, name: str) -> Path:
    """The path a member called ``name`` would get under ``dest``, or UnsafeArchiveError."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or (pure.parts and pure.parts[0].endswith(":")):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path; refusing to "
                                 "extract (it would write outside the destination)")
    if ".." in pure.parts:
        raise UnsafeArchiveError(f"archive member {name!r} contains '..'; refusing to extract "
                                 "(it would write outside the destination)")
    target = (dest / Path(*pure.parts)).resolve() if pure.parts else dest.resolve()
    root = dest.resolve()
    if target != root and root not in target.parents:
        raise UnsafeArchiveError(f"archive member {name!r} resolves to {target}, outside {root}")
    return target


_MAX_LINK_HOPS = 40


def _resolve_inside(dest: Path, parts: list[str], links: dict[tuple[str, ...], str],
                    name: str, hops: int = 0) -> tuple[str, ...]:
    """Components (relative to ``dest``) that the path ``parts`` reaches once every symbolic link
    on the way is followed: the archive's own links (``links``: member path -> target, as they
    will be after extraction) and links already on disk under ``dest``. Raises
    UnsafeArchiveError when the walk leaves ``dest`` at any point."""
    cur: list[str] = []
    todo = list(parts)
    while todo:
        c = todo.pop(0)
        if c in ("", "."):
            continue
        if c == "..":
            if not cur:
                raise UnsafeArchiveError(f"archive member {name!r} reaches outside the "
                                         "destination through '..' or a link; refusing to extract")
            cur.pop()
            continue
        cand = tuple(cur + [c])
        target = links.get(cand)
        if target is None:
            on_disk = dest.joinpath(*cand)
            if on_disk.is_symlink():
                target = os.readlink(on_disk)
        if target is None:
            cur.append(c)
            continue
        hops += 1
        if hops > _MAX_LINK_HOPS:
            raise UnsafeArchiveError(f"archive member {name!r}: too many levels of links; "
                                     "refusing to extract")
        tgt = PurePosixPath(str(target).replace("\\", "/"))
        if tgt.is_absolute():
            raise UnsafeArchiveError(f"archive member {name!r} goes through a link to the "
                                     f"absolute path {target!r}; refusing to extract")
        todo = list(tgt.parts) + todo          # the link's target, relative to its folder
    return tuple(cur)


def _check_tar_members(dest: Path, chosen) -> None:
    """Refuse the archive unless every chosen member, followed through every symbolic link
    (chains of links in the archive and links already in ``dest``), stays inside ``dest``.

    The extraction is simulated in member order: a link is recorded where it will really be
    created (its folder resolved through the links made before it), so ``x -> .`` followed by
    ``x/y -> ..`` is seen as ``y -> ..`` at the top of ``dest``."""
    links: dict[tuple[str, ...], str] = {}
    for m in chosen:
        _safe_target(dest, m.name)                        # absolute paths, '..' in the name
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise UnsafeArchiveError(f"archive member {m.name!r} is a device or FIFO; "
                                     "refusing to extract")
        parts = [p for p in PurePosixPath(m.name.replace("\\", "/")).parts if p not in ("", ".")]
        if not parts:
            continue
        # the folder the member is written into, through any links on the way
        parent = _resolve_inside(dest, parts[:-1], links, m.name)
        where = parent + (parts[-1],)
        if m.issym():
            tgt = PurePosixPath(m.linkname.replace("\\", "/"))
            if tgt.is_absolute():
                raise UnsafeArchiveError(f"archive member {m.name!r} links to {m.linkname!r}, "
                                         "outside the destination; refusing to extract")
            try:
                _resolve_inside(dest, list(parent) + list(tgt.parts), links, m.name)
            except UnsafeArchiveError:
                raise UnsafeArchiveError(f"archive member {m.name!r} links to {m.linkname!r}, "
                                         "outside the destination; refusing to extract") from None
            links[where] = m.linkname
            continue
        _resolve_inside(dest, list(where), links, m.name)  # a file written onto a link follows it
        links.pop(where, None)
        if m.islnk():
            tgt = PurePosixPath(m.linkname.replace("\\", "/"))
            if tgt.is_absolute():
                raise UnsafeArchiveError(f"archive member {m.name!r} links to {m.linkname!r}, "
                                         "outside the destination; refusing to extract")
            _resolve_inside(dest, list(tgt.parts), links, m.name)


def _needs_extracting(archive: Path, dest: Path) -> bool:
    """False when ``archive`` was already extracted into ``dest``; else checks that the archive
    exists and creates ``dest``."""
    if is_extracted(archive, dest):
        return False
    if not archive.exists():
        raise MissingInputError(f"archive {archive} is missing; download it first")
    dest.mkdir(parents=True, exist_ok=True)
    return True


def extract_tar(archive: str | os.PathLike, dest: str | os.PathLike, *,
                members: Callable[[str], bool] | None = None) -> Path:
    """Unpack a (gzipped) tar archive into ``dest`` safely; skip if already done.

    Every member is checked before anything is written: absolute paths, ``..``, links that
    point outside ``dest``, and device/FIFO files are refused with :class:`UnsafeArchiveError`.
    ``members`` (optional) selects members by name. A marker ``dest/.extracted-<archive>``
    is written last; an interrupted extraction simply runs again (files are overwritten).
    """
    archive, dest = Path(archive), Path(dest)
    if not _needs_extracting(archive, dest):
        return dest
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.ReadError, EOFError, OSError) as e:
        raise DownloadError(f"{archive} is not a readable tar archive ({e}); it may be truncated: "
                            "delete it and download it again") from None
    with tf:
        try:
            all_members = tf.getmembers()
        except (tarfile.ReadError, EOFError, zlib.error, OSError) as e:
            raise DownloadError(f"{archive} ends early or is corrupt ({e}); delete it and "
                                "download it again") from None
        chosen = [m for m in all_members if members is None or members(m.name)]
        _check_tar_members(dest, chosen)   # every member, before anything is written
        try:
            for m in progress(chosen, desc=f"extract {archive.name}", unit="file"):
                if hasattr(tarfile, "data_filter"):
                    tf.extract(m, dest, filter="data")
                else:  # pragma: no cover - Python < 3.11.4 (members were checked above)
                    tf.extract(m, dest)
        except getattr(tarfile, "FilterError", ()) as e:  # pragma: no cover - checked above
            raise UnsafeArchiveError(f"{archive}: {e}; refusing to extract the rest") from None
        except (tarfile.ReadError, EOFError, zlib.error) as e:
            raise DownloadError(f"{archive} ends early or is corrupt ({e}); delete it and "
                                "download it again") from None
    _marker(archive, dest).write_text(f"{archive.name}\n")
    return dest


def extract_zip(archive: str | os.PathLike, dest: str | os.PathLike, *,
                members: Callable[[str], bool] | None = None) -> Path:
    """Unpack a zip archive into ``dest`` safely (same rules and marker as :func:`extract_tar`)."""
    archive, dest = Path(archive), Path(dest)
    if not _needs_extracting(archive, dest):
        return dest
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise DownloadError(f"{archive} is not a readable zip archive ({e}); it may be truncated: "
                            "delete it and download it again") from None
    with zf:
        infos = []
        for info in zf.infolist():
            if members is not None and not members(info.filename):
                continue
            _safe_target(dest, info.filename)
            mode = (info.external_attr >> 16) & 0o170000
            if mode and stat.S_ISLNK(mode):
                raise UnsafeArchiveError(f"zip member {info.filename!r} is a symbolic link; "
                                         "refusing to extract")
            infos.append(info)
        try:
            for info in progress(infos, desc=f"extract {archive.name}", unit="file"):
                target = _safe_target(dest, info.filename)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        except (zipfile.BadZipFile, EOFError, zlib.error) as e:
            raise DownloadError(f"{archive} is corrupt ({e}); delete it and download it again") \
                from None
    _marker(archive, dest).write_text(f"{archive.name}\n")
    return dest


# ----------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class Expect:
    """One thing a data set folder must contain: ``pattern`` (a glob relative to the root,
    ``**`` allowed) matching at least ``min_count`` files; ``what`` says what it is."""

    pattern: str
    what: str
    min_count: int = 1


def count_matches(root: Path, pattern: str, limit: int | None = None) -> int:
    """Number of files under ``root`` matching ``pattern`` (stops early at ``limit``)."""
    n = 0
    if not any(ch in pattern for ch in "*?["):
        return int((root / pattern).is_file())
    # os.scandir-based walk of only the folders the pattern can reach is much faster than
    # Path.glob on 100k-file trees; fall back to glob for patterns with wildcard folders
    head, _, tail = pattern.rpartition("/")
    if head and not any(ch in head for ch in "*?["):
        folder = root / head
        if not folder.is_dir():
            return 0
        with os.scandir(folder) as it:
            for e in it:
                if fnmatch.fnmatch(e.name, tail) and e.is_file():
                    n += 1
                    if limit is not None and n >= limit:
                        break
        return n
    for p in root.glob(pattern):
        if p.is_file():
            n += 1
            if limit is not None and n >= limit:
                break
    return n


def check_layout(root: str | os.PathLike, expected: Iterable[Expect]) -> list[str]:
    """What is missing under ``root``: one human-readable line per unmet :class:`Expect`
    (an empty list means the layout is complete)."""
    root = Path(root)
    if not root.is_dir():
        return [f"{root} does not exist (or is not a folder)"]
    problems = []
    for e in expected:
        n = count_matches(root, e.pattern, limit=e.min_count)
        if n < e.min_count:
            need = "" if e.min_count == 1 else f" (need at least {e.min_count}, found {n})"
            problems.append(f"{e.what}: {root / e.pattern}{need}")
    return problems


def report_completeness(dataset: str, root: str | os.PathLike, problems: Sequence[str],
                        print_fn: Callable[[str], None] = print) -> int:
    """Print what is still missing under ``root`` (one line each) or, when nothing is, the next
    command to run; the exit status of the data_download scripts: 0 complete, 1 incomplete."""
    if problems:
        print_fn(f"{dataset}: {root} is not complete yet. Missing:")
        for p in problems:
            print_fn(f"  - {p}")
        return 1
    print_fn(f"{dataset}: {root} is complete. Next: cxrlab data prepare {dataset} --root {root} "
             "--out CACHE_DIR")
    return 0


# ----------------------------------------------------------------------------- CLI helpers
#: environment variables read by the PhysioNet downloaders (MIMIC-CXR-JPG, CheXmask)
PHYSIONET_USER_ENV = "PHYSIONET_USER"
PHYSIONET_PASSWORD_ENV = "PHYSIONET_PASSWORD"


def physionet_credentials(prompt: bool = True) -> tuple[str, str] | None:
    """``(user, password)`` from ``$PHYSIONET_USER`` / ``$PHYSIONET_PASSWORD``, or None.

    With a user but no password, the password is asked for on the terminal (never echoed)
    when ``prompt`` is true and a terminal is attached.
    """
    import getpass
    import sys

    user = os.environ.get(PHYSIONET_USER_ENV, "").strip()
    if not user:
        return None
    password = os.environ.get(PHYSIONET_PASSWORD_ENV)
    if password is None:
        if not (prompt and sys.stdin is not None and sys.stdin.isatty()):
            return None
        password = getpass.getpass(f"PhysioNet password for {user}: ")
    return user, password


def format_steps(title: str, steps: Sequence[str]) -> str:
    """A numbered list of steps under a title (what the gated-data scripts print)."""
    lines = [title]
    lines += [f"  {i}. {s}" for i, s in enumerate(steps, 1)]
    return "\n".join(lines)


def fetch_checksum_list(url: str, dest: str | os.PathLike, **kwargs) -> dict[str, str]:
    """Download a ``SHA256SUMS.txt``-style list (PhysioNet publishes one per project version)
    and parse it with :func:`read_checksum_file`."""
    path = download_file(url, dest, **kwargs)
    return read_checksum_file(path)


def archive_or_kaggle_main(dataset: str, description: str, kaggle_dataset: str,
                           steps_title: str, steps: Sequence[str],
                           find_dataset_folder: Callable[[Path], Path | None],
                           verify: Callable[[Path], int], argv: list[str] | None = None) -> int:
    """The command line of a data set that comes as a zip (downloaded by hand, or from a Kaggle
    mirror with the user's own client): unpack it into ``--root``, print the manual steps when
    nothing is there yet, then ``verify(root)``. Exit status: 0 complete, 1 incomplete,
    2 a step failed."""
    import argparse
    import sys

    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="folder the data set is (to be) unpacked into")
    p.add_argument("--archive", default=None, help="the zip you downloaded, to unpack into ROOT")
    p.add_argument("--kaggle", action="store_true",
                   help=f"download the Kaggle mirror {kaggle_dataset} with your kaggle client")
    args = p.parse_args(argv)
    root = Path(args.root).expanduser()
    try:
        if args.kaggle:
            extract_zip(kaggle_dataset_download(kaggle_dataset, root / "archives"), root)
        if args.archive:
            extract_zip(Path(args.archive).expanduser(), root)
    except (DownloadError, FileNotFoundError) as e:
        print(f"{dataset}: {e}", file=sys.stderr)
        return 2
    if not args.archive and not args.kaggle and find_dataset_folder(root) is None:
        why = kaggle_available()
        print(format_steps(f"{dataset}: {steps_title} Steps:", steps)
              + (f"\n  (Kaggle route unavailable here: {why})" if why else ""))
    return verify(root)


def kaggle_available() -> str | None:
    """Why the ``kaggle`` command line cannot be used here, or None when it can."""
    if shutil.which("kaggle") is None:
        return "the `kaggle` command is not installed (pip install kaggle)"
    has_env = os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")
    cfg = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    if not (has_env or cfg.exists()):
        return (f"no Kaggle API token ({cfg} or $KAGGLE_USERNAME/$KAGGLE_KEY); create one at "
                "https://www.kaggle.com/settings (API -> Create New Token)")
    return None


def kaggle_dataset_download(dataset: str, dest: str | os.PathLike) -> Path:
    """Run ``kaggle datasets download -d DATASET -p DEST`` (the user's own Kaggle client and
    token) and return the zip it wrote. Raises DownloadError with the reason when it cannot."""
    import subprocess

    why = kaggle_available()
    if why:
        raise DownloadError(f"cannot download {dataset} from Kaggle: {why}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = ["kaggle", "datasets", "download", "-d", dataset, "-p", str(dest)]
    res = subprocess.run(cmd, text=True, capture_output=True)
    if res.returncode != 0:
        raise DownloadError(f"`{' '.join(cmd)}` failed ({res.returncode}): "
                            f"{(res.stderr or res.stdout).strip()[-800:]}")
    zips = sorted(dest.glob(f"{dataset.split('/')[-1]}*.zip"))
    if not zips:
        raise DownloadError(f"`{' '.join(cmd)}` finished but no zip appeared in {dest}")
    return zips[0]
