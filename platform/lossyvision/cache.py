"""A trial's decoded training images on local disk: decode each image once, read its uint8 pixels every later epoch.

Why: a JPEG XL decode costs 5-60 ms per Food101-sized photo, and a trial decodes every training image
again each epoch although its pixels never change (docs/benchmarks.md, P5). With ``cache: exact`` (a
model's field in the sweep file) the first time an image is read it is decoded as before and its
pixels are written to the cache; every later read is a copy out of a memory-mapped file.

The cache is one folder under the trial's own scratch folder (removed when the trial ends):

- ``pixels.u8``: one flat uint8 file with one slot per image, sized from the manifest's width and
  height (the slot of image ``i`` starts at ``offsets[i]``);
- ``index.npz``: ``offsets`` (int64) and ``shapes`` (int64, ``n x 3``, the slots' expected shapes),
  written once, atomically (a temporary name, then renamed);
- ``filled.u8``: one byte per image, set to 1 only after the image's pixels are in its slot, and
  ``stored.i32``: the ``h, w, c`` of what was stored (an EXIF-rotated image fills its slot transposed).

Files are created whole under a temporary name, then renamed; a slot is read only once its flag is
set, after its pixels were written, so a process killed mid-write leaves a slot that is simply decoded
again. Slots are disjoint, so DataLoader worker processes fill one cache without a lock (``MAP_SHARED``
pages: what one process writes the others read). Nothing is pickled.

Modes (:func:`cache_mode`): ``exact`` keeps each image as decoded, so the model sees the very pixels it
sees without a cache and the trial's key and results do not change; ``{max_side: N}`` stores each
image shrunk (antialiased, as the training transforms resize) so that its longer side is at most N:
what the model sees changes, so it enters the trial's key (:mod:`lossyvision.sweep.plan`).
The cache never changes the data order: it serves whichever index the sampler asks for, so
``data_order: shards`` fills it as it streams the first epoch.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Sequence

import numpy as np

from lossyvision.sweep.plan import split_rows
from lossyvision.units import format_bytes

PIXELS, INDEX, FILLED, STORED = "pixels.u8", "index.npz", "filled.u8", "stored.i32"


def cache_mode(cache: Any) -> dict[str, Any] | None:
    """A model's ``cache`` field as data: None (no cache), ``{"mode": "exact"}`` or
    ``{"mode": "max_side", "max_side": N}`` (what trial.json records and ``sweep plan`` shows)."""
    if cache is None:
        return None
    if cache == "exact":
        return {"mode": "exact"}
    max_side = getattr(cache, "max_side", None)
    if max_side is None and isinstance(cache, dict):
        max_side = cache.get("max_side")
    if max_side is None:
        raise ValueError(f"cache: expected exact or {{max_side: N}}, got {cache!r}")
    return {"mode": "max_side", "max_side": int(max_side)}


def describe(mode: dict[str, Any] | None) -> str:
    if mode is None:
        return "off"
    return "exact" if mode["mode"] == "exact" else f"max_side {mode['max_side']}"


def cached_shape(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """The stored ``(h, w)`` of an image of ``height x width``: unchanged, or shrunk so that its longer
    side is ``max_side`` (never enlarged; rounding as ``round``, at least 1 pixel)."""
    h, w = int(height), int(width)
    if not max_side or max(h, w) <= max_side:
        return h, w
    scale = max_side / max(h, w)
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def slot_shapes(heights: Sequence[Any], widths: Sequence[Any], max_side: int | None) -> np.ndarray:
    """``n x 3`` int64 expected shapes of the cached images; a row of zeros for an image of unknown size
    (not cached: read and decoded every time)."""
    shapes = np.zeros((len(heights), 3), dtype=np.int64)
    for i, (h, w) in enumerate(zip(heights, widths)):
        try:
            h, w = int(h), int(w)
        except (TypeError, ValueError):
            continue
        if h > 0 and w > 0:
            shapes[i] = (*cached_shape(h, w, max_side), 3)
    return shapes


def cache_bytes(heights: Sequence[Any], widths: Sequence[Any], max_side: int | None) -> int:
    """The disk one trial's cache fills: its pixels plus 45 bytes of bookkeeping per image (index, flag,
    stored shape)."""
    shapes = slot_shapes(heights, widths, max_side)
    return int(shapes.prod(axis=1).sum()) + 45 * len(shapes)


def shrink(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` resized (bilinear, antialiased, torchvision's uint8 kernel) so its longer side is ``max_side``."""
    h, w = rgb.shape[:2]
    nh, nw = cached_shape(h, w, max_side)
    if (nh, nw) == (h, w):
        return rgb
    import torch
    from torchvision.transforms.v2 import functional as TF

    chw = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    return TF.resize(chw, [nh, nw], antialias=True).permute(1, 2, 0).contiguous().numpy()


