"""Tiny datasets in the shapes teams bring: COCO, a CSV/JSONL list, a Hugging Face dataset, WebDataset shards.

Plain functions, like :mod:`datasets_fixtures`, made at test time from scikit-image's bundled
photos (crops of astronaut, chelsea, coffee, rocket; public domain or CC0). Content is
deterministic. Classification sets use :data:`CLASSES` with class ``k`` cropped from
``PHOTOS[k]``; every image is a JPEG q90 unless a function says otherwise.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Sequence

from datasets_fixtures import PHOTOS, encode_image, photo_crop, write_image

CLASSES = ("astronaut", "chelsea", "coffee")
COCO_CATEGORIES = {1: "person", 5: "airplane", 17: "cat", 44: "bottle"}  # sparse ids, as COCO's
_COCO_PHOTO_CATEGORY = {"astronaut": 1, "chelsea": 17, "coffee": 44, "rocket": 5}


def classification_images(per_class: int, size: tuple[int, int], seed: int = 0):
    """``(class index, i, rgb)`` for ``per_class`` crops of each class."""
    for c in range(len(CLASSES)):
        for i in range(per_class):
            yield c, i, photo_crop(PHOTOS[c], seed * 1000 + i, size)


# --- COCO ----------------------------------------------------------------------------------------
COCO_SIZES = ((64, 48), (48, 64), (56, 56))


def coco_annotations(k: int, width: int, height: int, next_id: int) -> list[dict]:
    """Image ``k``'s annotations: its photo's object (a polygon), every other image a bottle box,
    and image 0 a crowd region (uncompressed RLE)."""
    cat = _COCO_PHOTO_CATEGORY[PHOTOS[k % len(PHOTOS)]]
    x0, y0, x1, y1 = 2 + k % 3, 3, width // 2 + 4, height - 4
    anns = [{"id": next_id, "image_id": k, "category_id": cat, "iscrowd": 0,
             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)),
             "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]}]
    if k % 2 == 0:
        bx, by = width // 2 + 6, height // 4
        anns.append({"id": next_id + 1, "image_id": k, "category_id": 44, "iscrowd": 0,
                     "bbox": [bx, by, 10, 12], "area": 120.0,
                     "segmentation": [[bx, by, bx + 10, by, bx + 10, by + 12, bx, by + 12]]})
    if k == 0:
        column = [0] * 2 + [1] * 4 + [0] * (height - 6)  # rows 2..5 of columns 0..3, column-major
        counts, run, value = [], 0, 0
        for v in column * 4 + [0] * height * (width - 4):
            if v != value:
                counts.append(run)
                run, value = 0, v
            run += 1
        counts.append(run)
        anns.append({"id": next_id + 2, "image_id": k, "category_id": 1, "iscrowd": 1, "bbox": [0, 2, 4, 4],
                     "area": 16.0, "segmentation": {"counts": counts, "size": [height, width]}})
    return anns


def make_coco(root: str | Path, n_train: int = 4, n_val: int = 2, year: str = "2017") -> Path:
    """COCO layout: ``annotations/instances_{train,val}<year>.json``, images in ``{train,val}<year>/``.

    Image ``k`` (train first) has size ``COCO_SIZES[k % 3]`` and :func:`coco_annotations`;
    categories are :data:`COCO_CATEGORIES` (listed out of id order). Returns ``root``.
    """
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    k, ann_id = 0, 1
    for split, count in (("train", n_train), ("val", n_val)):
        images, anns = [], []
        for _i in range(count):
            width, height = COCO_SIZES[k % len(COCO_SIZES)]
            name = f"{k:012d}.jpg"
            write_image(root / f"{split}{year}" / name, photo_crop(PHOTOS[k % len(PHOTOS)], 70 + k, (width, height)))
            images.append({"id": k, "file_name": name, "width": width, "height": height})
            new = coco_annotations(k, width, height, ann_id)
            anns += new
            ann_id += len(new)
            k += 1
        categories = [{"id": cid, "name": name, "supercategory": "x"}
                      for cid, name in sorted(COCO_CATEGORIES.items(), reverse=True)]
        (root / "annotations" / f"instances_{split}{year}.json").write_text(
            json.dumps({"info": {"description": "lossyvision test fixture"}, "images": images,
                        "annotations": anns, "categories": categories}))
    return root


# --- CSV / JSONL ---------------------------------------------------------------------------------
def make_csv_list(root: str | Path, per_class: int = 4, n_test: int = 2, size: tuple[int, int] = (40, 32),
                  fmt: str = "csv", name: str = "list") -> Path:
    """Images under ``root/images/<class>/``, listed in ``root/<name>.csv`` (or ``.jsonl``) with
    columns ``path,label,split``: the last ``n_test`` of each class are "test". Returns the list file."""
    root = Path(root)
    rows = []
    for c, i, rgb in classification_images(per_class, size):
        rel = f"images/{CLASSES[c]}/{CLASSES[c]}_{i}.jpg"
        write_image(root / rel, rgb)
        rows.append({"path": rel, "label": CLASSES[c], "split": "test" if i >= per_class - n_test else "train"})
    path = root / f"{name}.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text("path,label,split\n" + "".join(f"{r['path']},{r['label']},{r['split']}\n" for r in rows))
    return path


# --- Hugging Face --------------------------------------------------------------------------------
def hf_rows(per_class: int, size: tuple[int, int], seed: int = 0, png_every: int = 0) -> dict[str, list]:
    images, labels = [], []
    for c, i, rgb in classification_images(per_class, size, seed):
        ext = ".png" if png_every and i % png_every == png_every - 1 else ".jpg"
        images.append({"bytes": encode_image(rgb, ext), "path": None})
        labels.append(c)
    return {"image": images, "label": labels}


def make_hf(root: str | Path, per_class: int = 4, n_test_per_class: int = 2, size: tuple[int, int] = (40, 32),
            layout: str = "save_to_disk") -> Path:
    """A ``DatasetDict`` (train, test) with an ``Image`` column and a ``ClassLabel`` label column.

    ``layout``: ``save_to_disk`` (the folder ``root``), or ``parquet`` (``root/data/<split>-00000-of-00001.parquet``,
    as the Hub stores them). The last train image of each class is a PNG. Returns ``root``.
    """
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES))})
    splits = {"train": datasets.Dataset.from_dict(hf_rows(per_class, size, 0, png_every=per_class), features=features),
              "test": datasets.Dataset.from_dict(hf_rows(n_test_per_class, size, 1), features=features)}
    root = Path(root)
    if layout == "save_to_disk":
        datasets.DatasetDict(splits).save_to_disk(str(root))
    elif layout == "parquet":
        (root / "data").mkdir(parents=True, exist_ok=True)
        for split, ds in splits.items():
            ds.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    else:
        raise ValueError(layout)
    return root


# --- WebDataset ----------------------------------------------------------------------------------
def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: str | Path, samples: Sequence[tuple[str, str, bytes, dict[str, bytes]]]) -> Path:
    """A plain tar of ``(key, image ext, image bytes, {field: bytes})`` samples, in order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, ext, image, extra in samples:
            _add(tar, f"{key}.{ext}", image)
            for field, data in extra.items():
                _add(tar, f"{key}.{field}", data)
    return path


def make_webdataset(root: str | Path, per_class: int = 4, n_test_per_class: int = 2,
                    size: tuple[int, int] = (40, 32), shards_per_split: int = 2) -> Path:
    """Shards ``train-00000N.tar`` and ``test-00000N.tar``; samples alternate between a ``.jpg``
    with a ``.cls`` (class index) and a ``.png`` with a ``.json`` (``{"label": <class name>}``).
    Returns ``root``."""
    root = Path(root)
    for split, n, seed in (("train", per_class, 0), ("test", n_test_per_class, 1)):
        samples = []
        for c, i, rgb in classification_images(n, size, seed):
            key = f"{CLASSES[c]}_{i:04d}"
            if (c + i) % 2 == 0:
                samples.append((key, "jpg", encode_image(rgb, ".jpg"), {"cls": str(c).encode()}))
            else:
                samples.append((key, "png", encode_image(rgb, ".png"),
                                {"json": json.dumps({"label": CLASSES[c], "source": "fixture"}).encode()}))
        for s in range(shards_per_split):
            write_shard(root / f"{split}-{s:06d}.tar", samples[s::shards_per_split])
    return root


def tar_members(path: str | Path) -> dict[str, bytes]:
    """Every member of a tar shard, for checks."""
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
