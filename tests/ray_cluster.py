"""A real multi-node Ray cluster on this machine for tests: a head and worker nodes, each its own
``ray start`` with its own ``--temp-dir``, resources and ports.

Nodes are ended by their own processes: every process whose command line names the node's temp
folder, and their descendants (``ray stop`` would stop every Ray on the machine, other tests'
included). :meth:`Cluster.kill` SIGKILLs a node at once, as a reclaimed spot instance or an
evicted pod goes; :meth:`Cluster.stop` ends them all and runs even when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ray_head import VENV_BIN, free_port, stop_processes_under

PLATFORM = str(Path(__file__).resolve().parents[1] / "platform")

#: Let the head declare a killed node dead in about 3 s (Ray's default waits about 15 s).
FAST_FAILURE_DETECTION = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                          "RAY_health_check_failure_threshold": "3"}


@dataclass
class Node:
    name: str
    temp_dir: str
    resources: dict[str, float]
    node_id: str = ""

    def processes(self) -> list:
        """This node's processes: those naming its temp folder, and their descendants."""
        import psutil

        found = {}
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(self.temp_dir in part for part in p.info["cmdline"] or []):
                    found[p.pid] = p
                    found.update({c.pid: c for c in p.children(recursive=True)})
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        found.pop(os.getpid(), None)
        return list(found.values())

    def busy_workers(self) -> list[str]:
        """Titles of this node's Ray workers that run a task or an actor (``ray::_score``, ...): Ray
        retitles a worker process after what it runs; idle ones and the node's agents are left out."""
        import psutil

        titles = []
        for p in self.processes():
            try:
                title = " ".join(p.cmdline()).strip()
            except psutil.Error:
                continue
            name = title.split()[0] if title else ""
            if name.startswith("ray::") and name != "ray::IDLE" and not name.endswith("Agent"):
                titles.append(name)
        return titles


@dataclass
class Cluster:
    address: str  # 127.0.0.1:PORT, the GCS: RAY_ADDRESS for drivers
    env: dict[str, str]
    nodes: list[Node] = field(default_factory=list)

    @property
    def head(self) -> Node:
        return self.nodes[0]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def by_id(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def kill(self, node: Node) -> int:
        """SIGKILL every process of ``node`` at once: the node is lost, not shut down."""
        from lossyvision.runners.cluster import kill_processes

        procs = node.processes()
        kill_processes(procs, timeout=10)
        return len(procs)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            stop_processes_under(node.temp_dir, grace_s=5)
        for node in self.nodes:
            shutil.rmtree(node.temp_dir, ignore_errors=True)

    def read_node_ids(self, timeout_s: float = 60) -> None:
        """Fill each node's Ray node id, matched by the temp folder its object store lives in."""
        deadline = time.monotonic() + timeout_s
        while True:
            alive = {}
            out = subprocess.run([sys.executable, "-c", _NODES_SCRIPT, self.address], env=self.env,
                                 capture_output=True, text=True, timeout=120)
            if out.returncode == 0:
                for entry in json.loads(out.stdout.strip().splitlines()[-1]):
                    for node in self.nodes:
                        if entry["alive"] and entry["socket"].startswith(node.temp_dir + "/"):
                            alive[node.name] = entry["id"]
            if len(alive) == len(self.nodes):
                for node in self.nodes:
                    node.node_id = alive[node.name]
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every node came up: {alive}; {out.stderr[-2000:]}")
            time.sleep(1)


_NODES_SCRIPT = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
print(json.dumps([{"id": n["NodeID"], "alive": n["Alive"], "socket": n["ObjectStoreSocketName"]} for n in ray.nodes()]))
"""


def start_cluster(workers: list[dict[str, float]], *, head_cpus: int = 1, worker_cpus: int = 1,
                  env: dict[str, str] | None = None, timeout_s: float = 180) -> Cluster:
    """A head and one worker node per entry of ``workers`` (its custom resources), all on 127.0.0.1.

    Every process gets ``env`` (the AWS variables of a moto server, ...), this checkout's
    ``platform`` first on ``PYTHONPATH`` and token authentication off.
    """
    run_env = {**os.environ, **(env or {}), **FAST_FAILURE_DETECTION, "RAY_AUTH_MODE": "disabled"}
    run_env["PYTHONPATH"] = os.pathsep.join([PLATFORM, *filter(None, [run_env.get("PYTHONPATH")])])
    run_env["PATH"] = f"{VENV_BIN}{os.pathsep}{run_env.get('PATH', '')}"
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN"):
        run_env.pop(var, None)
    port = free_port()
    cluster = Cluster(f"127.0.0.1:{port}", run_env)
    try:
        for i, resources in enumerate([{}] + list(workers)):
            name = "head" if i == 0 else f"worker{i}"
            node = Node(name, tempfile.mkdtemp(prefix=f"lvmn{i}-", dir="/tmp"), dict(resources))
            cluster.nodes.append(node)  # before starting: stop() finds it whatever happens
            cmd = [str(VENV_BIN / "ray"), "start", "--node-ip-address=127.0.0.1", f"--temp-dir={node.temp_dir}",
                   f"--num-cpus={head_cpus if i == 0 else worker_cpus}", "--num-gpus=0",
                   "--object-store-memory=150000000", "--disable-usage-stats",
                   f"--metrics-export-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                   f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
            if i == 0:
                cmd += ["--head", f"--port={port}", "--include-dashboard=false",
                        f"--ray-client-server-port={free_port()}"]
            else:
                cmd += [f"--address={cluster.address}"]
            if resources:
                cmd += [f"--resources={json.dumps(resources)}"]
            out = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=timeout_s)
            if out.returncode != 0:
                raise RuntimeError(f"ray start ({name}) failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        cluster.read_node_ids(timeout_s)
        return cluster
    except BaseException:
        cluster.stop()
        raise
