"""A real ``ray start --head`` on 127.0.0.1 for tests of the Job Submission API, and its teardown.

Not ``ray stop``: that kills every Ray on the machine, other tests' included. The head gets a
unique ``--temp-dir``; teardown ends exactly the processes whose command line names that folder,
and their children (the job drivers).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayHead:
    address: str  # the job server, http://127.0.0.1:PORT
    temp_dir: str
    env: dict[str, str]
    gcs: str = ""  # what a driver joins with ray.init / RAY_ADDRESS: 127.0.0.1:PORT

    def stop(self) -> None:
        stop_processes_under(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_head(num_cpus: int = 2, env: dict[str, str] | None = None, timeout_s: float = 120,
               auth_token: str | None = None) -> RayHead:
    """Start a 2-CPU head with the dashboard (the job server needs it); token auth only with ``auth_token``."""
    temp_dir = tempfile.mkdtemp(prefix="lvray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    dash, gcs = free_port(), free_port()
    run_env = {**os.environ, **(env or {})}
    run_env["RAY_AUTH_MODE"] = "token" if auth_token else "disabled"
    if auth_token:
        run_env["RAY_AUTH_TOKEN"] = auth_token
    else:
        run_env.pop("RAY_AUTH_TOKEN", None)
    run_env["PATH"] = f"{VENV_BIN}{os.pathsep}{run_env.get('PATH', '')}"  # jobs run `lossyvision ...`
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        run_env.pop(var, None)
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
           f"--port={gcs}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
           "--include-dashboard=true", f"--num-cpus={num_cpus}", "--num-gpus=0",
           f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
           f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    head = RayHead(f"http://127.0.0.1:{dash}", temp_dir, run_env, f"127.0.0.1:{gcs}")
    try:
        out = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=timeout_s)
        if out.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{out.stdout}\n{out.stderr}")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                request = urllib.request.Request(f"{head.address}/api/version", headers=(
                    {"Authorization": f"Bearer {auth_token}"} if auth_token else {}))
                with urllib.request.urlopen(request, timeout=5) as r:
                    if r.status == 200:
                        return head
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the job server at {head.address} did not come up")
            time.sleep(0.5)
    except BaseException:
        head.stop()
        raise


def stop_processes_under(temp_dir: str, grace_s: float = 10) -> int:
    """End the processes whose command line names ``temp_dir``, with their descendants; returns how many."""
    import psutil

    roots = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(temp_dir in part for part in p.info["cmdline"] or []):
                roots.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    procs = {p.pid: p for p in roots}
    for p in roots:
        try:
            procs.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            continue
    procs.pop(os.getpid(), None)
    for p in procs.values():
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return len(procs)
