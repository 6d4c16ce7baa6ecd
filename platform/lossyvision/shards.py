"""The sharded store layout: each level of a store as a few large tar files, for object stores.

The per-file layout (the default) writes one object per (image, codec, level): 10 M images at
11 levels are 110 M objects, each a PUT to write and a request to list or read. The sharded layout
(``compress: {layout: shards}``, ``lossyvision compress --layout shards``) writes each level as
WebDataset-style tar shards instead::

    STORE/<codec>-<level>/shard-<run id>-<group digest>.tar     members <relpath with the codec's extension>

A *shard group* is a run of consecutive images of one split (in relpath order) whose source
bytes add up to about ``shard_size`` (default 256 MB; fewer when the dataset is small, so that
every CPU gets work); one task compresses the group and writes one shard per level of it. The
lossless level's shard is about ``shard_size``, a lossy one smaller by its DCR.

The manifest points at each image's member: its ``output_path`` is
``<codec>-<level>/shard-....tar#<offset>+<size>`` (:func:`member_path`), the shard and the byte
range of the member's data, and :func:`lossyvision.manifest.output_uri` turns it into a
:func:`lossyvision.store.range_uri` that :func:`lossyvision.store.read_bytes` reads with one ranged
request. Readers of images therefore need not know the layout.

Writing is all or nothing per shard: members go to a temporary file (in the level's folder
locally, in the system's temp folder for object stores), and the finished shard is renamed into
place or uploaded in one PUT (a multipart upload above 50 MB, which is also invisible until it
completes). A killed job leaves no partial shard visible; its manifest rows are flushed only
after the shard is in place, so on resume a shard is either done (referenced, whole) or redone
with all its members, and shards no manifest row references any more (written by a job killed
before its rows were saved, or replaced) are deleted by the next job (:func:`unreferenced`).
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import re
import tarfile
import tempfile
from typing import Iterable

from lossyvision import store

LAYOUTS = ("files", "shards")
DEFAULT_LAYOUT = "files"
DEFAULT_SHARD_SIZE = 256 * 10**6
SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".tar"
_MEMBER = re.compile(r"(?P<shard>(?:[^#]*/)?shard-[A-Za-z0-9_-]+\.tar)#(?P<offset>\d+)\+(?P<size>\d+)\Z")
_BLOCK = tarfile.BLOCKSIZE


def member_path(shard_relpath: str, offset: int, size: int) -> str:
    """A sharded row's ``output_path``: ``jpegxl-1/shard-x.tar#1536+2048`` (the member's data range)."""
    return f"{shard_relpath}#{int(offset)}+{int(size)}"


def parse_member_path(output_path: object) -> tuple[str, int, int] | None:
    """``(shard relpath, offset, size)`` of a sharded row's ``output_path``; None for a per-file one.

    A per-file output path ends with its codec's extension (``.jxl``), never with ``+<digits>``,
    so the two never mix up.
    """
    if not isinstance(output_path, str):
        return None
    m = _MEMBER.match(output_path)
    if m is None:
        return None
    return m.group("shard"), int(m.group("offset")), int(m.group("size"))


def layout_of(output_path: object) -> str | None:
    """``shards`` or ``files`` for a row's ``output_path``; None for a row without one (failed)."""
    if not isinstance(output_path, str) or not output_path:
        return None
    return "shards" if parse_member_path(output_path) else "files"


def is_shard_name(name: str) -> bool:
    base = posixpath.basename(name)
    return base.startswith(SHARD_PREFIX) and base.endswith(SHARD_SUFFIX)


def shard_name(run_id: str, relpaths: Iterable[str]) -> str:
    """``shard-<run id>-<digest of the group's relpaths>.tar``: unique per job and group, and the same
    when Ray retries the task that writes it (the retry replaces it whole)."""
    digest = hashlib.blake2b("\n".join(sorted(set(relpaths))).encode(), digest_size=6).hexdigest()
    safe_run = re.sub(r"[^A-Za-z0-9_-]", "-", run_id)
    return f"{SHARD_PREFIX}{safe_run}-{digest}{SHARD_SUFFIX}"


