"""Peak memory of a whole sweep at 1x and Nx the test images: evaluation must stream, not hold test levels.

Each scale runs ``lossyvision sweep run`` in a fresh child process (its own local Ray, ``--num-cpus``),
compressing, training and evaluating from scratch. While it runs, this process samples the resident
set size (RSS) of the child's whole process tree every ``--interval`` seconds: the driver, Ray's GCS
and raylet, every Ray worker and Tune trial. It keeps the peak of that sum over the whole sweep
and over its evaluation phase alone (from the driver's "evaluating ..." line to its end), and of
the driver alone.

The data: ``--classes`` classes of real photos that scikit-image ships (astronaut, coffee, rocket,
Hubble deep field, immunohistochemistry; public domain / CC0), ``--size`` px square crops stored as
JPEG q90 in ``train/`` and ``test/`` folders. The train split is the same at every scale; the Nx
test split is the 1x one replicated N times under other names. The sweep: JPEG XL effort 1, train
level 1, several test levels, resnet10t from scratch at 64 px for one epoch; 1 CPU per trial and
per evaluation task.

    .venv/bin/python benchmarks/sweep_memory.py --test-per-class 60 --factor 4 --json benchmarks/results/sweep-memory.json

``--platform DIR`` runs the sweep from another checkout's ``platform/`` (to compare before/after).
Exit status 1 if the whole-sweep peaks differ by more than ``--tolerance`` (default 15%).
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
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
MB = 1024 * 1024


def make_split(root: Path, split: str, per_class: int, size: int, seed: int) -> None:
    """``per_class`` distinct JPEG q90 crops of each photo, ``size`` px squares, under ``root/split/<photo>/``."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in PHOTOS:
        src = Image.fromarray(np.ascontiguousarray(getattr(skimage.data, name)()[..., :3]))
        w, h = src.size
        for i in range(per_class):
            crop = int(min(w, h) * (0.5 + 0.5 * rng.random()))
            x, y = int(rng.integers(0, w - crop + 1)), int(rng.integers(0, h - crop + 1))
            img = src.resize((size, size), Image.Resampling.BICUBIC, box=(x, y, x + crop, y + crop))
            path = root / split / name / f"{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, "JPEG", quality=90)


def replicate_test(src: Path, dst: Path, factor: int) -> None:
    """``dst``: ``src``'s train split as is, its test split ``factor`` times under other names."""
    shutil.copytree(src / "train", dst / "train")
    for path in sorted((src / "test").rglob("*.jpg")):
        rel = path.relative_to(src / "test")
        for r in range(factor):
            out = dst / "test" / rel.parent / f"r{r}-{rel.name}"
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out)


def sweep_file(path: Path, root: Path, output: Path, test_levels: list[float]) -> Path:
    import yaml

    data = {
        "name": output.name, "dataset": {"kind": "imagefolder", "root": str(root)},
        "codec": {"name": "jpegxl", "effort": 1}, "train_levels": [1], "test_levels": test_levels,
        "models": [{"name": "r10", "task": "classification", "arch": "resnet10t", "epochs": 1, "lr": 0.003,
                    "batch_size": 16, "image_size": 64}],
        "resources": {"trial": {"cpu": 1}, "eval": {"cpu": 1}}, "max_failures": 0,
        "report": {"resamples": 200}, "output": str(output),
    }
    path.write_text(yaml.safe_dump(data))
    return path


