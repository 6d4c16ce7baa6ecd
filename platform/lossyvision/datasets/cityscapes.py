"""Cityscapes semantic segmentation: ``leftImg8bit/`` images with ``gtFine/`` label PNGs.

Layout (the folder holding ``leftImg8bit/`` and ``gtFine/`` is the root)::

    leftImg8bit/<split>/<city>/<name>_leftImg8bit.png
    gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png   preferred, if present
    gtFine/<split>/<city>/<name>_gtFine_labelIds.png        else: mapped to train ids

``_labelTrainIds.png`` files are what cityscapesScripts' ``createTrainIdLabelImgs`` writes; when
only the raw ``_labelIds.png`` exist, :meth:`CityscapesReader.load_target` maps the 34 label ids
to the 19 train ids with :data:`LABEL_ID_TO_TRAIN_ID` (255 = ignored in training and evaluation).
Options:

- ``splits``: split folders to read (default ``["train", "val"]``: the public test split's
  labels are blank placeholders);
- ``split_map``: rename splits in the records, e.g. ``{"val": "test"}``;
- ``gt``: the annotation folder (default ``gtFine``; ``gtCoarse`` also works for train).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from lossyvision.datasets._files import is_image, parse_split_map, parse_splits, unsupported
from lossyvision.datasets.base import DATASETS, TASK_SEGMENTATION, DatasetReader, Record, sorted_records
from lossyvision.store import join, read_bytes

IGNORE_INDEX = 255

# cityscapesScripts' helpers/labels.py: (label id, name, train id). The 'license plate' label
# (id -1) never appears in the label PNGs and is left out.
CITYSCAPES_LABELS = (
    (0, "unlabeled", 255), (1, "ego vehicle", 255), (2, "rectification border", 255),
    (3, "out of roi", 255), (4, "static", 255), (5, "dynamic", 255), (6, "ground", 255),
    (7, "road", 0), (8, "sidewalk", 1), (9, "parking", 255), (10, "rail track", 255),
    (11, "building", 2), (12, "wall", 3), (13, "fence", 4), (14, "guard rail", 255),
    (15, "bridge", 255), (16, "tunnel", 255), (17, "pole", 5), (18, "polegroup", 255),
    (19, "traffic light", 6), (20, "traffic sign", 7), (21, "vegetation", 8), (22, "terrain", 9),
    (23, "sky", 10), (24, "person", 11), (25, "rider", 12), (26, "car", 13), (27, "truck", 14),
    (28, "bus", 15), (29, "caravan", 255), (30, "trailer", 255), (31, "train", 16),
    (32, "motorcycle", 17), (33, "bicycle", 18),
)
LABEL_ID_TO_TRAIN_ID = {label_id: train_id for label_id, _, train_id in CITYSCAPES_LABELS}
CITYSCAPES_CLASSES = tuple(name for _, name, train_id in sorted(CITYSCAPES_LABELS, key=lambda t: t[2])
                           if train_id != IGNORE_INDEX)

_LUT = np.full(256, IGNORE_INDEX, np.uint8)  # any value outside 0..33 is ignored too
for _id, _train in LABEL_ID_TO_TRAIN_ID.items():
    _LUT[_id] = _train

IMAGE_SUFFIX = "_leftImg8bit"
TRAIN_IDS_SUFFIX = "_labelTrainIds.png"
LABEL_IDS_SUFFIX = "_labelIds.png"
SPLITS = ("train", "val", "test", "train_extra")


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a uint8 mask of Cityscapes label ids to train ids (0..18, 255 ignored)."""
    return _LUT[label_ids]


@DATASETS.register("cityscapes")
class CityscapesReader(DatasetReader):
    """Cityscapes fine annotations; targets are uint8 HxW masks of train ids."""

    name = "cityscapes"
    task = TASK_SEGMENTATION

    def __init__(self, root: str, **options: Any) -> None:
        super().__init__(root, **options)
        unknown = set(options) - {"splits", "split_map", "gt"}
        if unknown:
            raise ValueError(f"cityscapes: unknown option(s) {sorted(unknown)}; known: gt, split_map, splits")
        self.split_names = parse_splits("cityscapes", options.get("splits", ("train", "val")), SPLITS)
        self.split_map = parse_split_map("cityscapes", options.get("split_map"))
        self.gt = str(options.get("gt", "gtFine"))
        self._records: list[Record] | None = None

    @property
    def classes(self) -> list[str]:
        return list(CITYSCAPES_CLASSES)

    @property
    def ignore_index(self) -> int:
        return IGNORE_INDEX

    def records(self) -> list[Record]:
        if self._records is None:
            self._records = self._scan()
        return list(self._records)

    def _scan(self) -> list[Record]:
        records = []
        for split in self.split_names:
            files = self.list_files(f"leftImg8bit/{split}")
            self.skip(unsupported(files))
            images = [p for p in files if is_image(p)]
            if not images:
                raise ValueError(f"cityscapes: no images under {join(self.root, 'leftImg8bit', split)}")
            labels = set(self.list_files(f"{self.gt}/{split}"))
            for rel in images:
                parts = rel.split("/")
                stem = parts[-1].rsplit(".", 1)[0]
                if len(parts) != 4 or not stem.endswith(IMAGE_SUFFIX):
                    raise ValueError(f"cityscapes: {join(self.root, rel)} is not "
                                     f"leftImg8bit/<split>/<city>/<name>{IMAGE_SUFFIX}.png")
                base = f"{self.gt}/{split}/{parts[2]}/{stem[: -len(IMAGE_SUFFIX)]}_{self.gt}"
                target = next((base + s for s in (TRAIN_IDS_SUFFIX, LABEL_IDS_SUFFIX) if base + s in labels), None)
                if target is None:
                    raise ValueError(f"cityscapes: {join(self.root, base + TRAIN_IDS_SUFFIX)} not found "
                                     f"(nor {LABEL_IDS_SUFFIX}) for {join(self.root, rel)}")
                records.append(Record(relpath=rel, split=self.split_map.get(split, split), target=target))
        return sorted_records(records)

    def load_target(self, record: Record) -> np.ndarray:
        """The uint8 HxW train-id mask (0..18, 255 ignored) of ``record``."""
        from PIL import Image

        if record.target is None:
            raise ValueError(f"cityscapes: record {record.relpath} has no annotation")
        uri = join(self.root, record.target)
        try:
            with Image.open(io.BytesIO(read_bytes(uri))) as img:
                mask = np.asarray(img)
        except Exception as e:  # PIL raises several types for broken files
            raise ValueError(f"cityscapes: cannot read label image {uri} ({e})") from None
        if mask.ndim != 2:
            raise ValueError(f"cityscapes: {uri} is not a single-channel label image (shape {mask.shape})")
        if mask.dtype != np.uint8:
            if mask.min() < 0 or mask.max() > 255:
                raise ValueError(f"cityscapes: {uri} has label values outside 0..255")
            mask = mask.astype(np.uint8)
        if record.target.endswith(LABEL_IDS_SUFFIX):
            return label_ids_to_train_ids(mask)
        bad = (mask >= len(CITYSCAPES_CLASSES)) & (mask != IGNORE_INDEX)
        if bad.any():
            raise ValueError(f"cityscapes: {uri} holds values other than train ids 0..18 and 255 "
                             f"(e.g. {int(mask[bad][0])}): is it a labelIds image?")
        return np.ascontiguousarray(mask)
