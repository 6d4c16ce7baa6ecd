"""The compress job end to end on a real local Ray (num_cpus=2), and resume after a real kill.

One Ray per module; a hang fails fast (Ray Data's no-progress timeout). The kill test runs the
``lossyvision`` command as a subprocess, SIGKILLs it mid-run and reruns it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from badimages import jpeg_bytes, photo, write_bad_images
from lossyvision import compress, manifest
from lossyvision.datasets import create_dataset

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]
LOSSYVISION = str(Path(sys.executable).with_name("lossyvision"))


@pytest.fixture(scope="module")
def ray_2cpu():
    import ray
    from ray.data import DataContext

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ctx = DataContext.get_current()
    saved = ctx.execution_no_progress_timeout_s
    ctx.execution_no_progress_timeout_s = 60  # a deadlock fails in a minute, not hangs
    ctx.enable_progress_bars = False
    yield ray
    ctx.execution_no_progress_timeout_s = saved
    ray.shutdown()


def tiny_dataset(root: Path) -> Path:
    for i in range(4):
        for split, name in (("train", "chelsea"), ("test", "coffee")):
            d = root / split / "cat"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"img {i}.jpg").write_bytes(jpeg_bytes(photo(name, (64 + 8 * i, 48))))
    write_bad_images(root / "train" / "odd")
    return root


def test_end_to_end_on_two_cpus_with_every_bad_input(ray_2cpu, tmp_path):
    from lossyvision.runners.compress import compress_dataset

    root = tiny_dataset(tmp_path / "src")
    out = tmp_path / "out"
    m = compress_dataset(str(root), str(out), codec_options={"effort": 1}, levels=(0, 1, 4),
                         quality_metric="ssimulacra2", quality_sample=3, log=lambda _: None)
    assert ray_2cpu.is_initialized()  # the caller's Ray is kept

    n_images = len(create_dataset("imagefolder", str(root)).records())
    assert len(m) == 3 * n_images and not m.duplicated(list(manifest.KEY)).any()
    assert sorted(m["level"].unique()) == [0.0, 1.0, 4.0]
    expected = {p.name: outcome for p, outcome in write_bad_images(tmp_path / "cases").values()}
    for r in m.to_dict("records"):
        name = r["relpath"].rsplit("/", 1)[-1]
        assert r["status"] == expected.get(name, "ok"), (name, r["error"])
        if r["status"] == "ok":
            assert os.path.getsize(out / r["output_path"]) == r["compressed_bytes"]
            assert r["dcr_vs_raw"] == pytest.approx(1 - r["compressed_bytes"] / r["raw_bytes"])
        else:
            assert r["error"]
    measured = m.dropna(subset=["quality"])
    assert 1 <= measured["relpath"].nunique() <= 3 and set(measured["quality_metric"]) == {"ssimulacra2"}
    on_disk = pd.read_parquet(out / "manifest.parquet")
    assert len(on_disk) == len(m) and not list(out.glob(f"{manifest.PARTS_DIR}/*"))
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["codec"]) == ["jpegxl"] * 3 + ["png"]
    n_bad = sum(1 for v in expected.values() if v == "failed")
    assert list(summary["images_failed"].iloc[:3]) == [n_bad] * 3

    from lossyvision.runners.compress import compress_job

    again = compress_job(str(root), str(out), codec_options={"effort": 1}, levels=(0, 1, 4),
                         quality_metric="ssimulacra2", quality_sample=3, log=lambda _: None)
    assert again.done == 3 * n_bad and again.skipped == len(m) - 3 * n_bad  # only failed rows are retried
    assert len(again.manifest) == len(m)


def test_on_error_fail_stops_on_ray_and_names_the_file(ray_2cpu, tmp_path):
    from lossyvision.runners.compress import compress_dataset

    root = tmp_path / "src"
    (root / "cat").mkdir(parents=True)
    for i in range(6):
        (root / "cat" / f"{i}.jpg").write_bytes(jpeg_bytes(photo("chelsea", (40, 40))))
    (root / "cat" / "zz truncated.jpg").write_bytes(jpeg_bytes(photo("coffee", (40, 40)))[:300])
    with pytest.raises(compress.CompressError, match=r"cat/zz truncated\.jpg: truncated file"):
        compress_dataset(str(root), str(tmp_path / "out"), codec_options={"effort": 1}, levels=(1,),
                         on_error="fail", log=lambda _: None)


def big_photos(root: Path, n: int) -> None:
    """Real-photo crops of 384x384: at effort 9, about 0.25 s an item on one core here."""
    import skimage.data

    names = ["astronaut", "chelsea", "coffee", "rocket"]
    for i in range(n):
        src = getattr(skimage.data, names[i % 4])()[..., :3]
        h, w = src.shape[:2]
        y, x = (i * 13) % (h - 384), (i * 29) % (w - 384)
        d = root / names[i % 4]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(src[y:y + 384, x:x + 384])).save(d / f"{i:03d}.jpg", quality=92)


def test_cli_resumes_after_a_real_kill(tmp_path):
    """Also the progress output: the first run is on a pseudo-terminal (a live bar), the rerun in a pipe
    (a plain line every LOSSYVISION_PROGRESS_SECONDS); neither shows Ray Data's own lines."""
    import pty
    import re
    import threading

    root, out = tmp_path / "src", tmp_path / "out"
    big_photos(root, 16)
    # Effort 9: about 0.25 s an item here (effort 7: 0.05 s, the whole job in about 1 s of encoding, which could
    # end within the 0.6 s after the first part file and leave nothing to kill).
    cmd = [LOSSYVISION, "compress", "--source", str(root), "--out", str(out), "--levels", "1,2,4",
           "--effort", "9", "--num-cpus", "2"]
    # Flush finished rows after every block, so the kill comes early in the job.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "LOSSYVISION_FLUSH_SECONDS": "0",
           "LOSSYVISION_PROGRESS_SECONDS": "1", "TERM": "xterm-256color"}
    parts_dir = out / manifest.PARTS_DIR
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    screen: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(master, screen), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not (parts_dir.exists() and any(parts_dir.glob("part-*.parquet"))):
            assert proc.poll() is None, b"".join(screen).decode(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "no part file appeared"
            time.sleep(0.2)
        time.sleep(0.6)  # a few redraws of the bar after the first finished block
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the job and the Ray it started, like kill -9
        proc.wait()
        reader.join(timeout=5)
        os.close(master)
    assert not (out / "summary.csv").exists(), "the job finished before the kill; make it bigger"
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(screen).decode("utf-8", "replace"))
    bars = [f for f in re.split(r"[\r\n]+", shown) if f.strip().startswith("compress")]
    assert any(re.search(r"[1-9]\d*/48 images, [\d.]+ images/s, ETA \d+:\d\d, 0 failed", b) for b in bars), shown[-800:]
    assert "Starting execution" not in shown and "Progress bars" not in shown

    before = manifest.read_manifest(str(out))
    assert 0 < len(before) < 16 * 3
    assert (before["status"] == "ok").all()
    stamps = {r["output_path"]: (out / r["output_path"]).stat() for r in before.to_dict("records")}

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "already done" in done.stderr and "jpegxl 4" in done.stdout  # plan line and the table
    todo = 16 * 3 - len(before)
    assert re.search(rf"^{todo}/{todo} images in \d+:\d\d \([\d.]+ images/s\), 0 failed$", done.stderr, re.M), done.stderr
    assert re.search(rf"^\d+/{todo} images(: starting| \(\d+%\))", done.stderr, re.M)  # lines while it ran
    assert "Starting execution" not in done.stderr + done.stdout and "\x1b[" not in done.stderr
    after = pd.read_parquet(out / "manifest.parquet")
    assert len(after) == 16 * 3 and not after.duplicated(list(manifest.KEY)).any()
    assert (after["status"] == "ok").all()
    for path, st in stamps.items():  # finished before the kill: not re-encoded
        now = (out / path).stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), path
    for r in after.to_dict("records"):
        assert (out / r["output_path"]).stat().st_size == r["compressed_bytes"]
    assert not list(out.rglob(".tmp-*"))  # temp files of writes cut by the kill were cleaned up


