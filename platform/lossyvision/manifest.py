"""The compressed store's manifest: one row per (image, codec, level), as parquet.

``OUT/manifest.parquet`` is the inventory of a store. While a compress job runs, finished rows
are persisted as small part files under ``OUT/.manifest-parts/`` (each written atomically, so a
``kill -9`` loses at most the rows not yet flushed, never a half-written part). At the end, or at
the start of the next run after a kill, :func:`consolidate` merges manifest + parts into a new
manifest (written atomically), keeping the newest row per :data:`KEY`, and only then deletes the
parts. Consolidating twice gives the same manifest, so a kill at any moment is safe.

Conventions:

* ``output_path`` is relative to the store root (``jpegxl-1/train/cat/a.jxl``), so a store can be
  moved or synced to ``s3://``; the URI is ``store.join(store_uri, output_path)``
  (:func:`output_uri`). A path that would leave the store (absolute, a URI, ``..``) is never
  followed: :func:`read_manifest` reports such a row as corrupt (``status='failed'``), so the next
  compress redoes it, and :func:`output_uri` refuses it. In the sharded layout
  (:mod:`lossyvision.shards`) it names the shard and the member's byte range
  (``jpegxl-1/shard-x.tar#1536+2048``); :func:`output_uri` resolves both forms, so every reader
  goes through it and :func:`lossyvision.store.read_bytes`.
* ``level0_method`` says how a lossless level was made: ``jpeg_transcode`` (the source JPEG's
  own bytes, recoverable bit-exactly) or ``pixels`` (encoded from decoded pixels: a PNG, or a
  JPEG libjxl cannot transcode, such as CMYK). Null for lossy levels.
* ``source_version`` is the source file's modification time (or object ETag/LastModified) as the
  filesystem lists it; with ``source_bytes`` it decides "source unchanged" without reading the
  file (the quick check of make and rsync). ``source_sha256`` is recorded for audits.
* ``png_bytes`` is the lossless PNG size of the same normalised pixels (the report's PNG line),
  computed once per image and copied onto every row of that image.
* ``quality``/``quality_metric`` are set on a fixed sample of images per level, null elsewhere.
* ``node`` is the Ray node that compressed the row (null outside Ray): on a cluster, where to look
  when a file is wrong.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lossyvision import store
from lossyvision import places
from lossyvision.shards import parse_member_path
from lossyvision.places import manifest_damaged, parquet_problem

#: Columns identifying a row; one file in the store per key.
KEY = ("relpath", "codec", "level")
PARTS_DIR = places.PARTS_DIR
STATUS_OK = "ok"
STATUS_FAILED = "failed"

SCHEMA = pa.schema([
    ("relpath", pa.string()),            # POSIX, relative to the dataset root
    ("split", pa.string()),
    ("label", pa.int64()),               # class index, null for detection/segmentation
    ("target", pa.string()),             # annotation relpath (VOC XML, label PNG) or null
    ("codec", pa.string()),
    ("codec_options", pa.string()),      # effective options as sorted JSON, e.g. {"effort": 7}
    ("level", pa.float64()),
    ("status", pa.string()),             # ok | failed
    ("error", pa.string()),              # reason when failed, null when ok
    ("source_bytes", pa.int64()),
    ("source_version", pa.string()),     # mtime / ETag as listed: the "unchanged" check
    ("source_sha256", pa.string()),
    ("source_format", pa.string()),      # Pillow format name: JPEG, PNG, ...
    ("source_mode", pa.string()),        # original Pillow mode: RGB, CMYK, I;16, P, RGBA, ...
    ("width", pa.int64()),
    ("height", pa.int64()),
    ("raw_bytes", pa.int64()),           # H*W*3 of the decoded, normalised source
    ("png_bytes", pa.int64()),           # lossless PNG of the same pixels (baseline)
    ("compressed_bytes", pa.int64()),    # == size of output_path on disk
    ("dcr_vs_source", pa.float64()),     # 1 - compressed / source
    ("dcr_vs_raw", pa.float64()),        # 1 - compressed / raw
    ("output_path", pa.string()),        # relative to the store root
    ("quality", pa.float64()),           # achieved quality on the sample, else null
    ("quality_metric", pa.string()),     # ssimulacra2 | butteraugli | null
    ("encode_seconds", pa.float64()),    # codec.encode wall time
    ("finished_at", pa.string()),        # ISO 8601 UTC
    ("level0_method", pa.string()),      # lossless levels: jpeg_transcode | pixels; else null
    ("node", pa.string()),               # Ray node id of the task that wrote it; null outside Ray
])

COLUMNS = tuple(SCHEMA.names)


def manifest_uri(store_uri: str) -> str:
    return store.join(store_uri, store.MANIFEST_NAME)


def parts_uri(store_uri: str) -> str:
    return store.join(store_uri, PARTS_DIR)


class CorruptRowError(ValueError):
    """A manifest row that cannot be trusted (its ``output_path`` leaves the store)."""


def is_inside_store(output_path: object) -> bool:
    """Whether ``output_path`` is a relative POSIX path that stays inside the store.

    Refused: empty, absolute (``/x``, ``C:x``, ``\\x``), a URI (``s3://...``), any ``..`` part,
    backslashes and NUL bytes.
    """
    if not isinstance(output_path, str) or not output_path or "\x00" in output_path or "\\" in output_path:
        return False
    if output_path.startswith("/") or "://" in output_path or (len(output_path) > 1 and output_path[1] == ":"):
        return False
    return ".." not in output_path.split("/")


def output_uri(store_uri: str, output_path: str) -> str:
    """The URI of a row's compressed bytes (``output_path`` is relative to the store), for
    :func:`lossyvision.store.read_bytes`: the file, or in the sharded layout the member's byte range
    of its shard (a :func:`lossyvision.store.range_uri`). The one place a row becomes bytes to read.

    Raises :class:`CorruptRowError` for a path that would leave the store: it is never followed.
    """
    if not is_inside_store(output_path):
        raise CorruptRowError(f"corrupt manifest row in {manifest_uri(store_uri)}: output_path "
                              f"{output_path!r} is not inside the store; rerun `lossyvision compress` to redo it")
    member = parse_member_path(output_path)
    if member is not None:
        shard, offset, size = member
        return store.range_uri(store.join(store_uri, shard), offset, size)
    return store.join(store_uri, output_path)


def mark_corrupt_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose ``output_path`` leaves the store become ``failed`` with the reason (never followed)."""
    if df.empty:
        return df
    bad = pd.Series([p is not None and not pd.isna(p) and not is_inside_store(p) for p in df["output_path"]],
                    index=df.index, dtype=bool)
    if not bad.any():
        return df
    df = df.copy()
    df.loc[bad, "error"] = [f"corrupt manifest row: output_path {p!r} is not inside the store"
                            for p in df.loc[bad, "output_path"]]
    df.loc[bad, "status"] = STATUS_FAILED
    return df


def to_table(rows: Iterable[dict] | pd.DataFrame) -> pa.Table:
    """Rows (dicts or a DataFrame) as a table with exactly :data:`SCHEMA`; missing columns are null."""
    if isinstance(rows, pd.DataFrame):
        df = rows.reindex(columns=list(COLUMNS))
        return pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False)
    return pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=SCHEMA)


