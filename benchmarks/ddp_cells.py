"""Issue 22: a data-parallel trial's cells against the single-worker trial's intervals, on the demo.

Two sweeps of ``sweeps/demo.yaml`` that differ only in ``resources.trial.workers`` (1, then 2 Ray Train workers
with gloo, ``cpu: 1`` each; the global batch stays the file's ``batch_size``), one training per level of
``--levels`` and every test level. DDP changes the batches' composition, so the two trials are two draws of
"a model trained at this level", not the same model: each 2-worker cell is checked against the single-worker
cell's interval (the paired bootstrap over test images, at the sweep's confidence; where every test image is right
the bootstrap's interval has no width, so the exact binomial interval of that count stands in), and against that interval
widened by the difference two training seeds make (sqrt(2) x ``--seed-sd``, the demo's spread between seeds in
points of top-1; docs/benchmarks.md P11), which is what a second seed of the single-worker trial would be held to.

    python3 benchmarks/ddp_cells.py --work /tmp/ddp-cells --json benchmarks/results/ddp-cells.json
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def sweep_file(work: Path, workers: int, levels: list[float], data: Path) -> Path:
    spec = yaml.safe_load((REPO / "sweeps" / "demo.yaml").read_text())
    spec.pop("seed_spread", None)
    trial = {"cpu": 1, "gpu": 0} if workers == 1 else {"workers": workers, "cpu": 1, "gpu": 0}
    spec.update(name=f"demo-w{workers}", train_levels=levels, repeats=1, output=str(work / f"w{workers}"),
                store=str(work / "store"), dataset={"kind": "imagefolder", "root": str(data)},
                resources={"trial": trial, "eval": {"cpu": 1, "gpu": 0}},
                tracking={"experiment": f"ddp-cells-w{workers}"})
    path = work / f"w{workers}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cells(output: Path):
    from lossyvision.report.build import current_results
    from lossyvision.report.cells import PredictionsCache, cell_table

    table = cell_table(current_results(str(output))[0], PredictionsCache(str(output)))
    return {(r.metric, float(r.train_level), float(r.test_level)): r for r in table.itertuples()}


def exact_interval(fraction: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval of ``fraction`` of ``n`` test images (a cell at 100 % has one of width > 0)."""
    from scipy.stats import binomtest

    ci = binomtest(round(fraction * n), n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/ddp-cells"))
    ap.add_argument("--levels", type=float, nargs="+", default=[0.0, 8.0])
    ap.add_argument("--seed-sd", type=float, default=0.9,
                    help="the demo's spread between training seeds, points of top-1 (P11: 0.41-1.40)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--compare-only", action="store_true", help="read the two outputs of an earlier run")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = REPO / "data" / "demo"
    if not (data / "README.md").exists():
        subprocess.run([sys.executable, "-m", "lossyvision.cli", "demo-data", str(data)], check=True)
    seconds = {}
    for workers in () if args.compare_only else (1, 2):
        path = sweep_file(args.work, workers, args.levels, data)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lossyvision.cli", "sweep", "run", str(path), "--num-cpus", "2",
                        "--no-report"], check=True)
        seconds[workers] = round(time.perf_counter() - start, 1)
    one, two = cells(args.work / "w1"), cells(args.work / "w2")
    rows, inside, inside_seed = [], 0, 0
    for key in sorted(one):
        a, b = one[key], two.get(key)
        if b is None:
            continue
        low, high = a.ci_low, a.ci_high
        if high - low < 1e-12 and a.n_images:  # every test image right (or wrong): the bootstrap cannot vary,
            low, high = exact_interval(a.mean, int(a.n_images))  # so the exact binomial interval of that count
        seeds = 1.96 * math.sqrt(2) * args.seed_sd / 100 if key[0] == "top1" else 0.0
        wide_low = a.mean - math.hypot(a.mean - low, seeds)
        wide_high = a.mean + math.hypot(high - a.mean, seeds)
        ok, ok_seed = low - 1e-12 <= b.mean <= high + 1e-12, wide_low - 1e-12 <= b.mean <= wide_high + 1e-12
        inside += ok
        inside_seed += ok_seed
        rows.append({"metric": key[0], "train_level": key[1], "test_level": key[2], "one_worker": a.mean,
                     "one_low": low, "one_high": high, "bootstrap_degenerate": bool(a.ci_high - a.ci_low < 1e-12), "two_workers": b.mean, "inside": bool(ok),
                     "inside_with_seed_spread": bool(ok_seed)})
        print(f"{key[0]:5s} train {key[1]:g} test {key[2]:g}: 1 worker {a.mean:.4f} [{low:.4f}, "
              f"{high:.4f}]  2 workers {b.mean:.4f}  {'inside' if ok else 'OUTSIDE'}"
              f"{'' if ok or not ok_seed else ' (inside with the seed spread)'}")
    print(f"{inside}/{len(rows)} two-worker cells inside the single-worker interval; {inside_seed}/{len(rows)} "
          f"inside it widened by the seeds' spread; seconds {seconds}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"levels": args.levels, "seconds": seconds, "inside": inside,
                                         "inside_with_seed_spread": inside_seed, "cells": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