def measure(sweep: Path, args: argparse.Namespace) -> dict:
    """Run the sweep as a child and sample its process tree's RSS until it exits."""
    import psutil
    from _procs import tree_rss

    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(args.platform.resolve())}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "lossyvision.cli", "sweep", "run", str(sweep), "--num-cpus", str(args.num_cpus),
           "--no-report"]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    phase = {"name": "start", "evaluate_started": None}
    lines: list[str] = []

    def read() -> None:
        for line in child.stdout:
            lines.append(line.rstrip())
            if line.startswith("evaluating "):
                phase["name"], phase["evaluate_started"] = "evaluate", time.perf_counter() - t0
            elif line.startswith("training "):
                phase["name"] = "train"

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    root = psutil.Process(child.pid)
    peaks = {"tree": 0, "driver": 0}
    by_phase: dict[str, int] = {}
    samples = max_procs = 0
    while child.poll() is None:
        sample = tree_rss(root)
        if sample is None:
            break
        total, driver, n_procs = sample
        peaks["tree"], peaks["driver"] = max(peaks["tree"], total), max(peaks["driver"], driver)
        by_phase[phase["name"]] = max(by_phase.get(phase["name"], 0), total)
        max_procs, samples = max(max_procs, n_procs), samples + 1
        time.sleep(args.interval)
    reader.join(timeout=10)
    if child.returncode != 0:
        raise SystemExit(f"sweep failed ({child.returncode}):\n" + "\n".join(lines[-40:]))
    return {
        "wall_s": time.perf_counter() - t0,
        "evaluate_started_s": phase["evaluate_started"],
        "peak_rss_tree_mb": peaks["tree"] / MB,
        "peak_rss_driver_mb": peaks["driver"] / MB,
        "peak_rss_tree_by_phase_mb": {k: v / MB for k, v in by_phase.items()},
        "max_processes": max_procs, "samples": samples,
        "time_line": next((x for x in lines if x.startswith("time: ")), ""),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-per-class", type=int, default=8)
    ap.add_argument("--test-per-class", type=int, default=60, help="test images per class in the 1x set")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels")
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--test-levels", type=lambda s: [float(x) for x in s.split(",")], default=[1.0, 3.0, 8.0])
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between RSS samples")
    ap.add_argument("--tolerance", type=float, default=0.15)
    ap.add_argument("--platform", type=Path, default=REPO / "platform",
                    help="the lossyvision source folder the sweep runs from (another checkout, to compare)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep data here (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="lv-sweepmem-"))
    try:
        base, big = work / "x1", work / f"x{args.factor}"
        if not base.exists():
            make_split(base, "train", args.train_per_class, args.size, seed=1)
            make_split(base, "test", args.test_per_class, args.size, seed=2)
        if not big.exists():
            replicate_test(base, big, args.factor)
        runs = {}
        for name, root in (("x1", base), (f"x{args.factor}", big)):
            output = work / f"out-{name}"
            shutil.rmtree(output, ignore_errors=True)
            sweep = sweep_file(work / f"sweep-{name}.yaml", root, output, args.test_levels)
            n_test = sum(1 for _ in (root / "test").rglob("*.jpg"))
            runs[name] = {"test_images": n_test, "decoded_test_level_mb": n_test * args.size ** 2 * 3 / MB,
                          **measure(sweep, args)}
            print(f"{name}: " + json.dumps(runs[name]), flush=True)
            shutil.rmtree(output, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    small, large = runs["x1"], runs[f"x{args.factor}"]
    ratio = large["peak_rss_tree_mb"] / small["peak_rss_tree_mb"]
    eval_ratio = (large["peak_rss_tree_by_phase_mb"].get("evaluate", float("nan"))
                  / small["peak_rss_tree_by_phase_mb"].get("evaluate", float("nan")))
    ok = ratio <= 1 + args.tolerance
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.platform.resolve(), capture_output=True,
                            text=True).stdout.strip()
    summary = {"machine": f"{std_platform.machine()}, {os.cpu_count()} cores", "python": std_platform.python_version(),
               "commit": commit, "platform": str(args.platform.resolve()), "load_avg": os.getloadavg(),
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                            if k not in ("json", "workdir", "platform")},
               "runs": runs, "peak_ratio": ratio, "evaluate_peak_ratio": eval_ratio, "within_tolerance": ok}
    print(f"peak RSS of the whole sweep (process tree) x{args.factor}/x1 = {ratio:.3f}, of its evaluation "
          f"{eval_ratio:.3f} -> {'OK' if ok else 'FAIL'} (tolerance {args.tolerance:.0%})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