class DecodedCache:
    """The memory-mapped pixels of ``n`` images in one folder (see the module docstring for the files).

    Made with :meth:`create`; each process maps the files on first use (a pickled or forked copy maps
    them again), so it can go to DataLoader workers.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        with np.load(os.path.join(directory, INDEX), allow_pickle=False) as index:
            self.offsets = index["offsets"]
            self.shapes = index["shapes"]
        self._pid: int | None = None

    @classmethod
    def create(cls, directory: str, shapes: np.ndarray) -> "DecodedCache":
        """An empty cache for images of ``shapes`` (``n x 3``; zeros: not cached) in ``directory``."""
        shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 3)
        sizes = shapes.prod(axis=1)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if len(sizes) else sizes
        os.makedirs(directory, exist_ok=True)
        n, total = len(shapes), int(sizes.sum())
        _atomic_sparse(os.path.join(directory, PIXELS), max(total, 1))
        _atomic_sparse(os.path.join(directory, FILLED), max(n, 1))
        _atomic_sparse(os.path.join(directory, STORED), max(4 * 3 * n, 1))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, offsets=offsets, shapes=shapes)
        os.replace(tmp, os.path.join(directory, INDEX))  # the index last: a folder with one is whole
        return cls(directory)

    def __len__(self) -> int:
        return len(self.shapes)

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory, "offsets": self.offsets, "shapes": self.shapes, "_pid": None}

    def _maps(self) -> None:
        if self._pid != os.getpid():
            n = len(self.shapes)
            self._pixels = np.memmap(os.path.join(self.directory, PIXELS), dtype=np.uint8, mode="r+")
            self._filled = np.memmap(os.path.join(self.directory, FILLED), dtype=np.uint8, mode="r+")
            self._stored = np.memmap(os.path.join(self.directory, STORED), dtype=np.int32, mode="r+",
                                     shape=(max(n, 1), 3))[:n]
            self._pid = os.getpid()

    def get(self, i: int) -> np.ndarray | None:
        """A copy of image ``i``'s pixels, or None when it is not cached yet."""
        self._maps()
        if not self._filled[i]:
            return None
        h, w, c = (int(x) for x in self._stored[i])
        start = int(self.offsets[i])
        return np.array(self._pixels[start:start + h * w * c]).reshape(h, w, c)

    def put(self, i: int, rgb: np.ndarray) -> bool:
        """Store image ``i``; False (nothing stored) when it does not fit its slot (a size the manifest
        did not know): that image is then decoded every time, as without a cache."""
        self._maps()
        size = int(self.shapes[i].prod())
        if rgb.dtype != np.uint8 or rgb.size != size or size == 0:
            return False
        start = int(self.offsets[i])
        self._pixels[start:start + size] = np.ascontiguousarray(rgb).reshape(-1)
        self._stored[i] = rgb.shape if rgb.ndim == 3 else (*rgb.shape, 1)
        self._filled[i] = 1  # after the pixels: a reader never sees a half-written slot
        return True

    def filled(self) -> int:
        """How many images are cached."""
        self._maps()
        return int(np.count_nonzero(self._filled[:len(self.shapes)]))


class CachedSamples:
    """``samples`` (:class:`lossyvision.data.ImageSamples`) read through a :class:`DecodedCache`.

    A miss decodes through ``samples`` (shrinking for ``max_side``) and fills the slot; a hit needs
    no read and no decode. The order is the sampler's own: ``train_sampler`` is ``samples``'.
    """

    def __init__(self, samples: Any, cache: DecodedCache, max_side: int | None = None) -> None:
        if len(samples) != len(cache):
            raise ValueError(f"{len(samples)} samples but a cache of {len(cache)} images")
        self.samples = samples
        self.cache = cache
        self.max_side = int(max_side) if max_side else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[np.ndarray, Any]:
        rgb = self.cache.get(i)
        if rgb is not None:
            return rgb, self.samples.targets[i]
        rgb, target = self.samples[i]
        if self.max_side:
            rgb = shrink(rgb, self.max_side)
        self.cache.put(i, rgb)
        return rgb, target

    def train_sampler(self, seed: int) -> Any:
        sampler = getattr(self.samples, "train_sampler", None)
        return sampler(seed) if sampler is not None else None


def cached_samples(samples: Any, mode: dict[str, Any] | None, heights: Sequence[Any], widths: Sequence[Any],
                   directory: str) -> Any:
    """``samples`` behind a new cache in ``directory`` for ``mode`` (:func:`cache_mode`); as they are for None."""
    if mode is None:
        return samples
    max_side = mode.get("max_side")
    cache = DecodedCache.create(directory, slot_shapes(heights, widths, max_side))
    return CachedSamples(samples, cache, max_side)


def _atomic_sparse(path: str, size: int) -> None:
    """A file of ``size`` zero bytes (sparse: no disk used until written), created under a temporary name."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def cache_needs(sweep: Any, manifest: Any) -> list[tuple[str, str, float, int]]:
    """``(model, codec, train level, bytes)`` of the cache of each cached model's trials: the decoded
    train split at that level (a budget's subset needs less). Pure: the manifest's sizes only."""
    out = []
    for model in sweep.models:
        mode = cache_mode(getattr(model, "cache", None))
        if mode is None:
            continue
        for arm in sweep.arms:
            for level in arm.train_levels:
                rows = split_rows(sweep, manifest, sweep.train_split, level, None, arm.name)
                heights = rows["height"] if "height" in rows.columns else [None] * len(rows)
                widths = rows["width"] if "width" in rows.columns else [None] * len(rows)
                out.append((model.name, arm.name, float(level), cache_bytes(list(heights), list(widths),
                                                                            mode.get("max_side"))))
    return out


def cache_problems(sweep: Any, manifest: Any) -> list[str]:
    """One line per cached model whose largest cache exceeds ``resources.trial.cache_bytes``."""
    limit = int(sweep.resources.trial.cache_bytes)
    worst: dict[str, tuple[int, str]] = {}
    for model, codec, level, need in cache_needs(sweep, manifest):
        if need > worst.get(model, (-1, ""))[0]:
            worst[model] = (need, f"{codec} {level:g}")
    return [f"models.{m}.cache: a trial at {where} caches {format_bytes(need)} of decoded images, more than "
            f"resources.trial.cache_bytes ({format_bytes(limit)}); raise it (the node's local disk), use "
            "{max_side: N}, or drop the cache"
            for m, (need, where) in worst.items() if need > limit]
