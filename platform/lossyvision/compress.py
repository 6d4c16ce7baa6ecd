"""The compress job's plain parts: one image at one level -> one manifest row, the plan, the summary.

Nothing here imports Ray. :func:`run_job` drives a job with any *executor* (a function from work
items to an iterator of finished row batches): :func:`execute_serially` here for small jobs and
unit tests, ``lossyvision.runners.compress.execute_with_ray`` (Ray Data) for real ones.

A *work item* is one (image, level) pair as a plain dict; consecutive items of the same image
that land in one batch share a single read and decode of the source. Each item produces exactly
one row (:data:`lossyvision.manifest.SCHEMA`); bad inputs give ``status='failed'`` rows with a
short reason, never an exception.

Resume: an (image, level) is skipped when its manifest row is ``ok``, was made with the same
codec options, its source has the same size and version (mtime/ETag) as listed now, its output
file exists with the recorded size, and (when quality is requested for that image) it carries the
requested quality metric. Everything else is redone; outputs are overwritten atomically.

Layouts (:mod:`lossyvision.shards`): ``files`` (the default) writes one file per (image, level);
``shards`` writes each level as tar shards of about ``shard_size`` source bytes, one task per
shard group. There a shard is the unit of resume: it is done (in place and referenced by the
manifest) or redone with all its members, and shards no row references are deleted. A store has
one layout.

The PNG baseline (``png_bytes``, the report's "lossless PNG" line) is the size of the normalised
pixels as PNG (the ``png`` codec, zlib level 6), computed once per image on that image's first
pending item, for a fixed sample of ``png_sample`` images per split (:func:`png_sample`; default
256, ``None`` = every image): a PNG encode costs about as much as a JPEG XL one at effort 7, and a
mean over 256 images is as good a reference line as one over 100,000. Rows of other images have
a null ``png_bytes``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import posixpath
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Sequence

import pandas as pd

from lossyvision import manifest, shards, store
from lossyvision.codecs import create_codec
from lossyvision.datasets import create_dataset
from lossyvision.datasets._files import UNSUPPORTED, extension
from lossyvision.datasets.base import DatasetReader, Record, file_versions
from lossyvision.imageio import ANIMATED_POLICIES, BadImageError, load_rgb
from lossyvision.lock import writer_lock
from lossyvision.places import check_place, check_store_files
from lossyvision.quality import check_available, measure
from lossyvision.shards import DEFAULT_LAYOUT, DEFAULT_SHARD_SIZE, LAYOUTS
from lossyvision.units import format_bytes, parse_bytes

DEFAULT_LEVELS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
ON_ERROR = ("skip", "fail")
DEFAULT_FLUSH_SECONDS = 2.0
PNG_SAMPLE = 256

#: ``execute(items, params)`` yields lists of finished rows as work completes.
Executor = Callable[[list[dict], dict], Iterator[list[dict]]]


class CompressError(RuntimeError):
    """The job cannot start or was stopped (``on_error='fail'``); the message says why."""


@dataclass(frozen=True)
class CompressOptions:
    """What to compress and how; shared by the CLI, the sweep file and :func:`run_job`."""

    codec: str = "jpegxl"
    codec_options: dict[str, Any] = field(default_factory=dict)
    levels: tuple[float, ...] = DEFAULT_LEVELS
    on_error: str = "skip"
    max_pixels: int = 100_000_000
    quality_metric: str | None = None
    quality_sample: int = 16
    animated: str = "refuse"  # an animated source: refuse it, or compress its "first" frame
    layout: str = DEFAULT_LAYOUT  # files: one file per (image, level); shards: tar shards per level
    shard_size: int = DEFAULT_SHARD_SIZE  # shards: source bytes per shard group
    png_sample: int | None = PNG_SAMPLE  # images per split with a PNG baseline; None: every image


# --- one image ---------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _codec(name: str, options_json: str):
    return create_codec(name, **json.loads(options_json))


def effective_codec_options(codec) -> dict[str, Any]:
    """The codec's options with its defaults filled in (``{"effort": 7}``), for resume checks."""
    opts = dict(codec.options)
    for name in codec.option_names():
        if name not in opts and hasattr(codec, name):
            opts[name] = getattr(codec, name)
    return opts


def options_json(options: dict[str, Any]) -> str:
    return json.dumps(options, sort_keys=True, default=str)


