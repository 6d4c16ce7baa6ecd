"""Training from a sharded store too large to stage: shard by shard, through a shuffle buffer.

The default training order (``data_order: random``) is a seeded permutation of all images every
epoch. From a sharded store on an object store that is one ranged GET per image per epoch, unless
the trial's shards fit ``resources.trial.stage_bytes`` and are copied to local disk first
(:mod:`lossyvision.staging`). A training set larger than a trial's disk (10 M images at distance 0
are about 1 TB) can instead be read in *shard order* (``data_order: shards``), the WebDataset /
tf.data scheme:

* each epoch the shards are shuffled (seeded by the loader's seed, which the tasks derive from the
  trial seed and the epoch: a resumed epoch sees the order the uninterrupted run would have);
* a shard's members are taken in file order;
* a shuffle buffer of ``shuffle_buffer`` images mixes them: each image entering the buffer sends a
  random one out (:class:`ShardOrderSampler`).

Reads then move forward through each shard, and :class:`BlockReader` serves them from a few large
aligned blocks fetched with one ranged GET each: an epoch costs about ``shard bytes / block size``
GETs per shard and loader process, instead of one per image. The order is a function of which
images share a shard and where they lie in it, never of a shard's name or place: staged copies of
the shards (when they fit ``stage_bytes``) give the same order.
"""

from __future__ import annotations

import errno
import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Iterator, Sequence

from lossyvision import store

if TYPE_CHECKING:
    import numpy as np

DATA_ORDERS = ("random", "shards")
DEFAULT_SHUFFLE_BUFFER = 1000
#: One ranged GET fetches this much of a shard (S3 serves 8-16 MB ranges at full speed).
DEFAULT_BLOCK_BYTES = 32 << 20
#: Blocks each loader process keeps: its memory, and how far behind the read front a late image
#: of the shuffle buffer can still be served from memory.
DEFAULT_CACHE_BYTES = 256 << 20


def shard_groups(uris: Sequence[str]) -> list[np.ndarray]:
    """The indices of ``uris`` per shard, each in file order (by offset); shards in order of first use.

    Every URI must be a byte range of a shard (:func:`lossyvision.store.range_uri`): a ``ValueError``
    names the first that is not.
    """
    import numpy as np

    members: dict[str, list[tuple[int, int]]] = {}
    for i, uri in enumerate(uris):
        ranged = store.parse_range_uri(uri)
        if ranged is None:
            raise ValueError(f"data_order shards reads a sharded store, but {uri} is a file of its own "
                             "(compress with layout shards, or use data_order random)")
        members.setdefault(ranged[0], []).append((ranged[1], i))
    return [np.array([i for _, i in sorted(m)], dtype=np.int64) for m in members.values()]


def shard_order(groups: Sequence[np.ndarray], shuffle_buffer: int, seed: int) -> np.ndarray:
    """One epoch's order: shards shuffled, members in file order, mixed by a buffer of ``shuffle_buffer``.

    Each image entering the full buffer sends a random one out; the rest leave in random order at
    the end. A buffer of 1 keeps the stream as it is; one of at least all images is a full shuffle.
    """
    import numpy as np  # here, not at the top: the sweep file's checks import this module's defaults

    rng = np.random.default_rng(int(seed))
    stream = [groups[g] for g in rng.permutation(len(groups))]
    n = sum(len(g) for g in stream)
    size = max(1, int(shuffle_buffer))
    draws = rng.random(n)
    out = np.empty(n, dtype=np.int64)
    buf: list[int] = []
    k = 0
    for group in stream:
        for i in group.tolist():
            buf.append(i)
            if len(buf) >= size:
                j = int(float(draws[k]) * len(buf))
                buf[j], buf[-1] = buf[-1], buf[j]
                out[k] = buf.pop()
                k += 1
    rest = np.array(buf, dtype=np.int64)
    out[k:] = rest[rng.permutation(len(rest))]
    return out


class ShardOrderSampler:
    """A DataLoader sampler (torch's ``Sampler`` protocol: ``__iter__`` and ``__len__``; no torch import,
    so the sweep file's checks stay light) yielding :func:`shard_order` of ``groups`` (:func:`shard_groups`).

    The order depends on ``seed`` alone (the tasks pass the trial seed and the epoch through
    :func:`lossyvision.tasks.training.make_loader`), never on earlier epochs.
    """

    def __init__(self, groups: Sequence[np.ndarray], shuffle_buffer: int, seed: int) -> None:
        self.groups = list(groups)
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed = int(seed)

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def __iter__(self) -> Iterator[int]:
        order = shard_order(self.groups, self.shuffle_buffer, self.seed)
        for start in range(0, len(order), 1 << 16):  # Python ints a slice at a time: 10 M would be 300 MB
            yield from order[start:start + (1 << 16)].tolist()


