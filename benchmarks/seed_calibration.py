"""Do the verdict's claims survive a new training seed? The demo run with K seeds, changing only ``seed:``.

Runs ``lossyvision sweep run`` on a sweep file (default ``sweeps/demo.yaml``, as shipped) K times
(default 5), each a copy with ``seed: k`` and its own output, all sharing one compressed store (the
store does not depend on the seed), pinned to ``--cpus`` cores. Then, for each run's headline
metric, compares two ways of stating a cell's interval:

- *before*: the test images' interval alone (what lossyvision reported before the seeds' spread
  entered claims about trained models: the paired bootstrap over test images);
- *after*: the interval of the claim the cell makes (:mod:`lossyvision.seedspread`; the model
  trained at the baseline's level keeps its test images' interval).

and reports, per way:

- **coverage**: per cell and run, whether the run's interval contains the mean of the other runs'
  estimates (for the cells trained away from the baseline's level, whose claims are about models
  trained at a level; and for all cells);
- **flips**: a level that keeps under one seed and loses under another, per question;
- **advised levels** per seed and question, and whether each advised level keeps on the mean over
  the seeds (the mean relative value at or above the threshold).

Run: ``.venv/bin/python benchmarks/seed_calibration.py [--seeds 5] [--sweep sweeps/demo.yaml] [--cpus 2]
[--work runs/seedcal] [--analyse-only] [--json benchmarks/results/seed-calibration.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from demo_sweep import lossyvision  # the CLI in a fresh process, pinned to --cpus cores (benchmarks/)

REPO = Path(__file__).resolve().parents[1]
CELL = ["model", "metric", "codec", "train_level", "test_level"]


def run_seed(work: Path, sweep: str, seed: int, cpus: int) -> tuple[Path, float]:
    data = yaml.safe_load((REPO / sweep).read_text())
    data["seed"] = seed
    data["output"] = str(work / f"seed-{seed}")
    data["store"] = str(work / "store")  # compressed once, shared: the store does not depend on the seed
    data["dataset"]["root"] = str(work / "data" / "demo")
    data["tracking"] = {"uri": f"sqlite:///{work / f'seed-{seed}' / 'mlflow.db'}", "experiment": f"seedcal-{seed}"}
    path = work / f"seed-{seed}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    took, _ = lossyvision("sweep", "run", str(path), "--num-cpus", str(cpus), cwd=work, cpus=cpus)
    return Path(data["output"]), took


def analysed(output: Path, keep: float | None) -> tuple[pd.DataFrame, list, list]:
    """(headline cells, verdicts after, verdicts before) of one run's output."""
    from lossyvision.report.build import analyse
    from lossyvision.report.verdict import headline, verdicts

    result = analyse(str(output), keep)
    rel = result.rel
    first = headline(result.verdicts)
    metric = first[0].metric if first else "top1"
    rel = rel[(rel["metric"] == metric) & (rel["budget"] < 0)].copy()
    before = rel.assign(rel_low=rel["rel_test_low"], rel_high=rel["rel_test_high"]).drop(columns=["rel_interval"])
    return rel, first, headline(verdicts(before, result.keep, headline_only=True))


def coverage(runs: list[pd.DataFrame], low: str, high: str, trained_only: bool) -> tuple[int, int]:
    """(covered, judged): a run's interval containing the mean of the other runs' estimates."""
    table = pd.concat([r.assign(run=i) for i, r in enumerate(runs)], ignore_index=True)
    if trained_only:
        table = table[table["train_level"] != table["baseline_train_level"]]
    table = table[~((table["train_level"] == table["baseline_train_level"])
                    & (table["test_level"] == table["baseline_test_level"]))]  # the baseline is 100 by definition
    covered = judged = 0
    for _, cell in table.groupby(CELL):
        if len(cell) < 2:
            continue
        for _, row in cell.iterrows():
            others = cell.loc[cell["run"] != row["run"], "rel"].mean()
            lo, hi = float(row[low]), float(row[high])
            if not (np.isfinite(lo) and np.isfinite(hi)):
                continue
            judged += 1
            covered += lo <= others <= hi
    return covered, judged


