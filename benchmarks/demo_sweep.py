"""P6/P7: a demo sweep end to end on N CPU cores (default 2), the way the README runs it.

Builds the demo dataset (``lossyvision demo-data``) in a fresh work folder, then runs
``lossyvision sweep run sweeps/demo.yaml`` there as a subprocess pinned to N cores (``taskset``)
with a local Ray of N CPUs, and times it: the whole command, and the phases the sweep reports
(Ray start, compression, training, evaluation, report). Then reruns it, which must do no work,
and prints the top-1 grid (train x test level; train level x budget for a budget sweep) so the
accuracy can be judged against chance (1/9).

Run: ``.venv/bin/python benchmarks/demo_sweep.py [--sweep sweeps/demo.yaml] [--cpus 2] [--workdir DIR] [--keep]``
(P6: ``sweeps/demo.yaml``; P7: ``sweeps/demo-budget.yaml``).
The machine's load average is printed too: timings on a shared machine are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def lossyvision(*args: str, cwd: Path, cpus: int) -> tuple[float, str]:
    exe = [sys.executable, "-m", "lossyvision.cli", *args]
    pin = ["taskset", "-c", ",".join(str(i) for i in range(cpus))] if shutil.which("taskset") else []
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    t0 = time.time()
    proc = subprocess.run(pin + exe, cwd=cwd, capture_output=True, text=True, env=env)
    took = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return took, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default="sweeps/demo.yaml", help="a sweep file on the demo data, repo-relative")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lv-demo-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "sweeps").mkdir(exist_ok=True)
    sweep_file = f"sweeps/{Path(args.sweep).name}"
    shutil.copy(REPO / args.sweep, work / sweep_file)
    load_before = os.getloadavg()

    data_s, _ = lossyvision("demo-data", "data/demo", cwd=work, cpus=args.cpus)
    run_s, out = lossyvision("sweep", "run", sweep_file, "--num-cpus", str(args.cpus), cwd=work, cpus=args.cpus)
    rerun_s, out2 = lossyvision("sweep", "run", sweep_file, "--num-cpus", str(args.cpus), cwd=work, cpus=args.cpus)
    load_after = os.getloadavg()

    phases = {}
    m = re.search(r"^time: (.*)$", out, re.M)
    if m:
        phases = {k: float(v) for k, v in re.findall(r"(\w+) (\d+)s", m.group(1))}
    assert "0 trials and 0 evaluations to run" in out2, out2

    import pandas as pd

    import yaml

    output = yaml.safe_load((work / sweep_file).read_text())["output"]
    results = pd.read_parquet(work / output / "results.parquet")
    columns = "budget" if (results.budget >= 0).any() else "test_level"
    top1 = results[results.metric == "top1"].pivot_table(index="train_level", columns=columns, values="value")
    record = {
        "cpus": args.cpus, "demo_data_s": round(data_s, 1), "sweep_s": round(run_s, 1),
        "rerun_s": round(rerun_s, 1), "phases_s": phases, "rows": len(results),
        "top1_mean": round(float(top1.values.mean()), 4), "top1_min": round(float(top1.values.min()), 4),
        "loadavg_before": [round(x, 1) for x in load_before], "loadavg_after": [round(x, 1) for x in load_after],
    }
    print(json.dumps(record, indent=1))
    print(f"\ntop-1 (rows: train distance, columns: {columns.replace('_', ' ')})")
    print(top1.round(3).to_string())
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"\nkept: {work}")


if __name__ == "__main__":
    main()
