"""Ray pods' `ray-logs` sidecar: keep Ray's log files after the pod is gone.

Ray writes its logs under /tmp/ray/session_*/logs, on the pod's /tmp emptyDir, which is deleted with
the pod (KubeRay deletes the whole RayCluster ttlSecondsAfterFinished after the job ends, and the
autoscaler removes idle workers at any time). This sidecar shares that emptyDir and copies every log
file to the object store:

    s3://$LOSSYVISION_BUCKET/ray-logs/<RayCluster name>/<pod name>/session_<...>/logs/<file>

every RAY_LOGS_INTERVAL_S seconds (60) and once more when the pod stops (SIGTERM). Only files whose
size or modification time changed since the last pass are uploaded again; each upload replaces the
whole object, so a reader never sees a partly written copy. RAY_LOGS_URI overrides the destination
root (any fsspec URL). An unreachable store costs one log line per pass, never the pod.
"""

from __future__ import annotations

import os
import posixpath
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

RAY_TMP = "/tmp/ray"


def destination(env: Mapping[str, str] = os.environ) -> str:
    """``<root>/<RayCluster>/<pod>``; the root is RAY_LOGS_URI or s3://$LOSSYVISION_BUCKET/ray-logs."""
    root = env.get("RAY_LOGS_URI") or ""
    if not root:
        bucket = env.get("LOSSYVISION_BUCKET")
        if not bucket:
            raise SystemExit("ray-logs: neither RAY_LOGS_URI nor LOSSYVISION_BUCKET is set (storage.env)")
        root = f"s3://{bucket}/ray-logs"
    cluster = env.get("RAY_CLUSTER_NAME") or "unknown-cluster"
    pod = env.get("POD_NAME") or os.uname().nodename
    return f"{root.rstrip('/')}/{cluster}/{pod}"


def log_files(ray_tmp: str | Path) -> list[Path]:
    """Every file under ``<ray_tmp>/session_*/logs``; ``session_latest`` (a link to one of them) is skipped."""
    out: list[Path] = []
    for session in sorted(Path(ray_tmp).glob("session_*")):
        if session.is_symlink() or not (session / "logs").is_dir():
            continue
        out.extend(p for p in sorted((session / "logs").rglob("*")) if p.is_file() and not p.is_symlink())
    return out


def sync(ray_tmp: str | Path, dest: str, seen: dict[Path, tuple[int, int]]) -> int:
    """Upload the log files that are new or changed since the last pass; returns how many."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(dest)
    uploaded = 0
    for path in log_files(ray_tmp):
        try:
            stat = path.stat()
        except FileNotFoundError:  # rotated away between listing and upload
            continue
        version = (stat.st_size, stat.st_mtime_ns)
        if seen.get(path) == version:
            continue
        target = f"{root.rstrip('/')}/{path.relative_to(ray_tmp).as_posix()}"
        fs.makedirs(posixpath.dirname(target), exist_ok=True)
        fs.put_file(str(path), target)
        seen[path] = version  # the version read before the upload: a file still growing goes again next pass
        uploaded += 1
    return uploaded


def run(ray_tmp: str | Path, dest: str, interval_s: float, stop: threading.Event) -> None:
    """Sync every ``interval_s`` until ``stop`` is set, then once more."""
    seen: dict[Path, tuple[int, int]] = {}
    print(f"ray-logs: copying {ray_tmp}/session_*/logs to {dest} every {interval_s:g} s", flush=True)
    while True:
        final = stop.is_set()
        started = time.monotonic()
        try:
            n = sync(ray_tmp, dest, seen)
            if n or final:
                print(f"ray-logs: {n} file(s) copied in {time.monotonic() - started:.1f} s"
                      + (" (final pass)" if final else ""), flush=True)
        except Exception as e:  # noqa: BLE001 - a store outage must not end the sidecar; retry next pass
            print(f"ray-logs: copy to {dest} failed, retrying in {interval_s:g} s: {type(e).__name__}: {e}",
                  flush=True)
        if final:
            return
        stop.wait(interval_s)


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # PID 1 in its container: no default handler
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    interval = float(os.environ.get("RAY_LOGS_INTERVAL_S") or 60)
    run(os.environ.get("RAY_TMP") or RAY_TMP, destination(), interval, stop)
    sys.exit(0)


if __name__ == "__main__":
    main()
