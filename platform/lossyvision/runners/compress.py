"""The compress job on Ray Data: the only Ray part of compression.

Work items (one per (image, level), plain dicts) become a Ray dataset of small blocks; a plain
function (:func:`lossyvision.compress_images.compress_items`) runs as Ray *tasks* on every CPU, reads each
source through fsspec, encodes, writes the output atomically and returns manifest rows (strings
and numbers, never pixels or PIL objects). The driver streams the rows back with
``iter_batches`` and persists them as they arrive, so memory stays flat and a killed job resumes.

No actor pools: on a 2-CPU machine an actor pool can hold every CPU and starve other stages. Tasks
ask for one CPU each, so the job uses all CPUs of the cluster and no more.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any, Iterator, Sequence

import pandas as pd
import pyarrow as pa
import ray

from lossyvision import compress, manifest
from lossyvision.codecs import DEFAULT_CODEC
from lossyvision.compress_images import compress_items
from lossyvision.compress_options import DEFAULT_LEVELS, PNG_SAMPLE, CompressError, CompressOptions, validate
from lossyvision.compress_plan import work_chunks
from lossyvision.datasets import create_dataset
from lossyvision.datasets.base import Record
from lossyvision.lock import writer_lock
from lossyvision.progress import job_progress
from lossyvision.runners.cluster import init_ray, shutdown_ray
from lossyvision.shards import DEFAULT_LAYOUT, DEFAULT_SHARD_SIZE
from lossyvision.store import absolute


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


def _compress_block(batch: pa.Table, params: dict) -> pa.Table:
    items = [item for chunk in batch.column("chunk").to_pylist() for item in pickle.loads(chunk)]
    rows = compress_items(items, params)
    node = ray.get_runtime_context().get_node_id()  # the manifest says which node wrote each file
    return manifest.to_table([{**row, "node": node} for row in rows])


def lean_data_context(ctx: Any) -> None:
    """Trim Ray Data's own work for this job on ``ctx`` (the dataset's copy; the global is untouched).

    One CPU-bound operator over in-memory items: nothing to protect from contention. Ray Data's
    reservation allocator (2.60) kept it at ~1.5 of 2 CPUs (jobs 20-25% slower, see
    docs/benchmarks.md P1). Every map task also polls its own memory (USS, from /proc) each second,
    and a progress bar redraws in the driver: CPU taken from the encoders for numbers nobody reads
    here. Progress bars stay on for an interactive terminal.
    """
    settings = {"op_resource_reservation_enabled": False, "memory_usage_poll_interval_s": None,
                "enable_auto_log_stats": False,
                # lossyvision's own progress (lossyvision.progress) replaces Ray Data's bars and lines
                "enable_progress_bars": False, "print_on_execution_start": False}
    for name, value in settings.items():
        if hasattr(ctx, name):  # knobs of ray 2.60; older or newer versions may lack one
            setattr(ctx, name, value)
    quiet_ray_data_console()


class _HideFromConsole(logging.Filter):
    """Marks Ray Data's INFO lines (and its "progress bars disabled" hint) ``hide``: Ray Data's console
    handler drops such records (its ``HiddenRecordFilter``); its log file in the session folder keeps them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or "Progress bars" in record.getMessage():
            record.hide = True
        return True


#: Ray Data loggers whose console lines repeat what our progress says.
RAY_DATA_CHATTY = ("ray.data._internal.execution.streaming_executor", "ray.data._internal.progress")


def quiet_ray_data_console() -> None:
    """Keep Ray Data's "Starting execution of Dataset ..." lines off the console (idempotent)."""
    for name in RAY_DATA_CHATTY:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideFromConsole) for f in logger.filters):
            logger.addFilter(_HideFromConsole())