def to_frame(table: pa.Table) -> pd.DataFrame:
    """A table as a DataFrame; integer columns stay integers (nullable ``Int64``), not floats."""
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def empty() -> pd.DataFrame:
    return to_frame(SCHEMA.empty_table())


def _write_table(uri: str, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    store.atomic_write_bytes(uri, sink.getvalue().to_pybytes())


def _read_table(uri: str) -> pa.Table:
    """A manifest or part file; :class:`~lossyvision.store.DamagedFileError` (one line) if damaged."""
    data = store.read_bytes(uri)
    problem = parquet_problem(data)
    if problem is None:
        try:
            table = pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError, ValueError) as exc:
            problem = " ".join(str(exc).split())[:200] or type(exc).__name__
    if problem is not None:
        if PARTS_DIR in uri:
            raise store.DamagedFileError(f"{uri} is damaged ({problem}); delete it and rerun `lossyvision "
                                         "compress`: the rows it held are compressed again")
        raise manifest_damaged(uri, problem)
    # Older files may lack newer columns: add them as nulls, drop unknown ones.
    cols = [table.column(n).cast(SCHEMA.field(n).type) if n in table.column_names
            else pa.nulls(table.num_rows, SCHEMA.field(n).type) for n in COLUMNS]
    return pa.Table.from_arrays(cols, schema=SCHEMA)


