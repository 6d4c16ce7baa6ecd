"""Dataset readers: they list a dataset's images as :class:`Record` rows and load targets.

A reader knows a layout on disk (ImageFolder, Food101, VOC, Cityscapes); it never decodes
images for training itself. Paths go through :mod:`lossyvision.store` so roots may be ``s3://``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterable

from lossyvision.datasets._files import Skipped, scan
from lossyvision.registry import Registry

TASK_CLASSIFICATION = "classification"
TASK_DETECTION = "detection"
TASK_SEGMENTATION = "segmentation"


@dataclass(frozen=True)
class Record:
    """One source image of a dataset.

    ``relpath`` is relative to the dataset root, POSIX style; it keys the image everywhere
    (store layout, manifest, results). ``label`` is the class index for classification;
    ``target`` is the relpath of an annotation file (VOC XML, Cityscapes label PNG) or None.
    """

    relpath: str
    split: str
    label: int | None = None
    target: str | None = None


class DatasetReader(ABC):
    """Lists a dataset's records. Subclasses register with ``@DATASETS.register(name)``.

    ``skipped`` collects the files a scan did not read and why (FIFOs, devices, links outside the
    root, files of unsupported types): they are recorded, never dropped silently.
    """

    name: str = ""
    task: str = TASK_CLASSIFICATION
    #: Follow symlinks whose target is outside the root (the dataset option of the same name).
    allow_outside_symlinks: bool = False

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
    import lossyvision.datasets  # noqa: F401  (fills the registry)

    allow = options.pop("allow_outside_symlinks", False)
    if not isinstance(allow, bool):
        raise ValueError(f"{kind}: option allow_outside_symlinks must be true or false, got {allow!r}")
    reader = DATASETS.get(kind)(root, **options)
    reader.allow_outside_symlinks = allow
    return reader


def sorted_records(records: Iterable[Record]) -> list[Record]:
    return sorted(records, key=lambda r: (r.split, r.relpath))
