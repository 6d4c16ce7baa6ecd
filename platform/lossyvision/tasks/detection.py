"""Object detection: Faster R-CNN R50-FPN, configured after MMDetection's ``faster-rcnn_r50_fpn_1x``.

Default backend: torchvision's Faster R-CNN. The recipe (each value overridable, see
``docs/tasks.md`` for the remaining differences to mmdet):

- images resized to short side 600, long side at most 1000 (mmdet's scale 1000x600), random
  horizontal flip (p = 0.5) when training, ImageNet mean/std;
- ResNet-50 backbone with ImageNet weights when ``pretrained: true`` (torchvision's, as mmdet's
  ``torchvision://resnet50``) or from ``checkpoint``; BatchNorm frozen (FrozenBatchNorm2d,
  option ``frozen_bn``) and the stem + stage 1 frozen (``trainable_backbone_layers: 3``), as in
  mmdet whatever the weights. Training from scratch wants ``frozen_bn: false`` and
  ``trainable_backbone_layers: 5``. The architecture never depends on ``pretrained``, so a
  trained state dict loads into a model rebuilt with ``pretrained: false``;
- 12 epochs of SGD, momentum 0.9, weight decay 1e-4, lr 0.02 per 16 images scaled linearly with
  the batch size, linear warmup over 500 iterations from 0.001x, lr x0.1 after epochs 8 and 11;
- 1000 RPN proposals per image in training (mmdet's ``max_per_img``), 1000 at test time;
- difficult objects left out of training (mmdet drops ignored instances), kept for evaluation,
  where they are neither TP nor FP.

Recipe defaults apply to the fields a sweep file does not set: ``epochs`` (12), ``batch_size``
(16), ``lr`` (0.02 x batch/16), ``weight_decay`` (1e-4). If ``epochs`` is set but ``lr_steps`` is
not, the steps keep their place in the schedule (after 8/12 and 11/12 of the epochs).

Targets are the VOC reader's dicts: ``boxes`` float32 Nx4 (x1, y1, x2, y2, continuous pixels),
``labels`` int64 (class index), ``difficult`` bool. Class ``k`` is the model's label ``k + 1``
(torchvision keeps 0 for the background). Metric: ``map50``, VOC2012 all-point AP
(:func:`lossyvision.metrics.voc.voc_map`).

``options.backend: mmdet`` trains MMDetection's own model instead (optional extra, see
:mod:`lossyvision.tasks.mmdet_backend`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from lossyvision.metrics.voc import DetectionOutcomes
from lossyvision.tasks.base import TASKS, EpochCallback, Serving, Task, sample_ids
from lossyvision.tasks.classification import uint8_chw
from lossyvision.tasks.entrypoint import build_entry_point, is_entry_point
from lossyvision.tasks.mmdet_backend import MMDetBackend
from lossyvision.tasks.training import (
    COMMON_OPTIONS,
    autocast,
    check_options,
    load_backbone_weights,
    load_weights_file,
    make_loader,
    make_scheduler,
    option,
    recipe,
    strip_prefixes,
    train_epochs,
)

OPTIONS = COMMON_OPTIONS + ("backend", "min_size", "max_size", "trainable_backbone_layers", "frozen_bn", "hflip",
                            "train_difficult", "model_kwargs", "checkpoint_strip", "momentum", "rpn_proposals_train",
                            "mmdet_config", "score_threshold")
BACKENDS = ("torchvision", "mmdet")
DEFAULT_ARCH = "fasterrcnn_resnet50_fpn"
PREDICTOR = "roi_heads.box_predictor."

# MMDetection faster-rcnn_r50_fpn_1x
RECIPE_EPOCHS = 12
RECIPE_BATCH = 16
RECIPE_LR_PER_16 = 0.02
RECIPE_WEIGHT_DECAY = 1e-4
RECIPE_STEPS = (8, 11)


def check_target(target: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes Nx4 float32, labels N int64, difficult N bool) from a reader's target, or a clear error."""
    if not isinstance(target, Mapping) or "boxes" not in target or "labels" not in target:
        raise ValueError(f"detection target must be a dict with 'boxes' and 'labels', got {type(target).__name__}")
    boxes = np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(target["labels"], dtype=np.int64).reshape(-1)
    difficult = np.asarray(target.get("difficult", np.zeros(len(labels), bool)), dtype=bool).reshape(-1)
    if not len(boxes) == len(labels) == len(difficult):
        raise ValueError(f"detection target has {len(boxes)} boxes, {len(labels)} labels, {len(difficult)} difficult flags")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"detection labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    return boxes, labels, difficult


