"""The compress job: options in, a store out. :func:`run_job` checks the options, plans what is left to do, runs it
with an executor, saves finished rows as they come, and writes the summary; :func:`sweep_job_args` makes a sweep
file's jobs.

The job reads as its pipeline, one module per step:

* :mod:`lossyvision.compress_options`: the options, their bounds and the one validator (the CLI and the sweep file
  use it too);
* :mod:`lossyvision.compress_plan`: which (image, level) pairs are left to do (resume), and in what chunks;
* :mod:`lossyvision.compress_images`: one chunk of (image, level) work items -> one manifest row each;
* :mod:`lossyvision.compress_report`: the per-level summary and the lines about what was not done.

Nothing here imports Ray. :func:`run_job` drives a job with any *executor* (a function from work items to an
iterator of finished row batches): :func:`execute_serially` here for small jobs and unit tests,
``lossyvision.runners.compress.execute_with_ray`` (Ray Data) for real ones. The names of those modules that other
modules use are importable from here too (``from lossyvision import compress``, ``compress.CompressOptions``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import pandas as pd

from lossyvision import manifest
from lossyvision.compress_images import (compress_items, compress_one, effective_codec_options, job_params,
                                         options_json, output_names, read_source)
from lossyvision.compress_options import (BOUNDS, DEFAULT_LEVELS, EVERY_IMAGE, ON_ERROR, PNG_SAMPLE, CompressError,
                                          CompressOptions, check_option, parse_levels, parse_png_sample,
                                          parse_quality_sample, parse_shard_size, validate)
from lossyvision.compress_plan import (check_layout, limit_per_split, list_files, plan, png_sample, quality_sample,
                                       remove_unreferenced_shards, work_chunks)
from lossyvision.compress_report import (SKIPPED_NAME, SUMMARY_COLUMNS, describe_failures, describe_not_read,
                                         render_summary, summarize, write_not_read, write_summary)
from lossyvision.datasets import create_dataset
from lossyvision.datasets.base import DatasetReader, Record
from lossyvision.lock import writer_lock
from lossyvision.places import check_place, check_store_files
from lossyvision.shards import DEFAULT_LAYOUT, DEFAULT_SHARD_SIZE, LAYOUTS
from lossyvision.units import format_bytes

__all__ = [
    # the job (this module)
    "DEFAULT_FLUSH_SECONDS", "Executor", "JobResult", "check_store_place", "execute_serially", "run_job",
    "sweep_job_args",
    # compress_options
    "BOUNDS", "DEFAULT_LEVELS", "EVERY_IMAGE", "ON_ERROR", "PNG_SAMPLE", "CompressError", "CompressOptions",
    "check_option", "parse_levels", "parse_png_sample", "parse_quality_sample", "parse_shard_size", "validate",
    "DEFAULT_LAYOUT", "DEFAULT_SHARD_SIZE", "LAYOUTS",
    # compress_plan
    "check_layout", "limit_per_split", "list_files", "plan", "png_sample", "quality_sample",
    "remove_unreferenced_shards", "work_chunks",
    # compress_images
    "compress_items", "compress_one", "effective_codec_options", "job_params", "options_json", "output_names",
    "read_source",
    # compress_report
    "SKIPPED_NAME", "SUMMARY_COLUMNS", "describe_failures", "describe_not_read", "render_summary", "summarize",
    "write_not_read", "write_summary",
]

DEFAULT_FLUSH_SECONDS = 2.0

#: ``execute(items, params)`` yields lists of finished rows as work completes.
Executor = Callable[[list[dict], dict], Iterator[list[dict]]]


def execute_serially(items: list[dict], params: dict, batch_size: int = 16) -> Iterator[list[dict]]:
    """The reference executor: one process, in order. For unit tests and tiny jobs."""
    if items and items[0].get("shard_size"):  # one call per shard group
        for group in work_chunks(items, 1):
            yield compress_items(group, params)
        return
    for start in range(0, len(items), batch_size):
        yield compress_items(items[start:start + batch_size], params)


@dataclass
class JobResult:
    manifest: pd.DataFrame   # this job's rows (its images x levels), all statuses
    summary: pd.DataFrame    # per-level table, as saved to summary.csv
    done: int                # work items run now
    skipped: int             # (image, level) pairs already done
    not_read: list = field(default_factory=list)  # dataset files not read, with the reason (skipped.csv)
    store_rows: int | None = None  # rows of the store's whole manifest (other codecs and levels too)


def run_job(records: Sequence[Record], source_root: str, store_uri: str, options: CompressOptions,
            execute: Executor, *, flush_rows: int = 500, flush_seconds: float | None = None,
            consolidate_every: int = 256, log: Callable[[str], None] = lambda msg: None,
            reader: DatasetReader | None = None, not_read: Sequence[Any] = (),
            progress: Any = None) -> JobResult:
    """Plan, execute, persist rows incrementally, consolidate the manifest, write summary.csv.

    Finished rows are flushed to a part file every ``flush_rows`` rows or ``flush_seconds``
    (whichever first, checked as batches arrive; default 2 s, or ``LOSSYVISION_FLUSH_SECONDS``),
    so a kill loses only recent work; every ``consolidate_every`` parts they are folded into the
    manifest, bounding the number of files. ``reader`` (the records' dataset reader) says where
    sources are when they are not files under ``source_root`` (see :func:`plan`).

    ``not_read`` (the dataset reader's ``skipped``: FIFOs, links outside the root, unsupported
    types) is saved as ``STORE/skipped.csv`` and returned, so nothing is dropped silently.

    One writer per store: the job holds the store's writer lock (:mod:`lossyvision.lock`); a
    second job on the same store is refused at once with ``LockHeld``, naming the first.

    ``progress`` (a :class:`lossyvision.progress.JobProgress`) hears the number of work items, then
    every batch of finished rows and its failures.
    """
    validate(options)
    if not records:
        raise CompressError(f"{source_root}: the dataset has no images")
    store_uri = str(store_uri)
    check_store_place(store_uri)
    with writer_lock(store_uri, "lossyvision compress", log=log):
        result = _run_job_locked(records, source_root, store_uri, options, execute, flush_rows=flush_rows,
                                 flush_seconds=flush_seconds, consolidate_every=consolidate_every, log=log,
                                 reader=reader, progress=progress)
        write_not_read(store_uri, not_read)
        result.not_read = list(not_read)
        return result


def check_store_place(store_uri: str) -> None:
    """A store is never a system folder nor someone else's folder, and its manifest reads back."""
    try:
        check_place(store_uri, "store")
    except ValueError as exc:
        raise CompressError(f"store: {exc}") from None
    check_store_files(store_uri)


def _run_job_locked(records: Sequence[Record], source_root: str, store_uri: str, options: CompressOptions,
                    execute: Executor, *, flush_rows: int, flush_seconds: float | None, consolidate_every: int,
                    log: Callable[[str], None], reader: DatasetReader | None = None,
                    progress: Any = None) -> JobResult:
    if flush_seconds is None:
        flush_seconds = float(os.environ.get("LOSSYVISION_FLUSH_SECONDS", DEFAULT_FLUSH_SECONDS))
    params = job_params(options, store_uri, reader)
    run_id, seq, buffer, stopped_by = manifest.new_run_id(), 0, [], None
    params["run_id"] = run_id  # names this job's shards
    existing = manifest.consolidate(store_uri)  # a new store gets its (empty) manifest first: it is a store
    check_layout(store_uri, existing, options.layout)
    if options.layout == "shards":
        remove_unreferenced_shards(store_uri, existing, options, log)
    items, skipped = plan(records, source_root, store_uri, options, existing, params, reader)
    log(f"{len(records)} images x {len(options.levels)} levels: {len(items)} to compress, "
        f"{skipped} already done" + (f", in shards of up to {format_bytes(options.shard_size)} of sources"
                                     if options.layout == "shards" and items else ""))
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal seq, buffer, last_flush
        if buffer:
            manifest.write_part(store_uri, buffer, run_id, seq)
            seq, buffer = seq + 1, []
            if seq % consolidate_every == 0:
                manifest.consolidate(store_uri)
        last_flush = time.monotonic()

    done = 0
    if progress is not None and items:
        progress.start(len(items))
    try:
        if items:
            for rows in execute(items, params):
                buffer.extend(rows)
                done += len(rows)
                if progress is not None:
                    progress.advance(len(rows), sum(r["status"] == manifest.STATUS_FAILED for r in rows))
                if options.on_error == "fail":
                    stopped_by = next((r for r in rows if r["status"] == manifest.STATUS_FAILED), None)
                    if stopped_by is not None:
                        break
                if len(buffer) >= flush_rows or time.monotonic() - last_flush >= flush_seconds:
                    flush()
    finally:
        flush()  # rows already finished are kept even when interrupted
        if progress is not None and items:
            progress.close()
    full = manifest.consolidate(store_uri)
    if options.layout == "shards":
        remove_unreferenced_shards(store_uri, full, options, log)  # shards whose members were all redone
    if stopped_by is not None:
        raise CompressError(f"{stopped_by['relpath']}: {stopped_by['error']} "
                            f"(stopped by --on-error fail; {done} rows finished were kept)")
    levels = {float(x) for x in options.levels}
    relpaths = {r.relpath for r in records}
    mine = full[(full["codec"] == options.codec) & full["level"].isin(levels)
                & full["relpath"].isin(relpaths)].reset_index(drop=True)
    table = summarize(mine)
    write_summary(store_uri, summarize(full))  # the store's summary: every codec and level it holds
    return JobResult(manifest=mine, summary=table, done=done, skipped=skipped, store_rows=len(full))


def sweep_job_args(sweep) -> list[dict[str, Any]]:
    """Keyword arguments of ``compress_job`` for a :class:`lossyvision.spec.Sweep`: one job per codec.

    Levels are the union of the codec's train and test levels; the store is ``sweep.store_uri``
    (one store, one manifest, every codec); options come from ``sweep.compress``;
    ``limit_per_split`` is honoured, so exactly the sweep's images are done. The dataset is listed
    once for all the jobs.
    """
    try:
        reader = create_dataset(sweep.dataset.kind, sweep.dataset.root, **sweep.dataset.options)
        records = reader.records()
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise CompressError(f"dataset: {str(exc).strip(chr(39))}") from None
    records = limit_per_split(records, sweep.limit_per_split)
    return [{
        "not_read": reader.skipped, "animated": sweep.compress.animated,
        "source": sweep.dataset.root, "store_uri": sweep.store_uri, "dataset": sweep.dataset.kind,
        "dataset_options": dict(sweep.dataset.options), "codec": arm.name, "codec_options": arm.options,
        "levels": tuple(arm.levels),
        "on_error": sweep.compress.on_error, "max_pixels": sweep.compress.max_pixels,
        "quality_metric": sweep.compress.quality_metric, "quality_sample": sweep.compress.quality_sample,
        "layout": sweep.compress.layout, "shard_size": sweep.compress.shard_size,
        "png_sample": None if sweep.compress.png_sample == "all" else sweep.compress.png_sample,
        "records": records,
    } for arm in sweep.arms]
