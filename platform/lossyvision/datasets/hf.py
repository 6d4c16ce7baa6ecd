"""Hugging Face ``datasets``: a dataset saved with ``save_to_disk``, or its Parquet files.

The root is one of:

- a folder written by ``DatasetDict.save_to_disk`` (``dataset_dict.json``; its splits are the
  dict's keys) or ``Dataset.save_to_disk`` (``state.json``; the split it was saved with, else
  "train"), opened with ``datasets.load_from_disk`` (memory-mapped locally; on ``s3://`` the
  library first copies the folder to a temporary local one, once per process);
- a ``.parquet`` file, or a folder of them (the Hub's layout, ``data/train-00000-of-00003.parquet``):
  the split is the name before ``-NNNNN-of-NNNNN``, else the file's folder, else its name. Rows
  are read with pyarrow by row group, so only the needed image bytes are fetched.

Options: ``image_column`` (default ``image``; an ``Image`` feature, a struct of ``bytes``/``path``,
raw bytes or a path), ``label_column`` (default ``label``), ``classes`` (else a ``ClassLabel``
feature's names, else the rules of :mod:`lossyvision.datasets._labels`), ``split_map``,
``test_fraction`` (for a dataset with one split, as ImageFolder).

Relpaths are ``<split>/<row:06d>``: a split's rows in order, across its files. The image bytes
are whatever the dataset stores (a JPEG stays that JPEG: level 0 transcodes it bit-exactly).
"""

from __future__ import annotations

import functools
import hashlib
import json
import posixpath
import re
import threading
from typing import Any, Sequence

from lossyvision.datasets._files import not_found, parse_split_map
from lossyvision.datasets._labels import (
    check_column,
    check_options,
    hash_split,
    parse_classes,
    parse_test_fraction,
    resolve_labels,
)
from lossyvision.datasets.base import (
    DATASETS,
    TASK_CLASSIFICATION,
    Record,
    ScannedReader,
    file_info,
    file_versions,
    sorted_records,
)
from lossyvision.store import exists, filesystem, join, read_bytes

OPTIONS = ("image_column", "label_column", "classes", "split_map", "test_fraction")
_HUB_SHARD = re.compile(r"^(.+?)-\d+-of-\d+$")


def parquet_split(relpath: str) -> str:
    """``data/train-00000-of-00002.parquet`` -> "train"; ``default/test/0000.parquet`` -> "test"."""
    stem = posixpath.basename(relpath)[:-len(".parquet")]
    m = _HUB_SHARD.match(stem)
    if m:
        return m.group(1)
    folder = posixpath.basename(posixpath.dirname(relpath))
    if folder and folder != "data":
        return folder
    return stem


@functools.lru_cache(maxsize=16)
def _parquet_file(uri: str):
    """An open ``pyarrow.parquet.ParquetFile`` (metadata read once per process)."""
    import pyarrow.parquet as pq

    fs, path = filesystem(uri)
    return pq.ParquetFile(fs.open(path, "rb"))


_PARQUET_LOCK = threading.Lock()  # a ParquetFile shares one file handle: one reader at a time


@functools.lru_cache(maxsize=2)
def _row_group(uri: str, group: int, column: str):
    """One row group's image column (a few hundred rows at most), kept for the next rows."""
    return _parquet_file(uri).read_row_group(group, columns=[column]).column(0)


def _parquet_value(uri: str, row: int, column: str) -> Any:
    """Row ``row`` of ``column`` in a Parquet file, read by row group (thread-safe)."""
    with _PARQUET_LOCK:
        meta = _parquet_file(uri).metadata
        group, start = 0, 0
        while group < meta.num_row_groups and start + meta.row_group(group).num_rows <= row:
            start += meta.row_group(group).num_rows
            group += 1
        if group >= meta.num_row_groups:
            raise ValueError(f"hf: {uri} has no row {row}")
        return _row_group(uri, group, column)[row - start].as_py()


