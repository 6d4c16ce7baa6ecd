"""Food-101: ``images/<class>/<id>.jpg`` with the official split files in ``meta/``.

Layout (the extracted ``food-101`` folder is the root)::

    meta/classes.txt          one class name per line; label = line index
    meta/train.txt            lines ``<class>/<id>`` (no extension) -> split "train"
    meta/test.txt             lines ``<class>/<id>``                -> split "test"
    images/<class>/<id>.jpg

Every listed image must exist and every listed class must be in classes.txt; images present on
disk but in neither list are left out (as the official splits do).
"""

from __future__ import annotations

from typing import Any

from lossyvision.datasets._files import read_lines
from lossyvision.datasets.base import DATASETS, TASK_CLASSIFICATION, DatasetReader, Record, sorted_records
from lossyvision.store import join

SPLITS = ("train", "test")


@DATASETS.register("food101")
class Food101Reader(DatasetReader):
    """Food-101 with its official train/test split (75,750 / 25,250 images on the full set)."""

    name = "food101"
    task = TASK_CLASSIFICATION

    def __init__(self, root: str, **options: Any) -> None:
        super().__init__(root, **options)
        if options:
            raise ValueError(f"food101: unknown option(s) {sorted(options)}; it takes none")
        self._classes: list[str] | None = None
        self._records: list[Record] | None = None

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            names = read_lines("food101", self.root, "meta/classes.txt")
            if not names:
                raise ValueError(f"food101: {join(self.root, 'meta/classes.txt')} is empty")
            if len(set(names)) != len(names):
                raise ValueError(f"food101: {join(self.root, 'meta/classes.txt')} lists a class twice")
            self._classes = names
        return list(self._classes)

    def records(self) -> list[Record]:
        if self._records is None:
            self._records = self._scan()
        return list(self._records)

    def _scan(self) -> list[Record]:
        label = {c: i for i, c in enumerate(self.classes)}
        on_disk = set(self.list_files("images"))
        records = []
        for split in SPLITS:
            list_uri = join(self.root, f"meta/{split}.txt")
            for line in read_lines("food101", self.root, f"meta/{split}.txt"):
                cls, sep, image_id = line.partition("/")
                if not sep or not image_id or "/" in image_id:
                    raise ValueError(f"food101: {list_uri}: line {line!r} is not <class>/<id>")
                if cls not in label:
                    raise ValueError(f"food101: {list_uri}: class {cls!r} is not in meta/classes.txt")
                relpath = f"images/{line}.jpg"
                if self.skipped_reason(relpath):
                    continue  # a FIFO, a link outside the root: recorded in self.skipped, not read
                if relpath not in on_disk:
                    raise ValueError(f"food101: {join(self.root, relpath)} not found (listed in {list_uri})")
                records.append(Record(relpath=relpath, split=split, label=label[cls]))
        return sorted_records(records)
