"""P5 on paper: the training loader's images/s per core at each level, with and without the decoded cache.

What a trial's loader does, with the classes a trial uses: ``sweep.trials.training_samples`` (an
:class:`lossyvision.data.ImageSamples` decoding with the codec), ``sweep.trials.with_cache`` (the model's
``cache:``), ``tasks.training.make_loader`` and the classification collate at 224 px with a random resized
crop and flips (:class:`lossyvision.tasks.classification.ClassificationCollate`), in one process with one
torch thread (``num_workers: 0``): images per CPU-second is images/s per core.

Set-up (untimed): Food101-sized photos, ``--images`` crops of scikit-image's and scikit-learn's photos
(astronaut, cat, coffee, rocket, Hubble deep field, retina, immunohistochemistry; China, flower), each
rescaled to a random 384-640 px by 384-512 px (Food101's images are at most 512 px on a side; most are
512 x 384), saved as JPEG q90; the same crops as PNG for the lossless-from-pixels level. Both are
compressed with lossyvision's own compress job (``compress.run_job``, the code ``lossyvision compress``
runs, here in one process) at JPEG XL effort 7 (the default): levels 0 (a JPEG transcode), 1, 3, 8
from the JPEGs, and 0 from the PNGs (lossless modular from pixels).

Timed, per round (``--rounds``), every level in turn (interleaved, so the machine's load falls on all):

- **off**: one epoch through the loader without a cache (every image read and decoded);
- **fill**: the first epoch with ``cache: exact`` (decoded as off, and written to the cache);
- **on**: the next epoch with ``cache: exact`` (pixels from the memory-mapped cache);
- the split: reading every file, decoding every image, the collate's transform of every image, and
  reading every image from the filled cache, each timed alone over the whole level.

Reported: the median over rounds of images per CPU-second of this process (``time.process_time``; the
machine is shared, so wall time is also recorded) and the cores one GPU needs at ViT-B/16's published
training rate (``--gpu-rate``, default 393 images/s: timm's benchmark CSV, ViT-B/16 at 224 px, AMP,
RTX 3090; an A100 or H100 trains several times faster and needs proportionally more cores).

    .venv/bin/python benchmarks/loader_throughput.py --json benchmarks/results/p5-loader.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform as std_platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
LEVELS = (0.0, 1.0, 3.0, 8.0)
PNG_LEVEL = "0 from PNG"
VIT_B16_RATE = 393.0  # timm benchmark CSV: vit_base_patch16_224 train, AMP, RTX 3090


def make_photos(root: Path, n: int, png: bool, seed: int = 0) -> None:
    """``n`` Food101-sized crops of the shipped photos into an imagefolder (one class per photo)."""
    from PIL import Image

    from lossyvision.demo import SOURCES

    rng = np.random.default_rng(seed)
    for i in range(n):
        source = SOURCES[i % len(SOURCES)]
        src = Image.fromarray(np.ascontiguousarray(source.load()))
        w, h = src.size
        width, height = int(rng.integers(384, 641)), int(rng.integers(384, 513))
        scale = min(w / width, h / height) * (0.6 + 0.4 * rng.random())
        bw, bh = int(width * scale), int(height * scale)
        x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        img = src.resize((width, height), Image.Resampling.BICUBIC, box=(x, y, x + bw, y + bh))
        path = root / "train" / source.label / f"{i:05d}.{'png' if png else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if png:
            img.save(path, "PNG", compress_level=6)
        else:
            img.save(path, "JPEG", quality=90, subsampling=2)


def compress_store(root: Path, store: Path, levels: tuple[float, ...], effort: int):
    from lossyvision import compress
    from lossyvision.datasets import create_dataset

    reader = create_dataset("imagefolder", str(root))
    options = compress.CompressOptions(codec="jpegxl", codec_options={"effort": effort}, levels=levels,
                                       png_sample=0)
    job = compress.run_job(reader.records(), str(root), str(store), options, compress.execute_serially)
    return job.manifest


def level_inputs(root: Path, store: Path, level: float):
    """The sweep and a trial's view of one level: (spec, resources, uris, targets, heights, widths)."""
    import pandas as pd

    from lossyvision.spec import parse_sweep
    from lossyvision.sweep.trials import images_of, read_manifest, split_images

    sweep = parse_sweep({"name": "p5", "dataset": {"kind": "imagefolder", "root": str(root)},
                         "codec": {"name": "jpegxl"}, "train_levels": [level], "test_levels": [level],
                         "test_split": "train", "store": str(store), "output": str(store.parent / "out"),
                         "models": [{"name": "m", "task": "classification", "arch": "resnet10t",
                                     "batch_size": 32, "image_size": 224,
                                     "options": {"train_crop": "random_resized_crop"}}]})
    manifest: pd.DataFrame = read_manifest(sweep)
    rows, reader = split_images(sweep, manifest, "train", level)
    images = images_of(sweep, rows, reader, "train")
    return sweep, images


def loader_epoch(dataset, collate, epoch: int) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, images) of one epoch through the trial's loader."""
    from lossyvision.tasks.training import make_loader

    loader = make_loader(dataset, 32, collate, shuffle=True, seed=epoch)
    c0, w0, n = time.process_time(), time.perf_counter(), 0
    for x, _ in loader:
        n += len(x)
    return time.process_time() - c0, time.perf_counter() - w0, n


