"""Where things live: the compressed store's layout and filesystem helpers.

Layout of a compressed store ``OUT``::

    OUT/<codec>-<level>/<relpath with the codec's extension>
    OUT/manifest.parquet        one row per (image, codec, level)
    OUT/summary.csv             per-level table

Every path goes through fsspec, so a store, a dataset root or a sweep output may be a local
folder or an ``s3://``/``gs://`` URI (credentials and endpoint from the standard AWS variables).
Writes are atomic: a temp file plus rename locally, a single PUT on object stores.
"""

from __future__ import annotations

import functools
import os
import posixpath
import tempfile
from pathlib import PurePosixPath

import fsspec

MANIFEST_NAME = "manifest.parquet"
SUMMARY_NAME = "summary.csv"


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


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and in-filesystem path for a local path or URI."""
    fs, path = fsspec.core.url_to_fs(str(uri))
    return fs, path


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or a URI, POSIX style."""
    base = str(base)
    if is_remote(base):
        scheme, rest = base.split("://", 1)
        return f"{scheme}://" + posixpath.join(rest, *parts)
    return os.path.join(base, *parts)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        return f.read()


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
