"""Where things live: the compressed store's layout and filesystem helpers.

Layout of a compressed store ``OUT``::

    OUT/<codec>-<level>/<relpath with the codec's extension>
    OUT/manifest.parquet        one row per (image, codec, level)
    OUT/summary.csv             per-level table

In the sharded layout (:mod:`lossyvision.shards`) a level is a few large tar files instead, and
an image is a byte range of one: :func:`range_uri` names it (``range://OFFSET+SIZE/SHARD_URI``)
and :func:`read_bytes` reads it with one ranged read, so every reader of images works with both
layouts unchanged.

Every path goes through fsspec, so a store, a dataset root or a sweep output may be a local
folder or an ``s3://``/``gs://`` URI (credentials and endpoint from the standard AWS variables).
Writes are atomic: a temp file plus rename locally, a single PUT on object stores.
"""

from __future__ import annotations

import errno
import functools
import os
import posixpath
import re
import stat
import tempfile
import threading
from collections import OrderedDict
from pathlib import PurePosixPath

import fsspec

from lossyvision.cloud import CloudError, _bucket, classify, cloud_error, message, remember

MANIFEST_NAME = "manifest.parquet"
SUMMARY_NAME = "summary.csv"


class DamagedFileError(ValueError):
    """A file lossyvision wrote earlier cannot be read back (truncated, not its format).

    The message is one line: the file, what is wrong, and the way back (which file to delete or
    which command rewrites it). Nothing is overwritten when this is raised.
    """


class NotRegularFileError(OSError):
    """A path that is a FIFO, socket or device: never opened (a FIFO would block the reader)."""


def format_level(level: float) -> str:
    """``0 -> "0"``, ``0.5 -> "0.5"``, ``1.0 -> "1"``: the level as it appears in paths and names."""
    level = float(level)
    return str(int(level)) if level.is_integer() else repr(level)


def level_dir(codec: str, level: float) -> str:
    return f"{codec}-{format_level(level)}"


def output_relpath(relpath: str, extension: str) -> str:
    """``a/b c.JPG`` with ``.jxl`` -> ``a/b c.jxl``: the source relpath with the codec's extension."""
    p = PurePosixPath(relpath)
    return str(p.with_suffix(extension)) if p.suffix else str(p) + extension


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def absolute(uri: str) -> str:
    """A local path made absolute, a remote URI unchanged: Ray workers of a cluster the driver joined
    (``RAY_ADDRESS``) run in another folder, where a relative path names nothing. A ``file://`` URI
    is absolute already and stays as it is."""
    uri = str(uri)
    return uri if "://" in uri else os.path.abspath(uri)


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and in-filesystem path for a local path or URI.

    A remote URL is recorded (:func:`lossyvision.cloud.remember`), so that a cloud client's error
    met next can be told as one line naming it.
    """
    if is_remote(uri):
        remember(str(uri))
    fs, path = fsspec.core.url_to_fs(str(uri))
    return fs, path


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or a URI, POSIX style."""
    base = str(base)
    if is_remote(base):
        scheme, rest = base.split("://", 1)
        return f"{scheme}://" + posixpath.join(rest, *parts)
    return os.path.join(base, *parts)


def relative_hint(uri: str) -> str:
    """`` (relative paths resolve against the current folder, /x/y)`` for a relative local path, else ""."""
    uri = str(uri)
    if is_remote(uri) or uri.startswith("file://") or os.path.isabs(os.path.expanduser(uri)):
        return ""
    return f" (relative paths resolve against the current folder, {os.getcwd()})"


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def local_path(uri: str) -> str | None:
    """The local path of ``uri`` (a plain path or ``file://``), or None for a remote URI."""
    uri = str(uri)
    if is_remote(uri):
        return None
    return uri[len("file://"):] if uri.startswith("file://") else uri


def file_kind(mode: int) -> str:
    """What a non-regular ``st_mode`` is, in words ("FIFO (named pipe)", "socket", ...)."""
    for test, name in ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISDIR, "folder"), (stat.S_ISREG, "regular file")):
        if test(mode):
            return name
    return "special file"


def read_bytes(uri: str) -> bytes:
    """The bytes of a file, or of a byte range of one (:func:`range_uri`); locally only a regular
    file is ever opened.

    A FIFO, socket or device raises :class:`NotRegularFileError` without being opened (opening a
    FIFO for reading blocks until a writer appears), and the file is opened non-blocking and
    checked again, in case it was swapped between the two looks.
    """
    ranged = parse_range_uri(uri)
    if ranged is not None:
        return read_range(*ranged)
    path = local_path(uri)
    if path is None:
        fs, fs_path = filesystem(uri)
        with fs.open(fs_path, "rb") as f:
            return f.read()
    with _open_regular(path) as f:
        return f.read()


def _open_regular(path: str):
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        _not_regular(path, mode)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    f = os.fdopen(fd, "rb")
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        f.close()
        _not_regular(path, mode)
    return f


# --- byte ranges: the members of shards ---------------------------------------------------------
RANGE_SCHEME = "range://"
_RANGE = re.compile(r"range://(\d+)\+(\d+)/(.+)\Z", re.S)
#: Reads of a remote file that continue the previous one fetch this much at once (evaluation reads
#: a shard's members in order).
READAHEAD_BYTES = 8 << 20
#: A read continues the previous one when it starts at most this far after it ended (the next
#: member of a tar: its header and padding lie between). Random reads (training) jump further.
READAHEAD_GAP = 64 << 10
#: Readahead blocks kept per process (one per shard being read).
READAHEAD_BLOCKS = 4


