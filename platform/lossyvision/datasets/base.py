"""Dataset readers: they list a dataset's images as :class:`Record` rows and load targets.

A reader knows a layout on disk (ImageFolder, Food101, VOC, Cityscapes, COCO, CSV lists, Hugging
Face datasets, WebDataset shards); it never decodes images for training itself. Paths go through
:mod:`lossyvision.store` so roots may be ``s3://``.

Where an image's bytes are: by default the file ``root/relpath``. A reader whose images live
elsewhere (a URI listed in a CSV, a member of a tar shard, a row of an Arrow table) sets
``Record.source`` and overrides :meth:`DatasetReader.read_source` and
:meth:`DatasetReader.source_info`; the compress job and ``lossyvision inspect`` read originals only
through these, so every kind gets the same normalisation and bad-input handling.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from lossyvision.datasets._files import Skipped, scan
from lossyvision.registry import Registry
from lossyvision.store import filesystem, join, read_bytes

TASK_CLASSIFICATION = "classification"
TASK_DETECTION = "detection"
TASK_SEGMENTATION = "segmentation"


@dataclass(frozen=True)
class Record:
    """One source image of a dataset.

    ``relpath`` is relative to the dataset root, POSIX style; it keys the image everywhere
    (store layout, manifest, results). ``label`` is the class index for classification;
    ``target`` is the relpath of an annotation file (VOC XML, Cityscapes label PNG) or None.
    ``source`` says where the bytes are when that is not the file ``root/relpath``: a URI, or a
    locator only the record's reader understands (see :meth:`DatasetReader.read_source`).
    """

    relpath: str
    split: str
    label: int | None = None
    target: str | None = None
    source: str | None = None


class DatasetReader(ABC):
    """Lists a dataset's records. Subclasses register with ``@DATASETS.register(name)``.

    ``skipped`` collects the files a scan did not read and why (FIFOs, devices, links outside the
    root, files of unsupported types): they are recorded, never dropped silently.
    """

    name: str = ""
    task: str = TASK_CLASSIFICATION
    #: True when every record's bytes are the whole file at :meth:`source_uri`, so any process can
    #: read them with ``store.read_bytes``; False when :meth:`read_source` is needed (a tar member,
    #: an Arrow row), and the compress workers rebuild the reader to read.
    whole_files: bool = True
    #: Follow symlinks whose target is outside the root (the dataset option of the same name).
    allow_outside_symlinks: bool = False
    #: Whether the root may be a single file (a CSV list, a Parquet file, a tar shard), not a folder.
    root_may_be_file: bool = False

    def __init__(self, root: str, **options: Any) -> None:
        self.root = str(root)
        self.options = options
        self._skipped: dict[str, Skipped] = {}

    @property
    def skipped(self) -> list[Skipped]:
        """Files a scan did not read, with the reason, sorted by relpath."""
        return sorted(self._skipped.values(), key=lambda s: s.relpath)

    def list_files(self, sub: str = "") -> list[str]:
        """The regular files under ``root/sub`` (relative to the root); the rest goes to ``skipped``."""
        listing = scan(self.name, self.root, sub, allow_outside_symlinks=self.allow_outside_symlinks)
        self.skip(listing.skipped)
        return listing.files

    def skip(self, entries: Iterable[Skipped]) -> None:
        for s in entries:
            self._skipped.setdefault(s.relpath, s)

    def skipped_reason(self, relpath: str) -> str | None:
        """Why ``relpath`` was skipped, or None if it was not."""
        s = self._skipped.get(relpath)
        return s.reason if s else None

    @property
    @abstractmethod
    def classes(self) -> list[str]:
        """Class names, index = label (detection/segmentation: the category names)."""

    @abstractmethod
    def records(self) -> list[Record]:
        """All images, in a deterministic order (sorted by split then relpath)."""

    def load_target(self, record: Record) -> Any:
        """The annotation of ``record`` (classification: its label)."""
        return record.label

    def source_uri(self, record: Record) -> str:
        """Where ``record``'s bytes are, for messages and grouping (a file URI unless ``whole_files`` is False)."""
        return record.source or join(self.root, record.relpath)

    def read_source(self, record: Record) -> bytes:
        """The original bytes of ``record`` (an image file's content), exactly as stored."""
        return read_bytes(self.source_uri(record))

    def source_info(self, records: Sequence[Record]) -> dict[str, dict[str, Any]]:
        """``relpath -> {"size": bytes or None, "version": str}`` of the sources as they are now.

        The compress job redoes an image whose size or version changed since its manifest row
        (``size`` None: compared by version only). Default: one listing of the root.
        """
        return file_versions(self.root)

    def splits(self) -> list[str]:
        return sorted({r.split for r in self.records()})

    def select(self, split: str) -> list[Record]:
        return [r for r in self.records() if r.split == split]


DATASETS: Registry[type[DatasetReader]] = Registry("dataset")


def create_dataset(kind: str, root: str, **options: Any) -> DatasetReader:
    """Build a registered dataset reader (``create_dataset('food101', '/data/food-101')``).

    ``allow_outside_symlinks`` (bool, any layout) follows symlinks whose target lies outside the
    root; by default they are refused and recorded in ``reader.skipped``.
    """
    allow = options.pop("allow_outside_symlinks", False)
    if not isinstance(allow, bool):
        raise ValueError(f"{kind}: option allow_outside_symlinks must be true or false, got {allow!r}")
    reader = DATASETS.get(kind)(root, **options)
    reader.allow_outside_symlinks = allow
    return reader


def sorted_records(records: Iterable[Record]) -> list[Record]:
    return sorted(records, key=lambda r: (r.split, r.relpath))


def file_versions(root: str) -> dict[str, dict[str, Any]]:
    """``relpath -> {"size", "version"}`` of every file under ``root``, in one listing.

    The version is the modification time locally, the ETag (or last-modified) on object stores.
    """
    fs, root_path = filesystem(root)
    root_path = root_path.rstrip("/")
    found = {}
    for path, info in fs.find(root_path, detail=True).items():
        rel = path[len(root_path) + 1:] if path.startswith(root_path + "/") else path
        found[rel.replace(os.sep, "/")] = file_info(info)
    return found


def file_info(info: dict[str, Any]) -> dict[str, Any]:
    """``{"size", "version"}`` from an fsspec ``info`` dict (mtime locally, ETag on object stores)."""
    version = info.get("mtime", info.get("ETag", info.get("LastModified", info.get("last_modified"))))
    return {"size": int(info.get("size") or 0), "version": "" if version is None else str(version)}


class ScannedReader(DatasetReader):
    """A reader that lists its dataset once, on first use: :meth:`_scan` sets ``_classes`` and ``_records``."""

    _classes: list[str] | None = None
    _records: list[Record] | None = None

    @abstractmethod
    def _scan(self) -> None:
        """List the dataset: set ``self._classes`` and ``self._records``."""

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            self._scan()
        assert self._classes is not None
        return list(self._classes)

    def records(self) -> list[Record]:
        if self._records is None:
            self._scan()
        assert self._records is not None
        return list(self._records)
