"""P1 against the plain tool: ``lossyvision compress`` against a plain ``multiprocessing.Pool(cores)``, interleaved.

What a user compares: the whole command, as typed (a fresh Python, the CLI, a fresh local Ray, the
job, the manifest, the summary), against the few lines they would write instead: a
``multiprocessing.Pool(cores)`` over the images that reads each JPEG, decodes it with imagecodecs,
encodes every level with ``imagecodecs.jpegxl_encode`` at the same effort and writes the files.
Both run as subprocesses timed from outside (interpreter start included on both sides).

- **same work** (the headline): the job with its defaults, whose PNG baseline covers a fixed
  sample of 256 images per split, against a pool that also encodes those images as PNG (zlib 6);
- **no PNG**: ``--png-sample 0`` against a pool of the JPEG XL encodes alone.

Runs interleave, P J P J ... P (``--repeats`` jobs of each kind): each job is divided by the mean
of the pool runs on either side, so a shared machine's drifting load weighs on both, and the
median of the repeats is the headline. Each run's CPU-seconds (its whole process tree: the CLI,
Ray's daemons and workers; the pool's processes) are sampled too: on a machine shared with other
people's work, wall times move with their load, CPU-seconds much less.

The photos: ``--images`` crops of real photos that scikit-image ships (astronaut, coffee, rocket,
Hubble deep field, immunohistochemistry, chelsea, retina; public domain / CC0), each a random
width and height in [384, 640] px (resized from a random box when the photo is smaller), stored as
JPEG q90 in class folders.

    .venv/bin/python benchmarks/compress_vs_pool.py --images 400 --levels 1,5 --effort 7 --repeats 3 \
        --json benchmarks/results/p1-pool.json
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
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "chelsea", "retina")


def make_photos(root: Path, n: int, low: int = 384, high: int = 640, seed: int = 0) -> None:
    """``n`` JPEG q90 crops of real photos, each ``low``..``high`` px on a side, ImageFolder layout."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(np.ascontiguousarray(getattr(skimage.data, p)()[..., :3])) for p in PHOTOS]
    for i in range(n):
        k = i % len(photos)
        src = photos[k]
        w, h = int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))
        scale = min(src.width / w, src.height / h) * (0.6 + 0.4 * rng.random())
        bw, bh = max(1, int(w * scale)), max(1, int(h * scale))
        x, y = int(rng.integers(0, src.width - bw + 1)), int(rng.integers(0, src.height - bh + 1))
        img = src.resize((w, h), Image.Resampling.BICUBIC, box=(x, y, x + bw, y + bh))
        path = root / PHOTOS[k] / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, "JPEG", quality=90)


# --- the plain pool (child process) -----------------------------------------------------------------
def _pool_one(args: tuple) -> int:
    import imagecodecs

    path, out, levels, effort, png = args
    data = Path(path).read_bytes()
    rgb = imagecodecs.jpeg8_decode(data)
    name = Path(path).parent.name + "/" + Path(path).stem + ".jxl"
    for level in levels:
        target = Path(out) / f"{level:g}" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(imagecodecs.jpegxl_encode(rgb, distance=level, effort=effort))
    return len(imagecodecs.png_encode(rgb, level=6)) if png else 0


def pool_child(args: argparse.Namespace) -> None:
    import multiprocessing

    spec = json.loads(Path(args.pool_child).read_text())
    work = [(p, spec["out"], spec["levels"], spec["effort"], p in set(spec["png"])) for p in spec["paths"]]
    with multiprocessing.Pool(spec["cores"]) as pool:
        pool.map(_pool_one, work, chunksize=1)


# --- the runs ---------------------------------------------------------------------------------------
PLATFORM = REPO / "platform"


ADDRESS: str | None = None  # --address: the job joins this running Ray instead of starting one


def env() -> dict:
    e = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(PLATFORM)}
    e.pop("RAY_ADDRESS", None)
    if ADDRESS:
        e["RAY_ADDRESS"] = ADDRESS
    return e


CPU_SECONDS: list[float] = []  # of each timed run, in order


def timed(cmd: list[str]) -> float:
    """Wall seconds of ``cmd``; its process tree's CPU-seconds (sampled every 0.2 s) go to ``CPU_SECONDS``."""
    from _procs import run_timed

    seconds, cpu, _, _ = run_timed(cmd, env())
    CPU_SECONDS.append(cpu)
    return seconds


def run_job(src: Path, store: Path, levels: str, effort: int, cores: int, png_sample: str) -> float:
    shutil.rmtree(store, ignore_errors=True)
    seconds = timed([sys.executable, "-m", "lossyvision.cli", "compress", "--source", str(src), "--out", str(store),
                     "--levels", levels, "--effort", str(effort), "--num-cpus", str(cores),
                     "--png-sample", png_sample])
    shutil.rmtree(store, ignore_errors=True)
    return seconds