def range_uri(uri: str, offset: int, size: int) -> str:
    """``range://OFFSET+SIZE/URI``: ``size`` bytes of the file at ``uri`` from ``offset``.

    No file or fsspec protocol is named ``range``, so such a string never meant anything else.
    """
    if int(offset) < 0 or int(size) < 0:
        raise ValueError(f"a byte range needs offset and size >= 0, got {offset}, {size}")
    return f"{RANGE_SCHEME}{int(offset)}+{int(size)}/{uri}"


def parse_range_uri(uri: object) -> tuple[str, int, int] | None:
    """``(uri, offset, size)`` of a :func:`range_uri`, or None for anything else."""
    if not isinstance(uri, str) or not uri.startswith(RANGE_SCHEME):
        return None
    m = _RANGE.match(uri)
    if m is None:
        raise ValueError(f"malformed byte range {uri!r}: expected range://OFFSET+SIZE/URI")
    return m.group(3), int(m.group(1)), int(m.group(2))


def read_range(uri: str, offset: int, size: int) -> bytes:
    """``size`` bytes of ``uri`` from ``offset``: one ranged read (``pread`` locally, a GET with a
    ``Range`` header on object stores).

    Remote reads that continue where the previous read of the same file ended (within
    :data:`READAHEAD_GAP`) fetch :data:`READAHEAD_BYTES` at once and serve the next members from
    it, so reading a shard in order costs one request per block, not one per image; random reads
    fetch exactly their range (and use a block already fetched when they fall in it).
    A file shorter than the range raises :class:`DamagedFileError`.
    """
    uri, offset, size = str(uri), int(offset), int(size)
    path = local_path(uri)
    if path is None:
        data = _REMOTE_RANGES.read(uri, offset, size)
    else:
        with _open_regular(path) as f:
            data = os.pread(f.fileno(), size, offset)
            while 0 < len(data) < size:  # pread may return less than asked (signals, pipes)
                more = os.pread(f.fileno(), size - len(data), offset + len(data))
                if not more:
                    break
                data += more
    if len(data) != size:
        raise DamagedFileError(f"{uri} is damaged: {size} bytes expected at offset {offset}, {len(data)} there; "
                               "rerun `lossyvision compress` (or `sweep run`) to write it again")
    return data


class _RangeReader:
    """Ranged reads of remote files with a small readahead for forward, sequential access."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocks: OrderedDict[str, tuple[int, bytes]] = OrderedDict()  # uri -> (start, data)
        self._ends: dict[str, int] = {}  # uri -> where the previous read ended

    def read(self, uri: str, offset: int, size: int) -> bytes:
        with self._lock:
            block = self._blocks.get(uri)
            sequential = self._ends.get(uri) is not None and 0 <= offset - self._ends[uri] <= READAHEAD_GAP
            self._ends[uri] = offset + size
            if len(self._ends) > 64 * READAHEAD_BLOCKS:
                self._ends.pop(next(iter(self._ends)))
        if block is not None and block[0] <= offset and offset + size <= block[0] + len(block[1]):
            start = offset - block[0]
            return block[1][start:start + size]
        fs, path = filesystem(uri)
        if not sequential:
            return fs.cat_file(path, start=offset, end=offset + size)
        data = fs.cat_file(path, start=offset, end=offset + max(size, READAHEAD_BYTES))  # short at the end
        with self._lock:
            self._blocks[uri] = (offset, data)
            self._blocks.move_to_end(uri)
            while len(self._blocks) > READAHEAD_BLOCKS:
                self._blocks.popitem(last=False)
        return data[:size]


_REMOTE_RANGES = _RangeReader()


def _not_regular(path: str, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder", path)
    raise NotRegularFileError(errno.EINVAL, f"not a regular file: a {file_kind(mode)}", path)


def atomic_write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` so that readers see the old file or the whole new one, never a part.

    Locally: a temp file (``.tmp-*``, which resume sweeps away) in the target's folder, then a
    rename. It runs once per output file, so it avoids fsspec and redundant system calls: the
    folder is created only when the temp file cannot be.
    """
    uri = str(uri)
    if is_remote(uri):
        fs, path = filesystem(uri)
        fs.pipe_file(path, data)  # one PUT: objects appear whole
        return
    path = os.path.abspath(uri[len("file://"):] if uri.startswith("file://") else uri)
    try:
        _atomic_write_local(path, data)
    except OSError as exc:
        if exc.filename is None:  # a full disk says "No space left on device", not where
            raise type(exc)(exc.errno, exc.strerror or str(exc), path) from None
        raise


def _atomic_write_local(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask (read once: reading it means setting it, twice)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def size(uri: str) -> int:
    fs, path = filesystem(uri)
    return int(fs.size(path))


def check_reachable(uri: str) -> None:
    """Raise :class:`CloudError` when a remote ``uri`` cannot be reached, is not allowed, or its bucket
    does not exist; return quietly when it exists or truly is not found (or is local).

    Called just before a reader says "not found": fsspec's ``exists``/``isfile`` hide every error
    behind False.
    """
    uri = str(uri)
    if not is_remote(uri):
        return
    try:
        fs, path = filesystem(uri)
        try:
            fs.info(path)
            return
        except FileNotFoundError as exc:
            if classify(exc) is not None:
                raise
        bucket = _bucket(uri)
        if bucket is not None:
            try:
                fs.info(bucket)
            except FileNotFoundError:
                raise CloudError(message(uri, "bucket", f"no bucket {bucket!r}")) from None
    except CloudError:
        raise
    except Exception as exc:  # noqa: BLE001 - only a cloud client's error is translated; others go on
        err = cloud_error(exc, uri)
        if err is None:
            raise
        raise err from None
