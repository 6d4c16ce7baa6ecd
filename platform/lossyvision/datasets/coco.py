"""COCO: detection boxes (and optionally masks) from ``instances_*.json`` annotation files.

Layout (COCO 2017; the folder holding ``annotations/`` is the root)::

    annotations/instances_train2017.json
    annotations/instances_val2017.json
    train2017/000000000009.jpg
    val2017/000000000139.jpg

The split comes from the annotation file's name: ``instances_train2017.json`` is split "train"
(a trailing year is dropped; ``split_map`` renames, e.g. ``{"val": "test"}``). An image's
``file_name`` is looked up under ``<name>/`` (``train2017/``), ``images/<name>/``, ``images/``, the
annotation file's folder and the root, in that order; the first that holds it wins. An image
found nowhere keeps the first candidate, and the compress job records it as "file not found".
Exports that put ``_annotations.coco.json`` inside each split folder (``train/``, ``valid/``) work
too: the split is then the folder's name.

Options:

- ``annotations``: the annotation files (relpaths under the root); default every
  ``annotations/instances_*.json``, else every ``*/_annotations.coco.json``;
- ``split_map``: rename splits;
- ``image_dir``: the folder (under the root) that holds every image, instead of the search above;
- ``masks``: ``true`` turns the dataset into semantic segmentation (below); it needs
  ``pycocotools`` (the ``coco`` extra).

Detection targets (:meth:`COCOReader.load_target`), like the VOC reader's: ``boxes`` float32 Nx4
``(x, y, x + w, y + h)`` in pixels (COCO boxes are already continuous coordinates), ``labels``
int64 (index into :attr:`classes`, the categories sorted by id) and ``difficult`` bool: COCO's
``iscrowd``, which the detection task treats as VOC treats "difficult" (left out of training,
neither TP nor FP in evaluation). Images without annotations are kept, as negatives.

Segmentation targets (``masks: true``): a uint8 HxW mask per image, 0 = ``background`` (the
first class), ``k + 1`` = category ``k``, 255 = crowd regions (ignored). Objects are painted
largest first, so a small object on a large one stays visible. Polygons and RLE are decoded with
pycocotools, as the COCO API does.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any

import numpy as np

from lossyvision.datasets._files import parse_split_map
from lossyvision.datasets._labels import check_options
from lossyvision.datasets.base import (
    DATASETS,
    TASK_DETECTION,
    TASK_SEGMENTATION,
    DatasetReader,
    Record,
    sorted_records,
)
from lossyvision.store import join, read_bytes

OPTIONS = ("annotations", "split_map", "image_dir", "masks")
IGNORE_INDEX = 255
BACKGROUND = "background"
_YEAR = re.compile(r"(?<=[A-Za-z])\d{4}$")


def split_of(annotation_relpath: str) -> tuple[str, str]:
    """``(split, image folder name)`` of an annotation file: ``instances_val2017.json`` -> ("val", "val2017")."""
    base = posixpath.basename(annotation_relpath)
    stem = base[:-len(".json")] if base.endswith(".json") else base
    if stem.startswith("instances_") and len(stem) > len("instances_"):
        name = stem[len("instances_"):]
    else:
        name = posixpath.basename(posixpath.dirname(annotation_relpath)) or stem
    return _YEAR.sub("", name) or name, name


class _Image:
    """One image of an annotation file: its relpath, size and annotations."""

    __slots__ = ("relpath", "width", "height", "annotations", "source")

    def __init__(self, relpath: str, width: int, height: int, source: str) -> None:
        self.relpath, self.width, self.height, self.source = relpath, width, height, source
        self.annotations: list[dict[str, Any]] = []


@DATASETS.register("coco")
class COCOReader(DatasetReader):
    """COCO ``instances_*.json``: detection boxes, or semantic masks with ``masks: true``."""

    name = "coco"
    task = TASK_DETECTION

    def __init__(self, root: str, **options: Any) -> None:
        super().__init__(root, **options)
        check_options("coco", options, OPTIONS)
        annotations = options.get("annotations")
        if annotations is not None:
            if isinstance(annotations, str):
                annotations = [annotations]
            if not isinstance(annotations, list) or not annotations or not all(
                    isinstance(a, str) and a for a in annotations):
                raise ValueError(f"coco: option annotations must be a list of annotation files, got {annotations!r}")
        self.annotation_files: list[str] | None = annotations
        self.split_map = parse_split_map("coco", options.get("split_map"))
        image_dir = options.get("image_dir")
        if image_dir is not None and not isinstance(image_dir, str):
            raise ValueError(f"coco: option image_dir must be a folder under the root, got {image_dir!r}")
        self.image_dir: str | None = image_dir.strip("/") if image_dir is not None else None
        masks = options.get("masks", False)
        if not isinstance(masks, bool):
            raise ValueError(f"coco: option masks must be true or false, got {masks!r}")
        self.masks = masks
        self.task = TASK_SEGMENTATION if masks else TASK_DETECTION
        self._categories: list[tuple[int, str]] | None = None
        self._images: dict[str, _Image] | None = None
        self._records: list[Record] | None = None

    # ------------------------------------------------------------------ classes
    @property
    def classes(self) -> list[str]:
        if self._categories is None:
            self._scan()
        assert self._categories is not None
        names = [name for _, name in self._categories]
        return [BACKGROUND, *names] if self.masks else names

    @property
    def ignore_index(self) -> int:
        return IGNORE_INDEX

    def records(self) -> list[Record]:
        if self._records is None:
            self._scan()
        assert self._records is not None
        return list(self._records)

    # ------------------------------------------------------------------ scanning
    def _annotation_relpaths(self, files: list[str]) -> list[str]:
        if self.annotation_files is not None:
            missing = [a for a in self.annotation_files if a.strip("/") not in set(files)]
            if missing:
                raise ValueError(f"coco: annotation file {join(self.root, missing[0])} not found")
            return [a.strip("/") for a in self.annotation_files]
        found = [f for f in files if re.fullmatch(r"annotations/instances_[^/]+\.json", f)]
        found = found or [f for f in files if re.fullmatch(r"[^/]+/_annotations\.coco\.json", f)]
        if not found:
            raise ValueError(f"coco: no annotation files under {self.root} (expected annotations/instances_*.json "
                             "or <split>/_annotations.coco.json; or give option annotations)")
        return found

    def _load_json(self, relpath: str) -> dict[str, Any]:
        uri = join(self.root, relpath)
        try:
            data = json.loads(read_bytes(uri))
        except json.JSONDecodeError as e:
            raise ValueError(f"coco: {uri} is not valid JSON ({e.msg} at line {e.lineno})") from None
        except UnicodeDecodeError:
            raise ValueError(f"coco: {uri} is not UTF-8 JSON") from None
        if not isinstance(data, dict):
            raise ValueError(f"coco: {uri} is not a COCO annotation file (no top-level object)")
        for key in ("images", "categories"):
            if not isinstance(data.get(key), list):
                raise ValueError(f"coco: {uri} has no {key!r} list")
        if not isinstance(data.get("annotations", []), list):
            raise ValueError(f"coco: {uri}: 'annotations' is not a list")
        return data

    def _locate(self, file_name: str, folder: str, annotation_relpath: str, on_disk: set[str]) -> str:
        if self.image_dir is not None:
            return posixpath.join(self.image_dir, file_name) if self.image_dir else file_name
        ann_dir = posixpath.dirname(annotation_relpath)
        candidates = [posixpath.join(folder, file_name), posixpath.join("images", folder, file_name),
                      posixpath.join("images", file_name), posixpath.join(ann_dir, file_name), file_name]
        return next((c for c in candidates if c in on_disk), candidates[0])

    def _scan(self) -> None:
        files = self.list_files()
        on_disk = set(files)
        categories: dict[int, str] = {}
        images: dict[str, _Image] = {}
        records: list[Record] = []
        for ann_rel in self._annotation_relpaths(files):
            uri = join(self.root, ann_rel)
            data = self._load_json(ann_rel)
            split, folder = split_of(ann_rel)
            for i, cat in enumerate(data["categories"]):
                try:
                    cid, cname = int(cat["id"]), str(cat["name"])
                except (KeyError, TypeError, ValueError):
                    raise ValueError(f"coco: {uri}: category {i} has no valid id and name") from None
                if categories.setdefault(cid, cname) != cname:
                    raise ValueError(f"coco: {uri}: category id {cid} is {cname!r} here but "
                                     f"{categories[cid]!r} in another annotation file")
            by_id: dict[Any, _Image] = {}
            for i, img in enumerate(data["images"]):
                try:
                    image_id, file_name = img["id"], str(img["file_name"]).replace("\\", "/").lstrip("/")
                    width, height = int(img["width"]), int(img["height"])
                except (KeyError, TypeError, ValueError):
                    raise ValueError(f"coco: {uri}: image {i} needs id, file_name, width and height") from None
                if not file_name or ".." in file_name.split("/"):
                    raise ValueError(f"coco: {uri}: image {image_id} has file_name {img['file_name']!r}")
                if image_id in by_id:
                    raise ValueError(f"coco: {uri}: image id {image_id} is listed twice")
                relpath = self._locate(file_name, folder, ann_rel, on_disk)
                if relpath in images:
                    raise ValueError(f"coco: {uri}: image {relpath} is also listed in another split")
                entry = _Image(relpath, width, height, ann_rel)
                by_id[image_id] = images[relpath] = entry
                records.append(Record(relpath=relpath, split=self.split_map.get(split, split), target=ann_rel))
            for i, ann in enumerate(data.get("annotations", [])):
                where = f"coco: {uri}: annotation {ann.get('id', i) if isinstance(ann, dict) else i}"
                if not isinstance(ann, dict) or ann.get("image_id") not in by_id:
                    raise ValueError(f"{where} refers to no listed image")
                if ann.get("category_id") not in categories:
                    raise ValueError(f"{where} has unknown category_id {ann.get('category_id')!r}")
                ann["bbox"] = _check_bbox(ann.get("bbox"), where)
                by_id[ann["image_id"]].annotations.append(ann)
        if not records:
            raise ValueError(f"coco: the annotation files under {self.root} list no images")
        ordered = sorted(categories.items())
        names = [n for _, n in ordered]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"coco: category name(s) {dupes} used by more than one category id")
        if self.masks and len(ordered) + 1 >= IGNORE_INDEX:
            raise ValueError(f"coco: {len(ordered)} categories do not fit a uint8 mask with 255 ignored")
        self._categories = ordered
        self._images = images
        self._records = sorted_records(records)

    # ------------------------------------------------------------------ targets
    def load_target(self, record: Record) -> Any:
        """Detection: dict of ``boxes``/``labels``/``difficult``; ``masks: true``: the uint8 label mask."""
        if self._images is None:
            self._scan()
        assert self._images is not None and self._categories is not None
        image = self._images.get(record.relpath)
        if image is None:
            raise ValueError(f"coco: {record.relpath} is not in the annotation files")
        label = {cid: k for k, (cid, _) in enumerate(self._categories)}
        if self.masks:
            return self._mask(image, label)
        anns = image.annotations
        boxes = [(x, y, x + w, y + h) for x, y, w, h in (a["bbox"] for a in anns)]
        return {
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "labels": np.asarray([label[a["category_id"]] for a in anns], np.int64),
            "difficult": np.asarray([bool(a.get("iscrowd", 0)) for a in anns], bool),
        }

    def _mask(self, image: _Image, label: dict[int, int]) -> np.ndarray:
        try:
            from pycocotools import mask as mask_utils
        except ImportError:
            raise ImportError("coco: masks: true needs pycocotools: pip install 'lossyvision[coco]'") from None
        h, w = image.height, image.width
        out = np.zeros((h, w), np.uint8)
        for ann in sorted(image.annotations, key=lambda a: -float(a.get("area") or a["bbox"][2] * a["bbox"][3])):
            segm = ann.get("segmentation")
            if not segm:
                continue
            try:
                if isinstance(segm, list):
                    rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
                elif isinstance(segm.get("counts"), list):
                    rle = mask_utils.frPyObjects(segm, h, w)
                else:
                    rle = segm
                m = mask_utils.decode(rle).astype(bool)
            except Exception as e:  # pycocotools raises TypeError/ValueError on malformed input
                raise ValueError(f"coco: {join(self.root, image.source)}: annotation {ann.get('id')} has an "
                                 f"unreadable segmentation ({e})") from None
            if m.shape != (h, w):
                raise ValueError(f"coco: {join(self.root, image.source)}: annotation {ann.get('id')}'s mask is "
                                 f"{m.shape[1]}x{m.shape[0]}, its image {w}x{h}")
            out[m] = IGNORE_INDEX if ann.get("iscrowd", 0) else label[ann["category_id"]] + 1
        return out


def _check_bbox(bbox: Any, where: str) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ValueError(f"{where} has no valid bbox [x, y, width, height]: {bbox!r}") from None
    if not all(np.isfinite((x, y, w, h))) or w < 0 or h < 0:
        raise ValueError(f"{where} has an invalid bbox {bbox!r} (negative or non-finite size)")
    return x, y, w, h
