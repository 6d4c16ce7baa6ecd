"""The compress job on Ray tasks: the only Ray part of compression.

Work items (one per (image, level), plain dicts) are cut into chunks (:func:`lossyvision.compress.work_chunks`);
each chunk is one Ray *task* running a plain function (:func:`lossyvision.compress.compress_items`)
that reads each source through fsspec, encodes, writes the output atomically and returns manifest
rows (strings and numbers, never pixels or PIL objects). The driver keeps two chunks per CPU in
flight, takes rows back as chunks finish and persists them as they arrive, so memory stays flat
and a killed job resumes.

Plain tasks, not a Ray Data pipeline: the job is a flat list of chunks already in memory, and a
first Ray Data dataset costs about 2 s before any encode (its actors, fresh workers importing
``ray.data``) plus a scheduling loop beside the encoders, which kept the job 1.2-1.8x slower than a
plain ``multiprocessing.Pool`` (docs/benchmarks.md, P1). No actor pools either: on a 2-CPU machine
an actor pool can hold every CPU and starve other stages. Tasks ask for one CPU each, so the job
uses all CPUs of the cluster and no more.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterator, Sequence

import pandas as pd
import ray

from lossyvision import compress
from lossyvision.datasets.base import Record
from lossyvision.runners.cluster import init_ray


def ensure_ray(num_cpus: int | None = None, address: str | None = None) -> bool:
    """Start a local Ray (or join ``RAY_ADDRESS``) unless one is running; True if we started it.

    Starting goes through :func:`lossyvision.runners.cluster.init_ray` (no dashboard, token auth
    off and quiet logs for a local cluster).

    A caller that already called ``ray.init`` (the sweep engine, a notebook) keeps its cluster and
    its terms; ``num_cpus`` then has no effect.
    """
    if ray.is_initialized():
        return False
    init_ray(address, num_cpus=num_cpus)
    return True


def execute_with_ray(items: list[dict], params: dict) -> Iterator[list[dict]]:
    """Run work items as Ray tasks, one per chunk; yield each chunk's rows as it finishes.

    Two chunks per CPU are in flight, so a worker that finishes one finds the next waiting; the
    chunks shrink towards the end (:func:`lossyvision.compress.work_chunks`), so the tail is short.
    Stopping early (``on_error='fail'``) cancels what has not run.
    """
    n_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    task = ray.remote(num_cpus=1)(compress.compress_items)
    waiting = deque(compress.work_chunks(items, n_cpus))
    params_ref = ray.put(params)
    running: list[Any] = []
    try:
        while waiting or running:
            while waiting and len(running) < 2 * n_cpus:
                running.append(task.remote(waiting.popleft(), params_ref))
            ready, running = ray.wait(running, num_returns=1)
            yield ray.get(ready[0])
    finally:
        for ref in running:
            ray.cancel(ref)


def compress_dataset(source: str, store_uri: str, **kwargs: Any) -> pd.DataFrame:
    """Compress dataset ``source`` into ``store_uri``; returns this job's manifest rows.

    Same arguments as :func:`compress_job`; the sweep engine's entry point.
    """
    return compress_job(source, store_uri, **kwargs).manifest


def compress_job(
    source: str,
    store_uri: str,
    *,
    dataset: str = "imagefolder",
    dataset_options: dict[str, Any] | None = None,
    codec: str = "jpegxl",
    codec_options: dict[str, Any] | None = None,
    levels: Sequence[float] = compress.DEFAULT_LEVELS,
    on_error: str = "skip",
    max_pixels: int = 100_000_000,
    quality_metric: str | None = None,
    quality_sample: int = 16,
    png_sample: int | None = compress.PNG_SAMPLE,
    num_cpus: int | None = None,
    address: str | None = None,
    keep_ray: bool = False,
    records: Sequence[Record] | None = None,
    log=print,
) -> compress.JobResult:
    """Compress dataset ``source`` into ``store_uri`` at every level; resumable.

    Returns a :class:`~lossyvision.compress.JobResult`; ``.manifest`` is this job's rows as a
    DataFrame (:data:`lossyvision.manifest.SCHEMA`), ``.summary`` the per-level table. Uses the
    running Ray if there is one, else (only if there is work to do) joins ``address`` or starts a
    local one with ``num_cpus`` (all CPUs by default) and stops it at the end, unless ``keep_ray``
    (the sweep engine goes on to train on it). Raises
    :class:`~lossyvision.compress.CompressError` for bad options, an empty dataset, or the first
    bad image under ``on_error='fail'``.
    """
    from lossyvision.datasets import create_dataset

    options = compress.CompressOptions(
        codec=codec, codec_options=dict(codec_options or {}), levels=tuple(float(x) for x in levels),
        on_error=on_error, max_pixels=int(max_pixels), quality_metric=quality_metric,
        quality_sample=int(quality_sample), png_sample=None if png_sample is None else int(png_sample))
    compress.validate(options)
    if records is None:
        try:
            reader = create_dataset(dataset, source, **(dataset_options or {}))
            records = reader.records()
        except (KeyError, ValueError, FileNotFoundError) as exc:
            raise compress.CompressError(f"{source}: {str(exc).strip(chr(39))}") from None
    started = False

    def execute(items: list[dict], params: dict) -> Iterator[list[dict]]:
        nonlocal started  # Ray starts only when there is work: a finished store reruns in seconds
        started = ensure_ray(num_cpus, address)
        yield from execute_with_ray(items, params)

    try:
        return compress.run_job(records, source, store_uri, options, execute, log=log)
    finally:
        if started and not keep_ray:
            ray.shutdown()
