"""P4: gradient vs finite-difference DCT sensitivity on a trained demo-like classifier.

Trains a small timm CNN (``resnet10t``, random init) on demo-like data (96 px crops of the
scikit-image photos, one class per photo, as ``lossyvision demo-data`` makes them), then measures
the Δ maps of the same test images both ways, averaged over the *same* sampled blocks (equal
coverage), and reports:

* agreement: Spearman rank correlation over the 3 x 8 x 8 = 192 coefficients;
* speed at equal coverage: seconds per (image, block) measured, finite-difference / gradient.
  Finite-difference cost grows linearly with the blocks it covers; gradient mode computes every
  block in one forward and C backward passes, so its per-block cost uses all the blocks it covers.

Run: ``.venv/bin/python benchmarks/sensitivity_speed.py [--images 4 --blocks 3 --eps 1 --epochs 6]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from lossyvision.sensitivity import sensitivity_finite_difference, sensitivity_gradient, spearman

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field", "retina",
          "immunohistochemistry")


def demo_like_data(per_class: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Square crops (30-80% of the short side) of each photo, resized to ``size``, random flips."""
    from skimage import data
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, name in enumerate(PHOTOS):
        photo = getattr(data, name)()
        photo = photo[0] if isinstance(photo, tuple) else photo   # stereo_motorcycle: (left, right, disparity)
        if photo.ndim == 2:
            photo = np.stack([photo] * 3, -1)
        photo = photo[..., :3]
        h, w = photo.shape[:2]
        for _ in range(per_class):
            side = int(min(h, w) * rng.uniform(0.3, 0.8))
            top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = resize(photo[top:top + side, left:left + side], (size, size), anti_aliasing=True)
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            xs.append(np.ascontiguousarray(crop.transpose(2, 0, 1)))
            ys.append(label)
    return torch.tensor(np.stack(xs), dtype=torch.float32), torch.tensor(ys)


MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def train(x: torch.Tensor, y: torch.Tensor, epochs: int, device: str, seed: int) -> torch.nn.Module:
    import timm

    torch.manual_seed(seed)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=len(PHOTOS)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for lo in range(0, len(x), 32):
            idx = perm[lo:lo + 32]
            xb = x[idx].to(device)
            loss = torch.nn.functional.cross_entropy(model((xb - MEAN.to(device)) / STD.to(device)), y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: str) -> float:
    x = x.to(device, next(model.parameters()).dtype)
    with torch.no_grad():
        logits = model((x - MEAN.to(x)) / STD.to(x))
    return float((logits.argmax(1).cpu() == y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4, help="test images measured")
    ap.add_argument("--blocks", type=int, default=3, help="blocks per image measured by both modes")
    ap.add_argument("--eps", type=float, nargs="+", default=[1.0], help="finite-difference step(s), JPEG DCT units")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", help="also write the numbers to this file")
    ap.add_argument("--model-cache", help="save the trained weights here, or load them if the file exists")
    ap.add_argument("--float64", action="store_true", help="measure in float64 (removes float32 rounding from FD)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    x_train, y_train = demo_like_data(32, args.size, args.seed)
    x_test, y_test = demo_like_data(4, args.size, args.seed + 1)
    if args.model_cache and os.path.exists(args.model_cache):
        import timm

        model = timm.create_model("resnet10t", pretrained=False, num_classes=len(PHOTOS)).to(args.device)
        model.load_state_dict(torch.load(args.model_cache, map_location=args.device))
        model.eval()
    else:
        model = train(x_train, y_train, args.epochs, args.device, args.seed)
        if args.model_cache:
            torch.save(model.state_dict(), args.model_cache)
    if args.float64:
        model = model.double()
        x_test = x_test.double()
    train_s = time.perf_counter() - t0
    acc = accuracy(model, x_test, y_test, args.device)

    def probs_fn(x01: torch.Tensor) -> torch.Tensor:
        mean, std = MEAN.to(x01), STD.to(x01)
        return torch.softmax(model((x01 - mean) / std), dim=1)

    images = x_test[torch.randperm(len(x_test), generator=torch.Generator().manual_seed(args.seed))[:args.images]]
    images = images.to(args.device)
    sensitivity_gradient(probs_fn, images[:1])          # warm-up (allocator, kernels)
    grad_full = sensitivity_gradient(probs_fn, images)
    grad_same = sensitivity_gradient(probs_fn, images, blocks_per_image=args.blocks, seed=args.seed)
    total_blocks = grad_full.blocks_total
    rows = []
    for eps in args.eps:
        fd = sensitivity_finite_difference(probs_fn, images, eps=eps, blocks_per_image=args.blocks, seed=args.seed,
                                           batch_size=192)
        fd_per_block = fd.seconds / (args.images * args.blocks)
        grad_per_block = grad_full.seconds / (args.images * total_blocks)
        rows.append({
            "eps": eps,
            "spearman_equal_coverage": spearman(fd.maps, grad_same.maps),
            "spearman_vs_gradient_all_blocks": spearman(fd.maps, grad_full.maps),
            "max_rel_diff_equal_coverage": float(np.max(np.abs(fd.maps - grad_same.maps) / grad_same.maps.max())),
            "fd_seconds": fd.seconds, "fd_seconds_per_block": fd_per_block,
            "fd_seconds_full_coverage_extrapolated": fd_per_block * args.images * total_blocks,
            "gradient_seconds_full_coverage": grad_full.seconds, "gradient_seconds_per_block": grad_per_block,
            "speedup_equal_coverage": fd_per_block / grad_per_block,
        })
    result = {
        "device": args.device, "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
        "model": "timm resnet10t (random init, trained here)", "image_size": args.size, "classes": len(PHOTOS),
        "dtype": "float64" if args.float64 else "float32", "test_accuracy": acc, "train_seconds": train_s, "images": args.images, "blocks_sampled": args.blocks,
        "blocks_per_image": total_blocks, "rows": rows,
    }
    print(json.dumps(result, indent=2))
    print()
    print("| eps | Spearman (192 coef., same blocks) | FD s/block | gradient s/block | speed-up |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['eps']:g} | {r['spearman_equal_coverage']:.4f} | {r['fd_seconds_per_block']:.3f} | "
              f"{r['gradient_seconds_per_block']:.5f} | {r['speedup_equal_coverage']:.0f}x |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