class DetectionCollate:
    """Samples -> (list of uint8 CHW images, list of target dicts of tensors).

    Training targets: difficult boxes and degenerate boxes dropped (unless ``keep_difficult``),
    labels shifted by +1 for torchvision, random horizontal flip. Evaluation targets: as read.
    """

    def __init__(self, num_classes: int, *, train: bool, hflip: bool = True, keep_difficult: bool = False) -> None:
        self.num_classes, self.train, self.hflip, self.keep_difficult = num_classes, train, hflip, keep_difficult

    def __call__(self, batch: list[tuple[np.ndarray, Any]]) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        images, targets = [], []
        for rgb, target in batch:
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise ValueError(f"expected uint8 HxWx3 RGB, got {rgb.dtype} {rgb.shape}")
            boxes, labels, difficult = check_target(target, self.num_classes)
            img = uint8_chw(rgb)
            if self.train:
                keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
                if not self.keep_difficult:
                    keep &= ~difficult
                boxes, labels, difficult = boxes[keep], labels[keep] + 1, difficult[keep]
                if self.hflip and torch.rand(()) < 0.5:
                    img = img.flip(-1)
                    w = rgb.shape[1]
                    boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
            images.append(img)
            targets.append({"boxes": torch.from_numpy(np.ascontiguousarray(boxes, np.float32)).reshape(-1, 4),
                            "labels": torch.from_numpy(labels), "difficult": torch.from_numpy(difficult)})
        return images, targets


class DetectorServing(torch.nn.Module):
    """uint8 NCHW RGB -> (N, D, 6) detections per image: x1, y1, x2, y2 (pixels), score, class index.

    Padded to ``D`` rows (the detector's ``detections_per_img``) with score 0 and class -1, so the
    output is one tensor. Saved with pickle: torchvision's detectors do not ``torch.export``.
    """

    def __init__(self, model: torch.nn.Module, max_detections: int) -> None:
        super().__init__()
        self.model = model
        self.max_detections = int(max_detections)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        outputs = self.model([im.float() / 255.0 for im in images])
        result = torch.zeros((len(outputs), self.max_detections, 6))
        result[:, :, 5] = -1
        for i, out in enumerate(outputs):
            k = min(len(out["scores"]), self.max_detections)
            result[i, :k, :4] = out["boxes"][:k].float()
            result[i, :k, 4] = out["scores"][:k].float()
            result[i, :k, 5] = out["labels"][:k].float() - 1
        return result