def write_part(store_uri: str, rows: list[dict], run_id: str, seq: int) -> str | None:
    """Persist finished rows as one atomic part file; returns its URI (None for no rows).

    Part names sort in write order (``<run_id>-<seq>``, run ids start with a UTC timestamp), which
    is how :func:`consolidate` knows which of two rows for a key is newer.
    """
    if not rows:
        return None
    uri = store.join(parts_uri(store_uri), f"part-{run_id}-{seq:06d}.parquet")
    _write_table(uri, to_table(rows))
    return uri


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{time.time_ns() % 10**9:09d}-{uuid.uuid4().hex[:6]}"


def list_parts(store_uri: str) -> list[str]:
    fs, path = store.filesystem(parts_uri(store_uri))
    if not fs.exists(path):
        return []
    names = sorted(p for p in fs.ls(path, detail=False)
                   if os.path.basename(p).startswith("part-") and p.endswith(".parquet"))
    return [store.join(parts_uri(store_uri), os.path.basename(p)) for p in names]


def read_manifest(store_uri: str, *, include_parts: bool = True) -> pd.DataFrame:
    """The store's rows: manifest plus unconsolidated parts, newest row per key, no duplicates."""
    tables = []
    uri = manifest_uri(store_uri)
    if store.exists(uri):
        tables.append(_read_table(uri))
    if include_parts:
        tables.extend(_read_table(p) for p in list_parts(store_uri))
    if not tables:
        return empty()
    return mark_corrupt_rows(merge(to_frame(pa.concat_tables(tables))))


def merge(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the last row per key (input in write order), fill ``png_bytes`` per image, sort."""
    if df.empty:
        return df.reindex(columns=list(COLUMNS))
    df = df.drop_duplicates(subset=list(KEY), keep="last")
    # png_bytes is computed once per image; share it with the image's other rows of the same source.
    known = df.dropna(subset=["png_bytes", "source_sha256"])
    if len(known):
        png = known.drop_duplicates(subset=["relpath", "source_sha256"], keep="last") \
            .set_index(["relpath", "source_sha256"])["png_bytes"]
        keys = pd.MultiIndex.from_frame(df[["relpath", "source_sha256"]])
        filled = png.reindex(keys).to_numpy()
        df = df.assign(png_bytes=df["png_bytes"].where(df["png_bytes"].notna(), filled))
    df = df.sort_values(["codec", "level", "split", "relpath"], kind="stable").reset_index(drop=True)
    return df.reindex(columns=list(COLUMNS))


def consolidate(store_uri: str) -> pd.DataFrame:
    """Fold part files into ``manifest.parquet`` (atomic), then delete them. Idempotent.

    Called only by the store's one writer, so temp files of part or manifest writes cut by a kill
    (``.tmp-*`` beside them) are nobody's: they are removed here.
    """
    _remove_killed_writes(store_uri)
    parts = list_parts(store_uri)
    df = read_manifest(store_uri)
    if parts or not store.exists(manifest_uri(store_uri)):
        write_manifest(store_uri, df)
        fs, _ = store.filesystem(store_uri)
        for p in parts:
            fs.rm(store.filesystem(p)[1])
    return df


def _remove_killed_writes(store_uri: str) -> None:
    fs, _ = store.filesystem(store_uri)
    for folder in (store_uri, parts_uri(store_uri)):
        path = store.filesystem(folder)[1]
        if fs.exists(path):
            for p in fs.ls(path, detail=False):
                if os.path.basename(p.rstrip("/")).startswith(".tmp-"):
                    fs.rm(p)


def write_manifest(store_uri: str, df: pd.DataFrame) -> None:
    _write_table(manifest_uri(store_uri), to_table(df))


def done_keys(df: pd.DataFrame) -> dict[tuple[str, str, float], dict]:
    """``(relpath, codec, level) -> row`` of every ``ok`` row: candidates to skip on resume."""
    ok = df[df["status"] == STATUS_OK]
    return {(r["relpath"], r["codec"], float(r["level"])): r for r in ok.to_dict("records")}
