"""``lossyvision inspect``: what a dataset holds and what compressing it will cost, before any work.

:func:`inspect_dataset` reads every image of a dataset once, through its reader (so any kind and
``s3://`` work) and the same normalisation as the compress job (:func:`lossyvision.imageio.load_rgb`):

- images per split and class (classification: labels; detection and segmentation: images holding
  each class), and each split's imbalance (largest class / smallest);
- source formats and colour modes; a histogram of file sizes and one of resolutions (long side);
- bad files with their reasons (the compress job would record the same);
- for a sample of good images, the codec's real output at each level of the ladder (encoded in
  memory with the codec registry, timed on this machine): bytes per image, the store's size per
  level (the sample's compressed/source ratio times the dataset's source bytes) and in total, and
  the compression time (seconds per megapixel times the dataset's megapixels, over this machine's
  CPUs).

It writes nothing and starts no Ray. :class:`Inspection` is plain data (``to_dict`` for ``--json``).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from lossyvision.codecs import DEFAULT_CODEC, create_codec
from lossyvision.datasets import create_dataset
from lossyvision.datasets.base import DatasetReader, Record
from lossyvision.imageio import BadImageError, load_rgb
from lossyvision.store import format_level
from lossyvision.units import format_bytes

SIZE_EDGES = tuple(2 ** k for k in range(10, 31))  # 1 KiB .. 1 GiB
SIDE_EDGES = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
DEFAULT_SAMPLE = 8


@dataclass
class ImageFacts:
    """What reading one source told: its size and decoded properties, or why it is bad."""

    relpath: str
    split: str
    bytes: int = 0
    format: str | None = None
    mode: str | None = None
    width: int = 0
    height: int = 0
    classes: tuple[int, ...] = ()
    error: str | None = None


@dataclass
class LevelEstimate:
    level: float
    sample_bytes: int            # the sample's compressed bytes
    ratio_vs_source: float       # sample compressed / sample source
    bytes_per_image: float       # estimated mean over the dataset's good images
    store_bytes: int             # estimated bytes of this level for the whole dataset
    seconds_per_megapixel: float  # encode time on this machine, one core

    @property
    def dcr_vs_source(self) -> float:
        """Data compression rate, 1 - compressed / source: what `compress` and the report print."""
        return 1.0 - self.ratio_vs_source


@dataclass
class Estimate:
    codec: str
    codec_options: dict[str, Any]
    sample: list[str]
    levels: list[LevelEstimate]
    store_bytes: int              # every level together
    cpu_seconds: float            # decode + encode of every good image at every level
    cpus: int
    wall_seconds: float           # cpu_seconds over this machine's CPUs
    failed: dict[str, str] = field(default_factory=dict)  # sample images the codec refused


@dataclass
class Inspection:
    kind: str
    root: str
    options: dict[str, Any]
    task: str
    classes: list[str]
    images: int
    splits: dict[str, dict[str, Any]]
    formats: dict[str, int]
    modes: dict[str, int]
    source_bytes: int
    megapixels: float
    size_histogram: list[dict[str, Any]]
    side_histogram: list[dict[str, Any]]
    resolutions: dict[str, Any]
    bad: list[dict[str, str]]
    estimate: Estimate | None
    seconds: float
    limit: int | None = None     # --limit: images read per split (the counts are of a partial read)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.estimate is not None:
            for row, level in zip(out["estimate"]["levels"], self.estimate.levels):
                row["dcr_vs_source"] = level.dcr_vs_source
        return out


# --- reading ---------------------------------------------------------------------------------------
def _target_classes(reader: DatasetReader, record: Record) -> tuple[int, ...]:
    """Class indices present in an image: its label, its boxes' labels, or its mask's values."""
    if record.label is not None:
        return (int(record.label),)
    target = reader.load_target(record)
    if isinstance(target, dict) and "labels" in target:
        return tuple(sorted({int(x) for x in np.asarray(target["labels"]).ravel()}))
    if isinstance(target, np.ndarray) and target.ndim == 2:
        ignore = getattr(reader, "ignore_index", 255)
        return tuple(int(x) for x in np.unique(target) if int(x) != ignore)
    if isinstance(target, (int, np.integer)):
        return (int(target),)
    return ()


def read_facts(reader: DatasetReader, record: Record, max_pixels: int) -> ImageFacts:
    """Read and decode one source as the compress job would; never raises."""
    facts = ImageFacts(relpath=record.relpath, split=record.split)
    try:
        data = reader.read_source(record)
    except FileNotFoundError:
        facts.error = "cannot read: file not found"
        return facts
    except Exception as exc:  # permissions, network, a cut shard
        facts.error = f"cannot read: {type(exc).__name__}: {exc}"
        return facts
    facts.bytes = len(data)
    try:
        image = load_rgb(data, max_pixels=max_pixels)
        facts.format, facts.mode, facts.width, facts.height = image.format, image.mode, image.width, image.height
    except BadImageError as exc:
        facts.error = exc.reason
    except Exception as exc:
        facts.error = f"cannot decode: {type(exc).__name__}: {exc}"
    try:
        facts.classes = _target_classes(reader, record)
    except Exception as exc:  # a broken annotation: report it with the image
        facts.error = facts.error or f"bad annotation: {exc}"
    return facts


def limit_records(records: Sequence[Record], limit: int | None) -> list[Record]:
    """At most ``limit`` records per split, spread over the split (smallest SHA-1 of the relpath)."""
    if limit is None:
        return list(records)
    by_split: dict[str, list[Record]] = {}
    for r in records:
        by_split.setdefault(r.split, []).append(r)
    out = []
    for rs in by_split.values():
        out += sorted(rs, key=lambda r: hashlib.sha1(r.relpath.encode()).hexdigest())[:limit]
    return sorted(out, key=lambda r: (r.split, r.relpath))


# --- summaries -------------------------------------------------------------------------------------
def split_table(facts: Sequence[ImageFacts], classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per split: images, bad images, images per class and the imbalance (largest / smallest class)."""
    out: dict[str, dict[str, Any]] = {}
    for split in sorted({f.split for f in facts}):
        mine = [f for f in facts if f.split == split]
        counts = [0] * len(classes)
        for f in mine:
            for c in f.classes:
                if 0 <= c < len(counts):
                    counts[c] += 1
        present = [c for c in counts if c > 0]
        out[split] = {
            "images": len(mine), "bad": sum(f.error is not None for f in mine),
            "per_class": dict(zip(classes, counts)),
            "missing_classes": [c for c, n in zip(classes, counts) if n == 0],
            "imbalance": (max(present) / min(present)) if present else None,
        }
    return out


