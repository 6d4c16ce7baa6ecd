"""Issue 22 on a lent GPU machine: one trial with ``cache: exact`` and one data-parallel trial of 2 workers.

Run by ``benchmarks/gpu_check.sh`` (``--device cuda``), or small on the CPU to test the script (``--device cpu
--small``). Two sweeps through the CLI on the demo builder's crops of the shipped photos, one train and one
test level (JPEG XL distance 3), a ViT-S/16 (timm ``vit_small_patch16_224``, random weights, AMP):

- **cache**: ``cache: exact``, 3 epochs, one trial on the whole GPU: epoch 1 decodes and fills the cache,
  epochs 2-3 read it; each epoch's ``images_per_s`` and ``loader_wait`` (the step's measured feed rate);
- **workers**: ``resources.trial.workers: 2`` (Ray Train ``TorchTrainer``, DDP): a GPU each where the
  machine has two (NCCL), else half of one each (gloo); where each rank ran and its epochs' rates.

    python3 benchmarks/scale_check.py --device cuda --work /tmp/scale-check --json $OUT/scale-check.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_sweep import GpuSampler, child_env  # noqa: E402


def gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


def one_sweep(work: Path, name: str, data: Path, small: bool, device: str, model_extra: dict, trial: dict) -> dict:
    import yaml

    size = 32 if small else 224
    options = {"amp": not small, "num_workers": 0 if small else 4}
    if small:
        options["model_kwargs"] = {"img_size": 32}
    sweep = {"name": name, "dataset": {"kind": "imagefolder", "root": str(data)},
             "codec": {"name": "jpegxl", "effort": 1 if small else 7}, "train_levels": [3], "test_levels": [3],
             "models": [{"name": "vits16", "task": "classification", "arch": "vit_small_patch16_224",
                         "image_size": size, "epochs": 2 if small else 3, "batch_size": 16 if small else 64,
                         "lr": 5.0e-4, "options": options, **model_extra}],
             "resources": {"trial": trial, "eval": {"cpu": 1, "gpu": 0 if device == "cpu" else 0.5}},
             "max_failures": 0, "store": str(work / "store"), "output": str(work / name)}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    sampler = GpuSampler() if device == "cuda" else None
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lossyvision.cli", "sweep", "run", str(path), "--no-report"],
                          env=child_env(), capture_output=True, text=True)
    out = {"seconds": time.perf_counter() - t, "exit": proc.returncode, "gpu": sampler.stop() if sampler else None}
    if proc.returncode != 0:
        out["tail"] = (proc.stdout + proc.stderr)[-3000:]
        return out
    for meta in (work / name / "checkpoints").glob("*/trial.json"):
        m = json.loads(meta.read_text())
        out.update(key=m["key"], cache=m.get("cache"), workers=m.get("workers"), worker_nodes=m.get("worker_nodes"),
                   trial_seconds=m["seconds"], history=[{k: h.get(k) for k in ("epoch", "images_per_s", "loader_wait")}
                                                         for h in m["history"]])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lossyvision-scale-check"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "platform"))
    from lossyvision.demo import build_demo_dataset

    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / "data"
    if not (data / "README.md").exists():
        build_demo_dataset(str(data), train_per_class=2 if args.small else 200, test_per_class=1 if args.small else 20,
                           image_size=32 if args.small else 448)
    n = gpus() if args.device == "cuda" else 0
    per_worker_gpu = 0 if args.device == "cpu" else (1 if n >= 2 else 0.5)
    results = {
        "gpus": n,
        "cache": one_sweep(args.work, "cache", data, args.small, args.device, {"cache": "exact"},
                           {"cpu": 1 if args.small else 8, "gpu": 0 if args.device == "cpu" else 1}),
        "workers": one_sweep(args.work, "workers", data, args.small, args.device, {},
                             {"cpu": 1 if args.small else 4, "gpu": per_worker_gpu, "workers": 2}),
    }
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0 if all(results[k]["exit"] == 0 for k in ("cache", "workers")) else 1


if __name__ == "__main__":
    sys.exit(main())
