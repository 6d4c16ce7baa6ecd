"""One writer per place: the lock on a local disk and on S3 (a real moto server), with real processes."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from lossyvision.lock import LOCK_NAME, Holder, LockHeld, WriterLock, read_holder, writer_lock  # noqa: E402

PLATFORM = str(Path(__file__).resolve().parents[1] / "platform")
BUCKET = "lossyvision-locks"


@pytest.fixture(scope="module")
def s3_server():
    """moto's real S3 server on a free port, reached through the standard AWS variables (as in test_s3)."""
    from moto_s3 import moto_s3

    with moto_s3(BUCKET) as endpoint:
        yield endpoint

#: A process that gets ready (imports, a warm S3 client), waits for a "go" file, tries the lock,
#: holds it ``hold`` seconds, and says what happened.
WORKER = textwrap.dedent("""
    import os, sys, time
    from lossyvision.lock import LockHeld, writer_lock
    from lossyvision.store import filesystem
    place, go, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
    filesystem(place)[0].exists(place.split("://")[-1])  # connect now, not in the race
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    try:
        with writer_lock(place, "worker", log=lambda m: print("log:", m, flush=True)):
            print("won", flush=True)
            time.sleep(hold)
    except LockHeld as e:
        print("refused:", e, flush=True)
        sys.exit(3)
""")


