"""Image lists: a ``.csv`` (header row) or ``.jsonl`` file with a path, a label and a split per image.

The root is the list file itself (a local path or ``s3://`` URI)::

    path,label,split
    images/cat_001.jpg,cat,train
    s3://other-bucket/dogs/0001.jpg,dog,test

Paths are relative to the list file's folder, or absolute (a local path or a URI). Labels follow
:mod:`lossyvision.datasets._labels` (class names, or whole-number indices). Options:

- ``path_column``, ``label_column``, ``split_column``: the column (JSONL: key) names, default
  ``path``, ``label``, ``split``. Without a split column every image is in split "train";
  ``test_fraction`` then moves a deterministic share of each class to "test" (as ImageFolder);
- ``classes``: the class names in label order, when the labels are indices or to fix the order;
- ``split_map``: rename splits, e.g. ``{"val": "test"}``;
- ``delimiter``: the CSV field separator (default ``,``).

Relpaths: a relative path that stays inside the list file's folder is its own relpath
(``images/cat_001.jpg``); any other path is keyed as ``_uri/<scheme>/<path>``
(``_uri/s3/other-bucket/dogs/0001.jpg``, ``_uri/file/data/x.jpg``), so that no store path ever
leaves its level folder. A listed file that does not exist is no error here: the compress job
records it as failed ("file not found"), as it does any unreadable image.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
from typing import Any, Sequence

from lossyvision.datasets._files import parse_split_map, require_file
from lossyvision.datasets._labels import (
    check_column,
    check_options,
    hash_split,
    parse_classes,
    parse_test_fraction,
    resolve_labels,
)
from lossyvision.datasets.base import DATASETS, TASK_CLASSIFICATION, Record, ScannedReader, file_info, sorted_records
from lossyvision.store import filesystem, is_remote, read_bytes

OPTIONS = ("path_column", "label_column", "split_column", "classes", "split_map", "test_fraction", "delimiter")
URI_PREFIX = "_uri"
JSONL_SUFFIXES = (".jsonl", ".ndjson")


def _dirname(uri: str) -> str:
    if is_remote(uri):
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{posixpath.dirname(rest)}"
    return os.path.dirname(os.path.abspath(uri))


def locate(list_uri: str, path: str) -> tuple[str, str]:
    """``(relpath, source URI)`` of a path as written in the list file ``list_uri``."""
    if "://" in path:
        uri = path
    elif path.startswith("/"):
        uri = posixpath.normpath(path)
    else:
        rel = posixpath.normpath(path.replace("\\", "/"))
        base = _dirname(list_uri)
        if rel != ".." and not rel.startswith("../") and rel.split("/", 1)[0] != URI_PREFIX:
            return rel, (f"{base}/{rel}" if is_remote(base) else os.path.join(base, rel))
        if is_remote(base):
            scheme, rest = base.split("://", 1)
            uri = f"{scheme}://{posixpath.normpath(posixpath.join(rest, rel))}"
        else:
            uri = os.path.normpath(os.path.join(base, rel))
    scheme, _, rest = uri.partition("://") if "://" in uri else ("file", "", uri)
    return f"{URI_PREFIX}/{scheme}/{rest.lstrip('/')}", uri


@DATASETS.register("csv")
class CSVListReader(ScannedReader):
    """A CSV or JSONL list of images with labels and splits."""

    name = "csv"
    root_may_be_file = True
    task = TASK_CLASSIFICATION

    def __init__(self, root: str, **options: Any) -> None:
        super().__init__(root, **options)
        check_options("csv", options, OPTIONS)
        self.path_column = check_column("csv", "path_column", options.get("path_column", "path"))
        self.label_column = check_column("csv", "label_column", options.get("label_column", "label"))
        self.split_column = check_column("csv", "split_column", options.get("split_column", "split"))
        self.split_column_given = "split_column" in options
        self.fixed_classes = parse_classes("csv", options.get("classes"))
        self.split_map = parse_split_map("csv", options.get("split_map"))
        self.test_fraction = parse_test_fraction("csv", options.get("test_fraction"))
        delimiter = options.get("delimiter", ",")
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise ValueError(f"csv: option delimiter must be one character, got {delimiter!r}")
        self.delimiter = delimiter

    # ------------------------------------------------------------------ parsing
    def _rows(self) -> tuple[list[dict[str, Any]], list[int], list[str]]:
        """The list file's rows, their line numbers and its columns."""
        require_file("csv", self.root)
        try:
            text = read_bytes(self.root).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ValueError(f"csv: {self.root} is not UTF-8 text ({e})") from None
        if self.root.lower().endswith(JSONL_SUFFIXES):
            rows, lines = [], []
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"csv: {self.root}: line {n} is not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"csv: {self.root}: line {n} is not a JSON object")
                rows.append(row)
                lines.append(n)
            columns = sorted({k for row in rows for k in row})
            return rows, lines, columns
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=self.delimiter)
        columns = list(reader.fieldnames or [])
        rows, lines = [], []
        try:
            for row in reader:
                if None in row:
                    raise ValueError(f"csv: {self.root}: line {reader.line_num} has more fields than the header")
                if any((v or "").strip() for v in row.values()):
                    rows.append(row)
                    lines.append(reader.line_num)
        except csv.Error as e:
            raise ValueError(f"csv: {self.root}: line {reader.line_num}: {e}") from None
        return rows, lines, columns

    def _scan(self) -> None:
        rows, lines, columns = self._rows()
        if not rows:
            raise ValueError(f"csv: {self.root} lists no images")
        for option, column in (("path_column", self.path_column), ("label_column", self.label_column)):
            if column not in columns:
                raise ValueError(f"csv: {self.root} has no column {column!r} ({option}); "
                                 f"its columns: {', '.join(map(str, columns)) or 'none'}")
        has_split = self.split_column in columns
        if self.split_column_given and not has_split:
            raise ValueError(f"csv: {self.root} has no column {self.split_column!r} (split_column); "
                             f"its columns: {', '.join(map(str, columns))}")
        if has_split and self.test_fraction is not None:
            raise ValueError(f"csv: {self.root} has a split column ({self.split_column!r}); "
                             "test_fraction only applies to a list without one")
        where = [f"{self.root}: line {n}" for n in lines]
        classes, labels = resolve_labels("csv", [r.get(self.label_column) for r in rows], where,
                                         self.fixed_classes)
        seen: dict[str, str] = {}
        items: list[tuple[str, int, str]] = []
        sources: dict[str, str] = {}
        for row, here, label in zip(rows, where, labels):
            path = row.get(self.path_column)
            if not isinstance(path, str) or not path.strip():
                raise ValueError(f"csv: {here}: no path in column {self.path_column!r}")
            relpath, uri = locate(self.root, path.strip())
            if relpath in seen:
                raise ValueError(f"csv: {here}: {path.strip()} is listed twice (first at {seen[relpath]})")
            seen[relpath] = here
            split = "train"
            if has_split:
                value = row.get(self.split_column)
                if value is None or not str(value).strip():
                    raise ValueError(f"csv: {here}: no split in column {self.split_column!r}")
                split = str(value).strip()
            items.append((split, label, relpath))
            sources[relpath] = uri
        if self.test_fraction is not None:
            items = hash_split(items, self.test_fraction)
        self._classes = classes
        self._records = sorted_records(
            Record(relpath=rel, split=self.split_map.get(split, split), label=label, source=sources[rel])
            for split, label, rel in items)

    # ------------------------------------------------------------------ sources
    def source_info(self, records: Sequence[Record]) -> dict[str, dict[str, Any]]:
        """One listing per folder that holds listed images (not one request per image)."""
        by_folder: dict[str, list[Record]] = {}
        for r in records:
            by_folder.setdefault(_dirname(self.source_uri(r)), []).append(r)
        out: dict[str, dict[str, Any]] = {}
        for folder, recs in by_folder.items():
            fs, path = filesystem(folder)
            try:
                listing = {str(info["name"]).rstrip("/"): info for info in fs.ls(path, detail=True)}
            except (FileNotFoundError, NotADirectoryError):
                continue
            for r in recs:
                info = listing.get(filesystem(self.source_uri(r))[1])
                if info is not None and info.get("type", "file") == "file":
                    out[r.relpath] = file_info(info)
        return out
