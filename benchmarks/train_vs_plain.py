"""P10: a model trained and scored by ``lossyvision sweep run`` against a plain PyTorch loop, interleaved.

What a user compares: one trial of a sweep (Ray, Ray Tune, a checkpoint and a progress file per
epoch, MLflow, the evaluation with its interval) against the script they would write instead: a
``torch.utils.data.Dataset`` over the same compressed files (decoded with imagecodecs), the same
transforms (resize to ``--image-size``, a random horizontal flip), the same timm model from random
weights, AdamW with the same per-step cosine schedule, the same batch size, epochs, DataLoader
workers and torch threads, then top-1 on the test files and ``torch.save`` of the weights.

Set-up (untimed): real-photo crops (scikit-image's astronaut, coffee, rocket, Hubble deep field,
immunohistochemistry; public domain / CC0), ``--width`` x ``--height`` px, JPEG q90, one class per
photo; one ``sweep run`` compresses them (JPEG XL effort 1, one level) into a store every timed run
reuses.

Then P T P T ... P (``--repeats`` of T): each run a fresh subprocess timed from outside:

- **P, plain**: this script with ``--plain``;
- **T, trial**: ``lossyvision sweep run`` into a fresh output folder (the store is done, so no
  compression), with ``--no-report`` (the plain script draws nothing either).

Reported per T, against the mean of the P runs on either side: the whole command's wall time; the
steady-state training throughput (the median images/s of epochs 2.. in the trial's history and in
the plain loop's, the same measure: samples over each epoch's wall time); and the fixed cost, the
command's wall time less its epochs. Both sides' CPU-seconds (whole process trees) are recorded,
as the other sessions' load on a shared machine moves wall times.

    .venv/bin/python benchmarks/train_vs_plain.py --json benchmarks/results/p10.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform as std_platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # _procs, eval_throughput
LEVEL = 1.0

from _procs import run_timed  # noqa: E402


# --- the plain loop (child process) ------------------------------------------------------------------
def _files(store: Path, split: str) -> tuple[list[tuple[Path, int]], list[str]]:
    folder = store / f"jpegxl-{LEVEL:g}" / split
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    return [(f, k) for k, c in enumerate(classes) for f in sorted((folder / c).glob("*.jxl"))], classes


def plain(args: argparse.Namespace) -> dict:
    """Train and score the model the plain way; returns per-epoch images/s, timings and top-1."""
    began = time.perf_counter()
    import imagecodecs
    import numpy as np
    import timm
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms.v2 import functional as TF

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    store = Path(args.store)
    train_files, classes = _files(store, "train")
    test_files, _ = _files(store, "test")
    size = args.image_size

    class Files(Dataset):
        def __init__(self, files, train):
            self.files, self.train = files, train

        def __len__(self):
            return len(self.files)

        def __getitem__(self, i):
            path, label = self.files[i]
            rgb = np.ascontiguousarray(imagecodecs.jpegxl_decode(path.read_bytes())[..., :3])
            img = TF.resize(torch.from_numpy(rgb).permute(2, 0, 1), [size, size], antialias=True)
            if self.train and torch.rand(()) < 0.5:
                img = TF.horizontal_flip(img)
            return img, label

    model = timm.create_model(args.arch, pretrained=False, num_classes=len(classes))
    cfg = timm.data.resolve_model_data_config(model)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    loader = DataLoader(Files(train_files, True), batch_size=args.batch_size, shuffle=True,
                        num_workers=args.num_workers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    total = args.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: 0.5 * (1 + np.cos(np.pi * min(it, total) / total)))
    started = time.perf_counter()
    rates = []
    for _ in range(args.epochs):
        model.train()
        t, seen = time.perf_counter(), 0
        for x, y in loader:
            loss = F.cross_entropy(model((x.float() / 255 - mean) / std), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(y)
        rates.append(seen / (time.perf_counter() - t))
    trained = time.perf_counter()
    model.eval()
    right = 0
    with torch.inference_mode():
        for x, y in DataLoader(Files(test_files, False), batch_size=args.eval_batch, num_workers=args.num_workers):
            right += int((model((x.float() / 255 - mean) / std).argmax(1) == y).sum())
    torch.save(model.state_dict(), Path(args.out) / "model.pt")
    return {"images_per_s": rates, "train_s": trained - started, "startup_s": started - began,
            "top1": right / len(test_files), "n_train": len(train_files), "n_test": len(test_files)}


# --- the driver ---------------------------------------------------------------------------------------
def _sweep_file(work: Path, args: argparse.Namespace, output: Path) -> Path:
    import yaml

    model = {"name": args.arch, "task": "classification", "arch": args.arch, "pretrained": False,
             "image_size": args.image_size, "epochs": args.epochs, "lr": args.lr,
             "weight_decay": args.weight_decay, "batch_size": args.batch_size,
             "options": {"num_workers": args.num_workers, "eval_batch_size": args.eval_batch}}
    sweep = {"name": "p10", "dataset": {"kind": "imagefolder", "root": str(work / "data")},
             "codec": {"name": "jpegxl", "effort": 1}, "train_levels": [LEVEL], "test_levels": [LEVEL],
             "models": [model], "repeats": 1, "store": str(work / "store"), "output": str(output),
             "resources": {"trial": {"cpu": args.threads, "gpu": 0}, "eval": {"cpu": args.threads, "gpu": 0}}}
    path = work / f"sweep-{output.name}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def run_plain(work: Path, args: argparse.Namespace, env: dict) -> dict:
    out = work / "plain-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    cmd = [sys.executable, __file__, "--plain", "--store", str(work / "store"), "--out", str(out),
           *_model_args(args)]
    wall, cpu, stdout, _ = run_timed(cmd, env)
    got = json.loads(stdout.strip().splitlines()[-1])
    return {"kind": "plain", "wall_s": wall, "cpu_s": cpu, **got}


def run_trial(work: Path, args: argparse.Namespace, env: dict, name: str = "trial-out") -> dict:
    output = work / name
    shutil.rmtree(output, ignore_errors=True)
    sweep = _sweep_file(work, args, output)
    cmd = [str(Path(sys.executable).with_name("lossyvision")), "sweep", "run", str(sweep), "--no-report",
           "--num-cpus", str(args.threads)]
    wall, cpu, stdout, _ = run_timed(cmd, env)
    (trial_json,) = output.glob("checkpoints/*/trial.json")
    meta = json.loads(trial_json.read_text())
    import pandas as pd

    results = pd.read_csv(output / "results.csv")
    top1 = float(results.loc[results["metric"] == "top1", "value"].iloc[0])
    phases = next((line for line in stdout.splitlines() if line.startswith("time: ")), "")
    rates = [h["images_per_s"] for h in meta["history"]]
    return {"kind": "trial", "wall_s": wall, "cpu_s": cpu, "images_per_s": rates, "trial_s": meta["seconds"],
            "phases": phases, "top1": top1, "n_train": meta["n_train_images"]}


def _model_args(args: argparse.Namespace) -> list[str]:
    return ["--arch", args.arch, "--image-size", str(args.image_size), "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--weight-decay", str(args.weight_decay),
            "--num-workers", str(args.num_workers), "--threads", str(args.threads),
            "--eval-batch", str(args.eval_batch)]


def steady(rates: list[float]) -> float:
    """The median images/s of epochs 2.. (the first epoch also pays for warm-up)."""
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers, both sides (the sweep's default)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads = the trial's CPUs")
    p.add_argument("--eval-batch", type=int, default=64)
    p.add_argument("--train-per-class", type=int, default=100)
    p.add_argument("--test-per-class", type=int, default=20)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=192)
    p.add_argument("--repeats", type=int, default=3, help="trial runs (plain runs: one more)")
    p.add_argument("--workdir", help="keep the photos and store here (default: a temporary folder)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    if args.plain:
        print(json.dumps(plain(args)))
        return

    from eval_throughput import make_split

    work = Path(args.workdir or tempfile.mkdtemp(prefix="p10-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO / "platform")}
    env.pop("RAY_ADDRESS", None)
    if not (work / "data").exists():
        make_split(work / "data", "train", args.train_per_class, args.width, args.height, seed=1)
        make_split(work / "data", "test", args.test_per_class, args.width, args.height, seed=2)
    print("set-up: compressing the store and one untimed trial ...", flush=True)
    run_trial(work, args, env, name="setup-out")
    runs: list[dict] = []
    for i in range(2 * args.repeats + 1):
        run = run_plain(work, args, env) if i % 2 == 0 else run_trial(work, args, env)
        runs.append(run)
        print(f"{run['kind']:5s} wall {run['wall_s']:6.1f} s  cpu {run['cpu_s']:6.1f} s  "
              f"steady {steady(run['images_per_s']):6.1f} img/s  top1 {run['top1']:.3f}", flush=True)
    rows = []
    for i in range(1, len(runs), 2):
        t, before, after = runs[i], runs[i - 1], runs[i + 1]
        p_wall = (before["wall_s"] + after["wall_s"]) / 2
        p_rate = (steady(before["images_per_s"]) + steady(after["images_per_s"])) / 2
        p_train = (before["train_s"] + after["train_s"]) / 2
        t_epochs = sum(t["n_train"] / r for r in t["images_per_s"])
        rows.append({"wall_ratio": t["wall_s"] / p_wall, "steady_rate_ratio": steady(t["images_per_s"]) / p_rate,
                     "trial_fixed_s": t["wall_s"] - t_epochs, "plain_fixed_s": p_wall - p_train,
                     "cpu_ratio": t["cpu_s"] / ((before["cpu_s"] + after["cpu_s"]) / 2)})
    summary = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print("\nP10 (median of the trial runs, each against the plain runs on either side):")
    print(f"  whole command, sweep run / plain script: {summary['wall_ratio']:.3f}x wall, "
          f"{summary['cpu_ratio']:.3f}x CPU-seconds")
    print(f"  steady-state training, trial / plain images per second: {summary['steady_rate_ratio']:.3f}")
    print(f"  fixed cost (wall less the epochs): sweep run {summary['trial_fixed_s']:.1f} s, "
          f"plain {summary['plain_fixed_s']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": {k: v for k, v in vars(args).items() if k not in ("plain", "store", "out")},
            "machine": {"cpus": os.cpu_count(), "python": std_platform.python_version(),
                        "platform": std_platform.platform()},
            "runs": runs, "pairs": rows, "summary": summary}, indent=1))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