@lru_cache(maxsize=4)
def _reader(kind: str, root: str, options_json: str) -> DatasetReader:
    """The dataset reader a worker needs for sources that are not whole files (one per process)."""
    return create_dataset(kind, root, **json.loads(options_json))


def read_source(item: dict, params: dict) -> bytes:
    """A work item's original bytes: the file at ``item["uri"]``, or through the dataset's reader."""
    dataset = params.get("dataset")
    if dataset is None or item.get("source") is None:
        return store.read_bytes(item["uri"])
    record = Record(relpath=item["relpath"], split=item.get("split") or "", label=item.get("label"),
                    target=item.get("target"), source=item["source"])
    return _reader(dataset["kind"], dataset["root"], dataset["options_json"]).read_source(record)


class _Source:
    """One source image read and decoded once for all its levels in a batch."""

    def __init__(self, item: dict, params: dict) -> None:
        max_pixels = int(params["max_pixels"])
        animated = params.get("animated", "refuse")
        self.data: bytes | None = None
        self.sha256: str | None = None
        self.image = None
        self.error: str | None = None
        self._png: int | None = None
        try:
            self.data = read_source(item, params)
        except FileNotFoundError:
            self.error = "cannot read: file not found"
            return
        except store.NotRegularFileError as exc:  # a FIFO put there after the listing: never opened
            self.error = f"skipped: {exc.strerror}"
            return
        except Exception as exc:  # permissions, network: record, don't crash the job
            self.error = f"cannot read: {type(exc).__name__}: {exc}"
            return
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        try:
            self.image = load_rgb(self.data, max_pixels=max_pixels, animated=animated)
        except BadImageError as exc:
            self.error = exc.reason
        except Exception as exc:  # a decoder bug must not kill the job either
            self.error = f"cannot decode: {type(exc).__name__}: {exc}"

    def png_bytes(self) -> int:
        if self._png is None:
            self._png = len(_codec("png", "{}").encode(self.image.rgb, 0))
        return self._png


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def output_names(relpaths: Iterable[str], extension: str) -> dict[str, str]:
    """``relpath -> output relpath``; sources that would share one (``a.jpg``, ``a.png``) keep
    their extension (``a.jpg.jxl``, ``a.png.jxl``) so that no output overwrites another."""
    relpaths = list(relpaths)
    plain = {r: store.output_relpath(r, extension) for r in relpaths}
    counts: dict[str, int] = {}
    for name in plain.values():
        counts[name.lower()] = counts.get(name.lower(), 0) + 1  # lower: case-insensitive disks
    return {r: (name if counts[name.lower()] == 1 else r + extension) for r, name in plain.items()}


#: ``write(level_relpath, data) -> output_path``: puts one output where the layout wants it.
Writer = Callable[[str, bytes], str]


def _write_file(params: dict) -> Writer:
    """The per-file layout: each output its own file, written atomically."""
    def write(out: str, data: bytes) -> str:
        store.atomic_write_bytes(store.join(params["store"], out), data)
        return out
    return write


def _compress_level(item: dict, src: _Source, params: dict, write: Writer | None = None) -> dict:
    codec = _codec(params["codec"], params["codec_options_json"])
    level = float(item["level"])
    row = {
        "relpath": item["relpath"], "split": item.get("split"), "label": item.get("label"),
        "target": item.get("target"), "codec": params["codec"],
        "codec_options": params["codec_options_json"], "level": level,
        "source_version": item.get("source_version"), "source_sha256": src.sha256,
        "source_bytes": len(src.data) if src.data is not None else None,
    }
    if src.error is not None:
        return {**row, "status": manifest.STATUS_FAILED, "error": src.error, "finished_at": _now()}
    img = src.image
    raw = img.width * img.height * 3
    row.update(source_format=img.format, source_mode=img.mode, width=img.width, height=img.height,
               raw_bytes=raw)
    errors = []
    if img.frames > 1:
        errors.append(f"animated image ({img.frames} frames): its first frame is used")
    if item.get("png"):
        try:
            row["png_bytes"] = src.png_bytes()
        except Exception as exc:
            errors.append(f"png baseline failed: {type(exc).__name__}: {exc}")
    start = time.perf_counter()
    try:
        data, method = codec.encode_with_method(img.rgb, level, source=src.data, source_format=img.format)
    except Exception as exc:
        return {**row, "status": manifest.STATUS_FAILED,
                "error": f"encode failed: {type(exc).__name__}: {exc}", "finished_at": _now()}
    row["encode_seconds"] = time.perf_counter() - start
    name = item.get("output_relpath") or store.output_relpath(item["relpath"], codec.extension)
    out = posixpath.join(store.level_dir(params["codec"], level), name)
    try:
        out = (write or _write_file(params))(out, data)
    except Exception as exc:
        return {**row, "status": manifest.STATUS_FAILED,
                "error": f"cannot write output: {type(exc).__name__}: {exc}", "finished_at": _now()}
    n = len(data)
    row.update(compressed_bytes=n, output_path=out, dcr_vs_source=1.0 - n / len(src.data),
               dcr_vs_raw=1.0 - n / raw, level0_method=method)
    metric = params.get("quality_metric")
    if metric and item.get("quality"):
        row["quality_metric"] = metric  # null quality with a metric: tried and failed (see error)
        try:
            row["quality"] = measure(metric, img.rgb, codec.decode(data))
        except Exception as exc:
            errors.append(f"quality not measured: {exc}")
    return {**row, "status": manifest.STATUS_OK, "error": "; ".join(errors) or None,
            "finished_at": _now()}


