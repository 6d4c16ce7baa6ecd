"""Compressing images: a batch of work items, each one (image, level), in -> one manifest row each, out.

A *work item* is one (image, level) pair as a plain dict (:func:`lossyvision.compress_plan.plan` makes them);
consecutive items of the same image that land in one batch share a single read and decode of the source. Each
item produces exactly one row (:data:`lossyvision.manifest.SCHEMA`); bad inputs give ``status='failed'`` rows with
a short reason, never an exception. In the ``files`` layout each output is its own file, written atomically; in
the ``shards`` layout a batch is one shard group and writes one tar shard per level (:mod:`lossyvision.shards`).

The PNG baseline (``png_bytes``, the report's "lossless PNG" line) is the size of the normalised pixels as PNG
(the ``png`` codec, zlib level 6), computed for the items the plan flags (``png``). Nothing here imports Ray: a
runner calls :func:`compress_items` on each chunk, with :func:`job_params` as the plain dict every worker gets.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import posixpath
import time
from functools import lru_cache
from typing import Any, Callable, Iterable, Sequence

from lossyvision import manifest, shards, store
from lossyvision.codecs import DEFAULT_CODEC, create_codec
from lossyvision.compress_options import CompressOptions
from lossyvision.datasets import create_dataset
from lossyvision.datasets.base import DatasetReader, Record
from lossyvision.imageio import BadImageError, load_rgb
from lossyvision.quality import measure


@lru_cache(maxsize=8)
def cached_codec(name: str, options_json: str):
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
            self._png = len(cached_codec("png", "{}").encode(self.image.rgb, 0))
        return self._png


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def output_names(relpaths: Iterable[str], extension: str) -> dict[str, str]:
    """``relpath -> output relpath``; sources that would share one (``a.jpg``, ``a.png``) keep
    their extension (``a.jpg.jxl``, ``a.png.jxl``) so that no output overwrites another. So does a
    source whose output would be a folder another output lies in (``y.png`` beside a folder
    ``y.jxl/``): whatever the order, every image gets a place."""
    relpaths = list(relpaths)
    plain = {r: store.output_relpath(r, extension) for r in relpaths}
    counts: dict[str, int] = {}
    folders: set[str] = set()
    for name in plain.values():
        counts[name.lower()] = counts.get(name.lower(), 0) + 1  # lower: case-insensitive disks
        parts = name.lower().split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return {r: (name if counts[name.lower()] == 1 and name.lower() not in folders else r + extension)
            for r, name in plain.items()}


#: ``write(level_relpath, data) -> output_path``: puts one output where the layout wants it.
Writer = Callable[[str, bytes], str]


def _write_file(params: dict) -> Writer:
    """The per-file layout: each output its own file, written atomically."""
    def write(out: str, data: bytes) -> str:
        store.atomic_write_bytes(store.join(params["store"], out), data)
        return out
    return write


def _compress_level(item: dict, src: _Source, params: dict, write: Writer | None = None) -> dict:
    codec = cached_codec(params["codec"], params["codec_options_json"])
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
                 codec: str = DEFAULT_CODEC, codec_options: dict | None = None, split: str | None = None,
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
    codec = cached_codec(options.codec, options_json(options.codec_options))
    params = {"codec": options.codec, "codec_options_json": options_json(effective_codec_options(codec)),
              "store": str(store_uri), "max_pixels": int(options.max_pixels),
              "quality_metric": options.quality_metric, "animated": options.animated,
              "layout": options.layout}
    if reader is not None and not reader.whole_files:
        params["dataset"] = {"kind": reader.name, "root": reader.root,
                             "options_json": options_json(reader.options)}
    return params
