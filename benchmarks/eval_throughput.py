"""P3: the streaming evaluation's wall time against the sum of pure model-inference time on the same shards.

Set-up (untimed): real-photo crops (scikit-image's astronaut, coffee, rocket, Hubble deep field,
immunohistochemistry; public domain / CC0) of ``--width`` x ``--height`` px as JPEG q90, like
Food101's photos; ``lossyvision sweep run`` compresses them (JPEG XL effort 1) and trains
``--models`` classifiers (timm ``--arch`` from scratch, one epoch on a few images: inference costs
the same with any weights), evaluating every model on every test level once.

Then, interleaved I E I E ... I (``--repeats`` evaluations):

- **I, pure inference**: a plain ``multiprocessing`` pool of as many processes as evaluation slots
  (CPUs / ``resources.eval.cpu``), each with an evaluation task's threads and every model loaded
  once (untimed), takes the same shards the evaluation uses, decodes each (untimed) and scores it
  with every model of its level through the task's own ``outcomes``: only those calls are timed
  and summed. The processes score at the same time, so the sum includes what running that many
  at once costs on the machine (on this 2-vCPU VM, two single-thread ResNet-18 processes run at
  1.46x the throughput of one, not 2x);
- **E, evaluation**: ``lossyvision.runners.evaluate.evaluate_cells`` (reading, decoding, scoring
  every cell on Ray tasks, loading models in the workers, concatenating outcomes) on a fresh local
  Ray with ``--num-cpus`` CPUs; ``ray.init`` and shutdown are not timed, worker start-up is.

P3 = E's wall time / (I's summed inference time / the evaluation slots): 1.0 is a parallel evaluation
that spends nothing but inference. On a shared machine wall times move with other people's load, so
the CPU bill is reported too: CPU-seconds of every Ray process during E (workers starting and importing
torch, reading, decoding, loading models, scoring; Ray's own daemons) over the CPU-seconds of I's
inference calls. Also reported: E's wall time / I's sum (the issue's literal "sum
of pure model-inference time"), which the slots' parallelism puts below 1. Each E is compared with the mean of
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


_WORKER: dict = {}


def _inference_worker_init(output: str, threads: int) -> None:
    """A pure-inference process: the sweep, its trained models loaded once (untimed), ``threads`` torch threads."""
    import torch

    from lossyvision.output import load_output_sweep, load_plan
    from lossyvision.sweep.plan import reader_of
    from lossyvision.sweep.trials import load_trained

    torch.set_num_threads(threads)
    sweep = load_output_sweep(output)
    grid = load_plan(output)
    _WORKER.update(sweep=sweep, cells=grid.cells, reader=reader_of(sweep),
                   models={t.key: load_trained(sweep, t, sweep.output) for t in grid.trials})


def _inference_job(shard) -> tuple[float, float, dict]:
    """Decode ``shard`` (timed apart), then every cell of its level scores it; only the ``outcomes`` calls are timed."""
    import torch

    from lossyvision.sweep.evaluate import decode_shard

    w = _WORKER
    t = time.perf_counter()
    test = decode_shard(w["sweep"], shard, w["reader"])
    decode = time.perf_counter() - t
    infer = cpu = 0.0
    parts = {}
    for cell in (c for c in w["cells"] if c.test_level == shard.level):
        task, model = w["models"][cell.trial.key]
        t, c = time.perf_counter(), time.process_time()
        with torch.no_grad():
            parts[cell.key] = task.outcomes(model, test)
        infer += time.perf_counter() - t
        cpu += time.process_time() - c
    return infer, decode, parts, cpu


def pure_inference(sweep, grid, manifest, slots: int) -> dict:
    """The same shards and models in ``slots`` plain processes (no Ray), each with an eval task's threads.

    Every process scores while the others do, so the summed call times include what running
    ``slots`` at once costs on this machine (shared caches and memory bandwidth); divided by
    ``slots`` they are the evaluation's ideal: parallel inference and nothing else.
    """
    import multiprocessing as mp

    from lossyvision.runners.evaluate import shard_levels

    levels = sorted({c.test_level for c in grid.cells})
    planned = shard_levels(sweep, manifest, levels, slots)
    shards = [s for level in levels for s in planned[level]]
    threads = max(1, int(sweep.resources.eval.cpu))
    with mp.get_context("spawn").Pool(slots, _inference_worker_init, (sweep.output, threads)) as pool:
        results = pool.map(_inference_job, shards, chunksize=1)
    parts: dict[str, list] = {c.key: [] for c in grid.cells}
    for _shard, (_, _, got, _) in zip(shards, results):
        for key, part in got.items():
            parts[key].append(part)
    return {"inference_seconds": sum(r[0] for r in results), "decode_seconds": sum(r[1] for r in results),
            "inference_cpu_seconds": sum(r[3] for r in results),
            "shards": len(shards), "outcomes": {k: type(v[0]).concat(v) for k, v in parts.items()}}


def _tree_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of this process and every descendant (Ray's processes and workers)."""
    import psutil

    out = {}
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            continue
    return out