def blocks_spanned(uris: Sequence[str], block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """The aligned blocks of remote shards that ``uris`` lie in: the GETs of one pass per loader
    process, late images of the shuffle buffer aside."""
    blocks = set()
    for uri in uris:
        ranged = store.parse_range_uri(uri)
        if ranged is not None and store.is_remote(ranged[0]):
            shard, offset, size = ranged
            last = offset + max(size, 1) - 1
            blocks.update((shard, b) for b in range(offset // block_bytes, last // block_bytes + 1))
    return len(blocks)


def late_fraction(uris: Sequence[str], shuffle_buffer: int, block_bytes: int, cache_bytes: int) -> float:
    """About the fraction of images that wait in the shuffle buffer longer than the cache keeps their
    block, each then read with a GET of its own: ``exp(-W / shuffle_buffer)``, ``W`` the images the
    cache's blocks behind the front hold (an image leaves a full buffer after ``shuffle_buffer`` steps
    on average, geometrically). A cache of 5 x ``shuffle_buffer`` images keeps it under 1 %."""
    import math

    sizes = [r[2] for r in map(store.parse_range_uri, uris) if r is not None]
    if not sizes:
        return 0.0
    blocks = max(2, int(cache_bytes) // int(block_bytes))
    held = (blocks - 1) * int(block_bytes) / max(1.0, sum(sizes) / len(sizes))
    return math.exp(-held / max(1, int(shuffle_buffer)))


class BlockReader:
    """``read_bytes`` for a forward pass through remote shards: whole aligned blocks, a few kept.

    A byte range of a remote shard is served from the aligned block(s) of ``block_bytes`` holding
    it, fetched with one ranged GET and kept while the process's blocks fit ``cache_bytes``
    (at least two), oldest fetched dropped first: the read front moves forward, so an old block is
    the least likely to be read again. A miss behind the front of its shard (an image that sat
    long in the shuffle buffer, its block dropped) reads just its range, one GET, rather than a
    block again. Anything else (local files, staged copies, whole files) goes to
    :func:`lossyvision.store.read_bytes`.

    Each process has its own blocks: the state is made on first use in a process, and a pickled
    or forked copy (DataLoader workers) starts empty. :meth:`new_pass` forgets the read fronts
    (a new epoch starts each shard again).
    """

    def __init__(self, block_bytes: int = DEFAULT_BLOCK_BYTES, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if int(block_bytes) < 1:
            raise ValueError(f"block_bytes must be >= 1, got {block_bytes}")
        self.block_bytes = int(block_bytes)
        self.max_blocks = max(2, int(cache_bytes) // self.block_bytes)
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {"block_bytes": self.block_bytes, "max_blocks": self.max_blocks, "_pid": None}

    def _state(self) -> None:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._blocks: OrderedDict[tuple[str, int], bytes] = OrderedDict()
            self._fronts: dict[str, int] = {}
            self.block_reads = 0  # GETs of whole blocks, this process
            self.range_reads = 0  # GETs of one image's range (behind the front)

    def new_pass(self) -> None:
        self._state()
        self._fronts.clear()

    def __call__(self, uri: str) -> bytes:
        ranged = store.parse_range_uri(uri)
        if ranged is None or not store.is_remote(ranged[0]):
            return store.read_bytes(uri)
        shard, offset, size = ranged
        self._state()
        first, last = offset // self.block_bytes, (offset + max(size, 1) - 1) // self.block_bytes
        wanted = range(first, last + 1)
        missing = [b for b in wanted if (shard, b) not in self._blocks]
        front = self._fronts.get(shard)
        if size > self.block_bytes * (self.max_blocks - 1) or (missing and front is not None and missing[0] < front):
            self.range_reads += 1
            return self._check(_cat(shard, offset, offset + size), uri, size)
        data = b"".join(self._blocks.get((shard, b)) or self._fetch(shard, b) for b in wanted)
        start = offset - first * self.block_bytes
        return self._check(data[start:start + size], uri, size)

    def _fetch(self, shard: str, block: int) -> bytes:
        start = block * self.block_bytes
        data = _cat(shard, start, start + self.block_bytes)  # short at the shard's end
        self.block_reads += 1
        self._blocks[(shard, block)] = data
        self._fronts[shard] = max(block, self._fronts.get(shard, block))
        while len(self._blocks) > self.max_blocks:
            self._blocks.popitem(last=False)
        return data

    @staticmethod
    def _check(data: bytes, uri: str, size: int) -> bytes:
        if len(data) != size:
            raise store.DamagedFileError(f"{uri} is damaged: {size} bytes expected, {len(data)} there; "
                                         "rerun `lossyvision compress` (or `sweep run`) to write it again")
        return data


def _cat(uri: str, start: int, end: int) -> bytes:
    """Bytes ``start:end`` of a remote file, short at its end; none past it (S3 answers 416 there, which
    s3fs raises as EINVAL): the caller names the file as damaged."""
    fs, path = store.filesystem(uri)
    try:
        return fs.cat_file(path, start=start, end=end)
    except OSError as e:
        if e.errno == errno.EINVAL and "range" in str(e).lower():
            return b""
        raise