def compress_items(items: Sequence[dict], params: dict) -> list[dict]:
    """Compress work items; consecutive items of one source share its read and decode.

    In the sharded layout the items are one shard group: each level's outputs go into one shard,
    committed whole at the end; if a shard cannot be written, its rows say so (``failed``).
    """
    if params.get("layout") == "shards":
        return _compress_shard_group(items, params)
    rows = []
    for _, group in itertools.groupby(items, key=lambda it: it["uri"]):
        group = list(group)
        src = _Source(group[0], params)
        for item in group:
            row = _compress_level(item, src, params)
            rows.append({c: row.get(c) for c in manifest.COLUMNS})  # every column, None if unknown
    return rows


def _compress_shard_group(items: Sequence[dict], params: dict) -> list[dict]:
    name = shards.shard_name(params.get("run_id") or manifest.new_run_id(), (it["relpath"] for it in items))
    writers: dict[float, shards.ShardWriter] = {}

    def writer_for(level: float) -> Writer:
        def write(out: str, data: bytes) -> str:
            if level not in writers:
                writers[level] = shards.ShardWriter(
                    params["store"], posixpath.join(store.level_dir(params["codec"], level), name))
            member = out.split("/", 1)[1]  # the tar member: the relpath with the codec's extension
            return writers[level].add(member, data)
        return write

    rows = []
    try:
        for _, group in itertools.groupby(items, key=lambda it: it["uri"]):
            group = list(group)
            src = _Source(group[0], params)
            for item in group:
                row = _compress_level(item, src, params, writer_for(float(item["level"])))
                rows.append({c: row.get(c) for c in manifest.COLUMNS})
        failed: dict[float, str] = {}
        for level, writer in writers.items():
            try:
                writer.commit()
            except Exception as exc:  # a full disk, a lost bucket: the shard's rows say so
                failed[level] = f"cannot write shard {writer.uri}: {type(exc).__name__}: {exc}"
    except BaseException:
        for writer in writers.values():
            writer.discard()
        raise
    for row in rows:
        reason = failed.get(float(row["level"]))
        if reason is not None and row["status"] == manifest.STATUS_OK:
            row.update(status=manifest.STATUS_FAILED, error=reason, output_path=None, compressed_bytes=None,
                       dcr_vs_source=None, dcr_vs_raw=None)
    return rows


def compress_one(source_uri: str, relpath: str, level: float, store_uri: str, *,
                 codec: str = "jpegxl", codec_options: dict | None = None, split: str | None = None,
                 label: int | None = None, max_pixels: int = 100_000_000,
                 quality_metric: str | None = None, png: bool = True) -> dict:
    """Compress one image at one level into ``store_uri``; returns its manifest row."""
    options = CompressOptions(codec=codec, codec_options=codec_options or {}, max_pixels=max_pixels,
                              quality_metric=quality_metric)
    item = {"uri": source_uri, "relpath": relpath, "split": split, "label": label, "level": float(level),
            "png": png, "quality": quality_metric is not None}
    return compress_items([item], job_params(options, store_uri))[0]


