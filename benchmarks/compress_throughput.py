"""P1: throughput of the compress job (Ray Data, all cores) against two baselines, in one run.

* job: ``lossyvision.runners.compress.compress_job`` on a fresh local Ray with ``--num-cpus`` CPUs
  (``ray.init`` timed separately: it is paid once per process, not per image), with a PNG baseline
  of every image (``png_sample=None``), as (a) does. This is the cold case: the first job on a new
  cluster also pays Ray Data's start (its two actors, the task workers' start and imports: about 2 s
  here). With a warm cluster (a long-lived one, or a second
  dataset), the same job runs again on the same cluster into a new store: reported apart;
* (a) serial: a plain Python loop calling imagecodecs on the same images, levels and effort:
  read the JPEG, decode it, encode every level (level 0: lossless JPEG transcode), the same
  PNG baseline once per image as the job, write the files;
* (b) limit: the single-core time of those encode calls alone (timed inside the loop), divided
  by the number of CPUs: what perfect parallel encoding with zero overhead would take;
* (c) control: the same loop as (a) in a plain ``multiprocessing`` pool of as many processes as
  CPUs (no Ray), for what this machine gives when all its cores encode at once.

Runs interleave, S J S J S ... S (``--repeats`` jobs): each job is compared with the mean of the
serial runs on either side, so a load or CPU speed that drifts (a shared VM) weighs on both sides
alike, and the median over the repeats is the headline (one run's ratio varies by about +-0.01).

Throughput is megapixels encoded per second: image pixels x levels / wall time. The images are
real photos (scikit-image's bundled astronaut, coffee, rocket, Hubble deep field,
immunohistochemistry; public domain / CC0), cropped at seeded random positions to
``--size`` squares and stored as JPEG q90. Run it on a quiet machine: the load average is
recorded after each phase.

    .venv/bin/python benchmarks/compress_throughput.py --images 400 --repeats 3 --json runs/p1.json
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

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def make_images(root: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """``n`` JPEG crops of real photos, ``size`` x ``size``, in class folders (ImageFolder)."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [np.ascontiguousarray(getattr(skimage.data, name)()[..., :3]) for name in PHOTOS]
    paths = []
    for i in range(n):
        k = i % len(photos)
        src = photos[k]
        h, w = src.shape[:2]
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        crop = src[y:y + size, x:x + size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        path = root / PHOTOS[k] / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(crop)).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def serial_loop(paths: list[Path], levels: list[float], effort: int, out: Path) -> dict:
    """Baseline (a), timing the encode calls alone for (b)."""
    start = time.perf_counter()
    res = _encode_all(paths, levels, effort, out)
    return {**res, "seconds": time.perf_counter() - start}


def _encode_chunk(args: tuple) -> dict:
    return _encode_all(*args)


def process_pool(paths: list[Path], levels: list[float], effort: int, out: Path, processes: int) -> dict:
    """Control (c): the same loop in a ``multiprocessing`` pool of ``processes``, no Ray.

    Shows what this machine gives when every core encodes at once (shared caches and memory
    bandwidth make each encode slower than on an idle machine), i.e. the practical ceiling.
    """
    import multiprocessing as mp

    chunks = [(paths[i:i + 8], levels, effort, out) for i in range(0, len(paths), 8)]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_encode_chunk, chunks, chunksize=1)
    seconds = time.perf_counter() - start
    total = {k: sum(p[k] for p in parts) for k in parts[0]}
    return {**total, "seconds": seconds}


def _encode_all(paths: list[Path], levels: list[float], effort: int, out: Path) -> dict:
    import imagecodecs

    encode_s = png_s = 0.0
    pixels = 0
    for path in paths:
        data = path.read_bytes()
        rgb = imagecodecs.jpeg8_decode(data)
        for level in levels:
            t = time.perf_counter()
            if level == 0:
                encoded = imagecodecs.jpegxl_encode_jpeg(data)
            else:
                encoded = imagecodecs.jpegxl_encode(rgb, distance=level, effort=effort)
            encode_s += time.perf_counter() - t
            pixels += rgb.shape[0] * rgb.shape[1]
            target = out / f"{level:g}" / path.parent.name / (path.stem + ".jxl")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(encoded)
        t = time.perf_counter()
        png = imagecodecs.png_encode(rgb, level=6)  # the job's PNG baseline (png codec default)
        png_s += time.perf_counter() - t
        (out / "png").mkdir(exist_ok=True)
        (out / "png" / (path.stem + ".png")).write_bytes(png)
    return {"encode_seconds": encode_s + png_s, "jxl_encode_seconds": encode_s, "png_seconds": png_s,
            "megapixels": pixels / 1e6}


def run_job(source: Path, store: Path, levels: list[float], effort: int, num_cpus: int,
            warm: bool = True) -> dict:
    """The job on a fresh local Ray (cold: the first dataset pays Ray Data's start), then, with
    ``warm``, the same job again into a new store on the same cluster (a long-lived cluster)."""
    import ray

    from lossyvision.runners.compress import compress_job

    def one(target: Path) -> dict:
        t = time.perf_counter()
        result = compress_job(str(source), str(target), codec_options={"effort": effort}, levels=levels,
                              png_sample=None, log=lambda msg: None)
        seconds = time.perf_counter() - t
        m = result.manifest
        ok = m[m["status"] == "ok"]
        return {"seconds": seconds, "rows": len(m), "rows_ok": len(ok),
                "megapixels": float((ok["width"] * ok["height"]).sum()) / 1e6,
                "encode_seconds": float(ok["encode_seconds"].sum())}

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    shutil.rmtree(store, ignore_errors=True)
    t = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t
    try:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        cold = one(store)
        warm_run = one(store.with_name(store.name + "-warm")) if warm else None
    finally:
        ray.shutdown()
        shutil.rmtree(store.with_name(store.name + "-warm"), ignore_errors=True)
    return {**cold, "ray_init_seconds": init_s, "warm": warm_run}


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    import imagecodecs
    import ray

    return {"cpu": cpu, "cores": os.cpu_count(), "python": std_platform.python_version(),
            "ray": ray.__version__, "imagecodecs": imagecodecs.__version__,
            "libjxl": imagecodecs.jpegxl_version() if hasattr(imagecodecs, "jpegxl_version") else "",
            "commit": commit}


