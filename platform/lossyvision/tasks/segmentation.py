"""Semantic segmentation with SegFormer (Hugging Face ``SegformerForSemanticSegmentation``).

The study fine-tuned ``nvidia/mit-b5`` (an ImageNet-1k encoder) on Cityscapes, as MMSegmentation's
``segformer_mit-b5_8xb1-160k_cityscapes-1024x1024``. The recipe here follows it:

- training: random rescale by a ratio in [0.5, 2.0] (of ``scale`` if given, else of the image's own
  size, which is the same for 2048x1024 Cityscapes images), random ``crop_size`` crop (1024; padded
  with label 255 when the image is smaller), horizontal flip, ImageNet mean/std;
- AdamW (lr 6e-5, weight decay 0.01, none on norm layers, 10x lr on the decode head), poly decay
  (power 1) after a 1500-iteration linear warmup from 1e-6x; batch 8;
- evaluation: sliding ``crop_size`` windows with stride 3/4 of it (``eval_mode: slide``) or the whole
  image (``whole``), logits upsampled to the label's size; mIoU and mAcc over the accumulated
  confusion matrix, label 255 ignored (:mod:`lossyvision.metrics.segmentation`).

Not reproduced (see ``docs/tasks.md``): mmseg's ``cat_max_ratio`` crop retries and its photometric
distortion. Recipe defaults apply to fields the sweep file leaves unset (``lr``, ``weight_decay``,
``batch_size``, ``image_size`` = crop size).

Weights: ``pretrained: true`` loads ``arch`` from the Hugging Face hub (``nvidia/mit-b5``; the decode
head is new), ``pretrained: DIR`` a local ``save_pretrained`` folder. ``pretrained: false`` builds a
random model of the same shape from a size preset named in ``arch`` (``segformer-b0`` .. ``b5``,
``nvidia/mit-b5``, ``segformer-tiny`` for tests), else from ``arch``'s config if it is a local
folder or cached, and/or ``options.config`` (``SegformerConfig`` fields) -- so a trained state dict
loads into a model rebuilt with ``pretrained: false``.

Targets: uint8 HxW train-id masks (255 = ignore), or zero-argument callables returning one, so a
large dataset's masks can be read lazily (``functools.partial(reader.load_target, record)``).
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lossyvision.metrics.segmentation import SegmentationOutcomes, confusion_matrix
from lossyvision.tasks.base import TASKS, EpochCallback, Serving, Task, sample_ids
from lossyvision.tasks.classification import uint8_chw
from lossyvision.tasks.entrypoint import PixelValuesAdapter, build_entry_point, is_entry_point
from lossyvision.tasks.training import (
    COMMON_OPTIONS,
    autocast,
    check_options,
    make_loader,
    make_scheduler,
    option,
    recipe,
    train_epochs,
)

OPTIONS = COMMON_OPTIONS + ("config", "crop_size", "scale", "ratio_range", "hflip", "eval_mode", "eval_stride",
                            "head_lr_mult", "model_kwargs")
IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_B_HEADS = {"num_attention_heads": [1, 2, 5, 8], "sr_ratios": [8, 4, 2, 1]}
#: SegformerConfig fields of the MiT sizes (as the nvidia/mit-bN configs on the hub).
PRESETS: dict[str, dict[str, Any]] = {
    "b0": {"hidden_sizes": [32, 64, 160, 256], "depths": [2, 2, 2, 2], "decoder_hidden_size": 256, **_B_HEADS},
    "b1": {"hidden_sizes": [64, 128, 320, 512], "depths": [2, 2, 2, 2], "decoder_hidden_size": 256, **_B_HEADS},
    "b2": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 4, 6, 3], "decoder_hidden_size": 768, **_B_HEADS},
    "b3": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 4, 18, 3], "decoder_hidden_size": 768, **_B_HEADS},
    "b4": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 8, 27, 3], "decoder_hidden_size": 768, **_B_HEADS},
    "b5": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 6, 40, 3], "decoder_hidden_size": 768, **_B_HEADS},
    "tiny": {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "decoder_hidden_size": 32,
             "num_attention_heads": [1, 1, 2, 4], "sr_ratios": [8, 4, 2, 1]},
}

# mmseg segformer_mit-b5 cityscapes 1024x1024
RECIPE_LR = 6e-5
RECIPE_WEIGHT_DECAY = 0.01
RECIPE_BATCH = 8
RECIPE_CROP = 1024


def preset_for(arch: str) -> dict[str, Any] | None:
    """The size preset named in ``arch`` (``nvidia/mit-b5``, ``segformer-b0``, ``segformer-tiny``), if any."""
    m = re.search(r"(?:^|[/_-])(?:mit|segformer)[-_](b[0-5]|tiny)(?:$|[^0-9a-z])", arch.lower())
    return dict(PRESETS[m.group(1)]) if m else None


def load_mask(target: Any) -> np.ndarray:
    """A uint8 HxW mask from a target (an array, or a callable returning one)."""
    mask = target() if callable(target) else target
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"segmentation target must be an HxW label mask, got shape {mask.shape}")
    return mask


def _resize_pair(img: torch.Tensor, mask: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    img = TF.resize(img, [h, w], antialias=True)
    mask = TF.resize(mask[None], [h, w], interpolation=InterpolationMode.NEAREST_EXACT)[0]
    return img, mask


def keep_ratio_factor(h: int, w: int, scale: Any) -> float:
    """mmseg's keep-ratio rescale: the largest factor fitting (long, short) = ``scale`` (1 when None)."""
    if not scale:
        return 1.0
    long_side, short_side = max(scale), min(scale)
    return min(long_side / max(h, w), short_side / min(h, w))


