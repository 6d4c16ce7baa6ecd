"""The GPU path, measured: a CUDA sweep, the data loader against the training step (P5), the cost of determinism.

Run by ``benchmarks/gpu_check.sh`` on a GPU machine (``--device cuda``), or small on the CPU to test
the script itself (``--device cpu --small``). Three parts, one JSON (``--json``):

- **sweep**: ``lossyvision sweep run`` on 224 px crops of the photos that scikit-image and
  scikit-learn ship (the demo dataset's builder, no download): a ViT-S/16 (timm
  ``vit_small_patch16_224``) from random weights, AMP (bfloat16) on, one trial per train level with
  a quarter of the GPU each (a few trials at once), evaluation tasks with a quarter of the GPU each
  (fractional-GPU evaluation, streaming shards). While it runs, ``nvidia-smi`` is sampled every
  0.5 s (GPU use, memory). Kept: the phases' seconds, each trial's ``images_per_s`` and
  ``loader_wait`` per epoch (:func:`lossyvision.tasks.training.train_epochs`), the results;
- **P5**: images/s of the trial's data loader alone (the store's train images at one level, the
  trial's collate and ``num_workers``, no model) against images/s of the training step alone (the
  same batch again and again on the device, forward, backward and optimizer step, AMP as in the
  trial); above 1, the loader keeps up with the step;
- **determinism**: the same training steps with ``deterministic: false`` and ``true``
  (:func:`lossyvision.seeding.set_deterministic`), each in a fresh process as a trial would be
  (F T F T), and whether the two deterministic runs end with bit-identical weights.

    python3 benchmarks/gpu_sweep.py --device cuda --work /tmp/gpu-check --json $OUT/gpu-sweep.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def settings(args: argparse.Namespace) -> dict:
    """The sweep's data and model sizes: a real ViT-S/16 on CUDA, a tiny one on the CPU (``--small``)."""
    if args.small:
        return {"train_per_class": 4, "test_per_class": 2, "image_size": 32, "levels": [0, 3], "epochs": 1,
                "batch": 16, "workers": 0, "effort": 1, "model_kwargs": {"img_size": 32},
                "trial": {"cpu": 1, "gpu": 0}, "eval": {"cpu": 1, "gpu": 0}, "steps": 3}
    return {"train_per_class": 200, "test_per_class": 50, "image_size": 224, "levels": [0, 1, 3, 8], "epochs": 3,
            "batch": 64, "workers": 3, "effort": 7, "model_kwargs": {},
            "trial": {"cpu": 3, "gpu": 0.25}, "eval": {"cpu": 1, "gpu": 0.25}, "steps": 30}


def model_entry(s: dict) -> dict:
    options = {"amp": True, "num_workers": s["workers"], "eval_batch_size": 2 * s["batch"]}
    if s["model_kwargs"]:
        options["model_kwargs"] = s["model_kwargs"]
    return {"name": "vits16", "task": "classification", "arch": "vit_small_patch16_224", "pretrained": False,
            "image_size": s["image_size"], "epochs": s["epochs"], "batch_size": s["batch"], "lr": 5.0e-4,
            "weight_decay": 0.05, "options": options}


def child_env() -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("RAY_ADDRESS", None)
    return env


