"""ImageFolder: one folder per class, optionally inside ``train/``, ``val/`` and ``test/`` split folders.

Layouts::

    root/<class>/<image>                    everything is split "train" (or see test_fraction)
    root/{train,val,test}/<class>/<image>   the split is the folder's name

Images may sit deeper inside a class folder (``<class>/a/b.jpg``); the class is the first folder.
Labels are indices into the sorted union of class names over all splits, so a label means the
same class in every split. Options:

- ``test_fraction`` (0 < f < 1, only without split folders): a deterministic per-class split.
  Within each class, images are ordered by the SHA-1 of their relpath and the first
  ``f * n`` (rounded half up) become "test" — the same files on every run and machine, balanced per class.
- ``split_folders`` (bool): force or forbid reading the top-level folders as splits. By default
  they are splits when every top-level folder holding images is named train, val or test.
"""

from __future__ import annotations

from typing import Any

from lossyvision.datasets._files import IMAGE_EXTENSIONS, is_image, unsupported
from lossyvision.datasets._labels import check_options, hash_split, parse_test_fraction
from lossyvision.datasets.base import DATASETS, TASK_CLASSIFICATION, Record, ScannedReader, sorted_records

SPLIT_FOLDERS = ("train", "val", "test")


@DATASETS.register("imagefolder")
class ImageFolderReader(ScannedReader):
    """Class folders of images, with or without split folders."""

    name = "imagefolder"
    task = TASK_CLASSIFICATION

    def __init__(self, root: str, **options: Any) -> None:
        super().__init__(root, **options)
        check_options("imagefolder", options, ("split_folders", "test_fraction"))
        self.test_fraction = parse_test_fraction("imagefolder", options.get("test_fraction"))
        self.split_folders: bool | None = options.get("split_folders")

    def _scan(self) -> None:
        files = self.list_files()
        self.skip(unsupported(files))  # counted by extension in the compress summary, not dropped silently
        images = [p for p in files if is_image(p)]
        if not images:
            raise ValueError(f"imagefolder: no images ({', '.join(IMAGE_EXTENSIONS)}) found under {self.root}; "
                             "expected <class>/<image> or <split>/<class>/<image>")
        top = {p.split("/", 1)[0] for p in images if "/" in p}
        use_splits = self.split_folders
        if use_splits is None:
            use_splits = bool(top) and top <= set(SPLIT_FOLDERS)
        if use_splits and self.test_fraction is not None:
            raise ValueError(f"imagefolder: {self.root} has split folders ({', '.join(sorted(top))}); "
                             "test_fraction only applies to a layout without them")
        depth = 2 if use_splits else 1  # folders before the image: <split>/<class>/ or <class>/
        layout = "<split>/<class>/<image>" if use_splits else "<class>/<image>"
        items: list[tuple[str, str, str]] = []  # (split, class, relpath)
        for rel in images:
            parts = rel.split("/")
            if len(parts) <= depth:
                raise ValueError(f"imagefolder: {self.root}/{rel} is not inside a class folder (expected {layout})")
            if use_splits:
                if parts[0] not in SPLIT_FOLDERS:
                    raise ValueError(f"imagefolder: {self.root}/{parts[0]} is not a split folder "
                                     f"({', '.join(SPLIT_FOLDERS)}) but the layout has split folders")
                items.append((parts[0], parts[1], rel))
            else:
                items.append(("train", parts[0], rel))
        classes = sorted({c for _, c, _ in items})
        label = {c: i for i, c in enumerate(classes)}
        if self.test_fraction is not None:
            items = hash_split(items, self.test_fraction)
        self._classes = classes
        self._records = sorted_records(Record(relpath=rel, split=split, label=label[c]) for split, c, rel in items)
