"""P3: the streaming evaluation's wall time against the sum of pure model-inference time on the same shards.

Set-up (untimed): real-photo crops (scikit-image's astronaut, coffee, rocket, Hubble deep field,
immunohistochemistry; public domain / CC0) of ``--width`` x ``--height`` px as JPEG q90, like
Food101's photos; ``lossyvision sweep run`` compresses them (JPEG XL effort 1) and trains
``--models`` classifiers (timm ``--arch`` from scratch, one epoch on a few images: inference costs
the same with any weights), evaluating every model on every test level once.

Then, interleaved I E I E ... I (``--repeats`` evaluations):

- **I, pure inference**: in this process, with the threads of one evaluation task
  (``resources.eval.cpu``), each test level is cut into the same shards the evaluation uses and
  decoded (untimed); each model, loaded once (untimed), scores each shard with the task's own
  ``outcomes``: only those calls are timed and summed;
- **E, evaluation**: ``lossyvision.runners.evaluate.evaluate_cells`` (reading, decoding, scoring
  every cell on Ray tasks, loading models in the workers, concatenating outcomes) on a fresh local
  Ray with ``--num-cpus`` CPUs; ``ray.init`` and shutdown are not timed, worker start-up is.

P3 = E's wall time / (I's summed inference time / the evaluation slots, i.e. CPUs / eval.cpu): 1.0 is
a perfect parallel evaluation that spends nothing but inference. Each E is compared with the mean of
the I runs on either side; the headline is the median. Both passes must give identical outcomes.

    .venv/bin/python benchmarks/eval_throughput.py --json benchmarks/results/p3.json
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


def make_split(root: Path, split: str, per_class: int, width: int, height: int, seed: int) -> None:
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in PHOTOS:
        src = Image.fromarray(np.ascontiguousarray(getattr(skimage.data, name)()[..., :3]))
        w, h = src.size
        for i in range(per_class):
            scale = min(w / width, h / height) * (0.5 + 0.5 * rng.random())
            bw, bh = int(width * scale), int(height * scale)
            x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            img = src.resize((width, height), Image.Resampling.BICUBIC, box=(x, y, x + bw, y + bh))
            path = root / split / name / f"{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, "JPEG", quality=90)


def set_up(work: Path, args: argparse.Namespace) -> Path:
    """Photos, a sweep file, and one run of it (compress, train, evaluate); returns the output folder."""
    import yaml

    root, output = work / "data", work / "out"
    if not root.exists():
        make_split(root, "train", args.train_per_class, args.width, args.height, seed=1)
        make_split(root, "test", args.test_per_class, args.width, args.height, seed=2)
    model = {"task": "classification", "arch": args.arch, "epochs": 1, "batch_size": 8,
             "image_size": args.image_size, "options": {"eval_batch_size": args.eval_batch}}
    sweep = {
        "name": "p3", "dataset": {"kind": "imagefolder", "root": str(root)},
        "codec": {"name": "jpegxl", "effort": 1}, "train_levels": [1], "test_levels": args.test_levels,
        "models": [{"name": f"m{i}", **model, "lr": 1e-3 * (i + 1)} for i in range(args.models)],
        "resources": {"trial": {"cpu": 1}, "eval": {"cpu": args.eval_cpu}}, "max_failures": 0,
        "report": {"resamples": 200}, "output": str(output),
    }
    (work / "p3.yaml").write_text(yaml.safe_dump(sweep))
    if not (output / "results.parquet").exists():
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO / "platform")}
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.run([sys.executable, "-m", "lossyvision.cli", "sweep", "run", str(work / "p3.yaml"),
                               "--num-cpus", str(args.num_cpus), "--no-report"], env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise SystemExit(f"set-up sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return output


def pure_inference(sweep, grid, manifest, slots: int) -> dict:
    """Every cell's ``task.outcomes`` on every decoded shard, one thread set as an eval task; only those calls timed."""
    import torch

    from lossyvision.runners.evaluate import shard_levels
    from lossyvision.sweep.evaluate import decode_shard
    from lossyvision.sweep.plan import reader_of
    from lossyvision.sweep.trials import load_trained

    torch.set_num_threads(max(1, int(sweep.resources.eval.cpu)))
    reader = reader_of(sweep)
    levels = sorted({c.test_level for c in grid.cells})
    shards = shard_levels(sweep, manifest, levels, slots)
    models = {t.key: load_trained(sweep, t, sweep.output) for t in grid.trials}
    infer = decode = 0.0
    parts: dict[str, list] = {c.key: [] for c in grid.cells}
    for level in levels:
        for shard in shards[level]:
            t = time.perf_counter()
            test = decode_shard(sweep, shard, reader)
            decode += time.perf_counter() - t
            for cell in (c for c in grid.cells if c.test_level == level):
                task, model = models[cell.trial.key]
                t = time.perf_counter()
                with torch.no_grad():
                    parts[cell.key].append(task.outcomes(model, test))
                infer += time.perf_counter() - t
    outcomes = {k: type(v[0]).concat(v) for k, v in parts.items()}
    return {"inference_seconds": infer, "decode_seconds": decode, "shards": sum(len(s) for s in shards.values()),
            "outcomes": outcomes}


