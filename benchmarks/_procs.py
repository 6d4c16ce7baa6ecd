"""What the memory benchmarks sample: the RSS of a process and all its children (Ray's daemons and workers)."""

from __future__ import annotations

import psutil


def tree_rss(root: psutil.Process) -> tuple[int, int, int] | None:
    """``(RSS of the whole tree, RSS of root, processes in the tree)``; None once root has exited.

    A child that exits between the listing and its reading is skipped.
    """
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    total = driver = 0
    for p in procs:
        try:
            rss = p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += rss
        if p.pid == root.pid:
            driver = rss
    return total, driver, len(procs)


def run_timed(cmd: list[str], env: dict | None = None, every: float = 0.2) -> tuple[float, float, str, str]:
    """Run ``cmd``; ``(wall seconds, CPU-seconds of its process tree, stdout, stderr)``; a failed command
    ends the benchmark (``SystemExit`` with the tails of its output).

    The tree (the command and every descendant: Ray's daemons and workers, a pool's processes) is
    sampled every ``every`` seconds; each process counts with its last sample, user + system only
    (a parent's ``children_*`` times would count reaped children twice).
    """
    import subprocess
    import threading
    import time

    began = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    streams: list[tuple[str, str]] = []
    drain = threading.Thread(target=lambda: streams.append(proc.communicate()), daemon=True)
    drain.start()
    root, cpu = psutil.Process(proc.pid), {}
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = []
        for p in procs:
            try:
                t = p.cpu_times()
                cpu[p.pid] = max(cpu.get(p.pid, 0.0), t.user + t.system)
            except psutil.Error:
                continue
        time.sleep(every)
    wall = time.perf_counter() - began
    drain.join()
    out, err = streams[0] if streams else ("", "")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{out[-2000:]}\n{err[-3000:]}")
    return wall, sum(cpu.values()), out, err