def histogram(values: Sequence[float], edges: Sequence[float]) -> list[dict[str, Any]]:
    """``[{"lo", "hi", "count"}]`` over the bins from the first to the last non-empty one."""
    if not values:
        return []
    bounds = [0.0, *edges, math.inf]
    counts = [0] * (len(bounds) - 1)
    for v in values:
        for i in range(len(counts)):
            if bounds[i] < v <= bounds[i + 1] or (i == 0 and v == 0):
                counts[i] += 1
                break
    used = [i for i, c in enumerate(counts) if c]
    return [{"lo": bounds[i], "hi": bounds[i + 1], "count": counts[i]} for i in range(used[0], used[-1] + 1)]


def resolution_summary(good: Sequence[ImageFacts]) -> dict[str, Any]:
    if not good:
        return {}
    widths = np.array([f.width for f in good])
    heights = np.array([f.height for f in good])
    common: dict[str, int] = {}
    for f in good:
        key = f"{f.width}x{f.height}"
        common[key] = common.get(key, 0) + 1
    top = sorted(common.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    return {"width": {"min": int(widths.min()), "median": float(np.median(widths)), "max": int(widths.max())},
            "height": {"min": int(heights.min()), "median": float(np.median(heights)), "max": int(heights.max())},
            "most_common": dict(top)}


# --- the estimate ----------------------------------------------------------------------------------
def sample_relpaths(good: Sequence[ImageFacts], n: int) -> list[str]:
    """A fixed spread of ``n`` good images: the smallest SHA-1 of the relpath, as the compress job's quality sample."""
    ranked = sorted(good, key=lambda f: hashlib.sha1(f.relpath.encode()).hexdigest())
    return sorted(f.relpath for f in ranked[:n])


def estimate_store(reader: DatasetReader, records: dict[str, Record], good: Sequence[ImageFacts],
                   codec_name: str, codec_options: dict[str, Any], levels: Sequence[float], sample: int,
                   max_pixels: int, cpus: int | None = None) -> Estimate:
    """Encode a sample at every level in memory, time it, and scale to the whole dataset."""
    codec = create_codec(codec_name, **codec_options)
    chosen = sample_relpaths(good, sample)
    source = {lv: 0 for lv in levels}
    compressed = {lv: 0 for lv in levels}
    encode_s = {lv: 0.0 for lv in levels}
    sample_mp = 0.0
    decode_s = 0.0
    failed: dict[str, str] = {}
    for rel in chosen:
        data = reader.read_source(records[rel])
        t0 = time.perf_counter()
        image = load_rgb(data, max_pixels=max_pixels)
        decode_s += time.perf_counter() - t0
        sample_mp += image.width * image.height / 1e6
        for lv in levels:
            t0 = time.perf_counter()
            try:
                out = codec.encode(image.rgb, float(lv), source=data, source_format=image.format)
            except Exception as exc:  # the compress job records these as failed rows
                failed[rel] = f"level {lv:g}: {type(exc).__name__}: {exc}"
                continue
            encode_s[lv] += time.perf_counter() - t0
            source[lv] += len(data)
            compressed[lv] += len(out)
    total_bytes = sum(f.bytes for f in good)
    total_mp = sum(f.width * f.height for f in good) / 1e6
    estimates = []
    for lv in levels:
        ratio = compressed[lv] / source[lv] if source[lv] else float("nan")
        store = int(round(ratio * total_bytes)) if source[lv] else 0
        estimates.append(LevelEstimate(
            level=float(lv), sample_bytes=compressed[lv], ratio_vs_source=ratio,
            bytes_per_image=store / len(good) if good else 0.0, store_bytes=store,
            seconds_per_megapixel=encode_s[lv] / sample_mp if sample_mp else 0.0))
    per_mp = (decode_s + sum(encode_s.values())) / sample_mp if sample_mp else 0.0
    cpu_seconds = per_mp * total_mp
    cpus = cpus or os.cpu_count() or 1
    return Estimate(codec=codec_name, codec_options=dict(codec_options), sample=chosen, levels=estimates,
                    store_bytes=sum(e.store_bytes for e in estimates), cpu_seconds=cpu_seconds, cpus=cpus,
                    wall_seconds=cpu_seconds / cpus, failed=failed)


# --- the whole inspection --------------------------------------------------------------------------
def inspect_dataset(kind: str, root: str, options: dict[str, Any] | None = None, *,
                    codec: str = DEFAULT_CODEC, codec_options: dict[str, Any] | None = None,
                    levels: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0), sample: int = DEFAULT_SAMPLE,
                    limit: int | None = None, max_pixels: int = 100_000_000, workers: int | None = None) -> Inspection:
    """Inspect a dataset; raises ``ValueError`` (layout, options) or ``KeyError`` (unknown kind, codec)."""
    started = time.perf_counter()
    options = dict(options or {})
    reader = create_dataset(kind, root, **options)
    records = limit_records(reader.records(), limit)
    if not records:
        raise ValueError(f"{kind}: {root} has no images")
    classes = reader.classes
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) + 2)) as pool:
        facts = list(pool.map(lambda r: read_facts(reader, r, max_pixels), records))
    good = [f for f in facts if f.error is None]
    formats: dict[str, int] = {}
    modes: dict[str, int] = {}
    for f in good:
        formats[f.format or "?"] = formats.get(f.format or "?", 0) + 1
        modes[f.mode or "?"] = modes.get(f.mode or "?", 0) + 1
    estimate = None
    if good and sample > 0 and levels:
        estimate = estimate_store(reader, {r.relpath: r for r in records}, good, codec, dict(codec_options or {}),
                                  [float(x) for x in levels], sample, max_pixels)
    return Inspection(
        kind=kind, root=str(root), options=options, task=reader.task, classes=list(classes), images=len(records),
        splits=split_table(facts, classes),
        formats=dict(sorted(formats.items(), key=lambda kv: -kv[1])),
        modes=dict(sorted(modes.items(), key=lambda kv: -kv[1])),
        source_bytes=sum(f.bytes for f in good), megapixels=sum(f.width * f.height for f in good) / 1e6,
        size_histogram=histogram([f.bytes for f in good], SIZE_EDGES),
        side_histogram=histogram([max(f.width, f.height) for f in good], SIDE_EDGES),
        resolutions=resolution_summary(good),
        bad=[{"relpath": f.relpath, "split": f.split, "reason": f.error or ""} for f in facts if f.error is not None],
        estimate=estimate, seconds=time.perf_counter() - started, limit=limit)


