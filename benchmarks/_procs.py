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