def job_params(options: CompressOptions, store_uri: str, reader: DatasetReader | None = None) -> dict:
    """The plain dict every worker gets: codec, effective options, store, limits.

    With a ``reader`` whose sources are not whole files, also how to rebuild it (kind, root,
    options), so that workers read each source through :meth:`DatasetReader.read_source`.
    """
    codec = _codec(options.codec, options_json(options.codec_options))
    params = {"codec": options.codec, "codec_options_json": options_json(effective_codec_options(codec)),
              "store": str(store_uri), "max_pixels": int(options.max_pixels),
              "quality_metric": options.quality_metric, "animated": options.animated,
              "layout": options.layout}
    if reader is not None and not reader.whole_files:
        params["dataset"] = {"kind": reader.name, "root": reader.root,
                             "options_json": options_json(reader.options)}
    return params


# --- the plan ----------------------------------------------------------------------------------
def list_files(root: str) -> dict[str, dict]:
    """``relpath -> {"size", "version"}`` of every file under ``root``, in one listing."""
    return file_versions(root)


def parse_quality_sample(text: str | int) -> int:
    """``"16"`` -> 16, ``"all"`` -> :data:`EVERY_IMAGE`; :class:`CompressError` on anything else."""
    if str(text).strip().lower() == "all":
        return EVERY_IMAGE
    try:
        n = int(str(text).strip())
    except ValueError:
        raise CompressError(f"--quality-sample: a count or 'all', got {text!r}") from None
    if n < 0:
        raise CompressError(f"--quality-sample: a count >= 0 or 'all', got {text!r}")
    return n


def parse_shard_size(text: str | int) -> int:
    """``"256MB"`` -> 256000000; :class:`CompressError` on anything that is not a positive size."""
    try:
        size = parse_bytes(text)
    except ValueError as exc:
        raise CompressError(f"--shard-size: {exc}") from None
    if size < 1000:
        raise CompressError(f"--shard-size: at least 1kB, got {text!r}")
    return size


#: ``quality_sample`` meaning every image (``quality_sample: all`` in a sweep file, ``--quality-sample all``).
EVERY_IMAGE = -1


def quality_sample(records: Sequence[Record], n: int) -> set[str]:
    """A fixed, spread-out sample of ``n`` relpaths (smallest sha1 of the relpath); every image when
    ``n`` is :data:`EVERY_IMAGE` (-1, ``quality_sample: all``)."""
    if n == EVERY_IMAGE or n >= len(records):
        return {r.relpath for r in records}
    ranked = sorted(records, key=lambda r: hashlib.sha1(r.relpath.encode()).hexdigest())
    return {r.relpath for r in ranked[:n]}


def png_sample(records: Sequence[Record], n: int | None) -> set[str]:
    """The relpaths that get a PNG baseline: :func:`quality_sample`'s ``n`` per split (every one if ``None``).

    Fixed for a dataset (a resumed or grown job keeps the images it sampled while they rank first)
    and spread over classes and folders, since it ranks by a hash of the relpath.
    """
    if n is None:
        return {r.relpath for r in records}
    by_split: dict[str, list[Record]] = {}
    for rec in records:
        by_split.setdefault(rec.split, []).append(rec)
    return set().union(*(quality_sample(recs, n) for recs in by_split.values())) if by_split else set()


def _listed_outputs(store_uri: str, codec: str, levels: Iterable[float]) -> dict[str, int]:
    """``store-relative path -> size`` of the outputs on disk; removes temp files of killed writes."""
    sizes = {}
    fs, _ = store.filesystem(store_uri)
    for level in levels:
        d = store.join(store_uri, store.level_dir(codec, level))
        if store.exists(d):
            for rel, info in list_files(d).items():
                if posixpath.basename(rel).startswith(".tmp-"):
                    fs.rm(store.filesystem(store.join(d, rel))[1])
                    continue
                sizes[posixpath.join(store.level_dir(codec, level), rel)] = info["size"]
    return sizes


