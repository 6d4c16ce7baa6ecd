"""Same input, same answer: the demo sweep run twice, from two working folders into two outputs.

Builds the demo dataset in two fresh folders (``A`` and ``B/deeper``), runs ``lossyvision sweep run
sweeps/demo.yaml`` in each as a subprocess (B's copy writes to another output path), and compares the
two ``results.parquet`` tables cell by cell: the keys (configuration hashes), every number column
(value, its interval, the paired relative value and its interval, DCRs) and the predictions files,
image by image. Prints the largest difference, both verdicts and the wall times.

Run: ``.venv/bin/python benchmarks/reproducibility.py [--sweep sweeps/demo.yaml] [--cpus 2] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from demo_sweep import lossyvision  # the CLI in a fresh process, pinned to --cpus cores (benchmarks/)

REPO = Path(__file__).resolve().parents[1]
NUMBERS = ["value", "ci_low", "ci_high", "rel", "rel_low", "rel_high", "train_dcr", "test_dcr", "train_dcr_raw",
           "test_dcr_raw", "n_train_images", "train_bytes", "n_test_images"]


def run_in(folder: Path, sweep: str, output: str | None, cpus: int) -> tuple[Path, float, str]:
    folder.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((REPO / sweep).read_text())
    if output:
        data["output"] = output
    (folder / "sweep.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    lossyvision("demo-data", "data/demo", cwd=folder, cpus=cpus)
    took, out = lossyvision("sweep", "run", "sweep.yaml", "--num-cpus", str(cpus), cwd=folder, cpus=cpus)
    return folder / data["output"], took, out


def verdict_of(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    end = next((i for i, ln in enumerate(lines) if ln.startswith("sweep done in")), len(lines))
    start = next((i for i, ln in enumerate(lines[:end]) if re.match(r"^\S.* \(\w+\):$", ln)), end)
    return [ln for ln in lines[start:end] if ln.strip()]


def main() -> None:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default="sweeps/demo.yaml")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lv-repro-"))
    out_a, took_a, stdout_a = run_in(work / "A", args.sweep, None, args.cpus)
    out_b, took_b, stdout_b = run_in(work / "B" / "deeper", args.sweep, "elsewhere/out", args.cpus)

    a = pd.read_parquet(out_a / "results.parquet").sort_values(["cell_id", "metric"]).reset_index(drop=True)
    b = pd.read_parquet(out_b / "results.parquet").sort_values(["cell_id", "metric"]).reset_index(drop=True)
    same_keys = list(a.cell_id) == list(b.cell_id)
    diffs = {c: float((a[c].astype(float) - b[c].astype(float)).abs().max()) for c in NUMBERS} if same_keys else {}
    same_predictions = same_keys and all(
        pd.read_parquet(out_a / "predictions" / f"{c}.parquet").equals(pd.read_parquet(out_b / "predictions" / f"{c}.parquet"))
        for c in a.cell_id.unique())
    top1 = a[a.metric == "top1"]
    record = {
        "sweep": args.sweep, "cpus": args.cpus, "cells": int(a.cell_id.nunique()), "rows": len(a),
        "same_keys": same_keys, "same_predictions": bool(same_predictions),
        "max_abs_difference": max(diffs.values()) if diffs else None, "per_column": diffs,
        "wall_s": [round(took_a, 1), round(took_b, 1)],
        "top1_ci_half_width_points": round(float(((top1.ci_high - top1.ci_low) / 2 * 100).median()), 2),
        "rel_half_width_points_median": round(float(((top1.rel_high - top1.rel_low) / 2).median()), 2),
        "verdict_a": verdict_of(stdout_a), "verdict_b": verdict_of(stdout_b),
    }
    record["same_verdict"] = record["verdict_a"] == record["verdict_b"]
    print(json.dumps(record, indent=1))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept: {work}")
    if not (same_keys and same_predictions and record["max_abs_difference"] <= 1e-6 and record["same_verdict"]):
        sys.exit("the two runs differ")


if __name__ == "__main__":
    main()
