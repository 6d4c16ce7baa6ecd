"""Issue 21: the adaptive search against the full grid on the demo, same ladder, seeds and repeats.

``sweeps/demo-search.yaml`` (ladder [0, 1, 2, 3, 5, 8] on both axes, 4 repeats, ``search: {question: matched}``)
runs once as it is and once without ``search:`` (the full grid: every level x every repeat, every test level),
each into its own output over one shared store. Both use the sweep's seed, so every training the search runs is a
training of the grid with the same key. Reported: each one's trainings and evaluated cells, and its answer to
"store everything at d" (``verdict.json``'s matched question for the headline metric).

    python3 benchmarks/search_vs_grid.py --work /tmp/search-vs-grid --json benchmarks/results/search-vs-grid.json
    python3 benchmarks/search_vs_grid.py --keep 0.98 --work /tmp/svg98 --grid /tmp/search-vs-grid/grid \
        --json benchmarks/results/search-vs-grid-keep98.json

``--also-keep 0.98 0.975`` then asks both at other thresholds from the same trainings: the grid's report is
rebuilt at each, and the finished search's output is copied and run again with that ``report.keep`` (the search
resumes from its finished trials, replays its policy at the new threshold and trains whatever that path needs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def sweep_file(work: Path, name: str, search: bool, data: Path, seed: int, keep: float | None,
               fallbacks: int = 0) -> Path:
    spec = yaml.safe_load((REPO / "sweeps" / "demo-search.yaml").read_text())
    if not search:
        spec.pop("search")
    elif fallbacks:
        spec["search"]["fallbacks"] = fallbacks
    if keep is not None:
        spec["report"]["keep"] = keep
    spec.update(name=name, seed=seed, output=str(work / name), store=str(work / "store"),
                dataset={"kind": "imagefolder", "root": str(data)}, tracking={"experiment": f"search-vs-grid-{name}"})
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def answer(output: Path) -> dict:
    """Trainings, cells and the matched verdict of the headline metric (the first verdict of that question)."""
    import pandas as pd

    results = pd.read_parquet(output / "results.parquet")
    verdicts = json.loads((output / "verdict.json").read_text())
    matched = next(v for v in verdicts if v["question"] == "matched")
    return {"trainings": int(results["trial_id"].nunique()), "cells": int(results["cell_id"].nunique()),
            "metric": matched["metric"], "advised": matched["level"], "outcome": matched["outcome"],
            "rel_low": matched["rel_low"], "text": matched["text"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/search-vs-grid"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=float, help="report.keep of both (default: the file's, 0.99)")
    ap.add_argument("--grid", type=Path, help="a finished grid output of the same sweep to reuse (its report is "
                                              "rebuilt at --keep): the grid's trainings do not depend on keep")
    ap.add_argument("--fallbacks", type=int, default=0, help="the search's fallbacks (default: the file's, 0)")
    ap.add_argument("--also-keep", type=float, nargs="*", default=[],
                    help="other thresholds to ask both at, from the same trainings (see above)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = REPO / "data" / "demo"
    if not (data / "README.md").exists():
        subprocess.run([sys.executable, "-m", "lossyvision.cli", "demo-data", str(data)], check=True)
    out = {"seed": args.seed, "keep": args.keep or 0.99, "fallbacks": args.fallbacks}
    search_name = f"search-f{args.fallbacks}" if args.fallbacks else "search"
    for name, search in ((search_name, True), ("grid", False)):
        if name == "grid" and args.grid:
            subprocess.run([sys.executable, "-m", "lossyvision.cli", "report", str(args.grid), "--no-mlflow",
                            *(["--keep", str(args.keep)] if args.keep else [])], check=True)
            out[name] = {"reused": str(args.grid), **answer(args.grid)}
            continue
        path = sweep_file(args.work, name, search, data, args.seed, args.keep, args.fallbacks)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lossyvision.cli", "sweep", "run", str(path), "--num-cpus", "2"],
                       check=True)
        key = "search" if search else name
        out[key] = {"seconds": round(time.perf_counter() - start, 1), **answer(args.work / name)}
        if search:
            out[key]["path"] = json.loads((args.work / name / "search.json").read_text())["searches"]
    s, g = out["search"], out["grid"]
    out["same_answer"] = s["advised"] == g["advised"]
    out["training_ratio"] = round(s["trainings"] / g["trainings"], 3)
    print(f"search: {s['trainings']} trainings, {s['cells']} cells, advises {s['advised']} ({s['outcome']})")
    print(f"grid:   {g['trainings']} trainings, {g['cells']} cells, advises {g['advised']} ({g['outcome']})")
    print(f"same answer: {out['same_answer']}; the search trained {100 * out['training_ratio']:.0f}% of the grid's")
    grid_out = args.grid or args.work / "grid"
    out["thresholds"] = {str(out["keep"]): {"search": s["advised"], "grid": g["advised"],
                                            "same": out["same_answer"], "search_trainings": s["trainings"]}}
    for keep in args.also_keep:
        copy = args.work / f"{search_name}-keep{keep:g}"
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(args.work / search_name, copy)
        path = sweep_file(args.work, copy.name, True, data, args.seed, keep, args.fallbacks)
        spec = yaml.safe_load(path.read_text())
        spec["name"] = search_name  # the same sweep (its trials' keys, its MLflow experiment), at another threshold
        spec["tracking"] = {"experiment": f"search-vs-grid-{search_name}"}
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        subprocess.run([sys.executable, "-m", "lossyvision.cli", "sweep", "run", str(path), "--num-cpus", "2"],
                       check=True)
        subprocess.run([sys.executable, "-m", "lossyvision.cli", "report", str(grid_out), "--no-mlflow",
                        "--keep", str(keep)], check=True)
        a, b = answer(copy), answer(grid_out)
        out["thresholds"][str(keep)] = {"search": a["advised"], "grid": b["advised"], "same": a["advised"] == b["advised"],
                                        "search_trainings": a["trainings"], "search_text": a["text"],
                                        "grid_text": b["text"]}
        print(f"keep {keep:g}: search advises {a['advised']} ({a['trainings']} trainings), grid {b['advised']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