def split_times(samples, collate, cache) -> dict[str, float]:
    """CPU ms per image of each part, over the whole level: read, decode, transform, cache read."""
    from lossyvision.store import read_bytes

    n = len(samples)
    c = time.process_time()
    data = [read_bytes(u) for u in samples.uris]
    read = time.process_time() - c
    c = time.process_time()
    decoded = [samples.decode(d) for d in data]
    decode = time.process_time() - c
    c = time.process_time()
    for start in range(0, n, 32):
        collate([(rgb, 0) for rgb in decoded[start:start + 32]])
    transform = time.process_time() - c
    c = time.process_time()
    for i in range(n):
        cache.get(i)
    cache_read = time.process_time() - c
    return {k: 1000 * v / n for k, v in (("read", read), ("decode", decode), ("transform", transform),
                                          ("cache_read", cache_read))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--effort", type=int, default=7)
    ap.add_argument("--gpu-rate", type=float, default=VIT_B16_RATE)
    ap.add_argument("--work", default=None, help="folder for the photos and stores (default: a temporary one)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from lossyvision.sweep.trials import training_samples, with_cache
    from lossyvision.tasks.classification import ClassificationCollate

    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="lv-p5-"))
    t0 = time.perf_counter()
    inputs = {}
    for png in (False, True):
        root, store = work / ("png" if png else "jpeg"), work / ("store-png" if png else "store-jpeg")
        if not root.exists():
            make_photos(root, args.images, png)
        compress_store(root, store, (0.0,) if png else LEVELS, args.effort)
        for level in ((0.0,) if png else LEVELS):
            inputs[PNG_LEVEL if png else f"{level:g}"] = level_inputs(root, store, level)
    print(f"set-up: {args.images} photos per source format, compressed in {time.perf_counter() - t0:.0f} s",
          flush=True)

    collate = ClassificationCollate(224, 16, train=True, train_crop="random_resized_crop")
    runs: dict[str, list[dict]] = {name: [] for name in inputs}
    for r in range(args.rounds):
        for name, (sweep, images) in inputs.items():
            spec, res = sweep.models[0], sweep.resources.trial
            codec = sweep.arms[0].create()
            plain, _ = training_samples(spec, res, images.uris, images.targets, codec.decode)
            off = loader_epoch(plain, collate, 1)
            with tempfile.TemporaryDirectory(prefix="lv-p5-cache-") as scratch:
                cached_spec = spec.model_copy(update={"cache": "exact"})
                samples, _ = training_samples(cached_spec, res, images.uris, images.targets, codec.decode)
                cached = with_cache(cached_spec, samples, images, os.path.join(scratch, "cache"))
                fill = loader_epoch(cached, collate, 1)
                on = loader_epoch(cached, collate, 2)
                parts = split_times(samples, collate, cached.cache)
                cache_bytes = os.path.getsize(os.path.join(scratch, "cache", "pixels.u8"))
            row = {"round": r, "images": off[2], "cache_bytes": cache_bytes, "split_ms": parts,
                   **{f"{k}_cpu_s": v[0] for k, v in (("off", off), ("fill", fill), ("on", on))},
                   **{f"{k}_wall_s": v[1] for k, v in (("off", off), ("fill", fill), ("on", on))}}
            runs[name].append(row)
            print(f"round {r + 1}/{args.rounds} level {name}: off {off[2] / off[0]:.0f}, fill "
                  f"{fill[2] / fill[0]:.0f}, on {on[2] / on[0]:.0f} images per CPU-second", flush=True)

    summary = {}
    for name, rows in runs.items():
        n = rows[0]["images"]
        rate = {k: statistics.median(n / r[f"{k}_cpu_s"] for r in rows) for k in ("off", "fill", "on")}
        wall = {k: statistics.median(n / r[f"{k}_wall_s"] for r in rows) for k in ("off", "on")}
        split = {k: statistics.median(r["split_ms"][k] for r in rows) for k in rows[0]["split_ms"]}
        summary[name] = {"images": n, "per_core": rate, "wall_per_s": wall, "split_ms": split,
                         "cores_per_gpu_off": args.gpu_rate / rate["off"], "cores_per_gpu_on": args.gpu_rate / rate["on"],
                         "cache_bytes_per_image": rows[0]["cache_bytes"] / n}
    print(f"\nimages/s per core (median of {args.rounds} rounds, images per CPU-second); cores per GPU at "
          f"{args.gpu_rate:g} images/s")
    print(f"{'level':>11} | {'off':>6} | {'fill':>6} | {'on':>6} | read ms | decode ms | transform ms | "
          f"cache ms | cores off | cores on")
    for name, s in summary.items():
        p, m = s["per_core"], s["split_ms"]
        print(f"{name:>11} | {p['off']:6.0f} | {p['fill']:6.0f} | {p['on']:6.0f} | {m['read']:7.2f} | "
              f"{m['decode']:9.2f} | {m['transform']:12.2f} | {m['cache_read']:8.2f} | "
              f"{s['cores_per_gpu_off']:9.1f} | {s['cores_per_gpu_on']:8.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "machine": {"cpus": os.cpu_count(), "python": std_platform.python_version(),
                                            "torch": torch.__version__, "load": os.getloadavg()},
            "summary": summary, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