def execute_with_ray(items: list[dict], params: dict) -> Iterator[list[dict]]:
    """Run work items as Ray Data tasks; yield finished rows as blocks complete."""
    n_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    # One block per chunk (a pickled list of items): Ray Data would cut plain rows into even
    # blocks, and the shrinking chunks of ``work_chunks`` are what keeps the tail short.
    chunks = work_chunks(items, n_cpus)
    ds = ray.data.from_items([{"chunk": pickle.dumps(c)} for c in chunks], override_num_blocks=len(chunks))
    ds = ds.map_batches(_compress_block, fn_kwargs={"params": params}, batch_size=None,
                        batch_format="pyarrow", num_cpus=1, compute=ray.data.TaskPoolStrategy())
    lean_data_context(ds.context)
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
        yield batch.to_pylist()


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
    codec: str = DEFAULT_CODEC,
    codec_options: dict[str, Any] | None = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    on_error: str = "skip",
    max_pixels: int = 100_000_000,
    quality_metric: str | None = None,
    quality_sample: int = 16,
    png_sample: int | None = PNG_SAMPLE,
    num_cpus: int | None = None,
    address: str | None = None,
    keep_ray: bool = False,
    records: Sequence[Record] | None = None,
    not_read: Sequence[Any] = (),
    animated: str = "refuse",
    layout: str = DEFAULT_LAYOUT,
    shard_size: int = DEFAULT_SHARD_SIZE,
    log=print,
    progress: Any = None,
) -> compress.JobResult:
    """Compress dataset ``source`` into ``store_uri`` at every level; resumable.

    Returns a :class:`~lossyvision.compress.JobResult`; ``.manifest`` is this job's rows as a
    DataFrame (:data:`lossyvision.manifest.SCHEMA`), ``.summary`` the per-level table. Uses the
    running Ray if there is one, else (only if there is work to do) joins ``address`` or starts a
    local one with ``num_cpus`` (all CPUs by default) and stops it at the end, unless ``keep_ray``
    (the sweep engine goes on to train on it). Progress: a bar on a terminal, else a line through
    ``log`` every ``LOSSYVISION_PROGRESS_SECONDS`` (``progress``, a
    :class:`lossyvision.progress.JobProgress`, replaces both). Raises
    :class:`~lossyvision.compress_options.CompressError` for bad options, an empty dataset, or the first
    bad image under ``on_error='fail'``. ``not_read`` lists dataset files not read (with
    ``records``; else the reader's own list): they are saved in ``STORE/skipped.csv``. ``animated``:
    ``refuse`` animated images (a failed row saying so) or compress their ``first`` frame.
    ``layout``: ``files`` (one file per image and level) or ``shards`` (tar shards of about
    ``shard_size`` source bytes per level, :mod:`lossyvision.shards`).
    """
    # Workers of a joined cluster run elsewhere: the paths they are given must not depend on our folder.
    source, store_uri = absolute(source), absolute(store_uri)
    options = CompressOptions(
        codec=codec, codec_options=dict(codec_options or {}), levels=tuple(float(x) for x in levels),
        on_error=on_error, max_pixels=int(max_pixels), quality_metric=quality_metric,
        quality_sample=int(quality_sample), animated=animated, layout=layout, shard_size=int(shard_size),
        png_sample=None if png_sample is None else int(png_sample))
    validate(options)
    compress.check_store_place(str(store_uri))
    with writer_lock(str(store_uri), "lossyvision compress", log=log):  # before listing: refused at once
        try:
            reader = create_dataset(dataset, source, **(dataset_options or {}))
            if records is None:
                records = reader.records()
                not_read = reader.skipped
        except (KeyError, ValueError, FileNotFoundError) as exc:
            raise CompressError(f"{source}: {str(exc).strip(chr(39))}") from None
        started = False

        def execute(items: list[dict], params: dict) -> Iterator[list[dict]]:
            nonlocal started  # Ray starts only when there is work: a finished store reruns in seconds
            started = ensure_ray(num_cpus, address)
            yield from execute_with_ray(items, params)

        if progress is None:
            progress = job_progress("compress", log)
        try:
            return compress.run_job(records, source, store_uri, options, execute, log=log, reader=reader,
                                    not_read=not_read, progress=progress)
        finally:
            if started and not keep_ray:
                shutdown_ray()