def worker(place: str, go: Path | None, hold: float) -> subprocess.Popen:
    """A worker process; with ``go=None`` it starts at once (its "ready" line is already read)."""
    env = {**os.environ, "PYTHONPATH": PLATFORM}
    if go is None:
        go = Path(PLATFORM)  # exists: no waiting
    p = subprocess.Popen([sys.executable, "-c", WORKER, place, str(go), str(hold)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().startswith("ready"), p.stderr.read()
    return p


def race(place: str, tmp: Path, hold: float = 3.0) -> tuple[list[str], list[float]]:
    """Two ready processes try the same place at the same moment; returns their outputs and run times."""
    go = tmp / "go"
    procs = [worker(place, go, hold) for _ in range(2)]
    go.touch()
    start = time.time()
    took: list[float | None] = [None, None]
    while None in took and time.time() < start + 60:
        for i, p in enumerate(procs):
            if took[i] is None and p.poll() is not None:
                took[i] = time.time() - start
        time.sleep(0.02)
    outs = [out + err for out, err in (p.communicate(timeout=60) for p in procs)]
    return outs, [t if t is not None else 99.0 for t in took]


def assert_one_winner(outs: list[str], took: list[float], hold: float) -> None:
    won = [o for o in outs if o.startswith("won")]
    refused = [o for o in outs if o.startswith("refused:")]
    assert len(won) == 1 and len(refused) == 1, outs
    assert "in use by `worker` (pid " in refused[0] and " on host " in refused[0] and " since " in refused[0]
    assert "Traceback" not in "".join(outs)
    # the loser was refused at once, not after waiting for the winner: it ended while the winner still held on
    # (measured against the winner's own time, not the clock: on a loaded machine a process takes seconds to start)
    loser, winner = (took[0], took[1]) if outs[0].startswith("refused:") else (took[1], took[0])
    assert loser < winner - hold / 2, (loser, winner)


# --- local disk ------------------------------------------------------------------------------
def test_local_second_writer_is_refused_naming_the_holder(tmp_path):
    place = str(tmp_path / "out")
    (tmp_path / "out").mkdir()
    with writer_lock(place, "lossyvision sweep run") as lock:
        holder = read_holder(place)
        assert holder is not None and holder.pid == os.getpid() and holder.command == "lossyvision sweep run"
        assert lock.took_over is None
        proc = worker(place, None, 0)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 3
        assert f"in use by `lossyvision sweep run` (pid {os.getpid()} on host " in out
    assert read_holder(place) is None  # released: the file names nobody
    assert (tmp_path / "out" / LOCK_NAME).exists()


def test_a_place_the_lock_created_and_nothing_used_is_removed_on_release(tmp_path):
    """A job refused after locking (a bad option found late) leaves no empty folder behind."""
    with writer_lock(str(tmp_path / "new"), "lossyvision compress"):
        assert (tmp_path / "new" / LOCK_NAME).exists()
    assert not (tmp_path / "new").exists()
    with writer_lock(str(tmp_path / "used"), "lossyvision compress"):
        (tmp_path / "used" / "manifest.parquet").write_bytes(b"x")
    assert (tmp_path / "used" / LOCK_NAME).exists() and (tmp_path / "used" / "manifest.parquet").exists()


def test_local_lock_is_reentrant_in_one_process(tmp_path):
    place = str(tmp_path / "out")
    with writer_lock(place, "outer"):
        with writer_lock(place, "inner"):
            assert read_holder(place).command == "outer"
        assert read_holder(place).command == "outer"  # the inner release kept the outer lock
        proc = worker(place, None, 0)
        assert proc.wait(timeout=60) == 3
    proc = worker(place, None, 0)
    assert proc.wait(timeout=60) == 0


def test_a_relative_and_an_absolute_path_to_one_place_are_one_lock(tmp_path, monkeypatch):
    """The CLI locks ``--out store`` and the job the absolute path its workers get: the same folder, so
    the same lock (it refused itself: "store is in use by lossyvision compress (this very pid)")."""
    from lossyvision.store import absolute

    monkeypatch.chdir(tmp_path)
    with writer_lock("store", "outer"):
        with writer_lock(str(tmp_path / "store"), "inner"):
            assert read_holder("store").command == "outer"
    assert absolute("store") == str(tmp_path / "store") and absolute("s3://b/store") == "s3://b/store"
    assert absolute(f"file://{tmp_path}/store") == f"file://{tmp_path}/store"  # a URI, not a relative path
    with writer_lock(f"file://{tmp_path}/other", "a file URI"):
        assert read_holder(str(tmp_path / "other")).command == "a file URI"


def test_local_two_concurrent_processes_one_wins(tmp_path):
    outs, took = race(str(tmp_path / "store"), tmp_path)
    assert_one_winner(outs, took, 3.0)


def test_local_lock_of_a_killed_holder_is_taken_over(tmp_path):
    place = str(tmp_path / "out")
    proc = worker(place, None, 60)
    assert proc.stdout.readline().startswith("won")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    logs: list[str] = []
    with writer_lock(place, "next", log=logs.append) as lock:
        assert lock.took_over is not None and lock.took_over.pid == proc.pid
    assert len(logs) == 1 and f"left by `worker` (pid {proc.pid} on host" in logs[0] and "no longer running" in logs[0]


def test_holder_details_round_trip():
    h = Holder(command="c", pid=1, host="h", since="2026-01-01T00:00:00Z", token="t", started=1.5, lease_seconds=2)
    assert Holder.from_json(h.to_json()) == h
    assert Holder.from_json(b"") is None and Holder.from_json(b"\xff{") is None and Holder.from_json(b"[1]") is None


# --- S3 (moto's real server) -----------------------------------------------------------------
def test_s3_lease_second_writer_refused_and_released(s3_server):
    import s3fs

    place = f"s3://{BUCKET}/locks/one"
    with writer_lock(place, "lossyvision compress") as lock:
        assert s3fs.S3FileSystem().exists(f"{BUCKET}/locks/one/{LOCK_NAME}")
        other = WriterLock(place, "second")
        other.me = dataclasses.replace(other.me, host="another-host")
        with pytest.raises(LockHeld, match=r"in use by `lossyvision compress` \(pid \d+ on host "):
            other._acquire_remote()
        assert lock.lost is False
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    assert not fs.exists(f"{BUCKET}/locks/one/{LOCK_NAME}")  # released: the lease object is gone


def test_s3_two_concurrent_processes_one_wins(s3_server, tmp_path):
    outs, took = race(f"s3://{BUCKET}/locks/race", tmp_path)
    assert_one_winner(outs, took, 3.0)


def test_s3_lease_of_a_killed_holder_on_this_host_is_taken_over(s3_server):
    place = f"s3://{BUCKET}/locks/killed"
    proc = worker(place, None, 60)
    assert proc.stdout.readline().startswith("won")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with writer_lock(place, "next") as lock:  # at once: same host, the pid is gone
        assert lock.took_over is not None and lock.took_over.pid == proc.pid


@pytest.mark.slow  # 6.5 s of sleeps: a lease must run out
def test_s3_lease_of_another_host_expires_unless_renewed(s3_server, monkeypatch):
    monkeypatch.setenv("LOSSYVISION_LOCK_LEASE_SECONDS", "2")
    place = f"s3://{BUCKET}/locks/lease"
    holder = WriterLock(place, "elsewhere")
    holder.me = dataclasses.replace(holder.me, host="host-a")
    holder._acquire_remote()  # with its heartbeat thread, as another host would
    try:
        contender = WriterLock(place, "contender")
        contender.me = dataclasses.replace(contender.me, host="host-b")
        time.sleep(3)  # longer than the lease: only the heartbeat keeps it
        with pytest.raises(LockHeld, match="elsewhere"):
            contender._acquire_remote()
        holder._stop.set()  # the holder stalls: no more renewals
        holder._thread.join()
        time.sleep(3.5)  # the lease, plus the server clock's one-second steps
        contender._acquire_remote()
        assert contender.took_over is not None and contender.took_over.host == "host-a"
        holder._release_remote()  # the stalled holder's release must not delete the new lease
        current = contender._get_remote()
        assert current is not None and Holder.from_json(current[0]).token == contender.me.token
    finally:
        contender._release_remote()
