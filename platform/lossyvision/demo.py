"""The demo dataset: a small labelled classification set of real photographs, built offline.

No wheel ships a few hundred labelled photos, so the set is derived: square crops of the
photos that scikit-image and scikit-learn install, each labelled by its source photo. One class
per photo makes the labels unambiguous and every licence traceable to a single file. Crops at
several scales (from a seventh of the photo's short side, never below the output size, to six
tenths of it), random positions and flips make the task non-trivial: a small crop of the cat's
fur or the coffee's wood grain is recognised by texture, which is what lossy compression removes
first. One run of a 4-layer CNN trained from scratch for 15 epochs (about 15 s of one core)
reached 0.89 test accuracy on the originals and 0.82 on test images at JPEG XL distance 20;
trained at distance 10 it scored 0.78 on the originals -- the train/test mismatch the study is
about. The test split is large on purpose (900 images, 100 per class): a cell's 95% interval is
about +-1.3 points of top-1 and a paired comparison between cells about +-1, so the report's
verdict can tell a one-point drop; with the 108 test images it once had, nothing below four.

Layout (ImageFolder with split folders, readable by the ``imagefolder`` reader)::

    OUT/train/<class>/<class>_000.jpg     40 per class (JPEG q90 4:2:0, as Food-101 stores)
    OUT/test/<class>/<class>_000.jpg      100 per class (``png=True``: PNG, as Cityscapes)
    OUT/classes.txt                       class names, line index = label
    OUT/crops.csv                         where every image was cut from (provenance)
    OUT/README.md, OUT/LICENSES.md        what this is; each source photo and its licence

Train and test crops come from independent seeded random streams and no test crop repeats a
train crop; they may overlap in the photo (like two shots of one scene). The output is
byte-identical on every run with the same Pillow/libjpeg: fixed seeds, fixed encoder settings,
no timestamps or metadata in the files.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import io
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image

from lossyvision.datasets._files import list_files
from lossyvision.store import atomic_write_bytes, filesystem, join

SEED = 20240611
TRAIN_PER_CLASS = 40
TEST_PER_CLASS = 100  # 900 test images: a cell's 95% interval is about +-1.3 points of top-1
IMAGE_SIZE = 64  # pixels, square
JPEG_QUALITY = 90
PNG_COMPRESS_LEVEL = 6
SCALES = (0.15, 0.25, 0.4, 0.6)  # crop side / photo's short side, jittered by +-10%; never below IMAGE_SIZE
MIN_CROP_STD = 10.0  # grey-level std below which a crop is too flat to say anything (redrawn)
MARKER = "<!-- lossyvision demo dataset -->"
SPLITS = ("train", "test")


@dataclass(frozen=True)
class SourcePhoto:
    """One source photograph: the class it gives, where it comes from, and its licence."""

    label: str
    package: str  # "scikit-image" or "scikit-learn"
    file: str  # file name inside the package
    title: str
    credit: str
    licence: str
    url: str
    load: Callable[[], np.ndarray] = field(repr=False, compare=False)


def _package_photo(package: str, *parts: str) -> Callable[[], np.ndarray]:
    """A loader reading a photo file installed inside ``package`` (without importing the package)."""

    def load() -> np.ndarray:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"the demo dataset needs the {package} package installed (for {parts[-1]})")
        path = os.path.join(spec.submodule_search_locations[0], *parts)
        if not os.path.isfile(path):
            raise RuntimeError(f"the demo dataset needs {path}, which this {package} install lacks")
        return _read_rgb(path)

    return load


@functools.lru_cache(maxsize=16)
def _read_rgb(path: str) -> np.ndarray:
    """A photo file as read-only uint8 RGB, cached: rebuilding in one process decodes once."""
    with Image.open(path) as img:
        rgb = np.array(img.convert("RGB"))
    rgb.setflags(write=False)
    return rgb


def _skimage(file: str) -> Callable[[], np.ndarray]:
    return _package_photo("skimage", "data", file)


def _sklearn(file: str) -> Callable[[], np.ndarray]:
    return _package_photo("sklearn", "datasets", "images", file)


# The photos scikit-image's wheel bundles in colour (its other photos are downloaded at run time)
# and scikit-learn's two. Left out: skimage's stereo_motorcycle (Middlebury 2014 benchmark; its
# docstring names no licence) and the greyscale photos (colour alone would give them away).
SOURCES: tuple[SourcePhoto, ...] = (
    SourcePhoto("astronaut", "scikit-image", "astronaut.png", "Astronaut Eileen Collins", "NASA",
                "Public domain (NASA; no known copyright restrictions)", "https://flic.kr/p/r9qvLn",
                _skimage("astronaut.png")),
    SourcePhoto("cat", "scikit-image", "chelsea.png", "Chelsea the cat", "Stefan van der Walt",
                "CC0 1.0", "https://github.com/scikit-image/scikit-image/tree/main/skimage/data",
                _skimage("chelsea.png")),
    SourcePhoto("coffee", "scikit-image", "coffee.png", "Coffee cup (Pikolo Espresso Bar)", "Rachel Michetti",
                "CC0 1.0", "https://github.com/scikit-image/scikit-image/tree/main/skimage/data",
                _skimage("coffee.png")),
    SourcePhoto("rocket", "scikit-image", "rocket.jpg", "Falcon 9 launch carrying DSCOVR", "SpaceX",
                "Public domain (released by SpaceX)",
                "https://www.flickr.com/photos/spacexphotos/16511594820/", _skimage("rocket.jpg")),
    SourcePhoto("galaxies", "scikit-image", "hubble_deep_field.jpg", "Hubble eXtreme Deep Field", "NASA",
                "Public domain (NASA)", "http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/",
                _skimage("hubble_deep_field.jpg")),
    SourcePhoto("retina", "scikit-image", "retina.jpg", "Fundus photograph of a normal left eye",
                "Mikael Häggström", "CC0 1.0",
                "https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg",
                _skimage("retina.jpg")),
    SourcePhoto("tissue", "scikit-image", "ihc.png", "Immunohistochemical staining of colonic glands",
                "Center for Microscopy And Molecular Imaging (CMMI)", "No known copyright restrictions",
                "https://github.com/scikit-image/scikit-image/tree/main/skimage/data",
                _skimage("ihc.png")),
    SourcePhoto("temple", "scikit-learn", "china.jpg", "Summer Palace, Beijing (china.jpg)",
                "danielbuechele (Flickr)", "CC BY 2.0",
                "https://www.flickr.com/photos/danielbuechele/6061409035/", _sklearn("china.jpg")),
    SourcePhoto("flower", "scikit-learn", "flower.jpg", "Flower (flower.jpg)", "vultilion (Flickr)",
                "CC BY 2.0", "https://www.flickr.com/photos/vultilion/6056698931/", _sklearn("flower.jpg")),
)


@dataclass(frozen=True)
class Crop:
    """Where one demo image was cut from: a square box of the source photo, maybe mirrored."""

    x: int
    y: int
    side: int
    flip: bool


@dataclass
class DemoSummary:
    """What :func:`build_demo_dataset` wrote."""

    root: str
    image_format: str  # "jpeg" or "png"
    image_size: int
    classes: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> images
    bytes: dict[str, int]  # split -> bytes of its images

    def images(self, split: str) -> int:
        return sum(self.counts[split].values())


def draw_crops(photo: np.ndarray, n: int, rng: np.random.Generator, avoid: set[Crop] | frozenset = frozenset(),
               min_side: int = IMAGE_SIZE) -> list[Crop]:
    """``n`` square crops cycling through :data:`SCALES`, at random positions, half of them mirrored.

    A crop too flat to carry information (grey std below :data:`MIN_CROP_STD`, e.g. the black
    surround of the retina) or equal to one in ``avoid`` is redrawn (up to 50 times for flatness; always for repeats).
    """
    h, w = photo.shape[:2]
    short = min(h, w)
    grey = photo.astype(np.float32).mean(axis=2)
    crops: list[Crop] = []
    for i in range(n):
        attempt = 0
        while True:
            scale = SCALES[i % len(SCALES)] * rng.uniform(0.9, 1.1)
            side = int(min(short, max(min_side, round(scale * short))))
            crop = Crop(int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1)), side,
                        bool(rng.random() < 0.5))
            if crop in avoid or crop in crops:
                continue  # never repeat a crop (vanishingly rare: positions are random)
            attempt += 1
            step = max(1, side // 32)
            if attempt >= 50 or grey[crop.y:crop.y + side:step, crop.x:crop.x + side:step].std() >= MIN_CROP_STD:
                break
        crops.append(crop)
    return crops


def render_crop(photo: np.ndarray | Image.Image, crop: Crop, size: int = IMAGE_SIZE) -> np.ndarray:
    """The crop resized to ``size`` x ``size`` with Pillow's Lanczos filter (uint8 RGB).

    ``reducing_gap=3`` lets Pillow box-reduce large crops first (fast, still alias-free).
    """
    img = photo if isinstance(photo, Image.Image) else Image.fromarray(np.ascontiguousarray(photo))
    small = img.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0,
                       box=(crop.x, crop.y, crop.x + crop.side, crop.y + crop.side))
    out = np.asarray(small)
    return np.ascontiguousarray(out[:, ::-1]) if crop.flip else out


def encode(rgb: np.ndarray, png: bool) -> bytes:
    """JPEG quality 90 with 4:2:0 chroma (baseline, not optimised) or PNG level 6; no metadata."""
    buf = io.BytesIO()
    img = Image.fromarray(rgb)
    if png:
        img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        img.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=2, optimize=False, progressive=False)
    return buf.getvalue()


def build_demo_dataset(out: str, png: bool = False, train_per_class: int = TRAIN_PER_CLASS,
                       test_per_class: int = TEST_PER_CLASS, image_size: int = IMAGE_SIZE) -> DemoSummary:
    """Write the demo dataset into ``out`` (a folder or URI) and return what was written.

    ``out`` must be missing, empty, or an earlier (possibly interrupted) demo build, whose stale
    images (e.g. JPEGs when rebuilding with ``png``) are removed; ``ValueError`` otherwise.
    ``README.md`` is written last: its presence means the build completed.
    """
    if train_per_class < 1 or test_per_class < 1 or image_size < 8:
        raise ValueError("demo-data: need at least one train and one test image per class and a size of 8 px or more")
    existing = _check_target(out)
    fs, readme = filesystem(join(out, "README.md"))
    if fs.exists(readme):
        fs.rm_file(readme)  # until rewritten last, the folder reads as an incomplete build
    ext = ".png" if png else ".jpg"
    sources = sorted(SOURCES, key=lambda s: s.label)
    classes = [s.label for s in sources]
    # first: an interrupted build is recognised as ours and simply rebuilt by the next run
    atomic_write_bytes(join(out, "LICENSES.md"), _licences_md(sources).encode())
    counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    nbytes = {split: 0 for split in SPLITS}
    rows = []
    written: set[str] = set()
    for label, source in enumerate(sources):
        photo = source.load()
        pil_photo = Image.fromarray(photo)
        train = draw_crops(photo, train_per_class, np.random.default_rng([SEED, label, 0]), min_side=image_size)
        test = draw_crops(photo, test_per_class, np.random.default_rng([SEED, label, 1]), avoid=set(train),
                          min_side=image_size)
        for split, crops in (("train", train), ("test", test)):
            for i, crop in enumerate(crops):
                relpath = f"{split}/{source.label}/{source.label}_{i:03d}{ext}"
                data = encode(render_crop(pil_photo, crop, image_size), png)
                atomic_write_bytes(join(out, relpath), data)
                written.add(relpath)
                nbytes[split] += len(data)
                rows.append([relpath, split, label, source.label, source.file, crop.x, crop.y, crop.side,
                             int(crop.flip)])
            counts[split][source.label] = len(crops)
    _remove_stale(out, existing - written)
    atomic_write_bytes(join(out, "classes.txt"), "".join(f"{c}\n" for c in classes).encode())
    atomic_write_bytes(join(out, "crops.csv"), _csv(rows))
    summary = DemoSummary(str(out), "png" if png else "jpeg", image_size, classes, counts, nbytes)
    atomic_write_bytes(join(out, "README.md"), _readme_md(summary).encode())  # last: marks a complete build
    return summary


def _check_target(out: str) -> set[str]:
    """The images of an earlier demo build in ``out`` (to replace); refuse any other non-empty folder."""
    fs, path = filesystem(out)
    if not fs.exists(path):
        return set()
    if not fs.isdir(path):
        raise ValueError(f"demo-data: {out} exists and is not a folder")
    files = list_files("demo-data", out)
    if not files:
        return set()
    licences = join(out, "LICENSES.md")
    if "LICENSES.md" in files and MARKER in fs.cat_file(filesystem(licences)[1]).decode("utf-8", "replace"):
        return {f for f in files if f.split("/", 1)[0] in SPLITS}
    raise ValueError(f"demo-data: {out} is not empty and holds no earlier demo dataset; choose a new folder")


def _remove_stale(out: str, relpaths: set[str]) -> None:
    fs, _ = filesystem(out)
    for rel in sorted(relpaths):
        fs.rm_file(filesystem(join(out, rel))[1])


def _csv(rows: list[list]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["relpath", "split", "label", "class", "source_file", "x", "y", "side", "flipped"])
    writer.writerows(rows)
    return buf.getvalue().encode()


def _licences_md(sources: list[SourcePhoto]) -> str:
    lines = [
        MARKER,
        "# Sources and licences of the lossyvision demo dataset",
        "",
        "Every image here is a resized crop (possibly mirrored) of one of these photographs, as",
        "installed with the named Python package. The crops are derived works: the licence of the",
        "source photo applies to them. CC BY 2.0 requires attribution and a note of the changes:",
        "the images were cropped, mirrored, resized and re-encoded.",
        "",
        "| class | source file | package | photo | credit | licence | origin |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in sources:
        lines.append(f"| {s.label} | {s.file} | {s.package} | {s.title} | {s.credit} | {s.licence} | {s.url} |")
    lines += [
        "",
        "CC BY 2.0: https://creativecommons.org/licenses/by/2.0/ ; CC0 1.0: "
        "https://creativecommons.org/publicdomain/zero/1.0/",
        "",
    ]
    return "\n".join(lines)


def _readme_md(summary: DemoSummary) -> str:
    fmt = f"JPEG quality {JPEG_QUALITY}, 4:2:0" if summary.image_format == "jpeg" else "PNG"
    lines = [
        "# lossyvision demo dataset",
        "",
        f"A {len(summary.classes)}-class image classification set built by `lossyvision demo-data`",
        "from real photographs that scikit-image and scikit-learn install (see LICENSES.md).",
        f"Each class is one photo; each image is a {summary.image_size}x{summary.image_size} px crop of it at",
        f"one of several scales ({', '.join(f'{s:g}' for s in SCALES)} of the short side, +-10%),",
        f"at a random position, mirrored half of the time, stored as {fmt}.",
        "Train and test crops are drawn from independent seeded streams (crops.csv lists each box).",
        "",
        "Layout: `train/<class>/*`, `test/<class>/*` (ImageFolder); `classes.txt` gives label order.",
        "",
        "| split | images | bytes |",
        "|---|---|---|",
    ]
    for split in SPLITS:
        lines.append(f"| {split} | {summary.images(split)} | {summary.bytes[split]} |")
    lines.append("")
    return "\n".join(lines)
