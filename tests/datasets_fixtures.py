"""Tiny dataset fixtures on disk, made from real photos that scikit-image ships offline.

Plain functions (not pytest fixtures) so that any test can build a layout in its ``tmp_path``::

    from datasets_fixtures import make_imagefolder, make_food101, make_voc, make_cityscapes

    root = make_voc(tmp_path / "voc", n_train=4, n_val=2)
    reader = create_dataset("voc", str(root))

Every function returns the path to pass to the reader as ``root``, writes deterministic
content (same bytes on every run) and takes well under a second. The photos are crops of
scikit-image's bundled astronaut (public domain), chelsea and coffee (CC0) and rocket
(public domain) images; annotations are synthetic but consistent (see :func:`voc_objects`
and :data:`CITYSCAPES_FIXTURE_LABEL_IDS`).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


@functools.lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as uint8 RGB (read-only, cached)."""
    import skimage.data

    rgb = np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])
    rgb.setflags(write=False)
    return rgb


def photo_crop(name: str, index: int, size: tuple[int, int]) -> np.ndarray:
    """A deterministic crop of photo ``name`` resized to ``size`` = (width, height).

    Different ``index`` values give different crops (position and scale).
    """
    src = photo(name)
    h, w = src.shape[:2]
    rng = np.random.default_rng([index, sum(map(ord, name))])
    scale = 0.45 + 0.5 * rng.random()
    cw = max(8, int(w * scale))
    ch = max(8, min(h, int(cw * size[1] / size[0])))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    img = Image.fromarray(src).resize(size, Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    return np.asarray(img)


def encode_image(rgb: np.ndarray, ext: str) -> bytes:
    """Encode uint8 RGB (or a HxW uint8 mask for .png) by extension: .jpg/.jpeg JPEG q90, else PIL's format."""
    ext = ext.lower()
    buf = io.BytesIO()
    img = Image.fromarray(rgb)
    if ext in (".jpg", ".jpeg"):
        img.save(buf, format="JPEG", quality=90, subsampling=2, optimize=False)
    elif ext == ".png":
        img.save(buf, format="PNG", compress_level=6)
    else:
        img.save(buf, format=Image.registered_extensions()[ext])
    return buf.getvalue()


def write_image(path: str | Path, rgb: np.ndarray) -> Path:
    """Write ``rgb`` to ``path`` in the format its extension names (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_image(rgb, path.suffix))
    return path


# --- ImageFolder ---------------------------------------------------------------------------------
def make_imagefolder(
    root: str | Path,
    classes: Sequence[str] = ("astronaut", "chelsea", "coffee"),
    per_class: int = 3,
    splits: Sequence[str] | None = ("train", "test"),
    size: tuple[int, int] = (64, 48),
    ext: str = ".jpg",
) -> Path:
    """ImageFolder layout: ``root/<split>/<class>/<class>_<i><ext>`` (or ``root/<class>/...``
    when ``splits`` is None), ``per_class`` images per class and split.

    Class ``k`` is cropped from ``PHOTOS[k % 4]``. Returns ``root``.
    """
    root = Path(root)
    for s_index, split in enumerate(splits or [None]):
        for c_index, name in enumerate(classes):
            folder = root / split / name if split else root / name
            for i in range(per_class):
                crop = photo_crop(PHOTOS[c_index % len(PHOTOS)], 1000 * s_index + i, size)
                write_image(folder / f"{name}_{i}{ext}", crop)
    return root


# --- Food101 -------------------------------------------------------------------------------------
def make_food101(
    root: str | Path,
    classes: Sequence[str] = ("apple_pie", "baby_back_ribs", "caesar_salad"),
    n_train: int = 3,
    n_test: int = 2,
) -> Path:
    """Food101 layout: ``images/<class>/<id>.jpg``, ``meta/{classes,labels,train,test}.txt``.

    Ids are ``100000 + 10 * k`` style integers, train ids first. Returns ``root``.
    """
    root = Path(root)
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for c_index, name in enumerate(classes):
        for i in range(n_train + n_test):
            image_id = 100000 + 37 * i + c_index
            crop = photo_crop(PHOTOS[c_index % len(PHOTOS)], i, (64, 64))
            write_image(root / "images" / name / f"{image_id}.jpg", crop)
            lines["train" if i < n_train else "test"].append(f"{name}/{image_id}")
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    (meta / "labels.txt").write_text("".join(f"{c.replace('_', ' ').capitalize()}\n" for c in classes))
    for split, rows in lines.items():
        (meta / f"{split}.txt").write_text("".join(f"{r}\n" for r in rows))
    return root


# --- PASCAL VOC ----------------------------------------------------------------------------------
VOC_FIXTURE_SIZES = ((160, 120), (128, 96), (96, 128), (144, 112))
_VOC_PHOTO_CLASS = {"astronaut": "person", "chelsea": "cat", "coffee": "diningtable", "rocket": "aeroplane"}


def voc_image_id(split: str, index: int) -> str:
    return f"2008_{(0 if split == 'train' else 500) + index:06d}"


def voc_objects(index: int, width: int, height: int) -> list[dict]:
    """The objects the fixture writes for image ``index`` (VOC 1-based inclusive pixel boxes).

    Each dict: name, xmin, ymin, xmax, ymax (ints), difficult (0/1). Image 0 holds three
    objects, one difficult; others hold one or two.
    """
    name = _VOC_PHOTO_CLASS[PHOTOS[index % len(PHOTOS)]]
    objects = [dict(name=name, xmin=1 + index, ymin=2, xmax=width // 2 + index, ymax=height - 3, difficult=0)]
    if index % 2 == 0:
        objects.append(dict(name="bottle", xmin=width // 2, ymin=height // 3, xmax=width - 1,
                            ymax=height // 3 + 20, difficult=0))
    if index == 0:
        objects.append(dict(name="chair", xmin=10, ymin=10, xmax=30, ymax=25, difficult=1))
    return objects


def _voc_xml(image_id: str, width: int, height: int, objects: list[dict]) -> str:
    parts = [
        "<annotation>",
        "  <folder>VOC2012</folder>",
        f"  <filename>{image_id}.jpg</filename>",
        "  <source><database>lossyvision test fixture</database></source>",
        f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
        "  <segmented>0</segmented>",
    ]
    for o in objects:
        parts += [
            "  <object>",
            f"    <name>{o['name']}</name>",
            "    <pose>Unspecified</pose>",
            "    <truncated>0</truncated>",
            f"    <difficult>{o['difficult']}</difficult>",
            "    <bndbox>",
            f"      <xmin>{o['xmin']}</xmin>",
            f"      <ymin>{o['ymin']}</ymin>",
            f"      <xmax>{o['xmax']}</xmax>",
            f"      <ymax>{o['ymax']}</ymax>",
            "    </bndbox>",
            "  </object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def make_voc(root: str | Path, n_train: int = 4, n_val: int = 2, devkit: bool = False) -> Path:
    """PASCAL VOC 2012 layout: ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg``,
    ``ImageSets/Main/{train,val,trainval}.txt``.

    Image ``k`` (train first, then val) has size ``VOC_FIXTURE_SIZES[k % 4]`` and the objects
    ``voc_objects(k, width, height)``; ids are ``voc_image_id(split, i)``. With ``devkit`` the
    files go under ``root/VOCdevkit/VOC2012`` (the tarball's layout). Returns ``root``.
    """
    root = Path(root)
    base = root / "VOCdevkit" / "VOC2012" if devkit else root
    ids: dict[str, list[str]] = {"train": [], "val": []}
    k = 0
    for split, count in (("train", n_train), ("val", n_val)):
        for i in range(count):
            image_id = voc_image_id(split, i)
            width, height = VOC_FIXTURE_SIZES[k % len(VOC_FIXTURE_SIZES)]
            write_image(base / "JPEGImages" / f"{image_id}.jpg", photo_crop(PHOTOS[k % len(PHOTOS)], k, (width, height)))
            (base / "Annotations").mkdir(parents=True, exist_ok=True)
            (base / "Annotations" / f"{image_id}.xml").write_text(
                _voc_xml(image_id, width, height, voc_objects(k, width, height)))
            ids[split].append(image_id)
            k += 1
    main = base / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    for split, rows in ids.items():
        (main / f"{split}.txt").write_text("".join(f"{r}\n" for r in rows))
    (main / "trainval.txt").write_text("".join(f"{r}\n" for r in ids["train"] + ids["val"]))
    return root


# --- Cityscapes ----------------------------------------------------------------------------------
# The fixture's own small copy of the official labelId -> trainId table, for the ids it paints
# (0 unlabeled and 9 parking are ignored in training: 255).
CITYSCAPES_FIXTURE_LABEL_IDS = {23: 10, 11: 2, 21: 8, 7: 0, 8: 1, 26: 13, 24: 11, 0: 255, 9: 255}
_CITY_BINS = (23, 11, 21, 7, 8, 26, 24, 0, 9)  # labelIds painted by luminance bin, bright to dark
CITYSCAPES_CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt",), "test": ("berlin",)}


def cityscapes_label_ids(rgb: np.ndarray) -> np.ndarray:
    """The fixture's labelIds mask for an image: luminance quantised into ``_CITY_BINS``."""
    lum = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    bins = np.clip((255.0 - lum) * len(_CITY_BINS) / 256.0, 0, len(_CITY_BINS) - 1).astype(np.int64)
    return np.asarray(_CITY_BINS, np.uint8)[bins]


def make_cityscapes(
    root: str | Path,
    n_train: int = 2,
    n_val: int = 2,
    label_ids_only: bool = False,
    size: tuple[int, int] = (128, 64),
    n_test: int = 0,
) -> Path:
    """Cityscapes layout: ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/<name>_gtFine_labelIds.png`` and, unless ``label_ids_only``,
    ``<name>_gtFine_labelTrainIds.png`` (as cityscapesScripts' createTrainIdLabelImgs makes).

    Images are ``size`` = (width, height) PNG crops; masks follow :func:`cityscapes_label_ids`
    mapped with :data:`CITYSCAPES_FIXTURE_LABEL_IDS`. Names are
    ``<city>_<seq:06d>_000019``; cities per split in ``CITYSCAPES_CITIES``. Returns ``root``.
    """
    root = Path(root)
    lut = np.full(256, 255, np.uint8)
    for label_id, train_id in CITYSCAPES_FIXTURE_LABEL_IDS.items():
        lut[label_id] = train_id
    k = 0
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        cities = CITYSCAPES_CITIES[split]
        for i in range(count):
            city = cities[i % len(cities)]
            name = f"{city}_{i:06d}_000019"
            rgb = photo_crop(PHOTOS[k % len(PHOTOS)], 50 + k, size)
            write_image(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", rgb)
            ids = cityscapes_label_ids(rgb)
            gt = root / "gtFine" / split / city
            write_image(gt / f"{name}_gtFine_labelIds.png", ids)
            if not label_ids_only:
                write_image(gt / f"{name}_gtFine_labelTrainIds.png", lut[ids])
            k += 1
    return root
