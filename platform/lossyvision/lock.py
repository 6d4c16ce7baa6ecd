"""One writer per sweep output and per compressed store.

``with writer_lock(place, "lossyvision compress"):`` holds ``PLACE/.lossyvision.lock`` for the
block. A second writer on the same place is refused at once with :class:`LockHeld`, whose message
says who holds it (command, pid, host, since). A lock left by a dead holder is taken over:

* **Local disk**: an ``fcntl.flock`` on the lock file. The kernel drops it when the holder dies
  (``kill -9`` included), so a dead holder never blocks anyone; the file keeps the last holder's
  details, which is how a takeover is reported. Works on NFS, where Linux maps ``flock`` to POSIX
  locks.
* **S3**: a lease object created with a conditional put (``If-None-Match: *``: exactly one
  creator wins). A heartbeat thread renews it every third of the lease (``If-Match`` on its ETag,
  so a writer that lost its lease finds out). A lease not renewed for :data:`LEASE_SECONDS`
  (measured with the server's clock) is expired; a holder on this host whose pid is gone is
  dead at once. A takeover overwrites the old lease with ``If-Match`` on the ETag that was
  read, so of two writers taking over, one wins. Release deletes it with ``If-Match``.

Locks are re-entrant within a process (a sweep whose store is its output holds one lock once).
This module imports neither Ray nor MLflow.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterator

from lossyvision.places import LOCK_NAME
from lossyvision.store import absolute, exists, filesystem, is_remote, join, local_path, read_bytes

__all__ = ["LOCK_NAME", "Holder", "LockHeld", "WriterLock", "read_holder", "writer_lock"]
#: Seconds a remote lease lasts without renewal (``LOSSYVISION_LOCK_LEASE_SECONDS`` overrides).
LEASE_SECONDS = 60.0
#: A lock file without details younger than this is being written by its new holder, not stale.
_FRESH_SECONDS = 10.0

_held: dict[str, "WriterLock"] = {}  # lock URI -> the lock this process holds on it
_held_guard = threading.Lock()


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock."""

    command: str
    pid: int
    host: str
    since: str            # ISO 8601 UTC
    token: str = ""
    started: float = 0.0  # the holder's process start time (pid reuse), 0 if unknown
    lease_seconds: float = 0.0

    def describe(self) -> str:
        return f"`{self.command}` (pid {self.pid} on host {self.host}) since {self.since}"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Holder | None":
        try:
            d = json.loads(data.decode("utf-8"))
            return cls(command=str(d["command"]), pid=int(d["pid"]), host=str(d["host"]), since=str(d["since"]),
                       token=str(d.get("token", "")), started=float(d.get("started", 0.0)),
                       lease_seconds=float(d.get("lease_seconds", 0.0)))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None


class LockHeld(RuntimeError):
    """Another live writer holds the place; the message names it."""

    def __init__(self, place: str, holder: Holder | None) -> None:
        self.place, self.holder = place, holder
        who = holder.describe() if holder else "another process (its details are being written)"
        super().__init__(f"{place} is in use by {who}; wait for it to finish or stop it "
                         "(a lock left by a process that died is taken over by itself)")


def _process_start(pid: int) -> float:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # psutil missing, or no such process
        return 0.0