def evaluation(sweep, grid, manifest, num_cpus: int) -> dict:
    import ray

    from lossyvision.runners.cluster import init_ray
    from lossyvision.runners.evaluate import evaluate_cells

    init_ray(num_cpus=num_cpus)
    got: dict[str, object] = {}
    try:
        before, t = _tree_cpu(), time.perf_counter()
        failures = evaluate_cells(sweep, grid.cells, sweep.output, manifest,
                                  lambda cell, outcomes, error: got.__setitem__(cell.key, outcomes))
        seconds, after = time.perf_counter() - t, _tree_cpu()
    finally:
        ray.shutdown()
    if failures:
        raise SystemExit(f"evaluation failed: {failures}")
    cpu = sum(v - before.get(pid, 0.0) for pid, v in after.items())
    return {"seconds": seconds, "cpu_seconds": cpu, "outcomes": got}


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
            print(f"{i}: evaluation {evals[-1]['seconds']:.1f}s; pure inference summed {pures[-2]['inference_seconds']:.1f}"
                  f" / {pures[-1]['inference_seconds']:.1f}s over {slots} processes", flush=True)
        identical = all(same(pures[0]["outcomes"], p["outcomes"]) for p in pures + evals)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    ratios, literal = [], []
    for i, e in enumerate(evals):
        summed = (pures[i]["inference_seconds"] + pures[i + 1]["inference_seconds"]) / 2
        ratios.append(e["seconds"] / (summed / slots))
        literal.append(e["seconds"] / summed)
    n_images = int(sum(len(o) for o in pures[0]["outcomes"].values()))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    res = {
        "machine": f"{std_platform.machine()}, {os.cpu_count()} cores", "python": std_platform.python_version(),
        "commit": commit, "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                       if k not in ("json", "workdir")},
        "cells": len(grid.cells), "scored_images": n_images, "shards": pures[0]["shards"], "slots": slots,
        "evaluation_seconds": [e["seconds"] for e in evals],
        "inference_seconds_summed": [p["inference_seconds"] for p in pures],
        "decode_seconds_summed": [p["decode_seconds"] for p in pures],
        "ratios": ratios, "p3": float(np.median(ratios)),
        "evaluation_cpu_seconds": [e["cpu_seconds"] for e in evals],
        "inference_cpu_seconds": [p["inference_cpu_seconds"] for p in pures],
        "cpu_ratio": float(np.median([e["cpu_seconds"] for e in evals])
                           / np.median([p["inference_cpu_seconds"] for p in pures])),
        "ratios_over_sum": literal, "p3_over_sum": float(np.median(literal)), "identical_outcomes": identical,
        "load_average_1_5_15": loads,
    }
    print(json.dumps(res, indent=2))
    print(f"\nP3: evaluation / (pure inference / {slots} slots) = {res['p3']:.3f} (median of {len(ratios)}: "
          f"{', '.join(f'{r:.3f}' for r in ratios)}); evaluation / summed inference = {res['p3_over_sum']:.3f}; "
          f"CPU-seconds of the evaluation (every Ray process) / of pure inference = {res['cpu_ratio']:.3f}; "
          f"{len(grid.cells)} cells, {n_images} images scored, {res['shards']} shards; outcomes identical: {identical}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