class GpuSampler:
    """``nvidia-smi`` every 0.5 s in the background: GPU use (%) and memory used (MiB)."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float]] = []
        self.proc = None
        try:
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                          "--format=csv,noheader,nounits", "-lms", "500"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            return
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                util, mem = (float(x) for x in line.split(",")[:2])
            except ValueError:
                continue
            self.rows.append((util, mem))

    def stop(self) -> dict:
        if self.proc is None:
            return {"available": False}
        self.proc.terminate()
        self.proc.wait()
        util = [u for u, _ in self.rows]
        return {"available": True, "samples": len(util), "util_mean": statistics.fmean(util) if util else None,
                "util_busy_fraction": sum(u > 0 for u in util) / len(util) if util else None,
                "util_max": max(util, default=None), "memory_max_mib": max((m for _, m in self.rows), default=None)}


def run_sweep(work: Path, s: dict, device: str) -> dict:
    """Build the data, run the sweep as the CLI, read back its phases, trial histories and results."""
    import yaml

    from lossyvision.demo import build_demo_dataset

    data, output = work / "data", work / "out"
    if not (data / "README.md").exists():
        build_demo_dataset(str(data), train_per_class=s["train_per_class"], test_per_class=s["test_per_class"],
                           image_size=s["image_size"])
    sweep = {"name": "gpu-check", "dataset": {"kind": "imagefolder", "root": str(data)},
             "codec": {"name": "jpegxl", "effort": s["effort"]}, "train_levels": s["levels"],
             "test_levels": s["levels"], "models": [model_entry(s)],
             "resources": {"trial": s["trial"], "eval": s["eval"]}, "max_failures": 0,
             "report": {"resamples": 500}, "output": str(output)}
    path = work / "gpu-check.yaml"
    path.write_text(yaml.safe_dump(sweep))
    sampler = GpuSampler() if device == "cuda" else None
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lossyvision.cli", "sweep", "run", str(path), "--no-report"],
                          env=child_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - t
    gpu = sampler.stop() if sampler else {"available": False}
    lines = proc.stdout.splitlines()
    if proc.returncode != 0:
        raise SystemExit(f"the sweep failed ({proc.returncode}):\n" + "\n".join(lines[-30:]) + proc.stderr[-3000:])
    trials = {}
    for meta in sorted((output / "checkpoints").glob("*/trial.json")):
        m = json.loads(meta.read_text())
        trials[m["key"]] = {"seconds": m["seconds"], "history": [
            {k: h[k] for k in ("epoch", "loss", "images_per_s", "loader_wait") if k in h} for h in m["history"]]}
    import pandas as pd

    results = pd.read_parquet(output / "results.parquet")
    top1 = results[results.metric == "top1"][["train_level", "test_level", "value"]]
    return {"seconds": seconds, "time_line": next((x for x in lines if x.startswith("time: ")), ""),
            "train_images": 9 * s["train_per_class"], "test_images": 9 * s["test_per_class"],
            "trials": trials, "gpu": gpu, "top1": top1.to_dict("records"), "settings": sweep}


def training_step(s: dict, device: str):
    """A fresh seeded model, its optimizer, and one training step (AMP as the trial runs it)."""
    import torch
    import torch.nn.functional as F

    from lossyvision.seeding import seed_everything
    from lossyvision.spec import ModelSpec
    from lossyvision.tasks import create_task
    from lossyvision.tasks.training import autocast

    task = create_task("classification", ModelSpec(**model_entry(s)), [f"c{i}" for i in range(9)], device=device)
    seed_everything(0)
    model = task.build_model().to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)

    def step(x, y):
        with autocast(device, True):
            logits = task._logits(model, x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return task, model, step


def step_rate(s: dict, device: str, steps: int) -> tuple[float, "object"]:
    """Images/s of the training step alone on one fixed batch; returns it and the final weights."""
    import torch

    _, model, step = training_step(s, device)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (s["batch"], 3, s["image_size"], s["image_size"]), generator=g,
                      dtype=torch.uint8).to(device)
    y = torch.randint(0, 9, (s["batch"],), generator=g).to(device)
    for _ in range(3):  # warm-up: kernels chosen, allocator primed
        step(x, y)
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        loss = step(x, y)
    loss.item()  # waits for the device
    rate = steps * s["batch"] / (time.perf_counter() - t)
    return rate, torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])


def loader_rate(work: Path, s: dict, batches: int) -> float:
    """Images/s of the trial's data loader alone: the store's train images at level 1, decoded and collated."""
    from lossyvision.codecs import create_codec
    from lossyvision.data import ImageSamples
    from lossyvision.output import load_output_sweep
    from lossyvision.sweep.plan import TrialSpec
    from lossyvision.sweep.trials import read_manifest, train_images
    from lossyvision.tasks.training import make_loader

    sweep = load_output_sweep(str(work / "out"))
    images = train_images(sweep, TrialSpec("vits16", float(s["levels"][-1])), read_manifest(sweep))
    codec = create_codec(sweep.codec.name, **sweep.codec.options)
    task, model, _ = training_step(s, "cpu")
    loader = make_loader(ImageSamples(images.uris, images.targets, decode=codec.decode), s["batch"],
                         task._collate(model, train=True), shuffle=True, num_workers=s["workers"])
    seen, it = 0, iter(loader)
    next(it)  # workers started, first batch out
    t = time.perf_counter()
    for _ in range(batches):
        try:
            x, _ = next(it)
        except StopIteration:
            it = iter(loader)
            x, _ = next(it)
        seen += len(x)
    return seen / (time.perf_counter() - t)


def determinism(s: dict, device: str, small: bool) -> dict:
    """F T F T: training-step images/s in fresh processes, deterministic off and on; T runs must agree bit for bit."""
    runs: dict[str, list[float]] = {"false": [], "true": []}
    digests = []
    for mode in ("false", "true", "false", "true"):
        proc = subprocess.run([sys.executable, __file__, "--device", device, "--child-deterministic", mode]
                              + (["--small"] if small else []),
                              env=child_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1][:500] if proc.stderr.strip() else "failed"}
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        runs[mode].append(out["images_per_s"])
        if mode == "true":
            digests.append(out["weights"])
    off, on = statistics.median(runs["false"]), statistics.median(runs["true"])
    return {"images_per_s_false": runs["false"], "images_per_s_true": runs["true"],
            "slowdown": off / on, "deterministic_runs_identical": len(set(digests)) == 1}


def child_deterministic(args: argparse.Namespace, s: dict) -> None:
    import hashlib

    import torch

    from lossyvision.seeding import set_deterministic

    set_deterministic(args.child_deterministic == "true")  # before any CUDA work, as run_trial does
    rate, weights = step_rate(s, args.device, s["steps"])
    digest = hashlib.sha256(weights.numpy().tobytes()).hexdigest()
    print(json.dumps({"images_per_s": rate, "weights": digest,
                      "cublas_workspace": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
                      "torch": torch.__version__}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny data and model (to test the script on a CPU)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lossyvision-gpu-check"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child-deterministic", choices=("true", "false"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "platform"))
    s = settings(args)
    if args.child_deterministic:
        child_deterministic(args, s)
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    args.work.mkdir(parents=True, exist_ok=True)
    record: dict = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
                    "torch": torch.__version__, "cores": os.cpu_count(), "small": args.small}
    t = time.perf_counter()
    record["sweep"] = run_sweep(args.work, s, args.device)
    print(f"sweep: {record['sweep']['seconds']:.0f}s; {record['sweep']['time_line']}; GPU {record['sweep']['gpu']}",
          flush=True)
    step, _ = step_rate(s, args.device, s["steps"])
    load = loader_rate(args.work, s, batches=max(4, s["steps"] // 2))
    record["p5"] = {"loader_images_per_s": load, "step_images_per_s": step, "loader_over_step": load / step,
                    "batch": s["batch"], "num_workers": s["workers"]}
    print(f"P5: loader {load:.0f} img/s, step {step:.0f} img/s -> {load / step:.2f}", flush=True)
    record["determinism"] = determinism(s, args.device, args.small)
    print(f"determinism: {record['determinism']}", flush=True)
    record["seconds"] = time.perf_counter() - t
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