@TASKS.register("detection")
class DetectionTask(Task):
    name = "detection"
    metric_names = ("map50",)
    outcome_kind = "detection"

    def __init__(self, spec: Any, classes: list[str], device: str = "cpu", seed: int = 0) -> None:
        super().__init__(spec, classes, device, seed)
        check_options(spec, OPTIONS, self.name)
        if not self.classes:
            raise ValueError("detection needs at least one class")
        self.backend = option(spec, "backend", "torchvision")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown detection backend {self.backend!r}; known: {', '.join(BACKENDS)}")
        self._mmdet = None
        if self.backend == "mmdet":
            self._mmdet = MMDetBackend(self)

    # ------------------------------------------------------------------ recipe
    @property
    def epochs(self) -> int:
        return int(recipe(self.spec, "epochs", RECIPE_EPOCHS))

    @property
    def batch_size(self) -> int:
        return int(recipe(self.spec, "batch_size", RECIPE_BATCH))

    @property
    def lr(self) -> float:
        return float(recipe(self.spec, "lr", RECIPE_LR_PER_16 * self.batch_size / 16))

    @property
    def weight_decay(self) -> float:
        return float(recipe(self.spec, "weight_decay", RECIPE_WEIGHT_DECAY))

    @property
    def lr_steps(self) -> list[int]:
        steps = option(self.spec, "lr_steps")
        if steps is not None:
            return [int(s) for s in steps]
        return [max(1, round(self.epochs * s / RECIPE_EPOCHS)) for s in RECIPE_STEPS]

    # ------------------------------------------------------------------ model
    def build_model(self) -> Any:
        if self._mmdet is not None:
            return self._mmdet.build_model()
        if is_entry_point(self.spec.arch):  # your own detector: torchvision's interface, background = 0
            return build_entry_point(self.spec, self.classes, len(self.classes) + 1)
        import torchvision
        from torchvision.models import ResNet50_Weights
        from torchvision.models.detection import FasterRCNN
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
        from torchvision.ops import FrozenBatchNorm2d

        arch = self.spec.arch or DEFAULT_ARCH
        num_classes = len(self.classes) + 1
        kwargs = {"min_size": int(option(self.spec, "min_size", 600)),
                  "max_size": int(option(self.spec, "max_size", 1000)),
                  "rpn_post_nms_top_n_train": int(option(self.spec, "rpn_proposals_train", 1000)),
                  **(option(self.spec, "model_kwargs", {}) or {})}
        if "score_threshold" in (self.spec.options or {}):
            kwargs["box_score_thresh"] = float(option(self.spec, "score_threshold"))
        # The architecture depends on arch and options only, never on pretrained/checkpoint: a trained
        # state dict then loads into a model rebuilt without fetching any weights.
        frozen_bn = bool(option(self.spec, "frozen_bn", True))
        trainable = int(option(self.spec, "trainable_backbone_layers", 3))
        if arch == DEFAULT_ARCH:
            backbone = resnet_fpn_backbone(
                backbone_name="resnet50",
                weights=ResNet50_Weights.IMAGENET1K_V1 if self.spec.pretrained is True else None,
                norm_layer=FrozenBatchNorm2d if frozen_bn else torch.nn.BatchNorm2d,
                trainable_layers=trainable)
            if self.spec.checkpoint:
                # an ImageNet ResNet-50 state dict: its layers are the FPN body's, its fc is unused
                sd = strip_prefixes(load_weights_file(self.spec.checkpoint),
                                    tuple(option(self.spec, "checkpoint_strip", ("module.",))))
                sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
                load_backbone_weights(backbone.body, sd, strip=())
            model = FasterRCNN(backbone, num_classes=num_classes, **kwargs)
        else:
            if self.spec.checkpoint:
                raise ValueError(f"checkpoint (backbone weights) is supported for {DEFAULT_ARCH} only, not {arch}")
            extra = {"trainable_backbone_layers": trainable} if self.spec.pretrained is True else {}
            try:
                model = torchvision.models.get_model(
                    arch, weights=None, weights_backbone="DEFAULT" if self.spec.pretrained is True else None,
                    num_classes=num_classes, **extra, **kwargs)
            except ValueError as e:
                if "Unknown model" in str(e) or "unknown" in str(e).lower():
                    names = [n for n in torchvision.models.list_models(torchvision.models.detection)
                             if n.startswith("fasterrcnn")]
                    raise ValueError(f"unknown detection architecture {arch!r}; known: {', '.join(names)}") from None
                raise
            body = getattr(model.backbone, "body", model.backbone)
            set_batchnorm_frozen(body, frozen_bn)
        if isinstance(self.spec.pretrained, str) and self.spec.pretrained.strip():
            load_detector_weights(model, self.spec.pretrained.strip())
        return model

    def check_arch(self) -> None:
        """A torchvision Faster R-CNN builder (or an entry point); mmdet's configs are its own."""
        super().check_arch()
        if self._mmdet is not None or is_entry_point(self.spec.arch):
            return
        import torchvision

        arch = self.spec.arch or DEFAULT_ARCH
        names = sorted({DEFAULT_ARCH} | {n for n in torchvision.models.list_models(torchvision.models.detection)
                                          if n.startswith("fasterrcnn")})
        if arch not in names:
            raise ValueError(f"unknown detection architecture {arch!r}; known: {', '.join(names)}; for your own "
                             "detector use arch: 'package.module:factory'")
        source = self.spec.pretrained
        if isinstance(source, str) and source.strip() and "://" not in source:
            import os

            if not os.path.exists(source.strip()):
                raise ValueError(f"pretrained weights {source.strip()} do not exist")

    def dry_run(self, model: Any) -> None:
        out = model([torch.rand(3, 48, 64)])
        if not isinstance(out, (list, tuple)) or len(out) != 1 or not isinstance(out[0], Mapping):
            raise ValueError(f"in eval mode model([image]) gave {type(out).__name__}, not a list with one dict "
                             "(boxes, labels, scores) per image")
        d = out[0]
        missing = [k for k in ("boxes", "labels", "scores") if k not in d]
        if missing:
            raise ValueError(f"in eval mode the per-image dict lacks {missing} (has {sorted(d)})")
        n = len(d["scores"])
        if tuple(d["boxes"].shape) != (n, 4) or tuple(d["labels"].shape) != (n,):
            raise ValueError(f"in eval mode boxes {tuple(d['boxes'].shape)}, labels {tuple(d['labels'].shape)} and "
                             f"scores {tuple(d['scores'].shape)} do not describe N boxes (N x 4, N, N)")
        if n and (int(d["labels"].min()) < 1 or int(d["labels"].max()) > len(self.classes)):
            raise ValueError(f"in eval mode labels must be 1..{len(self.classes)} (class k is k + 1, 0 is the "
                             f"background), got {int(d['labels'].min())}..{int(d['labels'].max())}")

    # ------------------------------------------------------------------ training
    def _loader(self, data: Any, *, train: bool, seed: int = 0, batch_size: int | None = None):
        collate = DetectionCollate(len(self.classes), train=train, hflip=bool(option(self.spec, "hflip", True)),
                                   keep_difficult=bool(option(self.spec, "train_difficult", False)))
        return make_loader(data, batch_size or self.batch_size, collate, shuffle=train,
                           num_workers=int(option(self.spec, "num_workers", 0)), seed=seed, device=self.device)

    def optimizer_and_schedule(self, model: Any, iters_per_epoch: int) -> tuple[Any, Any]:
        """mmdet's 1x recipe, shared by both backends: SGD on the trainable weights, linear warmup over
        500 iterations from 0.001x, then x0.1 steps at ``lr_steps``, stepped per iteration."""
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=self.lr, momentum=float(option(self.spec, "momentum", 0.9)),
                                    weight_decay=self.weight_decay)
        scheduler = make_scheduler(optimizer, self.spec, self.epochs, iters_per_epoch, schedule="step",
                                   warmup_iters=500, warmup_ratio=0.001, lr_steps=self.lr_steps)
        return optimizer, scheduler

    def fit(self, model: Any, train: Any, *, on_epoch: EpochCallback | None = None,
            state: dict[str, Any] | None = None) -> None:
        if self._mmdet is not None:
            return self._mmdet.fit(model, train, on_epoch=on_epoch, state=state)
        device = torch.device(self.device)
        model.to(device)
        seed = self.seed
        iters = len(self._loader(train, train=True))
        optimizer, scheduler = self.optimizer_and_schedule(model, iters)
        amp = bool(option(self.spec, "amp", False))

        def step(batch):
            images, targets = batch
            images = [im.to(device, non_blocking=True).float().div_(255) for im in images]
            targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
            with autocast(self.device, amp):
                losses = model(images, targets)
            loss = sum(v.float() for v in losses.values())
            n = len(images)
            return loss, n, {k: float(v.detach()) * n for k, v in losses.items()}

        train_epochs(model, lambda e: self._loader(train, train=True, seed=seed * 1000 + e), step,
                     optimizer=optimizer, scheduler=scheduler, epochs=self.epochs, on_epoch=on_epoch, state=state,
                     grad_clip=option(self.spec, "grad_clip"), seed=seed)

    # ------------------------------------------------------------------ evaluation
    def serving(self, model: Any) -> Serving | None:
        if self._mmdet is not None:
            return None  # mmdet's detectors take its own data samples; their checkpoints stay in OUTPUT
        size = int(option(self.spec, "min_size", 600))
        limit = int(getattr(getattr(model, "roi_heads", None), "detections_per_img", 100))
        return Serving(DetectorServing(model.cpu().eval(), limit).eval(), size,
                       f"(N, {limit}, 6) detections: x1, y1, x2, y2, score, class index (-1: padding)",
                       serialization="pickle")

    @torch.no_grad()
    def predict(self, model: Any, test: Any) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
        """(detections, ground truths) per test image, as numpy dicts in image pixels (0-based labels)."""
        device = torch.device(self.device)
        model.to(device).eval()
        amp = bool(option(self.spec, "amp", False))
        dets, gts = [], []
        bs = int(option(self.spec, "eval_batch_size", self.batch_size))
        for images, targets in self._loader(test, train=False, batch_size=bs):
            with autocast(self.device, amp):
                outputs = model([im.to(device, non_blocking=True).float().div_(255) for im in images])
            for out, t in zip(outputs, targets):
                dets.append({"boxes": out["boxes"].float().cpu().numpy(), "scores": out["scores"].float().cpu().numpy(),
                             "labels": out["labels"].cpu().numpy() - 1})
                gts.append({k: v.numpy() for k, v in t.items()})
        if not gts:
            raise ValueError("no test samples: the test split is empty")
        return dets, gts

    def outcomes(self, model: Any, test: Any) -> DetectionOutcomes:
        if self._mmdet is not None:
            dets, gts = self._mmdet.predict(model, test)
        else:
            dets, gts = self.predict(model, test)
        return DetectionOutcomes(sample_ids(test), dets, gts, len(self.classes), iou_threshold=0.5, mode="area")

    def load_state(self, model: Any, state: dict[str, Any]) -> Any:
        if self._mmdet is not None:
            return self._mmdet.load_state(model, state)
        return super().load_state(model, state)