def _pid_alive(pid: int, started: float) -> bool:
    """Whether process ``pid`` (started at ``started``, if known) still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    except (OSError, ValueError, OverflowError):
        return False
    if started:
        now_started = _process_start(pid)
        return not now_started or abs(now_started - started) < 1.0  # else: the pid was reused
    return True


def _lease_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get("LOSSYVISION_LOCK_LEASE_SECONDS", LEASE_SECONDS)))
    except ValueError:
        return LEASE_SECONDS


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class WriterLock:
    """The lock of one place (a sweep output or a store); see the module docstring."""

    def __init__(self, place: str, command: str, *, log: Callable[[str], None] | None = None,
                 lease_seconds: float | None = None) -> None:
        self.place = absolute(place)  # one place, one lock: "out" and "/here/out" are the same folder
        self.uri = join(self.place, LOCK_NAME)
        self.command = command
        self.log = log or (lambda msg: None)
        self.lease_seconds = lease_seconds or _lease_seconds()
        pid = os.getpid()
        self.me = Holder(command=command, pid=pid, host=socket.gethostname(), since=_now_iso(),
                         token=uuid.uuid4().hex, started=_process_start(pid),
                         lease_seconds=self.lease_seconds if is_remote(self.place) else 0.0)
        self.took_over: Holder | None = None  # the dead holder this lock replaced
        self.lost = False                     # a remote lease was taken by another writer
        self._acquired = False
        self._count = 0                        # acquisitions in this process (on the owner)
        self._owner: WriterLock | None = None  # who really holds it (self, or an earlier lock)
        self._fd: int | None = None
        self._etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- public ------------------------------------------------------------------------------
    def acquire(self) -> "WriterLock":
        with _held_guard:
            if self._acquired:
                raise RuntimeError(f"the lock of {self.place} is already acquired by this object")
            owner = _held.get(self.uri)
            if owner is not None:  # this process holds the place already: count, don't lock twice
                owner._count += 1
                self._owner, self._acquired = owner, True
                return self
            if is_remote(self.place) and not hasattr(filesystem(self.uri)[0], "call_s3"):
                self.log(f"warning: no writer lock on {self.place.split('://')[0]}:// (only local "
                         "folders and s3:// have one); make sure one writer at a time uses it")
                self._owner, self._acquired = None, True
                return self
            if is_remote(self.place):
                self._acquire_remote()
            else:
                self._acquire_local()
            self._owner, self._count, self._acquired = self, 1, True
            _held[self.uri] = self
        if self.took_over is not None:
            self.log(f"took over the lock of {self.place} left by {self.took_over.describe()}, "
                     "which is no longer running")
        return self

    def release(self) -> None:
        with _held_guard:
            if not self._acquired:
                return
            self._acquired = False
            owner = self._owner
            if owner is None:
                return
            owner._count -= 1
            if owner._count:
                return
            _held.pop(self.uri, None)
            if is_remote(self.place):
                owner._release_remote()
            else:
                owner._release_local()

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # -- local: flock ------------------------------------------------------------------------
    def _acquire_local(self) -> None:
        import fcntl

        path = os.path.abspath(local_path(self.uri) or self.uri)
        # A place this lock had to create is removed again on release if nothing else was written
        # there: a refused job (a bad option found after locking) leaves no empty folder behind.
        self._created_dir = None if os.path.isdir(os.path.dirname(path)) else os.path.dirname(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder_fd(fd, wait=2.0)  # it got the lock a moment ago: its details follow
            os.close(fd)
            raise LockHeld(self.place, holder) from None
        except OSError as exc:  # a filesystem without locks (some FUSE mounts): say where
            os.close(fd)
            raise type(exc)(exc.errno, f"cannot lock it ({exc.strerror}); use a folder on a disk with "
                                       "file locks", path) from None
        except BaseException:
            os.close(fd)
            raise
        previous = _read_holder_fd(fd)
        if previous is not None:  # the last holder died without releasing: the kernel let go for it
            self.took_over = previous
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, self.me.to_json(), 0)
            os.fsync(fd)
        except OSError as exc:  # a full disk: say which file could not be written
            os.close(fd)  # closing drops the flock
            raise type(exc)(exc.errno, exc.strerror or str(exc), path) from None
        self._fd = fd

    def _release_local(self) -> None:
        import fcntl

        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # released: no holder to report
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        created, self._created_dir = getattr(self, "_created_dir", None), None
        if created:
            try:
                if os.listdir(created) == [os.path.basename(local_path(self.uri) or self.uri)]:
                    os.unlink(os.path.join(created, os.listdir(created)[0]))
                    os.rmdir(created)
            except OSError:
                pass  # someone else is using it now: leave it

    # -- remote: a lease object --------------------------------------------------------------
    def _s3(self):
        fs, path = filesystem(self.uri)
        bucket, _, key = path.partition("/")
        return fs, bucket, key

    def _acquire_remote(self) -> None:
        fs, bucket, key = self._s3()
        for _ in range(5):  # a lease can vanish between our put and our read: try again
            try:
                resp = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=self.me.to_json(), IfNoneMatch="*")
                self._etag = resp["ETag"]
                break
            except FileExistsError:
                pass
            current = self._get_remote()
            if current is None:
                continue
            body, etag, age = current
            holder = Holder.from_json(body)
            if not self._expired(holder, age):
                raise LockHeld(self.place, holder)
            try:  # take over: exactly one writer's If-Match put on the stale ETag succeeds
                resp = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=self.me.to_json(), IfMatch=etag)
            except OSError:
                continue  # someone else took it over (or it was released): look again
            self._etag, self.took_over = resp["ETag"], holder
            break
        else:
            raise LockHeld(self.place, None)
        self._verify_remote()
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name=f"lossyvision-lock {self.place}",
                                        daemon=True)
        self._thread.start()

    def _get_remote(self) -> tuple[bytes, str, float] | None:
        """(body, ETag, age in seconds by the server's clock), or None if there is no lease."""
        from fsspec.asyn import sync

        fs, bucket, key = self._s3()

        async def get() -> tuple[dict, bytes]:
            resp = await fs._call_s3("get_object", Bucket=bucket, Key=key)
            async with resp["Body"] as stream:
                return resp, await stream.read()

        try:
            resp, body = sync(fs.loop, get)
        except FileNotFoundError:
            return None
        age = 0.0
        date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        modified = resp.get("LastModified")
        if date and modified is not None:
            age = (parsedate_to_datetime(date) - modified).total_seconds()
        return body, resp["ETag"], age

    def _expired(self, holder: Holder | None, age: float) -> bool:
        if holder is None:
            return age > _FRESH_SECONDS  # unreadable: stale once old enough
        if holder.host == self.me.host and not _pid_alive(holder.pid, holder.started):
            return True
        return age > (holder.lease_seconds or LEASE_SECONDS)

    def _verify_remote(self) -> None:
        """Read the lease back: on a store whose conditional puts are not atomic, the last writer wins."""
        current = self._get_remote()
        holder = Holder.from_json(current[0]) if current else None
        if holder is None or holder.token != self.me.token:
            raise LockHeld(self.place, holder)

    def _heartbeat(self) -> None:
        fs, bucket, key = self._s3()
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                resp = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=self.me.to_json(), IfMatch=self._etag)
                self._etag = resp["ETag"]
            except OSError as exc:
                if isinstance(exc, FileNotFoundError) or exc.errno == errno.EINVAL:  # 412: not ours any more
                    self.lost = True
                    self.log(f"warning: the lock of {self.place} was taken by another writer "
                             "(this one stalled longer than its lease); two writers may now overlap")
                    return
                # a network hiccup: try again at the next beat, the lease has room for two misses

    def _release_remote(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.lost or self._etag is None:
            return
        fs, bucket, key = self._s3()
        try:
            fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=self._etag)
        except OSError:
            pass  # taken over meanwhile, or already gone: not ours to delete


def _read_holder_fd(fd: int, wait: float = 0.0) -> Holder | None:
    """The holder recorded in an open lock file; waits up to ``wait`` s for a new holder to write it."""
    deadline = time.monotonic() + wait
    while True:
        data = os.pread(fd, 65536, 0)
        if data or time.monotonic() >= deadline:
            return Holder.from_json(data) if data else None
        time.sleep(0.05)


def read_holder(place: str) -> Holder | None:
    """Who holds (or last held) ``place``'s lock, as recorded in the lock file; None if nobody."""
    uri = join(str(place), LOCK_NAME)
    if not exists(uri):
        return None
    data = read_bytes(uri)
    return Holder.from_json(data) if data else None


@contextmanager
def writer_lock(place: str, command: str, *, log: Callable[[str], None] | None = None) -> Iterator[WriterLock]:
    """Hold ``place``'s writer lock for the block; :class:`LockHeld` if a live writer has it."""
    lock = WriterLock(place, command, log=log)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
