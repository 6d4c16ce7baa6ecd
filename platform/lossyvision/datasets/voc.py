"""PASCAL VOC detection: ``Annotations/*.xml``, ``JPEGImages/*.jpg``, ``ImageSets/Main/<split>.txt``.

The root is the ``VOC2012`` (or ``VOC2007``) folder. A parent holding it is accepted too:
``VOCdevkit/`` or the folder the tarball was extracted into (``<root>/VOCdevkit/VOC2012``); the
records' relpaths then keep that prefix, so ``root/relpath`` always names the file.

Splits are the list files' names, kept as on disk: "train" and "val" by default (VOC2012 has no
public test annotations). Options:

- ``splits``: which of train, val, trainval, test to read (default ``["train", "val"]``);
- ``split_map``: rename splits in the records, e.g. ``{"val": "test"}``;
- ``year``: which ``VOC<year>`` folder to look for under a parent (default 2012).

Boxes. VOC stores 1-based inclusive pixel indices: ``xmin=1, xmax=W`` spans the whole image. In
continuous coordinates that is ``[xmin - 1, xmax]``, so ``load_target`` subtracts 1 from xmin and
ymin only, as detectron2 does (``pascal_voc.py``); torchvision leaves VOC boxes as stored, and
MMDetection subtracts 1 from all four (its legacy inclusive-pixel convention) — a half-pixel
difference in box centres, far below anything mAP@0.5 notices.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from lossyvision.datasets._files import parse_split_map, parse_splits, read_lines
from lossyvision.datasets.base import DATASETS, TASK_DETECTION, DatasetReader, Record, sorted_records
from lossyvision.store import exists, join, read_bytes

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
VOC_SPLITS = ("train", "val", "trainval", "test")
_CLASS_INDEX = {name: i for i, name in enumerate(VOC_CLASSES)}


@DATASETS.register("voc")
class VOCReader(DatasetReader):
    """PASCAL VOC detection boxes; targets are dicts of numpy arrays (see :meth:`load_target`)."""

    name = "voc"
    task = TASK_DETECTION

    def __init__(self, root: str, **options: Any) -> None:
        super().__init__(root, **options)
        unknown = set(options) - {"splits", "split_map", "year"}
        if unknown:
            raise ValueError(f"voc: unknown option(s) {sorted(unknown)}; known: split_map, splits, year")
        self.split_names = parse_splits("voc", options.get("splits", ("train", "val")), VOC_SPLITS)
        self.split_map = parse_split_map("voc", options.get("split_map"))
        self.year = str(options.get("year", 2012))
        self._prefix: str | None = None
        self._records: list[Record] | None = None

    @property
    def classes(self) -> list[str]:
        return list(VOC_CLASSES)

    @property
    def prefix(self) -> str:
        """Where the VOC folder sits inside the root: ``""``, ``"VOC2012/"`` or ``"VOCdevkit/VOC2012/"``."""
        if self._prefix is None:
            voc = f"VOC{self.year}"
            for prefix in ("", f"{voc}/", f"VOCdevkit/{voc}/"):
                if exists(join(self.root, prefix + "Annotations")):
                    self._prefix = prefix
                    break
            else:
                raise ValueError(f"voc: {join(self.root, 'Annotations')} not found (expected the {voc} folder "
                                 f"with Annotations/, JPEGImages/ and ImageSets/Main/, or a parent "
                                 f"holding {voc}/ or VOCdevkit/{voc}/)")
        return self._prefix

    def records(self) -> list[Record]:
        if self._records is None:
            self._records = self._scan()
        return list(self._records)

    def _scan(self) -> list[Record]:
        p = self.prefix
        annotations = set(self.list_files(p + "Annotations"))
        images = set(self.list_files(p + "JPEGImages"))
        records = []
        for split in self.split_names:
            list_rel = f"{p}ImageSets/Main/{split}.txt"
            for image_id in read_lines("voc", self.root, list_rel):
                image_id = image_id.split()[0]  # per-class lists carry a second column
                image, xml = f"{p}JPEGImages/{image_id}.jpg", f"{p}Annotations/{image_id}.xml"
                if self.skipped_reason(image) or self.skipped_reason(xml):
                    continue  # a FIFO, a link outside the root: recorded in self.skipped, not read
                for rel, listed in ((image, images), (xml, annotations)):
                    if rel not in listed:
                        raise ValueError(f"voc: {join(self.root, rel)} not found "
                                         f"(listed in {join(self.root, list_rel)})")
                records.append(Record(relpath=image, split=self.split_map.get(split, split), target=xml))
        return sorted_records(records)

    def load_target(self, record: Record) -> dict[str, np.ndarray]:
        """The boxes of one image from its XML.

        Returns ``boxes`` float32 Nx4 (x1, y1, x2, y2 in pixels, x1/y1 made 0-based as above),
        ``labels`` int64 N (index in :data:`VOC_CLASSES`), ``difficult`` bool N.
        """
        if record.target is None:
            raise ValueError(f"voc: record {record.relpath} has no annotation")
        uri = join(self.root, record.target)
        return parse_voc_xml(read_bytes(uri), uri)


def parse_voc_xml(data: bytes, where: str = "<xml>") -> dict[str, np.ndarray]:
    """Parse one VOC annotation (bytes) into boxes/labels/difficult arrays; ``where`` names it in errors."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise ValueError(f"voc: {where} is not valid XML ({e})") from None
    boxes, labels, difficult = [], [], []
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in _CLASS_INDEX:
            raise ValueError(f"voc: {where}: object {i} has unknown class {name!r}")
        box = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[union-attr,arg-type]
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"voc: {where}: object {i} ({name}) has no valid bndbox") from None
        if xmax < xmin or ymax < ymin:
            raise ValueError(f"voc: {where}: object {i} ({name}) has an inverted box "
                             f"({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})")
        boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))
        labels.append(_CLASS_INDEX[name])
        difficult.append((obj.findtext("difficult") or "0").strip() not in ("0", ""))
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, np.int64),
        "difficult": np.asarray(difficult, bool),
    }