class ShardWriter:
    """One shard being written: members appended to a temporary tar, then committed whole.

    ``add`` returns the member's ``output_path`` (the shard and the member data's byte range);
    nothing is visible at ``uri`` until :meth:`commit`. :meth:`discard` (or a crash) leaves only the
    temporary file, which resume sweeps away (``.tmp-*`` in a local level folder; the system temp
    folder otherwise).
    """

    def __init__(self, store_uri: str, shard_relpath: str) -> None:
        self.store_uri = str(store_uri)
        self.relpath = shard_relpath
        self.uri = store.join(self.store_uri, shard_relpath)
        local = store.local_path(self.uri)
        folder = os.path.dirname(os.path.abspath(local)) if local is not None else None
        if folder is not None:
            os.makedirs(folder, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=SHARD_SUFFIX)
        self._file = os.fdopen(fd, "w+b")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8")
        self.members = 0

    def add(self, name: str, data: bytes) -> str:
        """Append ``data`` as member ``name``; returns the row's ``output_path``."""
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = 0  # the same bytes for the same members: a retried task writes an identical shard
        self._tar.addfile(info, io.BytesIO(data))
        # addfile wrote the header(s), then the data padded to whole blocks: the data starts there.
        padded = -(-len(data) // _BLOCK) * _BLOCK
        offset = self._tar.offset - padded
        self.members += 1
        return member_path(self.relpath, offset, len(data))

    def commit(self) -> int:
        """Finish the tar and put it in place whole; returns its size in bytes."""
        self._tar.close()  # the end-of-archive blocks
        self._file.flush()  # no fsync, as atomic_write_bytes: a kill never shows a part, a power cut may
        size = self._file.tell()
        self._file.close()
        try:
            local = store.local_path(self.uri)
            if local is not None:
                os.chmod(self._tmp, 0o666 & ~store._umask())
                os.replace(self._tmp, local)
            else:
                fs, path = store.filesystem(self.uri)
                fs.put_file(self._tmp, path)  # one PUT (multipart above its chunk size): visible only when complete
        finally:
            self._remove_tmp()
        return size

    def discard(self) -> None:
        try:
            self._tar.close()
        except Exception:  # noqa: BLE001 - the temp file goes anyway
            pass
        self._file.close()
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)


def referenced(output_paths: Iterable[object]) -> set[str]:
    """The shards (store-relative paths) that manifest rows point into."""
    shards = set()
    for p in output_paths:
        member = parse_member_path(p)
        if member is not None:
            shards.add(member[0])
    return shards


def unreferenced(listed: Iterable[str], output_paths: Iterable[object]) -> list[str]:
    """The listed shard files (store-relative paths) that no manifest row points into: a job killed
    after writing them but before saving their rows, or shards whose members were all redone."""
    keep = referenced(output_paths)
    return sorted(p for p in listed if is_shard_name(p) and p not in keep)


def groups_by_size(images: list[list[dict]], n_workers: int, shard_size: int) -> list[list[dict]]:
    """Cut the work items of whole images into shard groups (one task and one shard per level each).

    Images are ordered by (split, relpath) and cut into consecutive runs of one split whose listed
    source bytes add up to at most the target: ``shard_size``, or less when the data are small (at
    least two groups per worker, so that every CPU gets work and no one long group makes the tail).
    Groups are returned largest first.
    """
    ordered = sorted(images, key=lambda g: (str(g[0].get("split") or ""), g[0]["relpath"]))
    total = sum(int(g[0].get("source_size") or 0) for g in ordered)
    target = max(1, min(int(shard_size), -(-total // max(1, 2 * max(1, n_workers)))))
    groups: list[tuple[int, list[dict]]] = []
    current: list[dict] = []
    size, split = 0, None
    for image in ordered:
        image_size = int(image[0].get("source_size") or 0)
        image_split = image[0].get("split")
        if current and (image_split != split or size + image_size > target):
            groups.append((size, current))
            current, size = [], 0
        current.extend(image)
        size += image_size
        split = image_split
    if current:
        groups.append((size, current))
    return [g for _, g in sorted(groups, key=lambda t: -t[0])]