def _is_done(prev: dict | None, listed: dict | None, outputs: dict[str, int], params: dict,
             wants_quality: bool) -> bool:
    if prev is None or listed is None:
        return False
    if prev["codec_options"] != params["codec_options_json"]:
        return False
    if listed.get("size") is not None and (pd.isna(prev["source_bytes"])
                                           or int(prev["source_bytes"]) != listed["size"]):
        return False
    if prev["source_version"] != listed["version"]:
        return False
    member = shards.parse_member_path(prev["output_path"])
    if member is not None:  # a shard member: its shard is in place and holds the member's range
        shard, offset, size = member
        if (params.get("layout") != "shards" or pd.isna(prev["compressed_bytes"])
                or size != int(prev["compressed_bytes"]) or (outputs.get(shard) or 0) < offset + size):
            return False
    elif outputs.get(prev["output_path"]) != prev["compressed_bytes"]:
        return False
    if wants_quality and prev["quality_metric"] != params["quality_metric"]:
        return False
    return True


def plan(records: Sequence[Record], source_root: str, store_uri: str, options: CompressOptions,
         existing: pd.DataFrame, params: dict | None = None,
         reader: DatasetReader | None = None) -> tuple[list[dict], int]:
    """Work items (one per (image, level)) still to do, and how many were already done.

    Without a ``reader``, each record's source is the file ``source_root/relpath``; with one, the
    reader says where it is and how it is versioned (:meth:`DatasetReader.source_info`).
    """
    params = params or job_params(options, store_uri, reader)
    listing = reader.source_info(records) if reader is not None else list_files(source_root)
    done = manifest.done_keys(existing[existing["codec"] == options.codec]) if len(existing) else {}
    outputs = _listed_outputs(store_uri, options.codec, options.levels) if store.exists(store_uri) else {}
    sample = quality_sample(records, options.quality_sample) if options.quality_metric else set()
    wants_png = png_sample(records, options.png_sample)
    names = output_names((r.relpath for r in records), _codec(options.codec, "{}").extension)
    sharded = options.layout == "shards"
    decided, dirty = [], set()
    for rec in records:
        listed = listing.get(rec.relpath)
        wants_quality = rec.relpath in sample
        levels = []
        for level in options.levels:
            prev = done.get((rec.relpath, options.codec, float(level)))
            is_done = _is_done(prev, listed, outputs, params, wants_quality)
            levels.append((float(level), prev, is_done))
            if sharded and not is_done and prev is not None:
                member = shards.parse_member_path(prev["output_path"])
                if member is not None:
                    dirty.add(member[0])  # a member is redone: so is its whole shard
        decided.append((rec, listed, wants_quality, levels))
    items, skipped = [], 0
    for rec, listed, wants_quality, levels in decided:
        pending, has_png = [], False
        for level, prev, is_done in levels:
            if is_done and dirty and shards.parse_member_path(prev["output_path"])[0] in dirty:
                is_done = False
            if is_done:
                skipped += 1
                has_png = has_png or not pd.isna(prev["png_bytes"])
            else:
                pending.append(level)
        png = rec.relpath in wants_png and not has_png
        if png and not pending:  # newly sampled (a larger png_sample): redo one level to add its PNG
            pending.append(float(options.levels[0]))
            skipped -= 1
        uri = reader.source_uri(rec) if reader is not None else store.join(source_root, rec.relpath)
        for i, level in enumerate(pending):
            item = {
                "uri": uri, "source": rec.source, "relpath": rec.relpath, "split": rec.split,
                "label": rec.label, "target": rec.target, "level": level,
                "output_relpath": names[rec.relpath],
                "source_version": listed["version"] if listed else None,
                "source_size": (listed["size"] or 0) if listed else 0,
                "png": bool(png and i == 0),
                "quality": wants_quality,
            }
            if sharded:
                item["shard_size"] = int(options.shard_size)  # work_chunks cuts shard groups
            items.append(item)
    return items, skipped


