"""Connecting to Ray: a KubeRay cluster through ``RAY_ADDRESS``, or a local one on this machine."""

from __future__ import annotations

import atexit
import os
from typing import Any

_STOP_AT_EXIT = None  # shutdown_ray, once registered with atexit
_STARTED_LOCAL = False  # this process started (or was starting) a local cluster


def init_ray(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
             quiet: bool = True, **kwargs: Any) -> dict[str, float]:
    """Start or join Ray once; returns the cluster's resources.

    ``address`` (or ``RAY_ADDRESS``) joins an existing cluster unchanged (a RayJob's driver);
    without one a local Ray starts with this machine's CPUs, token auth off, no dashboard, and
    workers at the caller's priority: Ray's default (nice 15) lets any other process on the machine
    take their CPU, which made jobs 1.5-2.6x slower than a plain process pool on a busy machine
    (docs/benchmarks.md). A local Ray is stopped with :func:`shutdown_ray` when the process exits
    (a command that forgets to, or is interrupted). Calling it again while Ray is up is a no-op.
    """
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    address = address or os.environ.get("RAY_ADDRESS")
    options: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": not quiet, **kwargs}
    if quiet:
        options.setdefault("logging_level", "WARNING")
    if address:
        ray.init(address=address, **options)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        global _STARTED_LOCAL
        _STARTED_LOCAL = True  # before ray.init: Ctrl-C may come while it starts the processes
        options.setdefault("_system_config", {"worker_niceness": 0})
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus,
                 include_dashboard=False, **options)
        global _STOP_AT_EXIT
        if not _STOP_AT_EXIT:  # runs before Ray's own exit hook (last in, first out)
            _STOP_AT_EXIT = atexit.register(shutdown_ray)
    if quiet:
        _quiet_ray_data()
    return ray.cluster_resources()


def node_shapes() -> tuple[list[dict[str, float]], bool]:
    """The resources of every node the joined cluster has or may add, and whether the second part is known.

    Live nodes come from ``ray.nodes()``; an autoscaler that reports its node groups to the GCS
    (``ClusterConfig``, what Ray Train and Ray Data read for the same question) adds one shape per
    group that may have nodes. Without that report the cluster's growth is unknown.
    """
    import ray

    shapes = [{k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n.get("Alive")]
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - a private API: no report is "unknown", never a crash
        config = None
    if config is not None:
        shapes += [{k: float(v) for k, v in group.resources.items()}
                   for group in config.node_group_configs if group.max_count != 0]
    return shapes, config is not None


def _quiet_ray_data() -> None:
    """Ray Data logs every dataset's plan and progress at INFO: keep warnings only."""
    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _local_autoscaler_monitors() -> list:
    """The autoscaler monitor processes this process started with a local cluster (none when it joined one)."""
    import psutil

    found = []
    for child in psutil.Process().children():
        try:
            if any("autoscaler" in arg and arg.endswith("monitor.py") for arg in child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def shutdown_ray() -> None:
    """Stop Ray; a local cluster this process started stops in a fraction of a second instead of 1.4 s.

    Ray (2.60) stops a local cluster's processes one at a time, the GCS before the autoscaler's
    monitor, whose SIGTERM handler then reports to the stopped GCS until Ray kills it after a
    one-second grace. A local cluster has no autoscaler nodes to clean up, so its monitor is killed
    first. A joined cluster (``RAY_ADDRESS``, a RayJob) is only disconnected from, as before.
    """
    import ray

    if not ray.is_initialized():
        return
    kill_processes(_local_autoscaler_monitors())
    ray.shutdown()


def stop_after_interrupt() -> None:
    """After Ctrl-C: stop the local Ray this process started, and every Ray process of its group.

    Ctrl-C reaches the whole foreground process group: the raylet may die at once, and the agents
    it started (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``), orphaned, linger for about a
    minute. They stay in this process's group, so they are found there and killed. A joined cluster
    is only disconnected from.
    """
    import ray

    local = _STARTED_LOCAL
    if ray.is_initialized():
        try:
            shutdown_ray()
        except Exception:  # noqa: BLE001 - half-stopped by the signal: the sweep below finishes the job
            pass
    if local:
        kill_processes(group_ray_processes())


def group_ray_processes() -> list:
    """The Ray processes (``ray::...``, raylet, gcs_server, Ray's Python helpers) in this process's group."""
    import psutil

    group = os.getpgid(0)
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            if proc.pid == os.getpid() or os.getpgid(proc.pid) != group:
                continue
            words = " ".join([proc.info["name"] or "", *(proc.info["cmdline"] or ())])
            if "ray::" in words or "raylet" in words or "gcs_server" in words or "/ray/" in words:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def kill_processes(procs: list, timeout: float = 2) -> None:
    """SIGKILL ``procs`` (psutil processes) at once and reap them; those already gone are skipped."""
    import psutil

    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=timeout)
