"""How sensitive is a classifier to each DCT frequency? The study's Δij maps, two ways.

For an image ``x``, a channel ``c`` (Y, Cb, Cr), a block ``b`` and a frequency ``(i, j)``, let
``v`` be the RGB change made by adding ``eps`` to that blockwise DCT coefficient
(:func:`lossyvision.dct.perturbation`). The study measures

    Δ[c, i, j] = mean over images, blocks b and classes k of |p_k(x + v) - p_k(x)| / eps

(divided by ``eps`` so that the number is a derivative and does not depend on eps' size).

* ``finite-difference`` does exactly that, one forward pass per (image, channel, frequency,
  block); it may sample ``blocks_per_image`` blocks per image (the result says how many).
* ``gradient`` takes the limit eps -> 0 exactly: ``|p_k(x + v) - p_k(x)| / eps -> |<∇p_k(x), v/eps>|``.
  The perturbation map is linear and orthonormal, so for every class k one backward pass gives
  ``∇p_k`` and its blockwise YCbCr DCT (:func:`lossyvision.dct.gradient_to_coefficients`) is the
  directional derivative for *every* block, channel and frequency at once. The mean over classes of
  absolute values needs each class's derivative separately (|.| does not commute with the sum):
  N x C input gradients, computed as batched (image, class) rows, one backward per batch (see
  :func:`sensitivity_gradient`): full coverage, no sampling.

``probs_fn(x01) -> probs`` maps float RGB in [0, 1] ``[N, 3, H, W]`` to class probabilities
``[N, C]`` and must treat samples independently (a model in eval mode).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from lossyvision import dct, store
from lossyvision.manifest import CorruptRowError, output_uri
from lossyvision.output import OutputFolder, load_output_sweep, load_plan
from lossyvision.sweep.trials import is_finished, load_trained, read_manifest

ProbsFn = Callable[[torch.Tensor], torch.Tensor]
MODES = ("gradient", "finite-difference")


class SensitivityError(ValueError):
    """Bad input to a sensitivity measurement (shapes, mode, sample sizes)."""


@dataclass
class SensitivityResult:
    """Δ maps ``[3, 8, 8]`` (Y, Cb, Cr; row i = vertical frequency) and how they were measured."""

    maps: np.ndarray
    per_image: np.ndarray          # [n_images, 3, 8, 8]
    mode: str
    eps: float | None              # None for gradient mode (the eps -> 0 limit)
    n_images: int
    n_classes: int
    blocks_per_image: int          # blocks measured per image
    blocks_total: int              # blocks in each image
    image_size: tuple[int, int]
    seconds: float
    extra: dict = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        return self.blocks_per_image / self.blocks_total

    def describe(self) -> str:
        how = "exact directional derivatives (autograd)" if self.mode == "gradient" else f"eps = {self.eps:g}"
        return (f"{self.mode}: {how}; {self.n_images} image(s) of {self.image_size[0]}x{self.image_size[1]}, "
                f"{self.blocks_per_image} of {self.blocks_total} blocks per image, {self.n_classes} classes, "
                f"{self.seconds:.2f} s")

    def metadata(self) -> dict:
        meta = {k: v for k, v in asdict(self).items() if k not in ("maps", "per_image")}
        meta["image_size"] = list(self.image_size)
        return meta

    def to_npz_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, maps=self.maps, per_image=self.per_image, metadata=json.dumps(self.metadata()))
        return buf.getvalue()

    @classmethod
    def from_npz_bytes(cls, data: bytes) -> "SensitivityResult":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(str(z["metadata"]))
            meta["image_size"] = tuple(meta["image_size"])
            return cls(maps=z["maps"], per_image=z["per_image"], **meta)


def _check_images(images01: torch.Tensor) -> torch.Tensor:
    if not isinstance(images01, torch.Tensor) or images01.ndim != 4 or images01.shape[1] != 3:
        shape = tuple(images01.shape) if hasattr(images01, "shape") else type(images01).__name__
        raise SensitivityError(f"images must be a float tensor [N, 3, H, W], got {shape}")
    if images01.shape[0] == 0:
        raise SensitivityError("no images to measure")
    if not images01.is_floating_point():
        raise SensitivityError(f"images must be floats in [0, 1], got {images01.dtype}")
    try:
        dct.check_block_shape(*images01.shape[-2:])
    except ValueError as e:
        raise SensitivityError(str(e)) from None
    return images01


def _probs(probs_fn: ProbsFn, x: torch.Tensor) -> torch.Tensor:
    p = probs_fn(x)
    if p.ndim != 2 or p.shape[0] != x.shape[0]:
        raise SensitivityError(f"probs_fn must return [N, C] probabilities, got {tuple(p.shape)}")
    return p


def _sample_blocks(rng: np.random.Generator, total: int, k: int) -> np.ndarray:
    """The blocks measured in one image: all of them, or ``k`` drawn without replacement (sorted)."""
    return np.arange(total) if k >= total else np.sort(rng.choice(total, k, replace=False))


def _check_blocks(blocks_per_image: int | None, total: int) -> int:
    if blocks_per_image is None:
        return total
    if not 1 <= blocks_per_image <= total:
        raise SensitivityError(f"blocks_per_image must be in 1..{total}, got {blocks_per_image}")
    return int(blocks_per_image)


def sensitivity_gradient(probs_fn: ProbsFn, images01: torch.Tensor, *, batch_size: int = 64,
                         blocks_per_image: int | None = None, seed: int = 0) -> SensitivityResult:
    """Exact Δ maps over every block from N x C input gradients (one per image and class).

    Each class needs its own gradient (the mean of |∂p_k| is not |∂ of a sum|). Rather than C
    backward passes over a small batch, the (image, class) pairs are laid out as one batch of up to
    ``batch_size`` rows (row r = image m_r, class k_r): one forward, and one backward of
    ``sum_r p[r, k_r]``, give row r's input gradient ``∂p_{k_r}(x_{m_r})/∂x`` exactly, since rows
    do not interact in eval mode. Its blockwise YCbCr DCT is the directional derivative of every
    block, channel and frequency.

    ``blocks_per_image``/``seed`` restrict the average to the blocks finite-difference mode would
    sample with the same arguments (for comparisons at equal coverage); the cost is the same.
    """
    images01 = _check_images(images01)
    n, _, h, w = images01.shape
    total_blocks = (h // dct.BLOCK) * (w // dct.BLOCK)
    k_blocks = _check_blocks(blocks_per_image, total_blocks)
    if batch_size < 1:
        raise SensitivityError(f"batch_size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    with torch.no_grad():
        n_classes = _probs(probs_fn, images01[:1]).shape[1]
    sums = torch.zeros(n, 3, total_blocks, 8, 8, dtype=torch.float64, device=images01.device)
    rows_img = torch.arange(n, device=images01.device).repeat_interleave(n_classes)
    rows_cls = torch.arange(n_classes, device=images01.device).repeat(n)
    for lo in range(0, len(rows_img), batch_size):
        m_idx, k_idx = rows_img[lo:lo + batch_size], rows_cls[lo:lo + batch_size]
        x = images01[m_idx].detach().clone().requires_grad_(True)
        probs = _probs(probs_fn, x)
        (g,) = torch.autograd.grad(probs[torch.arange(len(k_idx), device=x.device), k_idx].sum(), x)
        d = dct.gradient_to_coefficients(g.detach()).abs().flatten(2, 3).double()   # [B, 3, blocks, 8, 8]
        sums.index_add_(0, m_idx, d)
    per_block = (sums / n_classes).cpu().numpy()
    rng = np.random.default_rng(seed)
    per_image_arr = np.stack([per_block[m][:, _sample_blocks(rng, total_blocks, k_blocks)].mean(axis=1)
                              for m in range(n)])
    return SensitivityResult(maps=per_image_arr.mean(0), per_image=per_image_arr, mode="gradient", eps=None,
                             n_images=n, n_classes=n_classes, blocks_per_image=k_blocks, blocks_total=total_blocks,
                             image_size=(h, w), seconds=time.perf_counter() - start)


def _unit_patterns(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[3, 8, 8, 3, 8, 8]``: the RGB-[0, 1] 8x8 change of a unit step of each (channel, i, j)."""
    d = dct.dct_matrix()
    basis = np.einsum("ia,jb->ijab", d, d)                                   # [8, 8, 8, 8]
    mix = dct.YCBCR_TO_RGB.T / 255.0                                        # [channel, rgb]
    pat = np.einsum("cr,ijab->cijrab", mix, basis)
    return torch.as_tensor(pat, dtype=dtype, device=device)