# --- scheduling --------------------------------------------------------------------------------
def work_chunks(items: Sequence[dict], n_workers: int, *, max_size: int = 48, per_worker: int = 4,
                min_size: int = 2) -> list[list[dict]]:
    """Cut work items into chunks (one parallel task each) so that every worker finishes together.

    Largest sources first (by listed size; an image's items stay together and in order), then
    guided self-scheduling: each chunk takes ``1 / (per_worker * n_workers)`` of what remains,
    capped at ``max_size`` items. Chunks are large while there is much to do (few scheduling
    rounds) and shrink towards the end, so the last ones are short and no worker sits idle
    while another finishes a long one: with even chunks, the job waits for up to one whole
    chunk on one worker.

    In the sharded layout (items carry ``shard_size``) a chunk is a shard group instead
    (:func:`lossyvision.shards.groups_by_size`): its task writes one shard per level.
    """
    groups: dict[str, list[dict]] = {}
    for item in items:
        groups.setdefault(item["uri"], []).append(item)
    if items and items[0].get("shard_size"):  # the sharded layout: one chunk per shard group
        return shards.groups_by_size(list(groups.values()), n_workers, int(items[0]["shard_size"]))
    ordered = [it for g in sorted(groups.values(), key=lambda g: -int(g[0].get("source_size") or 0))
               for it in g]
    chunks, start, share = [], 0, max(1, per_worker * max(1, n_workers))
    while start < len(ordered):
        remaining = len(ordered) - start
        size = min(max_size, max(min_size, -(-remaining // share)))
        chunks.append(ordered[start:start + size])
        start += size
    return chunks


# --- running a job -----------------------------------------------------------------------------
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


SKIPPED_NAME = "skipped.csv"


def describe_not_read(not_read: Sequence[Any], store_uri: str | None = None) -> list[str]:
    """Lines for the files a job did not read: counts per reason, unsupported types per extension."""
    if not not_read:
        return []
    kinds: dict[str, int] = {}
    exts: dict[str, int] = {}
    for s in not_read:
        if s.kind == UNSUPPORTED:
            exts[extension(s.relpath)] = exts.get(extension(s.relpath), 0) + 1
        else:
            kinds[s.kind] = kinds.get(s.kind, 0) + 1
    where = f" (each with its reason in {store.join(store_uri, SKIPPED_NAME)})" if store_uri else ""
    lines = []
    if kinds:
        lines.append(f"not read: {', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}{where}")
    if exts:
        lines.append("files of unsupported types, not compressed: "
                     + ", ".join(f"{e} {n}" for e, n in sorted(exts.items(), key=lambda t: (-t[1], t[0])))
                     + ("" if kinds else where))
    return lines


def describe_failures(rows: pd.DataFrame, store_uri: str | None = None, *, kinds: int = 5,
                      examples: int = 3) -> list[str]:
    """Lines for the images a job could not compress: how many, grouped by reason, with examples.

    The table's ``failed`` column says how many; these say why, without opening the manifest
    (where every failed row keeps its full reason). Reasons are grouped by their kind: the text
    before the first ``:``, numbers blanked (``too large to decode in memory: 9000x9000`` and
    ``...: 8000x8000`` are one kind).
    """
    failed = rows[rows["status"] == manifest.STATUS_FAILED] if len(rows) else rows
    if not len(failed):
        return []
    kind = failed["error"].fillna("no reason recorded").map(_failure_kind)
    images = failed["relpath"].nunique()
    lines = [f"failed: {images} image{'s' if images != 1 else ''} "
             f"({len(failed)} of {len(rows)} image x level pairs), by reason:"]
    groups = sorted(failed.groupby(kind, sort=False), key=lambda kv: (-kv[1]["relpath"].nunique(), kv[0]))
    for name, group in groups[:kinds]:
        paths = group["relpath"].drop_duplicates()
        shown = ", ".join(paths.head(examples)) + (", ..." if len(paths) > examples else "")
        lines.append(f"  {len(paths)} {name}: {shown}")
    if len(groups) > kinds:
        lines.append(f"  and {len(groups) - kinds} other reason(s)")
    where = store.join(store_uri, store.MANIFEST_NAME) if store_uri else "the manifest"
    lines.append(f"each failed row keeps its full reason in {where} (column 'error'); "
                 "rerunning the command retries them")
    return lines


def _failure_kind(reason: str) -> str:
    head = str(reason).split(":", 1)[0].strip() or str(reason)
    return re.sub(r"\d+", "N", head)


def write_not_read(store_uri: str, not_read: Sequence[Any]) -> None:
    table = pd.DataFrame([{"relpath": s.relpath, "kind": s.kind, "reason": s.reason} for s in not_read],
                         columns=["relpath", "kind", "reason"])
    store.atomic_write_bytes(store.join(store_uri, SKIPPED_NAME), table.to_csv(index=False).encode())


def validate(options: CompressOptions) -> None:
    """Check options before any work; raise :class:`CompressError` naming the problem."""
    if options.layout not in LAYOUTS:
        raise CompressError(f"layout must be one of {LAYOUTS}, got {options.layout!r}")
    if isinstance(options.shard_size, bool) or int(options.shard_size) < 1:
        raise CompressError(f"shard_size must be a positive number of bytes, got {options.shard_size!r}")
    if options.on_error not in ON_ERROR:
        raise CompressError(f"on_error must be one of {ON_ERROR}, got {options.on_error!r}")
    if options.animated not in ANIMATED_POLICIES:
        raise CompressError(f"animated must be one of {ANIMATED_POLICIES}, got {options.animated!r}")
    if not options.levels:
        raise CompressError("no levels given")
    if len(set(options.levels)) != len(options.levels):
        raise CompressError(f"levels must be unique, got {list(options.levels)}")
    try:
        codec = create_codec(options.codec, **options.codec_options)
    except (KeyError, ValueError, TypeError) as exc:
        raise CompressError(str(exc).strip("'\"")) from None
    for level in options.levels:
        if isinstance(level, bool) or float(level) < 0 or not math.isfinite(float(level)):
            raise CompressError(f"levels must be finite and >= 0, got {level}")
        try:
            codec.check_level(level)
        except ValueError as exc:
            raise CompressError(str(exc)) from None
    if options.quality_metric:
        try:
            check_available(options.quality_metric)
        except (KeyError, ValueError) as exc:
            raise CompressError(str(exc).strip("'\"")) from None


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
    return JobResult(manifest=mine, summary=table, done=done, skipped=skipped)


def check_layout(store_uri: str, existing: pd.DataFrame, layout: str) -> None:
    """A store holds one layout: compressing in the other one is refused, naming both."""
    if existing.empty:
        return
    have = {shards.layout_of(p) for p in existing.loc[existing["status"] == manifest.STATUS_OK, "output_path"]}
    other = sorted(have - {None, layout})
    if other:
        raise CompressError(f"{store_uri} holds its images in the {other[0]} layout and a store has one layout: "
                            f"compress with layout {other[0]}, or into another store for layout {layout}")


def remove_unreferenced_shards(store_uri: str, rows: pd.DataFrame, options: CompressOptions,
                               log: Callable[[str], None]) -> int:
    """Delete the shards of this job's levels that no manifest row points into; returns how many.

    They are whole (shards appear only when complete) but orphaned: written by a job killed before
    it saved their rows (those images are compressed again), or replaced by a newer shard.
    """
    if not store.exists(store_uri):
        return 0
    listed = _listed_outputs(store_uri, options.codec, options.levels)
    stale = shards.unreferenced(listed, rows["output_path"] if len(rows) else [])
    fs, _ = store.filesystem(store_uri)
    for rel in stale:
        fs.rm(store.filesystem(store.join(store_uri, rel))[1])
    if stale:
        log(f"removed {len(stale)} shard(s) that no manifest row points into (an interrupted or replaced write)")
    return len(stale)


# --- the per-level summary ---------------------------------------------------------------------
SUMMARY_COLUMNS = ("codec", "level", "images_ok", "images_failed", "dcr_vs_source_mean",
                   "dcr_vs_source_median", "dcr_vs_raw_mean", "dcr_vs_raw_median", "source_bytes",
                   "raw_bytes", "compressed_bytes", "quality_mean", "quality_metric")


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (codec, level), plus the PNG baseline (``codec='png'``, level empty).

    DCR means/medians are over ``ok`` images; byte totals are sums over ``ok`` images.
    """
    rows = rows.reindex(columns=list(manifest.COLUMNS))
    out = []
    for (codec, level), g in rows.groupby(["codec", "level"], sort=True):
        ok = g[g["status"] == manifest.STATUS_OK]
        q = ok["quality"].dropna()
        out.append({
            "codec": codec, "level": float(level), "images_ok": len(ok), "images_failed": len(g) - len(ok),
            "dcr_vs_source_mean": ok["dcr_vs_source"].mean(), "dcr_vs_source_median": ok["dcr_vs_source"].median(),
            "dcr_vs_raw_mean": ok["dcr_vs_raw"].mean(), "dcr_vs_raw_median": ok["dcr_vs_raw"].median(),
            "source_bytes": int(ok["source_bytes"].sum()), "raw_bytes": int(ok["raw_bytes"].sum()),
            "compressed_bytes": int(ok["compressed_bytes"].sum()),
            "quality_mean": q.mean() if len(q) else float("nan"),
            "quality_metric": ok["quality_metric"].dropna().iloc[0] if len(q) else None,
        })
    png = rows.dropna(subset=["png_bytes"]).drop_duplicates("relpath")
    if len(png):
        src = png["source_bytes"].astype(float)
        raw = png["raw_bytes"].astype(float)
        pb = png["png_bytes"].astype(float)
        out.append({
            "codec": "png", "level": float("nan"), "images_ok": len(png), "images_failed": 0,
            "dcr_vs_source_mean": (1 - pb / src).mean(), "dcr_vs_source_median": (1 - pb / src).median(),
            "dcr_vs_raw_mean": (1 - pb / raw).mean(), "dcr_vs_raw_median": (1 - pb / raw).median(),
            "source_bytes": int(src.sum()), "raw_bytes": int(raw.sum()), "compressed_bytes": int(pb.sum()),
            "quality_mean": float("nan"), "quality_metric": None,
        })
    return pd.DataFrame(out, columns=list(SUMMARY_COLUMNS))


def write_summary(store_uri: str, table: pd.DataFrame) -> None:
    store.atomic_write_bytes(store.join(store_uri, store.SUMMARY_NAME), table.to_csv(index=False).encode())


def render_summary(table: pd.DataFrame, title: str | None = None):
    """The summary as a rich Table (printed by the CLI): DCR mean/median against source and raw."""
    from rich import box
    from rich.table import Table

    t = Table(title=title or "DCR per level (1 - compressed/source, 1 - compressed/raw)",
              box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in ("level", "ok", "failed", "src mean", "src med", "raw mean", "raw med", "bytes",
                 "quality"):
        t.add_column(name, justify="left" if name == "level" else "right", no_wrap=True)

    def f(x: float) -> str:
        return "-" if pd.isna(x) else f"{x:.3f}"

    for r in table.to_dict("records"):
        level = r["codec"] if pd.isna(r["level"]) else f"{r['codec']} {store.format_level(r['level'])}"
        quality = "-" if pd.isna(r["quality_mean"]) else f"{r['quality_mean']:.1f}"
        t.add_row(level, str(r["images_ok"]), str(r["images_failed"]),
                  f(r["dcr_vs_source_mean"]), f(r["dcr_vs_source_median"]), f(r["dcr_vs_raw_mean"]),
                  f(r["dcr_vs_raw_median"]), format_bytes(r["compressed_bytes"]), quality)
    metrics = sorted(set(table["quality_metric"].dropna()))
    t.caption = "png: lossless PNG baseline of the same pixels"
    if metrics:
        t.caption += f"; quality: mean {', '.join(metrics)} on the sampled images"
    return t


# --- the sweep file ----------------------------------------------------------------------------
def limit_per_split(records: Sequence[Record], limit: int | None) -> list[Record]:
    """The first ``limit`` records of each split (records are sorted by split then relpath)."""
    if limit is None:
        return list(records)
    seen: dict[str, int] = {}
    out = []
    for rec in records:
        seen[rec.split] = seen.get(rec.split, 0) + 1
        if seen[rec.split] <= limit:
            out.append(rec)
    return out


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


def parse_png_sample(text: str) -> int | None:
    """``"256"`` -> 256, ``"all"`` -> None (every image); raise :class:`CompressError` on junk."""
    if text.strip().lower() == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise CompressError(f"--png-sample: expected a number of images >= 0 or 'all', got {text!r}")
    return n


def parse_levels(text: str) -> tuple[float, ...]:
    """``"0,0.5,1"`` -> ``(0.0, 0.5, 1.0)``; raise :class:`CompressError` on junk.

    Malformed lists are refused, not repaired: an empty item (``0,,1``, a trailing comma), a
    non-number, NaN or infinity, a repeated level.
    """
    items = [x.strip() for x in str(text).split(",")]
    if items == [""]:
        raise CompressError("--levels: no level given")
    if "" in items:
        raise CompressError(f"--levels: empty item in {text!r}; write levels separated by single commas, e.g. 0,0.5,1")
    try:
        levels = tuple(float(x) for x in items)
    except ValueError:
        raise CompressError(f"--levels: expected numbers separated by commas, got {text!r}") from None
    if not all(math.isfinite(x) for x in levels):
        raise CompressError(f"--levels: levels must be finite numbers, got {text!r}")
    if len(set(levels)) != len(levels):
        raise CompressError(f"--levels: a level is given twice in {text!r}")
    return levels