def statuses(found: list[list]) -> dict[str, dict[float, set[str]]]:
    out: dict[str, dict[float, set[str]]] = {}
    for run in found:
        for v in run:
            for x in v.levels:
                out.setdefault(v.question, {}).setdefault(x["level"], set()).add(x["status"])
    return out


def summary(name: str, runs: list[pd.DataFrame], found: list[list], low: str, high: str, keep: float) -> dict:
    trained = coverage(runs, low, high, trained_only=True)
    every = coverage(runs, low, high, trained_only=False)
    flips = {q: sorted(lv for lv, st in by.items() if {"keeps", "loses"} <= st) for q, by in statuses(found).items()}
    table = pd.concat(runs, ignore_index=True)
    advised: dict[str, list] = {}
    hold: dict[str, bool] = {}
    for question in ("matched", "train", "test"):
        levels = [next((v.level for v in run if v.question == question), None) for run in found]
        advised[question] = levels
        ok = True
        for level in {lv for lv in levels if lv is not None}:
            col = "test_level" if question == "test" else "train_level"
            if question == "matched":
                cells = table[(table["train_level"] == level) & (table["test_level"] == level)]
            elif question == "train":
                cells = table[(table["train_level"] == level) & (table["test_level"] == table["baseline_test_level"])]
            else:
                cells = table[(table[col] == level) & (table["train_level"] == table["baseline_train_level"])]
            ok &= bool(cells["rel"].mean() >= 100 * keep - 1e-9)
        hold[question] = ok
    return {"way": name,
            "coverage_trained_cells": round(trained[0] / trained[1], 3) if trained[1] else None,
            "judged_trained_cells": trained[1],
            "coverage_all_cells": round(every[0] / every[1], 3) if every[1] else None, "judged_all_cells": every[1],
            "flips": flips, "any_flip": any(flips.values()), "advised": advised,
            "advised_keep_on_the_mean": hold}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default="sweeps/demo.yaml")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "seedcal")
    ap.add_argument("--keep", type=float, default=None, help="threshold (fraction); default the sweep's")
    ap.add_argument("--analyse-only", action="store_true", help="only analyse outputs already in --work")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    walls = {}
    if not args.analyse_only:
        lossyvision("demo-data", "data/demo", cwd=work, cpus=args.cpus)
        for seed in range(args.seeds):
            t0 = time.time()
            _, took = run_seed(work, args.sweep, seed, args.cpus)
            walls[seed] = round(took, 1)
            print(f"seed {seed}: {took:.0f} s", file=sys.stderr, flush=True)
            del t0
    outputs = [work / f"seed-{s}" for s in range(args.seeds)]
    runs, after, before = [], [], []
    for out in outputs:
        rel, a, b = analysed(out, args.keep)
        runs.append(rel)
        after.append(a)
        before.append(b)
    keep = after[0][0].keep if after and after[0] else (args.keep or 0.99)
    record = {"sweep": args.sweep, "seeds": args.seeds, "cpus": args.cpus, "keep": keep, "wall_s": walls,
              "before": summary("test images only", runs, before, "rel_test_low", "rel_test_high", keep),
              "after": summary("claims about trained models carry the seeds' spread", runs, after, "rel_low",
                               "rel_high", keep),
              "spread": sorted({str(s) for r in runs for s in r.get("spread", pd.Series(dtype=str)) if s}),
              "decisions": [[ln for ln in _decisions(a)] for a in after]}
    print(json.dumps(record, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")


def _decisions(found: list) -> list[str]:
    from lossyvision.report.verdict import decisions

    return decisions(found)


if __name__ == "__main__":
    main()
