"""A trial's training shards copied to local disk first: one sequential read per shard, not one GET per image.

A trial reads its training images in a seeded random order every epoch (the order is part of its
result). From a sharded store on an object store, each of those reads is a ranged GET: one request per
image per epoch, the largest part of a sweep's request bill (docs/kubernetes.md, section 10). When the
shards the trial reads fit its ``resources.trial.stage_bytes``, :func:`stage_shards` downloads each
shard whole, front to back, into a trial-local folder and points the images' byte ranges at the copies:
the data order, and so the trial's numbers, stay exactly as they were; the requests drop to one
streamed GET per shard per trial (a shard above the multipart threshold is still one object).

Local stores and the ``files`` layout are left alone: there is nothing to gain.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Sequence

from lossyvision import store

@dataclass(frozen=True)
class Staged:
    """What :func:`stage_shards` did: the images' URIs to read, and why."""

    uris: list[str]
    shards: int = 0  # remote shards the images read from
    bytes: int = 0  # their total size
    staged: bool = False  # copied to local disk (else read in place, ranged)
    reason: str = ""  # one line for the trial's log


def remote_shards(uris: Sequence[str]) -> list[str]:
    """The remote files the byte-range URIs among ``uris`` read from, in first-use order."""
    seen: dict[str, None] = {}
    for uri in uris:
        ranged = store.parse_range_uri(uri)
        if ranged is not None and store.is_remote(ranged[0]):
            seen.setdefault(ranged[0], None)
    return list(seen)


def stage_shards(uris: Sequence[str], directory: str, max_bytes: int) -> Staged:
    """``uris`` with every remote shard copied whole into ``directory``, when they fit ``max_bytes``.

    Copies are written to a temporary name and renamed, so a copy cut short is never read; the
    caller removes ``directory`` when the trial ends.
    """
    uris = list(uris)
    shards = remote_shards(uris)
    if not shards:
        return Staged(uris)
    sizes = {s: store.size(s) for s in shards}
    total = sum(sizes.values())
    if total > max_bytes:
        return Staged(uris, len(shards), total, False,
                      f"{len(shards)} shard(s), {total / 1e9:.2f} GB, exceed resources.trial.stage_bytes "
                      f"({max_bytes / 1e9:.2f} GB): reading each image with a ranged GET")
    os.makedirs(directory, exist_ok=True)
    local = {s: _copy(s, directory, sizes[s]) for s in shards}
    staged = []
    for uri in uris:
        ranged = store.parse_range_uri(uri)
        if ranged is not None and ranged[0] in local:
            staged.append(store.range_uri(local[ranged[0]], ranged[1], ranged[2]))
        else:
            staged.append(uri)
    return Staged(staged, len(shards), total, True,
                  f"staged {len(shards)} shard(s), {total / 1e9:.2f} GB, on local disk: one read per shard")


def _copy(uri: str, directory: str, size: int) -> str:
    """Stream ``uri`` to ``directory/<digest>.tar``; returns the local path. Raises on a short copy."""
    target = os.path.join(directory, hashlib.sha1(uri.encode()).hexdigest()[:20] + ".tar")
    if os.path.exists(target) and os.path.getsize(target) == size:
        return target
    tmp = target + ".part"
    fs, path = store.filesystem(uri)
    fs.get_file(path, tmp)  # s3fs: one GET whose body streams to the file
    got = os.path.getsize(tmp)
    if got != size:
        os.remove(tmp)
        raise store.DamagedFileError(f"{uri}: copied {got} of {size} bytes; rerun the sweep")
    os.replace(tmp, target)
    return target