def _median(xs: list[float]) -> float:
    return float(np.median(xs))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--size", type=int, default=384, help="side of the square crops, pixels")
    ap.add_argument("--levels", default="0,0.5,1,2,5,10")
    ap.add_argument("--effort", type=int, default=7)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3,
                    help="job runs, each between two serial runs (S J S J S ...); the median is reported")
    ap.add_argument("--no-warm", action="store_true", help="skip the second job on a warm cluster")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temp folder, removed)")
    ap.add_argument("--json", default=None, help="write the results here too")
    args = ap.parse_args(argv)
    levels = [float(x) for x in args.levels.split(",")]

    work = Path(args.workdir or tempfile.mkdtemp(prefix="lossyvision-p1-"))
    try:
        paths = make_images(work / "src", args.images, args.size)
        loads = {"start": os.getloadavg()}
        # S J S J S ...: every job sits between two serial runs and is compared with their mean, so a
        # load or CPU speed that drifts during the benchmark (a shared VM) affects both sides alike.
        serials = [serial_loop(paths, levels, args.effort, work / "serial")]
        loads["after_serial_0"] = os.getloadavg()
        jobs = []
        for i in range(args.repeats):
            jobs.append(run_job(work / "src", work / "store", levels, args.effort, args.num_cpus,
                                warm=not args.no_warm))
            loads[f"after_job_{i}"] = os.getloadavg()
            serials.append(serial_loop(paths, levels, args.effort, work / "serial"))
            loads[f"after_serial_{i + 1}"] = os.getloadavg()
        pool = process_pool(paths, levels, args.effort, work / "pool", args.num_cpus)
        loads["after_pool"] = os.getloadavg()
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    mp = serials[0]["megapixels"]
    repeats = []
    for i, job in enumerate(jobs):
        assert abs(job["megapixels"] - mp) < 1e-6, (job["megapixels"], mp)
        base = {k: (serials[i][k] + serials[i + 1][k]) / 2 for k in serials[0]}
        limit_s = base["encode_seconds"] / args.num_cpus
        r = {"serial_seconds": base["seconds"], "limit_seconds": limit_s, "job_seconds": job["seconds"],
             "ray_init_seconds": job["ray_init_seconds"], "job_encode_seconds": job["encode_seconds"],
             "serial_jxl_encode_seconds": base["jxl_encode_seconds"],
             "speedup_vs_serial": base["seconds"] / job["seconds"],
             "fraction_of_limit": limit_s / job["seconds"],
             "fraction_of_limit_with_ray_init": limit_s / (job["seconds"] + job["ray_init_seconds"])}
        if job["warm"]:
            r.update(warm_job_seconds=job["warm"]["seconds"],
                     warm_fraction_of_limit=limit_s / job["warm"]["seconds"],
                     warm_speedup_vs_serial=base["seconds"] / job["warm"]["seconds"])
        repeats.append(r)
    all_serial = {k: float(np.mean([s[k] for s in serials])) for k in serials[0]}
    limit_all = all_serial["encode_seconds"] / args.num_cpus
    res = {
        "machine": machine(), "images": args.images, "size": args.size, "levels": levels,
        "effort": args.effort, "num_cpus": args.num_cpus, "megapixels": mp, "repeats": repeats,
        "serial": {**all_serial, "runs_seconds": [s["seconds"] for s in serials],
                   "mp_per_s": mp / all_serial["seconds"]},
        "limit": {"seconds": limit_all, "mp_per_s": mp / limit_all},
        "pool": {**pool, "mp_per_s": mp / pool["seconds"]},
        "job": {"seconds_median": _median([j["seconds"] for j in jobs]),
                "mp_per_s": mp / _median([j["seconds"] for j in jobs])},
        "load_average_1_5_15": loads,
    }
    for key in ("speedup_vs_serial", "fraction_of_limit", "fraction_of_limit_with_ray_init",
                "warm_fraction_of_limit", "warm_speedup_vs_serial"):
        values = [r[key] for r in repeats if key in r]
        if values:
            res[key] = _median(values)
            res[key + "_runs"] = values
    res["pool_fraction_of_limit"] = limit_all / pool["seconds"]
    print(json.dumps(res, indent=2))
    runs = ", ".join(f"{r['fraction_of_limit']:.3f}" for r in repeats)
    warm = (f"; on a warm cluster (a second job) {res['warm_fraction_of_limit']:.3f}"
            if "warm_fraction_of_limit" in res else "")
    print(f"\nP1: {mp:.1f} MP on {args.num_cpus} CPUs, median of {len(repeats)}: job {res['job']['mp_per_s']:.3f} MP/s, "
          f"serial {res['serial']['mp_per_s']:.3f} MP/s, limit {res['limit']['mp_per_s']:.3f} MP/s -> "
          f"{res['speedup_vs_serial']:.2f}x serial, {res['fraction_of_limit']:.3f} of the limit (runs: {runs}; "
          f"{res['fraction_of_limit_with_ray_init']:.3f} counting ray.init){warm}; a plain process pool "
          f"reaches {res['pool_fraction_of_limit']:.3f} of the limit")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
