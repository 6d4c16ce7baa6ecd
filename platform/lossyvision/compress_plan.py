"""The compress job's plan: which (image, level) pairs are still to do in a store, and in what chunks.

Resume: an (image, level) is skipped when its manifest row is ``ok``, was made with the same codec options, its
source has the same size and version (mtime/ETag) as listed now, its output file exists with the recorded size,
and (when quality is requested for that image) it carries the requested quality metric. Everything else is
redone; outputs are overwritten atomically.

Layouts (:mod:`lossyvision.shards`): ``files`` (the default) writes one file per (image, level); ``shards`` writes
each level as tar shards of about ``shard_size`` source bytes, one task per shard group. There a shard is the
unit of resume: it is done (in place and referenced by the manifest) or redone with all its members, and shards
no row references are deleted. A store has one layout.

The PNG baseline is computed once per image on that image's first pending item, for a fixed sample of
``png_sample`` images per split (:func:`png_sample`; default 256, ``None`` = every image): a PNG encode costs
about as much as a JPEG XL one at effort 7, and a mean over 256 images is as good a reference line as one over
100,000. Rows of other images have a null ``png_bytes``.
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Callable, Iterable, Sequence

import pandas as pd

from lossyvision import manifest, shards, store
from lossyvision.compress_images import cached_codec, job_params, output_names
from lossyvision.compress_options import EVERY_IMAGE, CompressError, CompressOptions
from lossyvision.datasets.base import DatasetReader, Record, file_versions


def list_files(root: str) -> dict[str, dict]:
    """``relpath -> {"size", "version"}`` of every file under ``root``, in one listing."""
    return file_versions(root)


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
    names = output_names((r.relpath for r in records), cached_codec(options.codec, "{}").extension)
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


# --- the store's layout ------------------------------------------------------------------------
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


# --- the sweep's images ------------------------------------------------------------------------
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
