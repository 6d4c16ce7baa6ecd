"""File listing shared by the dataset readers, through fsspec so that roots may be ``s3://`` URIs.

Relpaths are POSIX, relative to the root. Hidden files and folders (a component starting with
``.``, e.g. ``.DS_Store``, ``.ipynb_checkpoints``, our own ``.tmp-`` files) are never listed.
"""

from __future__ import annotations

from lossyvision.store import filesystem, join, read_bytes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def is_image(relpath: str) -> bool:
    """Whether a file name has an image extension (case-insensitive)."""
    return relpath.lower().endswith(IMAGE_EXTENSIONS)


def require_dir(kind: str, uri: str) -> None:
    """Raise a clear ``ValueError`` unless ``uri`` is an existing folder (or prefix on a store)."""
    fs, path = filesystem(uri)
    if not fs.isdir(path):
        problem = "is not a folder" if fs.exists(path) else "not found"
        raise ValueError(f"{kind}: {uri} {problem}")


def require_file(kind: str, uri: str) -> None:
    fs, path = filesystem(uri)
    if not fs.isfile(path):
        raise ValueError(f"{kind}: {uri} not found")


def list_files(kind: str, root: str, sub: str = "") -> list[str]:
    """Every visible file under ``root/sub``, as sorted POSIX relpaths relative to ``root``."""
    top = join(root, sub) if sub else root
    require_dir(kind, top)
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
