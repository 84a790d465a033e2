"""Several processes, one study folder: ``cxrlab run CONFIG --out DIR --shard I/N``.

A SLURM job array, several machines on a shared file system or a re-run after a crash write
into the same results folder. Three rules keep them from clashing:

* **Partition.** Shard ``I/N`` (numbered from 1) runs units ``I-1, I-1+N, I-1+2N, ...`` of
  the study's grid in the runner's order (arm x backbone x seed): deterministic, disjoint,
  and every arm spread over the shards.
* **Claims.** Before a unit trains, its process creates ``units/<unit>.lock`` with
  ``O_CREAT | O_EXCL`` (atomic, also over NFS v3+) holding host, pid and start time, and
  touches it every :data:`HEARTBEAT_S` seconds while it works; the lock is removed when the
  unit is stored. A process that finds one of its units claimed goes on with the others, then
  waits for it: it ends when the holder has stored the unit, or takes the unit over when the
  lock turns stale (a requeued SLURM task thus finishes its share). A lock is **stale**, and is
  taken over, when its process is gone: on the same host when its pid no longer runs; on any
  host when it has not been touched for ``CXRLAB_LOCK_STALE_S`` seconds (default 900, i.e.
  15 minutes without a heartbeat; the hosts' clocks must agree to within minutes). So a crash
  never blocks a unit for longer than that; to take over at once, delete the ``.lock`` file. All ranks of one ``torchrun`` job share one
  claim (they train the unit together).
* **Shared files written once.** ``study.json`` (the config, the profile's settings, the data's
  fingerprint and the grid) is created by the first process and compared by every later one:
  a shard started with another configuration is refused, naming the differences. The study's
  tables (``results.csv``, ``metrics.json``, ...) are rewritten under ``.study.lock`` by each
  process as it finishes, from every unit stored so far, so the last one to finish leaves
  the complete tables, and a partial study lists the units still missing.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from cxrlab.errors import UsageError
from cxrlab.io import atomic_write_json
from cxrlab.study.config import StudyError

#: seconds between two touches of a held lock
HEARTBEAT_S = 30.0
#: default seconds without a heartbeat after which a lock is stale (``CXRLAB_LOCK_STALE_S``)
DEFAULT_STALE_S = 900.0
#: the study's shared description, written once by the first process
SNAPSHOT = "study.json"


# ----------------------------------------------------------------------------- partition
@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based, as ``--shard I/N`` is written)."""

    index: int = 1
    count: int = 1

    def select(self, items: Sequence) -> list:
        """Items ``index-1, index-1+count, ...``: round robin over the runner's order."""
        return [x for k, x in enumerate(items) if k % self.count == self.index - 1]

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def whole(self) -> bool:
        return self.count == 1


