"""Peak memory of the compress job at 1x and Nx the data: it must stream, not grow with the dataset.

Each scale runs in a fresh child process (its own local Ray), so nothing carries over. While it
runs, this process samples the resident set size (RSS) of the child's whole process tree every
``--interval`` seconds: the driver, Ray's GCS and raylet, and every Ray worker. It records the
peak of that sum and of the driver alone.

The data: ``--images`` JPEG q90 crops (``--size`` px squares) of real photos that scikit-image
ships (astronaut, coffee, rocket, Hubble deep field, immunohistochemistry; public domain / CC0);
the Nx set is the same images replicated N times under other names. Images are large enough that
holding the data (its decoded pixels, or even its encoded outputs) in memory would show: the
script prints how big that would be next to the measured peaks.

    .venv/bin/python benchmarks/compress_memory.py --images 100 --size 1024 --factor 4 --json runs/mem.json

Exit status 1 if the peaks differ by more than ``--tolerance`` (default 20%).
"""

from __future__ import annotations

import argparse
import json
import os
import platform as std_platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
MB = 1024 * 1024


def make_images(root: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` distinct JPEG crops (upscaled when the photo is smaller than ``size``), ImageFolder layout."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(np.ascontiguousarray(getattr(skimage.data, p)()[..., :3])) for p in PHOTOS]
    for i in range(n):
        k = i % len(photos)
        src = photos[k]
        w, h = src.size
        crop = int(min(w, h) * (0.5 + 0.5 * rng.random()))
        x, y = int(rng.integers(0, w - crop + 1)), int(rng.integers(0, h - crop + 1))
        img = src.resize((size, size), Image.Resampling.BICUBIC, box=(x, y, x + crop, y + crop))
        path = root / PHOTOS[k] / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, "JPEG", quality=90)


def replicate(src: Path, dst: Path, factor: int) -> None:
    """``dst`` = ``factor`` copies of every image of ``src``, as distinct files."""
    for path in sorted(src.rglob("*.jpg")):
        rel = path.relative_to(src)
        for r in range(factor):
            out = dst / rel.parent / f"r{r}-{rel.name}"
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out)


def run_child(args: argparse.Namespace) -> None:
    """Child mode: one compress job on a fresh local Ray; prints a JSON line."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from lossyvision.runners.compress import compress_job

    t0 = time.perf_counter()
    result = compress_job(args.child_source, args.child_out, levels=args.levels,
                          codec_options={"effort": args.effort}, num_cpus=args.num_cpus, log=lambda m: None)
    print(json.dumps({"done": result.done, "ok": int((result.manifest["status"] == "ok").sum()),
                      "seconds": time.perf_counter() - t0,
                      "compressed_bytes": int(result.manifest["compressed_bytes"].fillna(0).sum())}))


def measure(source: Path, out: Path, args: argparse.Namespace) -> dict:
    """Run the child on ``source`` and sample its process tree's RSS until it exits."""
    import psutil
    from _procs import tree_rss

    cmd = [sys.executable, __file__, "--child-source", str(source), "--child-out", str(out),
           "--levels", ",".join(str(x) for x in args.levels), "--effort", str(args.effort),
           "--num-cpus", str(args.num_cpus)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    root = psutil.Process(child.pid)
    peak_tree = peak_driver = 0
    max_procs = 0
    samples = 0
    while child.poll() is None:
        sample = tree_rss(root)
        if sample is None:
            break
        total, driver, n_procs = sample
        peak_tree, peak_driver = max(peak_tree, total), max(peak_driver, driver)
        max_procs = max(max_procs, n_procs)
        samples += 1
        time.sleep(args.interval)
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"compress child failed ({child.returncode}):\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    n_images = sum(1 for _ in source.rglob("*.jpg"))
    return {
        "images": n_images,
        "source_mb": sum(p.stat().st_size for p in source.rglob("*.jpg")) / MB,
        "decoded_pixels_mb": n_images * args.size * args.size * 3 / MB,
        "compressed_mb": result["compressed_bytes"] / MB,
        "work_items": result["done"],
        "ok": result["ok"],
        "wall_s": time.perf_counter() - t0,
        "job_s": result["seconds"],
        "peak_rss_tree_mb": peak_tree / MB,
        "peak_rss_driver_mb": peak_driver / MB,
        "peak_rss_others_mb": (peak_tree - peak_driver) / MB,
        "max_processes": max_procs,
        "samples": samples,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100, help="images in the 1x set")
    ap.add_argument("--size", type=int, default=1024, help="image side in pixels")
    ap.add_argument("--factor", type=int, default=4, help="the larger set is this many times the 1x set")
    ap.add_argument("--levels", type=lambda s: [float(x) for x in s.split(",")], default=[0.0, 1.0, 4.0])
    ap.add_argument("--effort", type=int, default=1)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between RSS samples")
    ap.add_argument("--tolerance", type=float, default=0.20)
    ap.add_argument("--workdir", type=Path, default=None, help="keep data here (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child-source", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_source:
        run_child(args)
        return 0

    work = args.workdir or Path(tempfile.mkdtemp(prefix="lv-mem-"))
    try:
        base, big = work / "x1", work / f"x{args.factor}"
        if not base.exists():
            make_images(base, args.images, args.size)
        if not big.exists():
            replicate(base, big, args.factor)
        runs = {}
        for name, source in (("x1", base), (f"x{args.factor}", big)):
            out = work / f"store-{name}"
            shutil.rmtree(out, ignore_errors=True)
            runs[name] = measure(source, out, args)
            print(f"{name}: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in runs[name].items()), flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    small, large = runs["x1"], runs[f"x{args.factor}"]
    ratio = large["peak_rss_tree_mb"] / small["peak_rss_tree_mb"]
    ok = abs(ratio - 1) <= args.tolerance
    summary = {"machine": f"{std_platform.machine()}, {os.cpu_count()} cores", "python": std_platform.python_version(),
               "load_avg": os.getloadavg(), "settings": {k: v for k, v in vars(args).items()
                                                         if not k.startswith("child") and k != "json"
                                                         and k != "workdir"},
               "runs": runs, "peak_ratio": ratio, "within_tolerance": ok}
    print(f"peak RSS (process tree) x{args.factor}/x1 = {ratio:.3f} -> "
          f"{'OK' if ok else 'FAIL'} (tolerance {args.tolerance:.0%})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
