"""The cost of ``deterministic: true``: training steps with and without deterministic kernels, interleaved.

A timm model (resnet10t by default, the demo's) trains on a fixed synthetic batch for ``--steps``
steps per run, alternating ``set_deterministic(False)`` and ``set_deterministic(True)`` runs
(F T F T ... F), on CUDA when there is one (AMP on, as the GPU sweeps run) and on the CPU otherwise.
Reports the median step time of each mode and their ratio, and whether two deterministic runs
from the same seed end with bit-identical weights (they must).

Run: ``.venv/bin/python benchmarks/deterministic_cost.py [--arch resnet10t] [--size 64] [--batch 32]
[--steps 30] [--repeats 3] [--device cuda|cpu] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def run(arch: str, size: int, batch: int, steps: int, device: str, deterministic: bool) -> tuple[float, object]:
    import timm
    import torch

    from lossyvision.seeding import seed_everything, set_deterministic

    set_deterministic(deterministic)
    seed_everything(0)
    model = timm.create_model(arch, pretrained=False, num_classes=10).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    x = torch.rand((batch, 3, size, size), generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    amp = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device == "cuda" else None
    times = []
    for _ in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if amp is not None:
            with amp:
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        else:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    set_deterministic(False)
    weights = torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])
    return statistics.median(times[2:] or times), weights


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet10t")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (a trial's resources.trial.cpu)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    free, det, det_weights = [], [], []
    free.append(run(args.arch, args.size, args.batch, args.steps, args.device, False)[0])
    for _ in range(args.repeats):
        t, w = run(args.arch, args.size, args.batch, args.steps, args.device, True)
        det.append(t)
        det_weights.append(w)
        free.append(run(args.arch, args.size, args.batch, args.steps, args.device, False)[0])
    identical = all(torch.equal(det_weights[0], w) for w in det_weights[1:])
    record = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu ({args.threads} thread)",
        "arch": args.arch, "size": args.size, "batch": args.batch, "steps": args.steps,
        "step_s_free": round(statistics.median(free), 5), "step_s_deterministic": round(statistics.median(det), 5),
        "ratio_deterministic_over_free": round(statistics.median(det) / statistics.median(free), 3),
        "runs_free": [round(t, 5) for t in free], "runs_deterministic": [round(t, 5) for t in det],
        "deterministic_runs_bit_identical": bool(identical),
    }
    print(json.dumps(record, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
