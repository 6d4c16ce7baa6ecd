"""File listing shared by the dataset readers, through fsspec so that roots may be ``s3://`` URIs.

Relpaths are POSIX, relative to the root. Hidden files and folders (a component starting with
``.``, e.g. ``.DS_Store``, ``.ipynb_checkpoints``, our own ``.tmp-`` files) are never listed.

On a local disk only regular files are listed; everything else is *skipped with its reason*
(:class:`Skipped`), never opened: FIFOs (opening one for reading blocks until a writer comes),
sockets, devices, broken links, and by default a symlink whose target lies outside the dataset
root (``allow_outside_symlinks`` follows it). Symlinked folders inside the root are followed once
(a loop is skipped).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from lossyvision.store import (check_reachable, file_kind, filesystem, is_remote, join, local_path, read_bytes,
                               relative_hint)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")

#: Skip kinds (the ``kind`` of a :class:`Skipped`).
NOT_REGULAR, OUTSIDE_ROOT, BROKEN_LINK, LINK_LOOP, UNREADABLE, UNSUPPORTED = (
    "not a regular file", "symlink outside the root", "broken symlink", "symlink loop", "unreadable",
    "unsupported type")


@dataclass(frozen=True)
class Skipped:
    """A file that is not read, and why (``kind`` groups them; ``reason`` is the full sentence)."""

    relpath: str
    kind: str
    reason: str


@dataclass
class Listing:
    files: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def is_image(relpath: str) -> bool:
    """Whether a file name has an image extension (case-insensitive)."""
    return relpath.lower().endswith(IMAGE_EXTENSIONS)


def extension(relpath: str) -> str:
    """The lower-case extension of a relpath (``.txt``), or ``(none)``."""
    name = relpath.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name.lstrip(".") else "(none)"


def unsupported(relpaths: list[str]) -> list[Skipped]:
    """Files that are not images by extension, recorded rather than dropped silently."""
    return [Skipped(r, UNSUPPORTED, f"unsupported type {extension(r)} (images: {', '.join(IMAGE_EXTENSIONS)})")
            for r in relpaths if not is_image(r)]


def not_found(kind: str, uri: str) -> ValueError:
    """``KIND: URI not found``, once a remote URL is known to be reachable and allowed (else the
    :class:`~lossyvision.cloud.CloudError` saying why it is not); a relative path says what it is
    relative to."""
    check_reachable(uri)
    return ValueError(f"{kind}: {uri} not found{relative_hint(uri)}")


def require_dir(kind: str, uri: str) -> None:
    """Raise a clear ``ValueError`` unless ``uri`` is an existing folder (or prefix on a store)."""
    fs, path = filesystem(uri)
    if not fs.isdir(path):
        if not fs.exists(path):
            raise not_found(kind, uri)
        raise ValueError(f"{kind}: {uri} is not a folder")


#: What a kind that reads one file calls it, for "is a folder, not ...".
FILE_KINDS = {"csv": "a CSV or JSON-lines list (give the .csv or .jsonl file)",
              "webdataset": "a .tar shard", "hf": "a Parquet file"}


def require_file(kind: str, uri: str) -> None:
    """Raise a clear ``ValueError`` unless ``uri`` is an existing file."""
    fs, path = filesystem(uri)
    if not fs.isfile(path):
        if fs.isdir(path):
            raise ValueError(f"{kind}: {uri} is a folder, not {FILE_KINDS.get(kind, 'a file')}")
        raise not_found(kind, uri)


def scan(kind: str, root: str, sub: str = "", *, allow_outside_symlinks: bool = False) -> Listing:
    """Every visible regular file under ``root/sub`` (sorted POSIX relpaths relative to ``root``),
    and what was skipped with the reason (see the module docstring)."""
    top = join(root, sub) if sub else root
    require_dir(kind, top)
    if is_remote(root):
        return Listing(files=_list_remote(kind, root, top))
    return _scan_local(str(local_path(root)), str(local_path(top)), allow_outside_symlinks)


def list_files(kind: str, root: str, sub: str = "", *, allow_outside_symlinks: bool = False) -> list[str]:
    """Every visible regular file under ``root/sub``, as sorted POSIX relpaths relative to ``root``."""
    return scan(kind, root, sub, allow_outside_symlinks=allow_outside_symlinks).files


def _list_remote(kind: str, root: str, top: str) -> list[str]:
    fs, base = filesystem(root)
    fs_top = filesystem(top)[1]
    base = base.rstrip("/")
    out = []
    for path in fs.find(fs_top, withdirs=False):
        path = str(path)
        if not path.startswith(base + "/"):
            raise ValueError(f"{kind}: listed {path!r} outside the root {root}")
        rel = path[len(base) + 1:]
        if not any(part.startswith(".") for part in rel.split("/")):
            out.append(rel)
    return sorted(out)


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _scan_local(root: str, top: str, allow_outside: bool) -> Listing:
    base = os.path.realpath(root)
    listing = Listing()
    start = os.path.relpath(os.path.abspath(top), os.path.abspath(root)).replace(os.sep, "/")
    stack = [(os.path.abspath(top), "" if start == "." else start + "/")]
    visited = {os.path.realpath(top)}
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            listing.skipped.append(Skipped(prefix.rstrip("/") or ".", UNREADABLE,
                                           f"cannot list the folder: {exc.strerror or exc}"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = prefix + entry.name
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not os.path.exists(target):
                        listing.skipped.append(Skipped(rel, BROKEN_LINK, f"broken symlink to {os.readlink(entry.path)}"))
                        continue
                    if not _inside(target, base) and not allow_outside:
                        listing.skipped.append(Skipped(
                            rel, OUTSIDE_ROOT, f"symlink to {target}, outside the dataset root; refused "
                                               "(dataset option allow_outside_symlinks: true follows it)"))
                        continue
                    mode = os.stat(entry.path).st_mode
                    if stat.S_ISDIR(mode):
                        if target in visited:
                            listing.skipped.append(Skipped(rel, LINK_LOOP, f"symlink to {target}, already listed"))
                        else:
                            visited.add(target)
                            stack.append((entry.path, rel + "/"))
                        continue
                else:
                    mode = entry.stat(follow_symlinks=False).st_mode
                    if stat.S_ISDIR(mode):
                        visited.add(os.path.realpath(entry.path))
                        stack.append((entry.path, rel + "/"))
                        continue
            except OSError as exc:
                listing.skipped.append(Skipped(rel, UNREADABLE, f"cannot stat: {exc.strerror or exc}"))
                continue
            if stat.S_ISREG(mode):
                listing.files.append(rel)
            else:
                listing.skipped.append(Skipped(rel, NOT_REGULAR, f"a {file_kind(mode)}, not a regular file; "
                                                                 "never opened"))
    listing.files.sort()
    listing.skipped.sort(key=lambda s: s.relpath)
    return listing


def read_lines(kind: str, root: str, relpath: str) -> list[str]:
    """The non-empty, stripped lines of the UTF-8 text file ``root/relpath``."""
    uri = join(root, relpath)
    require_file(kind, uri)
    text = read_bytes(uri).decode("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_splits(kind: str, value: object, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """Validate a ``splits`` option (a list of split folder/file names)."""
    if isinstance(value, str):
        value = [value]
    splits = tuple(value)  # type: ignore[arg-type]
    bad = [s for s in splits if s not in allowed]
    if not splits or bad:
        raise ValueError(f"{kind}: option splits={list(splits)} must be a non-empty subset of {list(allowed)}")
    return splits


def parse_split_map(kind: str, value: object) -> dict[str, str]:
    """Validate a ``split_map`` option ({name on disk: split name in records}, e.g. {'val': 'test'})."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                              for k, v in value.items()):
        raise ValueError(f"{kind}: option split_map must map split names to split names, got {value!r}")
    return dict(value)