@DATASETS.register("hf")
class HFDatasetReader(ScannedReader):
    """A Hugging Face dataset on disk (``save_to_disk``) or as Parquet files, with an image column."""

    name = "hf"
    root_may_be_file = True
    task = TASK_CLASSIFICATION
    whole_files = False

    def __init__(self, root: str, **options: Any) -> None:
        super().__init__(root, **options)
        check_options("hf", options, OPTIONS)
        self.image_column = check_column("hf", "image_column", options.get("image_column", "image"))
        self.label_column = check_column("hf", "label_column", options.get("label_column", "label"))
        self.fixed_classes = parse_classes("hf", options.get("classes"))
        self.split_map = parse_split_map("hf", options.get("split_map"))
        self.test_fraction = parse_test_fraction("hf", options.get("test_fraction"))
        self._layout: str | None = None

    # ------------------------------------------------------------------ layout
    @property
    def layout(self) -> str:
        """``"dataset_dict"``, ``"dataset"`` (``save_to_disk``) or ``"parquet"``."""
        if self._layout is None:
            if exists(join(self.root, "dataset_dict.json")):
                self._layout = "dataset_dict"
            elif exists(join(self.root, "state.json")):
                self._layout = "dataset"
            elif self.parquet_files():
                self._layout = "parquet"
            else:
                raise ValueError(f"hf: {self.root} is neither a save_to_disk folder (dataset_dict.json or "
                                 "state.json) nor Parquet files")
        return self._layout

    @functools.cached_property
    def _single_file(self) -> bool:
        fs, path = filesystem(self.root)
        if not fs.exists(path):
            raise not_found("hf", self.root)
        return bool(fs.isfile(path))

    @functools.cached_property
    def _parquet(self) -> list[str]:
        if self._single_file:
            return [""] if self.root.lower().endswith(".parquet") else []
        return [f for f in self.list_files() if f.lower().endswith(".parquet")]

    def parquet_files(self) -> list[str]:
        """Parquet relpaths under the root (``[""]`` for a root that is one Parquet file)."""
        return list(self._parquet)

    def _uri(self, relpath: str) -> str:
        return join(self.root, relpath) if relpath else self.root

    @functools.cached_property
    def _disk(self) -> dict[str, Any]:
        """``{split on disk: datasets.Dataset}`` of a ``save_to_disk`` folder (opened once)."""
        datasets = _datasets()
        try:
            loaded = datasets.load_from_disk(self.root)
        except (FileNotFoundError, ValueError, json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"hf: cannot load {self.root} with datasets.load_from_disk ({e})") from None
        if isinstance(loaded, datasets.DatasetDict):
            return dict(loaded)
        return {str(loaded.split) if loaded.split is not None else "train": loaded}

    # ------------------------------------------------------------------ listing

    def _check_columns(self, names: Sequence[str], where: str) -> None:
        for option, column in (("image_column", self.image_column), ("label_column", self.label_column)):
            if column not in names:
                raise ValueError(f"hf: {where} has no column {column!r} ({option}); its columns: {', '.join(names)}")

    def _parts(self) -> list[tuple[str, str, list[Any], list[str] | None]]:
        """``(split on disk, source prefix, label values, ClassLabel names or None)`` per split or file."""
        parts = []
        if self.layout == "parquet":
            datasets = _datasets()
            for rel in self.parquet_files():
                with _PARQUET_LOCK:
                    pf = _parquet_file(self._uri(rel))
                    values = pf.read(columns=[self.label_column]).column(0).to_pylist() \
                        if self.label_column in pf.schema_arrow.names else []
                self._check_columns(pf.schema_arrow.names, self._uri(rel))
                names = _class_label_names(datasets.Features.from_arrow_schema(pf.schema_arrow)
                                           if pf.schema_arrow.metadata and b"huggingface" in pf.schema_arrow.metadata
                                           else None, self.label_column)
                split = parquet_split(rel or posixpath.basename(self.root))
                parts.append((split, rel, values, names))
        else:
            for split, ds in self._disk.items():
                self._check_columns(ds.column_names, join(self.root, split) if self.layout == "dataset_dict"
                                    else self.root)
                values = ds.data.column(self.label_column).to_pylist()
                parts.append((split, split, values, _class_label_names(ds.features, self.label_column)))
        if not parts:
            raise ValueError(f"hf: no Parquet files under {self.root}")
        return parts

    def _scan(self) -> None:
        parts = self._parts()
        feature_names = next((n for _, _, _, n in parts if n), None)
        fixed = self.fixed_classes or feature_names
        values, wheres, rows = [], [], []  # rows: (split, relpath, source)
        counters: dict[str, int] = {}
        for split, prefix, labels, _ in parts:
            for i, value in enumerate(labels):
                n = counters.get(split, 0)
                counters[split] = n + 1
                values.append(value)
                wheres.append(f"{self._uri(prefix) if self.layout == 'parquet' else join(self.root, prefix)}: row {i}")
                rows.append((split, f"{split}/{n:06d}", f"{prefix}#{i}"))
        if not rows:
            raise ValueError(f"hf: {self.root} has no rows")
        classes, labels = resolve_labels("hf", values, wheres, fixed)
        if len(counters) > 1 and self.test_fraction is not None:
            raise ValueError(f"hf: {self.root} has splits ({', '.join(sorted(counters))}); "
                             "test_fraction only applies to a dataset with one")
        items = [(split, label, rel) for (split, rel, _), label in zip(rows, labels)]
        source = {rel: src for _, rel, src in rows}
        if self.test_fraction is not None:
            items = hash_split(items, self.test_fraction)
        self._classes = classes
        self._records = sorted_records(
            Record(relpath=rel, split=self.split_map.get(split, split), label=label, source=source[rel])
            for split, label, rel in items)

    # ------------------------------------------------------------------ sources
    def source_uri(self, record: Record) -> str:
        prefix, _, row = (record.source or "").rpartition("#")
        return f"{self._uri(prefix) if self.layout == 'parquet' else join(self.root, prefix)}#{row}"

    def read_source(self, record: Record) -> bytes:
        """The stored image bytes of one row (a struct's ``bytes``, else the file at its ``path``)."""
        prefix, _, row_text = (record.source or "").rpartition("#")
        row = int(row_text)
        if self.layout == "parquet":
            value = _parquet_value(self._uri(prefix), row, self.image_column)
        else:
            value = self._disk[prefix].data.column(self.image_column)[row].as_py()
        return self._image_bytes(value, record)

    def _image_bytes(self, value: Any, record: Record) -> bytes:
        if isinstance(value, dict):
            if value.get("bytes"):
                return bytes(value["bytes"])
            value = value.get("path")
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, str) and value:
            return read_bytes(value)  # an image stored as a path (absolute, as datasets keeps them)
        raise ValueError(f"no image in column {self.image_column!r} of {self.source_uri(record)}")

    def source_info(self, records: Sequence[Record]) -> dict[str, dict[str, Any]]:
        """Version = the data files' versions and the row; size unknown (compared by version only)."""
        if self.layout == "parquet":
            if self._single_file:
                fs, path = filesystem(self.root)
                versions = {"": file_info(fs.info(path))["version"]}
            else:
                listing = file_versions(self.root)
                versions = {rel: listing[rel]["version"] for rel in self.parquet_files() if rel in listing}
        else:
            listing = file_versions(self.root)
            versions = {}
            for split in self._disk:
                folder = f"{split}/" if self.layout == "dataset_dict" else ""
                parts = sorted(f"{rel}={info['version']}" for rel, info in listing.items()
                               if rel.startswith(folder) and rel.endswith(".arrow"))
                versions[split] = hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]
        out = {}
        for r in records:
            prefix, _, row = (r.source or "").rpartition("#")
            if prefix in versions:
                out[r.relpath] = {"size": None, "version": f"{versions[prefix]}#{row}"}
        return out


def _datasets():
    """The Hugging Face ``datasets`` library, or an ImportError saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise ImportError("hf: reading Hugging Face datasets needs the datasets library: "
                          "pip install 'lossyvision[hf]'") from None
    return datasets


def _class_label_names(features: Any, column: str) -> list[str] | None:
    """The names of a ``ClassLabel`` feature, or None for any other column type."""
    if features is None or column not in features:
        return None
    names = getattr(features[column], "names", None)
    return [str(n) for n in names] if names else None