def load_detector_weights(model: torch.nn.Module, source: str) -> None:
    """Whole-detector weights (path or URL); the box predictor is skipped if its class count differs."""
    sd = strip_prefixes(load_weights_file(source), ("module.",))
    own = model.state_dict()
    head = tuple(k for k in own if k.startswith(PREDICTOR))
    fits = all(k in sd and sd[k].shape == own[k].shape for k in head)
    load_backbone_weights(model, sd if fits else {k: v for k, v in sd.items() if not k.startswith(PREDICTOR)},
                          head_prefixes=() if fits else (PREDICTOR,), strip=())


def set_batchnorm_frozen(module: torch.nn.Module, frozen: bool) -> torch.nn.Module:
    """Make every BatchNorm2d under ``module`` a FrozenBatchNorm2d (``frozen``) or the reverse, in place.

    torchvision picks the norm layer from whether backbone weights were requested; this makes the
    choice an option instead, so the state dict's keys do not depend on ``pretrained``.
    """
    from torchvision.ops import FrozenBatchNorm2d

    for name, child in module.named_children():
        if frozen and isinstance(child, torch.nn.BatchNorm2d):
            new: torch.nn.Module = FrozenBatchNorm2d(child.num_features, eps=child.eps)
        elif not frozen and isinstance(child, FrozenBatchNorm2d):
            new = torch.nn.BatchNorm2d(child.weight.numel(), eps=child.eps)
        else:
            set_batchnorm_frozen(child, frozen)
            continue
        with torch.no_grad():
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(new, key).copy_(getattr(child, key))
        setattr(module, name, new)
    return module
