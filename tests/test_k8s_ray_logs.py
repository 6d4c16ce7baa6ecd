"""The Ray pods' log-shipping sidecar (k8s/base/ship_ray_logs.py), run for real on fake Ray log trees.

It copies ``/tmp/ray/session_*/logs`` to a folder or bucket, again only what changed, and once more on
SIGTERM; the S3 case runs against moto's S3 server, reached through the AWS variables as on a cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

SCRIPT = Path(__file__).resolve().parents[1] / "k8s" / "base" / "ship_ray_logs.py"


def load_shipper() -> types.ModuleType:
    """The script as a module (no side effects: main() only runs as a script), without a __pycache__ in k8s/."""
    module = types.ModuleType("ship_ray_logs")
    module.__file__ = str(SCRIPT)
    exec(compile(SCRIPT.read_text(), str(SCRIPT), "exec"), module.__dict__)
    return module


def ray_tmp(root: Path) -> Path:
    """A /tmp/ray as a Ray head leaves it: one session, ``session_latest`` linking to it."""
    session = root / "ray" / "session_2026-11-30_10-00-00_000000_1"
    (session / "logs" / "events").mkdir(parents=True)
    (session / "logs" / "raylet.out").write_text("raylet started\n")
    (session / "logs" / "job-driver-raysubmit_1.log").write_text("sweep started\n")
    (session / "logs" / "events" / "event_GCS.log").write_text("{}\n")
    (session / "sockets").mkdir()
    (session / "sockets" / "not-a-log").write_text("x")
    (root / "ray" / "session_latest").symlink_to(session.name)
    return root / "ray"


def copied(dest: Path) -> dict[str, str]:
    return {p.relative_to(dest).as_posix(): p.read_text() for p in sorted(dest.rglob("*")) if p.is_file()}


def test_destination_names_bucket_cluster_and_pod():
    shipper = load_shipper()
    env = {"LOSSYVISION_BUCKET": "b", "RAY_CLUSTER_NAME": "demo-x1y2z3-abcde", "POD_NAME": "demo-head-q"}
    assert shipper.destination(env) == "s3://b/ray-logs/demo-x1y2z3-abcde/demo-head-q"
    assert shipper.destination({**env, "RAY_LOGS_URI": "/keep/"}) == "/keep/demo-x1y2z3-abcde/demo-head-q"
    with pytest.raises(SystemExit, match="LOSSYVISION_BUCKET"):
        shipper.destination({"RAY_CLUSTER_NAME": "c"})


def test_sync_copies_logs_then_only_what_changed(tmp_path):
    shipper = load_shipper()
    source, dest = ray_tmp(tmp_path / "pod"), tmp_path / "kept"
    seen: dict = {}
    assert shipper.sync(source, str(dest), seen) == 3
    session = "session_2026-11-30_10-00-00_000000_1"
    assert copied(dest) == {f"{session}/logs/raylet.out": "raylet started\n",
                            f"{session}/logs/job-driver-raysubmit_1.log": "sweep started\n",
                            f"{session}/logs/events/event_GCS.log": "{}\n"}  # not sockets/, not session_latest
    assert shipper.sync(source, str(dest), seen) == 0
    driver = source / session / "logs" / "job-driver-raysubmit_1.log"
    with driver.open("a") as f:
        f.write("sweep done\n")
    (source / session / "logs" / "worker-1.err").write_text("oops\n")
    assert shipper.sync(source, str(dest), seen) == 2
    assert copied(dest)[f"{session}/logs/job-driver-raysubmit_1.log"] == "sweep started\nsweep done\n"
    assert copied(dest)[f"{session}/logs/worker-1.err"] == "oops\n"


def test_sigterm_ends_with_a_final_pass(tmp_path):
    """As PID 1 of its container: a long wait is cut short by SIGTERM, the last lines still get copied."""
    source, dest = ray_tmp(tmp_path / "pod"), tmp_path / "kept"
    env = {**os.environ, "RAY_TMP": str(source), "RAY_LOGS_URI": str(dest), "RAY_CLUSTER_NAME": "c",
           "POD_NAME": "p", "RAY_LOGS_INTERVAL_S": "3600"}
    proc = subprocess.Popen([sys.executable, str(SCRIPT)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (dest / "c" / "p").exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # the first pass has run
        driver = next(source.glob("session_2*/logs/job-driver-*.log"))
        with driver.open("a") as f:
            f.write("sweep done\n")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "final pass" in out
    kept = next((dest / "c" / "p").glob("session_2*/logs/job-driver-*.log"))
    assert kept.read_text() == "sweep started\nsweep done\n"


def test_store_outage_is_one_line_and_the_loop_goes_on(tmp_path, capsys):
    shipper = load_shipper()
    source = ray_tmp(tmp_path / "pod")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the destination folder should be")
    stop = threading.Event()
    stop.set()  # one (final) pass
    shipper.run(source, str(blocker / "kept"), 60, stop)
    out = capsys.readouterr().out
    assert "ray-logs: copy to" in out and "failed, retrying" in out


def test_sync_to_s3(tmp_path, monkeypatch):
    """The cluster's case: s3://$LOSSYVISION_BUCKET/ray-logs/<cluster>/<pod>/..., credentials from the env."""
    from moto.server import ThreadedMotoServer

    from ray_head import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
            monkeypatch.setenv(k, v)
        for k in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(k, raising=False)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3 = s3fs.S3FileSystem()
        s3.mkdir("logs-bucket")
        shipper = load_shipper()
        dest = shipper.destination({"LOSSYVISION_BUCKET": "logs-bucket", "RAY_CLUSTER_NAME": "demo-abc-xyz12",
                                    "POD_NAME": "demo-abc-xyz12-head-9"})
        source = ray_tmp(tmp_path / "pod")
        assert shipper.sync(source, dest, {}) == 3
        keys = sorted(s3.find("logs-bucket/ray-logs"))
        assert len(keys) == 3 and all(k.startswith("logs-bucket/ray-logs/demo-abc-xyz12/demo-abc-xyz12-head-9/"
                                                   "session_2026-11-30_10-00-00_000000_1/logs/") for k in keys)
        driver = next(k for k in keys if "job-driver" in k)
        assert s3.cat_file(driver) == b"sweep started\n"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