def evaluation(sweep, grid, manifest, num_cpus: int) -> dict:
    import ray

    from lossyvision.runners.cluster import init_ray
    from lossyvision.runners.evaluate import evaluate_cells

    init_ray(num_cpus=num_cpus)
    got: dict[str, object] = {}
    try:
        t = time.perf_counter()
        failures = evaluate_cells(sweep, grid.cells, sweep.output, manifest,
                                  lambda cell, outcomes, error: got.__setitem__(cell.key, outcomes))
        seconds = time.perf_counter() - t
    finally:
        ray.shutdown()
    if failures:
        raise SystemExit(f"evaluation failed: {failures}")
    return {"seconds": seconds, "outcomes": got}


def same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(list(a[k].ids) == list(b[k].ids) and a[k].metrics() == b[k].metrics() for k in a)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test-per-class", type=int, default=40, help="test images per class (5 classes)")
    ap.add_argument("--train-per-class", type=int, default=4)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--test-levels", type=lambda s: [float(x) for x in s.split(",")], default=[1.0, 3.0, 8.0])
    ap.add_argument("--models", type=int, default=2)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--eval-batch", type=int, default=32)
    ap.add_argument("--eval-cpu", type=float, default=1.0)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None, help="keep data and trained models here")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    sys.path.insert(0, str(REPO / "platform"))  # this checkout's code, here and in the Ray workers started here
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "platform"), os.environ.get("PYTHONPATH")) if p)

    from lossyvision.output import load_output_sweep, load_plan
    from lossyvision.runners.evaluate import eval_slots
    from lossyvision.sweep.trials import read_manifest

    work = args.workdir or Path(tempfile.mkdtemp(prefix="lv-p3-"))
    try:
        output = set_up(work, args)
        sweep = load_output_sweep(str(output))
        grid = load_plan(str(output))
        manifest = read_manifest(sweep)
        slots = eval_slots({"CPU": float(args.num_cpus)}, sweep.resources.eval.cpu, sweep.resources.eval.gpu)
        loads = {"start": os.getloadavg()}
        pures, evals = [pure_inference(sweep, grid, manifest, slots)], []
        for i in range(args.repeats):
            evals.append(evaluation(sweep, grid, manifest, args.num_cpus))
            pures.append(pure_inference(sweep, grid, manifest, slots))
            loads[f"after_{i}"] = os.getloadavg()
            print(f"{i}: evaluation {evals[-1]['seconds']:.1f}s; pure inference {pures[-2]['inference_seconds']:.1f}"
                  f" / {pures[-1]['inference_seconds']:.1f}s single-slot", flush=True)
        identical = all(same(pures[0]["outcomes"], p["outcomes"]) for p in pures + evals)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    ratios = []
    for i, e in enumerate(evals):
        ideal = (pures[i]["inference_seconds"] + pures[i + 1]["inference_seconds"]) / 2 / slots
        ratios.append(e["seconds"] / ideal)
    n_images = int(sum(len(o) for o in pures[0]["outcomes"].values()))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    res = {
        "machine": f"{std_platform.machine()}, {os.cpu_count()} cores", "python": std_platform.python_version(),
        "commit": commit, "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                       if k not in ("json", "workdir")},
        "cells": len(grid.cells), "scored_images": n_images, "shards": pures[0]["shards"], "slots": slots,
        "evaluation_seconds": [e["seconds"] for e in evals],
        "inference_seconds_single_slot": [p["inference_seconds"] for p in pures],
        "decode_seconds_single_slot": [p["decode_seconds"] for p in pures],
        "ratios": ratios, "p3": float(np.median(ratios)), "identical_outcomes": identical,
        "load_average_1_5_15": loads,
    }
    print(json.dumps(res, indent=2))
    print(f"\nP3: evaluation / (pure inference / {slots} slots) = {res['p3']:.3f} (median of {len(ratios)}: "
          f"{', '.join(f'{r:.3f}' for r in ratios)}); {len(grid.cells)} cells, {n_images} images scored, "
          f"{res['shards']} shards; outcomes identical: {identical}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