def sensitivity_finite_difference(probs_fn: ProbsFn, images01: torch.Tensor, *, eps: float = 1.0,
                                  blocks_per_image: int | None = None, seed: int = 0,
                                  batch_size: int = 256) -> SensitivityResult:
    """The study's measurement: one forward pass per perturbed (channel, frequency, block).

    ``eps`` is in JPEG DCT units (YCbCr 0..255). ``blocks_per_image`` samples that many blocks per
    image (the same blocks for all 192 coefficients, drawn with ``seed``); ``None`` measures all.
    """
    images01 = _check_images(images01)
    if not eps or not np.isfinite(eps):
        raise SensitivityError(f"eps must be a finite non-zero number, got {eps}")
    n, _, h, w = images01.shape
    hb, wb = h // dct.BLOCK, w // dct.BLOCK
    total_blocks = hb * wb
    blocks_per_image = _check_blocks(blocks_per_image, total_blocks)
    rng = np.random.default_rng(seed)
    patterns = (_unit_patterns(images01.dtype, images01.device) * eps).reshape(192, 3, 8, 8).contiguous()
    start = time.perf_counter()
    per_image = np.zeros((n, 3, 8, 8))
    n_classes = 0
    with torch.no_grad():
        for m in range(n):
            x = images01[m]
            blocks = _sample_blocks(rng, total_blocks, blocks_per_image)
            # the reference in a batch as large as the perturbed ones, so that batch-size-dependent
            # kernels cannot add a constant offset to every difference
            p0 = _probs(probs_fn, x.expand(min(batch_size, 192 * len(blocks)), -1, -1, -1))[0]
            n_classes = p0.shape[0]
            # every (coefficient, block) pair, coefficient-major: index = coef * nblocks + block
            coef = np.repeat(np.arange(3 * 64), len(blocks))
            blk = np.tile(blocks, 3 * 64)
            sums = np.zeros(3 * 64)
            for lo in range(0, len(coef), batch_size):
                c_idx = torch.as_tensor(coef[lo:lo + batch_size])
                b_idx = blk[lo:lo + batch_size]
                batch = x.expand(len(c_idx), -1, -1, -1).clone()
                view = batch.view(len(c_idx), 3, hb, 8, wb, 8).permute(0, 2, 4, 1, 3, 5)  # [B, hb, wb, 3, 8, 8]
                rows = torch.as_tensor(b_idx // wb)
                cols = torch.as_tensor(b_idx % wb)
                view[torch.arange(len(c_idx)), rows, cols] += patterns[c_idx]
                change = (_probs(probs_fn, batch) - p0).abs().mean(dim=1) / abs(eps)
                np.add.at(sums, c_idx.numpy(), change.double().cpu().numpy())
            per_image[m] = (sums / len(blocks)).reshape(3, 8, 8)
    return SensitivityResult(maps=per_image.mean(0), per_image=per_image, mode="finite-difference", eps=float(eps),
                             n_images=n, n_classes=n_classes, blocks_per_image=int(blocks_per_image),
                             blocks_total=total_blocks, image_size=(h, w), seconds=time.perf_counter() - start)


def measure_sensitivity(probs_fn: ProbsFn, images01: torch.Tensor, *, mode: str = "gradient", eps: float = 1.0,
                        blocks_per_image: int | None = None, seed: int = 0,
                        batch_size: int | None = None) -> SensitivityResult:
    """Δ maps in ``mode`` (``gradient`` or ``finite-difference``); see the module docstring."""
    if mode == "gradient":
        return sensitivity_gradient(probs_fn, images01, batch_size=batch_size or 64,
                                    blocks_per_image=blocks_per_image, seed=seed)
    if mode == "finite-difference":
        return sensitivity_finite_difference(probs_fn, images01, eps=eps, blocks_per_image=blocks_per_image,
                                             seed=seed, batch_size=batch_size or 256)
    raise SensitivityError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (flattened), e.g. over the 192 coefficients."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.ravel(a), np.ravel(b)).statistic)


# --- figures ------------------------------------------------------------------------------------
def _png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_sensitivity_maps(result: SensitivityResult, title: str | None = None) -> bytes:
    """Three 8x8 heatmaps (Y, Cb, Cr) with one shared colour scale, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vmax = float(np.max(result.maps)) or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 4.0), constrained_layout=True)
    for ax, name, m in zip(axes, dct.CHANNELS, result.maps):
        im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
        ax.set_title(name)
        ax.set_xticks(range(8))
        ax.set_yticks(range(8))
        ax.set_xlabel("horizontal frequency j")
        ax.set_ylabel("vertical frequency i")
    cbar = fig.colorbar(im, ax=list(axes), shrink=0.85)
    cbar.set_label("Δ: mean |Δ probability| per unit DCT coefficient")
    fig.suptitle(title or f"DCT-frequency sensitivity — {result.describe()}", fontsize=9)
    data = _png_bytes(fig)
    plt.close(fig)
    return data


def basis_mosaic(image01: torch.Tensor, channel: int, *, amplitude: float = 100.0) -> np.ndarray:
    """An 8x8 grid of ``image01`` ``[3, H, W]`` with basis (i, j) of ``channel`` added to every block.

    Returns uint8 ``[8 (H + 2), 8 (W + 2), 3]`` with white 2-pixel gutters; ``amplitude`` in JPEG
    DCT units (larger than a measurement's eps, so that the change can be seen).
    """
    _, h, w = image01.shape
    dct.check_block_shape(h, w)
    gap = 2
    out = np.full((8 * (h + gap), 8 * (w + gap), 3), 255, dtype=np.uint8)
    for i in range(8):
        for j in range(8):
            v = dct.perturbation(channel, i, j, block=None, height=h, width=w, eps=amplitude, dtype=image01.dtype)
            tile = (image01 + v).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            r, c = i * (h + gap), j * (w + gap)
            out[r:r + h, c:c + w] = np.round(tile * 255).astype(np.uint8)
    return out


def plot_basis_illustration(image01: torch.Tensor, channel: int, *, amplitude: float = 100.0,
                            max_size: int = 96) -> bytes:
    """The study's illustration for one channel as PNG bytes (the image is centre-cropped to
    ``max_size`` pixels, a multiple of 8, to keep the figure small)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, h, w = image01.shape
    ch, cw = (min(h, max_size) // 8) * 8, (min(w, max_size) // 8) * 8
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = image01[:, top:top + ch, left:left + cw]
    mosaic = basis_mosaic(crop, channel, amplitude=amplitude)
    fig, ax = plt.subplots(figsize=(7.5, 7.5 * mosaic.shape[0] / mosaic.shape[1] + 0.4), constrained_layout=True)
    ax.imshow(mosaic, interpolation="nearest")
    step = ch + 2
    ax.set_xticks([j * (cw + 2) + cw / 2 for j in range(8)], [str(j) for j in range(8)])
    ax.set_yticks([i * step + ch / 2 for i in range(8)], [str(i) for i in range(8)])
    ax.set_xlabel("horizontal frequency j")
    ax.set_ylabel("vertical frequency i")
    ax.set_title(f"{dct.CHANNELS[channel]}: basis (i, j) x {amplitude:g} added to every 8x8 block")
    data = _png_bytes(fig)
    plt.close(fig)
    return data


# --- a sweep's trained classifier (``lossyvision sensitivity OUTPUT``) ------------------------------
@dataclass
class SweepSensitivity:
    """What :func:`run_sweep_sensitivity` measured and wrote (npz, maps PNG, basis PNGs)."""

    result: SensitivityResult
    trial_key: str
    paths: list[str]


def load_test_images(sweep, n_images: int, size: int, *, seed: int = 0,
                     codec: str | None = None) -> tuple[torch.Tensor, list[str]]:
    """``n_images`` test-split images (a seeded sample, at ``codec``'s most faithful level in the
    store; default the sweep's first codec), resized to ``size`` x ``size`` float RGB in [0, 1]
    (bilinear, antialiased: the classifier's 'resize' view)."""
    import torch.nn.functional as F

    arm = sweep.arm(codec) if codec else sweep.arms[0]
    m = read_manifest(sweep)
    rows = m[(m["split"] == sweep.test_split) & (m["status"] == "ok") & (m["codec"] == arm.name)]
    if rows.empty:
        raise SensitivityError(f"the store has no {arm.name} images of split {sweep.test_split!r}")
    rows = rows[rows["level"] == arm.codec.by_fidelity(rows["level"].unique())[0]].sort_values("relpath")
    take = np.sort(np.random.default_rng(seed).choice(len(rows), min(n_images, len(rows)), replace=False))
    rows = rows.iloc[take]
    codec = arm.create()
    images = []
    for path in rows["output_path"]:
        try:
            uri = output_uri(sweep.store_uri, path)  # a path leaving the store is never followed
        except CorruptRowError as e:
            raise SensitivityError(str(e)) from None
        rgb = codec.decode(store.read_bytes(uri))
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
        images.append(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True))
    return torch.cat(images).clamp(0, 1), list(rows["relpath"])


def run_sweep_sensitivity(output: str, *, model: str | None = None, train_level: float | None = None,
                          repeat: int = 0, n_images: int = 32, mode: str = "gradient", eps: float = 1.0,
                          blocks_per_image: int | None = None, seed: int = 0, device: str = "cpu",
                          amplitude: float = 100.0) -> SweepSensitivity:
    """Δ maps of a sweep's trained classifier; files go to ``OUTPUT/sensitivity/<trial>-<mode>.*``.

    Defaults: the sweep's first classification model, trained at its first codec's most faithful
    train level (the originals, for JPEG XL's distance 0).
    Images are measured at the model's ``image_size`` rounded down to a multiple of 8 (the task's
    ``probabilities`` resizes back when they differ, which both modes differentiate through).
    """
    if mode not in MODES:
        raise SensitivityError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    sweep = load_output_sweep(output)
    if model is None:
        classifiers = [m.name for m in sweep.models if m.task == "classification"]
        if not classifiers:
            raise SensitivityError(f"sweep {sweep.name} has no classification model")
        model = classifiers[0]
    spec = sweep.model(model)
    if spec.task != "classification":
        raise SensitivityError(f"model {model!r} is a {spec.task} model; sensitivity needs a classifier")
    arm = sweep.arms[0]
    level = arm.codec.by_fidelity(arm.train_levels)[0] if train_level is None else float(train_level)
    planned = [t for t in load_plan(output).trials if t.model == model and t.codec == arm.name
               and t.train_level == level and t.repeat == repeat and t.budget < 0]
    trial = planned[0] if planned else None
    if trial is None or not is_finished(output, trial.key):
        which = trial.key if trial else f"{model} at {arm.name} train level {level:g}, repeat {repeat}"
        raise SensitivityError(f"no finished checkpoint for trial {which} in {output}/checkpoints "
                               f"(train levels: {arm.train_levels}, repeats: {sweep.repeats})")
    task, net = load_trained(sweep, trial, output, device=device)
    size = (int(spec.image_size) // 8) * 8
    if size < 8:
        raise SensitivityError(f"image_size {spec.image_size} is too small for 8x8 blocks")
    images, _ = load_test_images(sweep, n_images, size, seed=seed, codec=arm.name)
    images = images.to(device)

    def probs_fn(x01: torch.Tensor) -> torch.Tensor:
        return task.probabilities(net, x01)

    result = measure_sensitivity(probs_fn, images, mode=mode, eps=eps, blocks_per_image=blocks_per_image, seed=seed)
    result.extra = {"trial": trial.key, "model": model, "train_level": level}
    folder = OutputFolder(output).sensitivity_dir
    stem = f"{trial.key}-{mode}"
    paths = []
    for name, data in [(f"{stem}.npz", result.to_npz_bytes()),
                       (f"{stem}.png", plot_sensitivity_maps(result, title=f"{trial.key}: {result.describe()}"))]:
        uri = store.join(folder, name)
        store.atomic_write_bytes(uri, data)
        paths.append(uri)
    for c, ch in enumerate(dct.CHANNELS):
        uri = store.join(folder, f"{trial.key}-basis-{ch}.png")
        store.atomic_write_bytes(uri, plot_basis_illustration(images[0].detach().cpu(), c, amplitude=amplitude))
        paths.append(uri)
    return SweepSensitivity(result=result, trial_key=trial.key, paths=paths)