def run_pool(spec_file: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    seconds = timed([sys.executable, __file__, "--pool-child", str(spec_file)])
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    import imagecodecs

    return {"cpu": cpu, "cores": os.cpu_count(), "python": std_platform.python_version(),
            "imagecodecs": imagecodecs.__version__, "commit": commit, "platform": str(PLATFORM)}


def interleaved(job, pool, repeats: int, loads: dict, tag: str) -> dict:
    """P J P J ... P; each job over the mean of its two neighbouring pool runs."""
    pools, jobs = [pool()], []
    pool_cpu, job_cpu = [CPU_SECONDS[-1]], []
    for i in range(repeats):
        jobs.append(job())
        job_cpu.append(CPU_SECONDS[-1])
        pools.append(pool())
        pool_cpu.append(CPU_SECONDS[-1])
        loads[f"{tag}_{i}"] = os.getloadavg()
        print(f"{tag} {i}: job {jobs[-1]:.1f}s ({job_cpu[-1]:.0f} CPU-s), pool {pools[-2]:.1f}s / {pools[-1]:.1f}s "
              f"({pool_cpu[-1]:.0f} CPU-s)", flush=True)
    ratios = [j / ((pools[i] + pools[i + 1]) / 2) for i, j in enumerate(jobs)]
    return {"job_seconds": jobs, "pool_seconds": pools, "ratios": ratios, "ratio": float(np.median(ratios)),
            "job_cpu_seconds": job_cpu, "pool_cpu_seconds": pool_cpu,
            "cpu_ratio": float(np.median(job_cpu) / np.median(pool_cpu))}


def main() -> int:
    global PLATFORM, ADDRESS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--levels", default="1,5")
    ap.add_argument("--effort", type=int, default=7)
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--png-sample", type=int, default=256, help="the job's default PNG sample per split")
    ap.add_argument("--skip-no-png", action="store_true", help="only the same-work comparison")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the photos here (default: a temp folder)")
    ap.add_argument("--platform", type=Path, default=PLATFORM,
                    help="the lossyvision source folder the job runs from (another checkout, to compare)")
    ap.add_argument("--address", default=None,
                    help="a running Ray the job joins (e.g. a `ray start --head` of this machine): the job without "
                         "Ray's start and stop, as for a user who keeps one running")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--pool-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.pool_child:
        pool_child(args)
        return 0
    PLATFORM = args.platform.resolve()
    ADDRESS = args.address

    sys.path.insert(0, str(REPO / "platform"))
    from lossyvision.compress import png_sample
    from lossyvision.datasets import create_dataset

    levels = [float(x) for x in args.levels.split(",")]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lv-p1pool-"))
    try:
        src = work / "src"
        if not src.exists():
            make_photos(src, args.images)
        records = create_dataset("imagefolder", str(src)).records()
        sampled = sorted(str(src / r) for r in png_sample(records, args.png_sample))
        paths = sorted(str(p) for p in src.rglob("*.jpg"))
        specs = {}
        for name, png in (("same", sampled), ("nopng", [])):
            specs[name] = work / f"pool-{name}.json"
            specs[name].write_text(json.dumps({"paths": paths, "out": str(work / "pool"), "levels": levels,
                                               "effort": args.effort, "cores": args.cores, "png": png}))
        pixels = 0
        from PIL import Image

        for p in paths:
            with Image.open(p) as im:
                pixels += im.width * im.height
        loads = {"start": os.getloadavg()}
        res = {"machine": machine(), "images": len(paths), "megapixels": pixels / 1e6, "levels": levels,
               "effort": args.effort, "cores": args.cores, "png_sample": args.png_sample,
               "png_images": len(sampled), "address": args.address}
        res["same_work"] = interleaved(
            lambda: run_job(src, work / "store", args.levels, args.effort, args.cores, str(args.png_sample)),
            lambda: run_pool(specs["same"], work / "pool"), args.repeats, loads, "same")
        if not args.skip_no_png:
            res["no_png"] = interleaved(
                lambda: run_job(src, work / "store", args.levels, args.effort, args.cores, "0"),
                lambda: run_pool(specs["nopng"], work / "pool"), args.repeats, loads, "nopng")
        res["load_average_1_5_15"] = loads
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(res, indent=2))
    line = (f"P1 vs a plain Pool({args.cores}): same work {res['same_work']['ratio']:.3f}x "
            f"(CPU-seconds {res['same_work']['cpu_ratio']:.3f}x)")
    if "no_png" in res:
        line += f", without PNG {res['no_png']['ratio']:.3f}x (CPU-seconds {res['no_png']['cpu_ratio']:.3f}x)"
    print(f"\n{line} (medians of {args.repeats}; {len(paths)} images, {pixels / 1e6:.1f} MP, levels {args.levels}, "
          f"effort {args.effort}, PNG on {len(sampled)})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