def parse_shard(text: str | None) -> Shard:
    """``"2/4"`` -> ``Shard(2, 4)``; ``None`` -> the whole study. Bad text raises
    :class:`UsageError` saying what ``--shard`` wants."""
    if text is None:
        return Shard()
    want = ("--shard wants I/N with 1 <= I <= N (shards are numbered from 1), e.g. --shard 1/4; "
            "in a SLURM array use --array=1-N and "
            "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
    i, sep, n = str(text).strip().partition("/")
    try:
        index, count = int(i), int(n)
    except ValueError:
        raise UsageError(f"--shard {text!r}: not two integers; {want}") from None
    if not sep or count < 1 or not 1 <= index <= count:
        raise UsageError(f"--shard {text!r}: out of range; {want}")
    return Shard(index, count)


# ----------------------------------------------------------------------------- claims
def stale_after_s() -> float:
    """Seconds without a heartbeat after which a lock is stale (``CXRLAB_LOCK_STALE_S``)."""
    raw = os.environ.get("CXRLAB_LOCK_STALE_S")
    if raw is None:
        return DEFAULT_STALE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UsageError(f"environment variable CXRLAB_LOCK_STALE_S={raw!r}: seconds > 0 "
                         f"expected (default {DEFAULT_STALE_S:.0f})")
    return value


def poll_s() -> float:
    """Seconds between heartbeats, and between two looks at a unit another process holds:
    :data:`HEARTBEAT_S`, or a third of the stale time when that is shorter."""
    return min(HEARTBEAT_S, stale_after_s() / 3)


def owner() -> dict:
    """Who holds a lock: this host and pid, and the torchrun job (if any) whose ranks share it."""
    job = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        job = os.environ.get("TORCHELASTIC_RUN_ID") or (
            f"{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}")
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": job}


def _same_owner(a: dict, b: dict) -> bool:
    if a.get("host") != b.get("host"):
        return False
    return a.get("pid") == b.get("pid") or (a.get("job") is not None and a.get("job") == b.get("job"))


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process: alive
    except (TypeError, ValueError):
        return False
    return True


def lock_state(path: Path, now: float | None = None) -> tuple[str, dict]:
    """``("free" | "held" | "stale" | "mine", info)`` of a lock file (see the module's rules)."""
    path = Path(path)
    try:
        info = json.loads(path.read_text() or "{}")
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return "free", {}
    except (OSError, ValueError):
        info, mtime = {}, path.stat().st_mtime if path.exists() else 0.0  # half-written
    if not isinstance(info, dict):
        info = {}
    me = owner()
    if info and _same_owner(info, me):
        return "mine", info
    age = (time.time() if now is None else now) - mtime
    if age > stale_after_s():
        return "stale", info
    if info.get("host") == me["host"] and info.get("pid") is not None \
            and not _pid_alive(info["pid"]):
        return "stale", info
    return "held", info


def try_claim(path: Path) -> tuple[bool, dict]:
    """Create the lock ``path`` for this process; ``(True, {})`` when it is ours now, else
    ``(False, info of the holder)``. A stale lock is replaced (and said so in ``info``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            state, info = lock_state(path)
            if state == "mine":
                return True, {}
            if state == "held":
                return False, info
            if state == "stale":
                _remove_stale(path, info)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({**owner(), "since": time.time()}, f)
        return True, {}
    state, info = lock_state(path)
    return state == "mine", info


def _remove_stale(path: Path, info: dict) -> None:
    """Remove a stale lock; renaming first means two processes cannot both remove a fresh
    lock that a third created in between (only the file they saw is moved away)."""
    aside = path.with_name(f"{path.name}.stale.{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    try:
        moved = json.loads(aside.read_text() or "{}")
    except (OSError, ValueError):
        moved = {}
    if moved and info and moved != info:  # a fresh lock came in between: put it back
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)


def release(path: Path) -> None:
    """Remove our lock (a lock someone else took over is left alone). In a torchrun job only
    rank 0, the rank that writes the results, removes the job's lock."""
    if owner()["job"] is not None and int(os.environ.get("RANK", "0")) != 0:
        return
    state, _ = lock_state(path)
    if state == "mine":
        Path(path).unlink(missing_ok=True)


@contextmanager
def heartbeat(path: Path, every_s: float | None = None) -> Iterator[None]:
    """Touch ``path`` every ``every_s`` seconds while the block runs (a daemon thread; default
    :func:`poll_s`, so that a live holder never looks stale)."""
    every_s = poll_s() if every_s is None else every_s
    stop = threading.Event()

    def beat():
        while not stop.wait(every_s):
            try:
                os.utime(path)
            except OSError:
                pass

    t = threading.Thread(target=beat, name=f"heartbeat {Path(path).name}", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=5)


@contextmanager
def exclusive(path: Path, what: str, wait_s: float | None = None,
              poll_s: float = 0.2) -> Iterator[None]:
    """Hold the lock ``path`` for the block, waiting while another live process holds it (by
    default until a dead holder's lock has turned stale, and a minute more)."""
    wait_s = stale_after_s() + 2 * HEARTBEAT_S if wait_s is None else wait_s
    t0 = time.monotonic()
    while True:
        ok, info = try_claim(path)
        if ok:
            break
        if time.monotonic() - t0 > wait_s:
            raise StudyError(f"{what}: {path} has been held by {describe(info)} for more than "
                             f"{wait_s:.0f} s; if that process is gone, delete the file and re-run")
        time.sleep(poll_s)
    try:
        with heartbeat(path):
            yield
    finally:
        release(path)


def describe(info: dict) -> str:
    """``host:pid (since 12:00:01 UTC)`` of a lock's holder."""
    if not info:
        return "another process"
    since = info.get("since")
    when = (time.strftime(" (since %H:%M:%S UTC)", time.gmtime(since))
            if isinstance(since, (int, float)) else "")
    return f"{info.get('host', '?')}:{info.get('pid', '?')}{when}"


# ----------------------------------------------------------------------------- shared files
def check_snapshot(out: Path, snapshot: dict, strict: bool) -> None:
    """Write ``out/study.json`` if absent (atomically, only once). When it exists and differs:
    ``strict`` (a shard) refuses, naming the differences; otherwise (a whole-study run, which
    checks each unit's configuration itself, or ``--overwrite``) it is replaced."""
    f = Path(out) / SNAPSHOT
    snapshot = json.loads(json.dumps(snapshot, sort_keys=True))
    with exclusive(Path(out) / ".study.lock", "study snapshot"):
        if f.exists() and strict:
            try:
                old = json.loads(f.read_text())
            except (OSError, ValueError):
                old = None
            if old is not None and old != snapshot:
                from cxrlab.study.runner import _dict_diff

                diffs = _dict_diff(old, snapshot)
                raise StudyError(
                    f"{Path(out).name}/ was started with a different configuration "
                    f"(differences: {'; '.join(diffs[:4])}{' ...' if len(diffs) > 4 else ''}); "
                    "every shard of a study must run the same config, profile and data. Use the "
                    "same command for every shard, write to another --out, or pass --overwrite "
                    "to replace the study")
            if old == snapshot:
                return
        atomic_write_json(f, snapshot)