# --- printing --------------------------------------------------------------------------------------
def _bin_label(lo: float, hi: float, fmt) -> str:
    if math.isinf(hi):
        return f"> {fmt(lo)}"
    return f"<= {fmt(hi)}"


def _bar(count: int, most: int, width: int = 30) -> str:
    return "#" * max(1, round(width * count / most)) if count else ""


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "< 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render(ins: Inspection) -> str:
    """The inspection as plain text (what the CLI prints without ``--json``)."""
    def size(n: float) -> str:
        return format_bytes(n)

    lines = [f"{ins.kind} dataset at {ins.root} ({ins.task}): {ins.images} images, {len(ins.classes)} classes, "
             f"{size(ins.source_bytes)}, {ins.megapixels:.3g} MP"]
    lines.append("")
    lines.append("images per split and class")
    width = max([len(c) for c in ins.classes] + [5])
    for split, t in ins.splits.items():
        imb = "n/a" if t["imbalance"] is None else f"{t['imbalance']:.2f}"
        of = (f"largest / smallest class of the {ins.limit} per split read (--limit): a partial read, not the data's"
              if ins.limit is not None else "largest / smallest class")
        lines.append(f"  {split}: {t['images']} images ({t['bad']} bad), imbalance {imb} ({of})")
        per = t["per_class"]
        shown = list(per.items()) if len(per) <= 30 else sorted(per.items(), key=lambda kv: -kv[1])[:30]
        for name, n in shown:
            lines.append(f"    {name:<{width}} {n:>7}")
        if len(per) > 30:
            lines.append(f"    ... {len(per) - 30} more classes")
        if t["missing_classes"]:
            missing = t["missing_classes"]
            lines.append(f"    no images of: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    lines.append("")
    lines.append("formats: " + ", ".join(f"{k} {v}" for k, v in ins.formats.items()))
    lines.append("colour modes: " + ", ".join(f"{k} {v}" for k, v in ins.modes.items()))
    for title, hist, fmt in (("file sizes", ins.size_histogram, size),
                             ("resolutions (long side, px)", ins.side_histogram, lambda v: f"{v:.0f}")):
        lines.append("")
        lines.append(title)
        most = max([h["count"] for h in hist] or [1])
        for h in hist:
            lines.append(f"  {_bin_label(h['lo'], h['hi'], fmt):>12} {h['count']:>7}  {_bar(h['count'], most)}")
    if ins.resolutions:
        r = ins.resolutions
        lines.append(f"  width {r['width']['min']}..{r['width']['max']} (median {r['width']['median']:g}), "
                     f"height {r['height']['min']}..{r['height']['max']} (median {r['height']['median']:g}); "
                     f"most common: {', '.join(f'{k} ({v})' for k, v in r['most_common'].items())}")
    lines.append("")
    if ins.bad:
        lines.append(f"bad files: {len(ins.bad)}")
        for b in ins.bad[:50]:
            lines.append(f"  {b['relpath']}: {b['reason']}")
        if len(ins.bad) > 50:
            lines.append(f"  ... {len(ins.bad) - 50} more (--json lists all)")
    else:
        lines.append("bad files: none")
    e = ins.estimate
    if e is not None:
        opts = ", ".join(f"{k}={v}" for k, v in e.codec_options.items())
        lines.append("")
        lines.append(f"estimated store ({e.codec}{' ' + opts if opts else ''}; from {len(e.sample)} sample "
                     f"image(s) encoded on this machine)")
        lines.append(f"  {'level':>6} {'DCR':>10} {'per image':>10} {'store':>10} {'s/MP':>7}")
        for lv in e.levels:
            lines.append(f"  {format_level(lv.level):>6} {lv.dcr_vs_source:>10.3f} {size(lv.bytes_per_image):>10} "
                         f"{size(lv.store_bytes):>10} {lv.seconds_per_megapixel:>7.3f}")
        lines.append(f"  all levels: {size(e.store_bytes)} (sources: {size(ins.source_bytes)}); DCR = 1 - compressed "
                     "/ source bytes (negative: larger than the source)")
        lines.append(f"  compression time: {_duration(e.wall_seconds)} on this machine's {e.cpus} CPU(s) "
                     f"({_duration(e.cpu_seconds)} of CPU)")
        for rel, why in e.failed.items():
            lines.append(f"  sample image {rel} failed to encode: {why}")
    lines.append("")
    lines.append(f"(inspected in {ins.seconds:.1f} s; nothing was written)")
    return "\n".join(lines)