class SegmentationCollate:
    """Training: random rescale, crop, flip -> (uint8 Bx3xSxS, int64 BxSxS). Evaluation: lists."""

    def __init__(self, num_classes: int, *, train: bool, crop_size: int = RECIPE_CROP, scale: Any = None,
                 ratio_range: tuple[float, float] = (0.5, 2.0), hflip: bool = True) -> None:
        self.num_classes, self.train, self.crop, self.scale = num_classes, train, int(crop_size), scale
        self.ratio_range, self.hflip = (float(ratio_range[0]), float(ratio_range[1])), hflip

    def _check(self, rgb: np.ndarray, mask: np.ndarray) -> None:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected uint8 HxWx3 RGB, got {rgb.dtype} {rgb.shape}")
        if mask.shape != rgb.shape[:2]:
            raise ValueError(f"label mask {mask.shape} does not match image {rgb.shape[:2]}")
        bad = (mask >= self.num_classes) & (mask != IGNORE_INDEX)
        if bad.any():
            raise ValueError(f"label mask has ids {sorted(np.unique(mask[bad]).tolist())[:5]} outside "
                             f"[0, {self.num_classes}) and not {IGNORE_INDEX}")

    def _train_sample(self, rgb: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = mask.shape
        lo, hi = self.ratio_range
        f = keep_ratio_factor(h, w, self.scale) * (lo + (hi - lo) * float(torch.rand(())))
        img, m = _resize_pair(uint8_chw(rgb), torch.from_numpy(np.array(mask, dtype=np.uint8, copy=True)),
                              max(1, round(h * f)), max(1, round(w * f)))
        c = self.crop
        nh, nw = m.shape
        y0 = int(torch.randint(0, max(nh - c, 0) + 1, ()))
        x0 = int(torch.randint(0, max(nw - c, 0) + 1, ()))
        img, m = img[:, y0:y0 + c, x0:x0 + c], m[y0:y0 + c, x0:x0 + c]
        out_img = torch.zeros((3, c, c), dtype=torch.uint8)
        out_mask = torch.full((c, c), IGNORE_INDEX, dtype=torch.uint8)
        out_img[:, :img.shape[1], :img.shape[2]] = img
        out_mask[:m.shape[0], :m.shape[1]] = m
        if self.hflip and torch.rand(()) < 0.5:
            out_img, out_mask = out_img.flip(-1), out_mask.flip(-1)
        return out_img, out_mask.long()

    def __call__(self, batch: list[tuple[np.ndarray, Any]]):
        pairs = []
        for rgb, target in batch:
            mask = load_mask(target)
            self._check(rgb, mask)
            pairs.append((rgb, mask))
        if self.train:
            imgs, masks = zip(*(self._train_sample(rgb, mask) for rgb, mask in pairs))
            return torch.stack(imgs), torch.stack(masks)
        images = []
        for rgb, mask in pairs:
            img = uint8_chw(rgb)
            f = keep_ratio_factor(*mask.shape, self.scale)
            if f != 1.0:
                img = _resize_pair(img, torch.zeros(mask.shape, dtype=torch.uint8),
                                   max(1, round(mask.shape[0] * f)), max(1, round(mask.shape[1] * f)))[0]
            images.append(img)
        return images, [mask for _, mask in pairs]


class SegmenterServing(torch.nn.Module):
    """uint8 NCHW RGB -> per-pixel class logits (N, C, H, W) at the input's size (whole-image inference)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255.0 - self.mean) / self.std
        logits = self.model(pixel_values=x).logits
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


@TASKS.register("segmentation")
class SegmentationTask(Task):
    name = "segmentation"
    metric_names = ("miou", "macc")
    outcome_kind = "segmentation"
    requirements = ("transformers",)

    def __init__(self, spec: Any, classes: list[str], device: str = "cpu", seed: int = 0) -> None:
        super().__init__(spec, classes, device, seed)
        check_options(spec, OPTIONS, self.name)
        if len(self.classes) < 2:
            raise ValueError(f"segmentation needs at least two classes, got {self.classes}")
        mode = option(spec, "eval_mode", "slide")
        if mode not in ("slide", "whole"):
            raise ValueError(f"option eval_mode: unknown value {mode!r}; known: slide, whole")

    # ------------------------------------------------------------------ recipe
    @property
    def batch_size(self) -> int:
        return int(recipe(self.spec, "batch_size", RECIPE_BATCH))

    @property
    def crop_size(self) -> int:
        return int(option(self.spec, "crop_size", recipe(self.spec, "image_size", RECIPE_CROP)))

    # ------------------------------------------------------------------ model
    def build_model(self) -> torch.nn.Module:
        if is_entry_point(self.spec.arch):  # your own model: logits (N, classes, h, w) at any resolution
            return PixelValuesAdapter(build_entry_point(self.spec, self.classes, len(self.classes)))
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        labels = {"num_labels": len(self.classes), "id2label": dict(enumerate(self.classes)),
                  "label2id": {c: i for i, c in enumerate(self.classes)},
                  "semantic_loss_ignore_index": IGNORE_INDEX}
        overrides = dict(option(self.spec, "config", {}) or {})
        pretrained = self.spec.pretrained
        if pretrained is True or (isinstance(pretrained, str) and pretrained.strip()):
            source = self.spec.arch if pretrained is True else pretrained.strip()
            try:
                return SegformerForSemanticSegmentation.from_pretrained(
                    source, ignore_mismatched_sizes=True, **labels, **overrides)
            except OSError as e:
                raise ValueError(f"cannot load SegFormer weights {source!r}: {e}") from None
        preset = preset_for(self.spec.arch)
        if preset is None and not overrides:
            try:  # a local save_pretrained folder, or a hub id whose config is cached
                base = SegformerConfig.from_pretrained(self.spec.arch).to_dict()
            except (OSError, ValueError):
                raise ValueError(
                    f"segformer arch {self.spec.arch!r} names no size preset for pretrained: false and no "
                    f"config could be loaded for it; use one of {', '.join('segformer-' + k for k in PRESETS)} "
                    "(or nvidia/mit-bN), or give options.config") from None
            preset = {k: base[k] for k in ("hidden_sizes", "depths", "num_attention_heads", "sr_ratios",
                                           "decoder_hidden_size", "mlp_ratios", "patch_sizes", "strides",
                                           "num_encoder_blocks") if k in base}
        try:
            config = SegformerConfig(**{**(preset or {}), **overrides, **labels})
        except TypeError as e:
            raise ValueError(f"options.config: {e}") from None
        return SegformerForSemanticSegmentation(config)

    def check_arch(self) -> None:
        """A SegFormer preset, local folder or hub id (its config local unless pretrained), or an entry point."""
        super().check_arch()
        arch, pretrained = self.spec.arch, self.spec.pretrained
        if is_entry_point(arch):
            return
        if option(self.spec, "model_kwargs"):
            raise ValueError("option model_kwargs is for entry points (package.module:factory); "
                             "SegFormer takes options.config")
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        source = str(pretrained).strip() if isinstance(pretrained, str) and pretrained.strip() else arch
        if pretrained is True or source != arch:  # weights from a local folder, or from the hub at the trial
            if not os.path.isdir(source):
                try:
                    validate_repo_id(source)
                except HFValidationError as e:
                    field = "arch" if source == arch else "pretrained"
                    raise ValueError(f"{field} {source!r} is neither a local save_pretrained folder nor a hub id: "
                                     f"{e}") from None
            return
        if preset_for(arch) is not None or option(self.spec, "config"):
            return
        from transformers import SegformerConfig

        try:
            SegformerConfig.from_pretrained(arch, local_files_only=True)
        except (OSError, ValueError):
            raise ValueError(
                f"segformer arch {arch!r} names no size preset for pretrained: false and no config could be loaded "
                f"for it offline; use one of {', '.join('segformer-' + k for k in PRESETS)} (or nvidia/mit-bN), "
                "options.config, or pretrained: true") from None

    def dry_run(self, model: torch.nn.Module) -> None:
        s = min(self.crop_size, 128)
        out = model(pixel_values=self._normalise(torch.rand(1, 3, s, s)))
        logits = getattr(out, "logits", None)
        want = (1, len(self.classes))
        if not isinstance(logits, torch.Tensor) or logits.ndim != 4 or tuple(logits.shape[:2]) != want:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"an image of {s}x{s} gave {got}, not logits of shape (1, {len(self.classes)}, h, w)")

    # ------------------------------------------------------------------ helpers
    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _collate(self, train: bool) -> SegmentationCollate:
        return SegmentationCollate(len(self.classes), train=train, crop_size=self.crop_size,
                                   scale=option(self.spec, "scale"),
                                   ratio_range=tuple(option(self.spec, "ratio_range", (0.5, 2.0))),
                                   hflip=bool(option(self.spec, "hflip", True)))

    def _loader(self, data: Any, *, train: bool, seed: int = 0, batch_size: int | None = None):
        return make_loader(data, batch_size or self.batch_size, self._collate(train), shuffle=train,
                           num_workers=int(option(self.spec, "num_workers", 0)), seed=seed, device=self.device)

    def _param_groups(self, model: torch.nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """mmseg's paramwise_cfg: no weight decay on norms, ``head_lr_mult`` (10) on the decode head."""
        head_mult = float(option(self.spec, "head_lr_mult", 10.0))
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                groups.setdefault((name.startswith("decode_head."), "norm" in name), []).append(p)
        return [{"params": ps, "lr": lr * (head_mult if head else 1.0), "weight_decay": 0.0 if norm else weight_decay}
                for (head, norm), ps in sorted(groups.items())]

    @staticmethod
    def loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Cross-entropy at the label's resolution, 255 ignored; 0 (with a graph) if every pixel is ignored."""
        up = F.interpolate(logits.float(), size=masks.shape[-2:], mode="bilinear", align_corners=False)
        if not (masks != IGNORE_INDEX).any():
            return up.sum() * 0.0
        return F.cross_entropy(up, masks, ignore_index=IGNORE_INDEX)

    # ------------------------------------------------------------------ training
    def fit(self, model: Any, train: Any, *, on_epoch: EpochCallback | None = None,
            state: dict[str, Any] | None = None) -> None:
        device = torch.device(self.device)
        model.to(device)
        seed = self.seed
        iters = len(self._loader(train, train=True))
        lr = float(recipe(self.spec, "lr", RECIPE_LR))
        wd = float(recipe(self.spec, "weight_decay", RECIPE_WEIGHT_DECAY))
        optimizer = torch.optim.AdamW(self._param_groups(model, lr, wd), lr=lr, betas=(0.9, 0.999), weight_decay=wd)
        scheduler = make_scheduler(optimizer, self.spec, self.spec.epochs, iters, schedule="poly",
                                   warmup_iters=1500, warmup_ratio=1e-6)
        amp = bool(option(self.spec, "amp", False))

        def step(batch):
            x, y = batch
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(self.device, amp):
                logits = model(pixel_values=self._normalise(x)).logits
            loss = self.loss(logits, y)
            with torch.no_grad():
                up = F.interpolate(logits.float(), size=y.shape[-2:], mode="bilinear", align_corners=False)
                valid = y != IGNORE_INDEX
                correct = ((up.argmax(1) == y) & valid).sum().item()
                pixels = max(int(valid.sum()), 1)
            n = len(x)
            return loss, n, {"train_pixel_acc": correct / pixels * n}

        train_epochs(model, lambda e: self._loader(train, train=True, seed=seed * 1000 + e), step,
                     optimizer=optimizer, scheduler=scheduler, epochs=self.spec.epochs, on_epoch=on_epoch,
                     state=state, grad_clip=option(self.spec, "grad_clip"), seed=seed)

    # ------------------------------------------------------------------ evaluation
    def serving(self, model: Any) -> Serving:
        return Serving(SegmenterServing(model.cpu().eval()).eval(), self.crop_size,
                       f"per-pixel logits over {len(self.classes)} classes (metadata: classes), whole image")

    def logits(self, model: torch.nn.Module, img: torch.Tensor) -> torch.Tensor:
        """(1, C, H, W) logits at the size of ``img`` (uint8 or float 1x3xHxW), whole or sliding window."""
        amp = bool(option(self.spec, "amp", False))
        x = self._normalise(img)
        _, _, h, w = x.shape
        if option(self.spec, "eval_mode", "slide") == "whole":
            with autocast(self.device, amp):
                out = model(pixel_values=x).logits
            return F.interpolate(out.float(), size=(h, w), mode="bilinear", align_corners=False)
        crop = self.crop_size
        stride = int(option(self.spec, "eval_stride", max(1, crop * 3 // 4)))
        total = torch.zeros((1, len(self.classes), h, w), device=x.device)
        count = torch.zeros((1, 1, h, w), device=x.device)
        for i in range(max(h - crop + stride - 1, 0) // stride + 1):
            for j in range(max(w - crop + stride - 1, 0) // stride + 1):
                y2, x2 = min(i * stride + crop, h), min(j * stride + crop, w)
                y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
                with autocast(self.device, amp):
                    out = model(pixel_values=x[:, :, y1:y2, x1:x2]).logits
                total[:, :, y1:y2, x1:x2] += F.interpolate(out.float(), size=(y2 - y1, x2 - x1), mode="bilinear",
                                                           align_corners=False)
                count[:, :, y1:y2, x1:x2] += 1
        return total / count

    @torch.no_grad()
    def confusions(self, model: Any, test: Any) -> np.ndarray:
        """(n, C, C): each test image's confusion matrix at the labels' resolution (rows: ground truth)."""
        device = torch.device(self.device)
        model.to(device).eval()
        per_image = []
        for images, masks in self._loader(test, train=False, batch_size=1):
            for img, mask in zip(images, masks):
                logits = self.logits(model, img[None].to(device, non_blocking=True))
                if tuple(logits.shape[-2:]) != mask.shape:
                    logits = F.interpolate(logits, size=mask.shape, mode="bilinear", align_corners=False)
                pred = logits.argmax(1)[0].cpu().numpy()
                per_image.append(confusion_matrix(pred, mask, len(self.classes), IGNORE_INDEX))
        if not per_image:
            raise ValueError("no test samples: the test split is empty")
        return np.stack(per_image)

    def confusion(self, model: Any, test: Any) -> np.ndarray:
        """The (C, C) confusion matrix summed over ``test`` (what mIoU and mAcc are computed from)."""
        return self.confusions(model, test).sum(axis=0)

    def outcomes(self, model: Any, test: Any) -> SegmentationOutcomes:
        return SegmentationOutcomes(np.asarray(sample_ids(test), dtype=object), self.confusions(model, test))