def _drain(fd: int, into: list[bytes]) -> None:
    """Read a pseudo-terminal's output until its last writer is gone."""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            return
        if not data:
            return
        into.append(data)


def test_a_local_cluster_stops_whole_and_quietly(tmp_path):
    """``shutdown_ray`` ends every process of the local Ray it started, its autoscaler monitor first
    (Ray's own order leaves the monitor a one-second grace after the GCS is gone), and prints no
    autoscaler error; a process that exits without calling it gets the same through ``atexit``."""
    script = tmp_path / "stop.py"
    script.write_text(
        "import json, sys, psutil\n"
        "from lossyvision.runners.cluster import init_ray, shutdown_ray, _local_autoscaler_monitors\n"
        "init_ray(num_cpus=1)\n"
        "kids = psutil.Process().children(recursive=True)\n"
        "monitors = [p.pid for p in _local_autoscaler_monitors()]\n"
        "if sys.argv[1] == 'call':\n"
        "    shutdown_ray()\n"
        "    import ray\n"
        "    alive = [p.pid for p in kids if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]\n"
        "    print(json.dumps({'kids': len(kids), 'monitors': monitors, 'alive': alive, "
        "'initialized': ray.is_initialized()}))\n"
        "else:\n"
        "    print(json.dumps({'kids': [p.pid for p in kids], 'monitors': monitors}))\n")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO / "platform")}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, str(script), "call"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(got["monitors"]) == 1 and got["kids"] >= 4
    assert got["alive"] == [] and got["initialized"] is False
    assert "autoscaler failed" not in out.stderr

    out = subprocess.run([sys.executable, str(script), "exit"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(got["monitors"]) == 1
    import psutil

    deadline = time.time() + 10
    while time.time() < deadline and any(psutil.pid_exists(p) for p in got["kids"]):
        time.sleep(0.2)
    assert not [p for p in got["kids"] if psutil.pid_exists(p)]
    assert "autoscaler failed" not in out.stderr


def test_cli_says_why_images_failed_and_exits_1_when_none_could_be_compressed(tmp_path):
    """Some bad images: exit 0 and a line per reason after the table; only bad images: exit 1."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    cases = write_bad_images(tmp_path / "bad" / "train" / "odd")
    n_bad = sum(1 for _, outcome in cases.values() if outcome == "failed")
    for path, outcome in cases.values():
        if outcome == "ok":
            path.unlink()
    cmd = [LOSSYVISION, "compress", "--source", str(tmp_path / "bad"), "--out", str(tmp_path / "store"),
           "--levels", "1", "--effort", "1", "--num-cpus", "2"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    assert f"failed: {n_bad} images ({n_bad} of {n_bad} image x level pairs), by reason:" in done.stdout
    assert "  2 not an image" in done.stdout and "store/manifest.parquet (column 'error')" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == \
        "error: no image could be compressed (every row failed; reasons above)"
    assert "Traceback" not in done.stderr

    (tmp_path / "bad" / "train" / "odd" / "good.jpg").write_bytes(jpeg_bytes(photo("coffee", (40, 32))))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert f"failed: {n_bad} images ({n_bad} of {n_bad + 1} image x level pairs)" in done.stdout
    assert "error:" not in done.stderr
