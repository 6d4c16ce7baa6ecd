"""Image classification with any timm architecture: fine-tuning or a linear probe.

- ``mode: finetune`` (the study's ViT-B/16 on Food101): every weight trains, AdamW with a
  per-iteration cosine (or step) schedule.
- ``mode: linear_probe`` (the study's SwAV ResNet-50): the backbone is frozen (eval mode, no
  gradients, BatchNorm statistics untouched) and only the classifier head trains. Backbone weights
  come from ``spec.checkpoint`` (a local path, ``s3://`` URI or URL), e.g. SwAV's
  ``swav_800ep_pretrain.pth.tar``: its ``module.`` prefix is stripped and its ``projection_head``
  and ``prototypes`` are dropped.

Weights: ``pretrained: true`` loads timm's hub weights for ``arch``; ``pretrained: PATH_OR_URL``
loads that file through timm (its classifier is replaced when the class count differs).

Preprocessing: each image is resized to ``image_size`` x ``image_size`` (like Hugging Face's
ViT image processor; option ``eval_crop: center`` resizes the short side to
``image_size / crop_pct`` and crops the centre, timm's eval transform), random horizontal flips
when training (option ``hflip``), then the mean/std of the architecture's timm data config
(ImageNet's for most). Options: ``train_crop`` (``resize`` | ``random_resized_crop``),
``eval_crop`` (``resize`` | ``center``), ``hflip`` (true), ``optimizer`` (``adamw`` | ``sgd``
with ``momentum`` 0.9), ``model_kwargs`` (passed to
``timm.create_model``, e.g. ``{img_size: 64}`` for a small ViT), ``checkpoint_strip`` (key
prefixes to remove from ``checkpoint``), plus the common ones (:mod:`lossyvision.tasks.training`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lossyvision.metrics.classification import ClassificationOutcomes
from lossyvision.tasks.base import TASKS, EpochCallback, Serving, Task, sample_ids
from lossyvision.tasks.entrypoint import build_entry_point, is_entry_point
from lossyvision.tasks.hub import build_hub_classifier, check_hub_classifier, is_hub_model
from lossyvision.tasks.training import (
    COMMON_OPTIONS,
    autocast,
    check_options,
    is_url,
    load_backbone_weights,
    data_parallel,
    make_loader,
    make_scheduler,
    option,
    train_epochs,
)

OPTIONS = COMMON_OPTIONS + ("train_crop", "eval_crop", "hflip", "model_kwargs", "checkpoint_strip", "optimizer",
                            "momentum")
OPTIMIZERS = ("adamw", "sgd")
#: Keys of self-supervised checkpoints that are not part of the backbone (SwAV, DINO-style heads).
SSL_HEAD_PREFIXES = ("projection_head.", "prototypes.", "head.mlp.", "head.last_layer.")


def uint8_chw(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 numpy -> 3xHxW uint8 tensor (copied when read-only, as decoded arrays may be)."""
    if not (rgb.flags.writeable and rgb.flags.c_contiguous):
        rgb = np.array(rgb, copy=True, order="C")
    return torch.from_numpy(rgb).permute(2, 0, 1)


class ClassificationCollate:
    """Turns ``(rgb uint8 HxWx3, label)`` samples into a uint8 NCHW batch and int64 labels."""

    def __init__(self, size: int, num_classes: int, *, train: bool, train_crop: str = "resize",
                 eval_crop: str = "resize", hflip: bool = True, crop_pct: float = 0.875) -> None:
        for name, value, known in (("train_crop", train_crop, ("resize", "random_resized_crop")),
                                   ("eval_crop", eval_crop, ("resize", "center"))):
            if value not in known:
                raise ValueError(f"option {name}: unknown value {value!r}; known: {', '.join(known)}")
        self.size, self.num_classes, self.train = int(size), num_classes, train
        self.train_crop, self.eval_crop, self.hflip, self.crop_pct = train_crop, eval_crop, hflip, crop_pct

    def transform(self, rgb: np.ndarray) -> torch.Tensor:
        from torchvision.transforms import v2
        from torchvision.transforms.v2 import functional as TF

        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected uint8 HxWx3 RGB, got {rgb.dtype} {rgb.shape}")
        img = uint8_chw(rgb)
        s = self.size
        if self.train and self.train_crop == "random_resized_crop":
            i, j, h, w = v2.RandomResizedCrop.get_params(img, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))  # type: ignore[arg-type]
            img = TF.resized_crop(img, i, j, h, w, [s, s], antialias=True)
        elif not self.train and self.eval_crop == "center":
            img = TF.center_crop(TF.resize(img, int(s / self.crop_pct), antialias=True), [s, s])
        else:
            img = TF.resize(img, [s, s], antialias=True)
        if self.train and self.hflip and torch.rand(()) < 0.5:
            img = TF.horizontal_flip(img)
        return img

    def __call__(self, batch: list[tuple[np.ndarray, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        labels = []
        for _, y in batch:
            if isinstance(y, (bool, np.bool_)) or not isinstance(y, (int, np.integer)) or not 0 <= y < self.num_classes:
                raise ValueError(f"classification target must be a class index in [0, {self.num_classes}), got {y!r}")
            labels.append(int(y))
        return torch.stack([self.transform(rgb) for rgb, _ in batch]), torch.tensor(labels, dtype=torch.int64)


class ClassifierServing(torch.nn.Module):
    """uint8 NCHW RGB at the model's input size -> class probabilities (N, C), normalised as in training."""

    def __init__(self, model: torch.nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.detach().cpu().view(1, 3, 1, 1).float())
        self.register_buffer("std", std.detach().cpu().view(1, 3, 1, 1).float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        return torch.softmax(self.model((x - self.mean) / self.std), dim=1)


@TASKS.register("classification")
class ClassificationTask(Task):
    name = "classification"
    metric_names = ("top1", "top5")
    outcome_kind = "classification"
    requirements = ("timm",)
    supports_shrunk_cache = True   # a label does not move when the image shrinks
    supports_workers = True        # fit wraps the model in DDP (training.data_parallel)

    def __init__(self, spec: Any, classes: list[str], device: str = "cpu", seed: int = 0) -> None:
        super().__init__(spec, classes, device, seed)
        check_options(spec, OPTIONS, self.name)
        if not self.classes:
            raise ValueError("classification needs at least one class")
        self._data_config: dict[str, Any] | None = None

    # ------------------------------------------------------------------ model
    @property
    def linear_probe(self) -> bool:
        return self.spec.mode == "linear_probe"

    def build_model(self) -> torch.nn.Module:
        import timm

        kwargs = dict(option(self.spec, "model_kwargs", {}) or {})
        kwargs["num_classes"] = len(self.classes)
        pretrained = self.spec.pretrained
        if is_entry_point(self.spec.arch):  # your own model (package.module:factory)
            model = build_entry_point(self.spec, self.classes, len(self.classes))
        elif is_hub_model(self.spec.arch):  # a transformers classifier: hub id or local folder
            model = build_hub_classifier(self.spec.arch, pretrained, self.classes)
        elif isinstance(pretrained, str) and pretrained.strip():
            source = pretrained.strip()
            overlay = {"url": source, "hf_hub_id": None, "file": None} if is_url(source) else {"file": source}
            if not is_url(source):
                import os

                if not os.path.exists(source):
                    raise ValueError(f"pretrained weights {source} do not exist")
            model = timm.create_model(self.spec.arch, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        else:
            try:
                model = timm.create_model(self.spec.arch, pretrained=bool(pretrained), **kwargs)
            except RuntimeError as e:
                if "Unknown model" in str(e):
                    raise ValueError(f"unknown timm architecture {self.spec.arch!r} (see timm.list_models())") from None
                raise
        if self.spec.checkpoint:
            load_backbone_weights(model, self.spec.checkpoint, head_prefixes=self._head_prefixes(model),
                                  drop_prefixes=SSL_HEAD_PREFIXES,
                                  strip=tuple(option(self.spec, "checkpoint_strip", ("module.",))))
        if self.linear_probe:
            if not callable(getattr(model, "get_classifier", None)):
                raise ValueError(f"{self.spec.arch}: linear_probe mode needs the model's get_classifier() "
                                 "(the head to train)")
            head = set(map(id, model.get_classifier().parameters()))
            if not head:
                raise ValueError(f"{self.spec.arch} has no classifier head to train in linear_probe mode")
            for p in model.parameters():
                p.requires_grad_(id(p) in head)
        self._data_config = timm.data.resolve_model_data_config(model)
        return model

    def check_arch(self) -> None:
        """timm's registry (or a Hugging Face classifier, or an entry point), and local weight files."""
        super().check_arch()
        arch, pretrained = self.spec.arch, self.spec.pretrained
        if is_entry_point(arch):
            return
        if is_hub_model(arch):
            check_hub_classifier(arch, pretrained)
            return
        check_timm_arch(arch, pretrained)

    def dry_run(self, model: torch.nn.Module) -> None:
        s = int(self.spec.image_size)
        logits = self._logits(model, torch.rand(2, 3, s, s))
        want = (2, len(self.classes))
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != want:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"a batch of 2 images at {s}x{s} gave {got}, not logits of shape {want} "
                             "(batch, classes)")

    @staticmethod
    def _head_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
        head = model.get_classifier()
        return tuple(f"{n}." for n, m in model.named_modules() if m is head and n)

    def _norm(self, model: torch.nn.Module, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        import timm

        cfg = self._data_config or timm.data.resolve_model_data_config(model)
        mean = torch.tensor(cfg["mean"], device=device).view(1, 3, 1, 1)
        std = torch.tensor(cfg["std"], device=device).view(1, 3, 1, 1)
        return mean, std

    def _logits(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits from a uint8 batch or a float batch in [0, 1] at ``image_size``."""
        x01 = x.float() / 255.0 if x.dtype == torch.uint8 else x
        mean, std = self._norm(model, x01.device)
        return model((x01 - mean) / std)

    def probabilities(self, model: torch.nn.Module, x01: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, C) of float RGB in [0, 1], NCHW, differentiable w.r.t. ``x01``.

        Resizes to ``image_size`` (bilinear, antialiased) when needed, then normalises as in
        training. Call ``model.eval()`` first; ``x01`` must be on the model's device.
        """
        if x01.ndim != 4 or x01.shape[1] != 3:
            raise ValueError(f"expected float RGB NCHW, got shape {tuple(x01.shape)}")
        s = int(self.spec.image_size)
        if tuple(x01.shape[-2:]) != (s, s):
            x01 = F.interpolate(x01, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return torch.softmax(self._logits(model, x01).float(), dim=1)

    # ------------------------------------------------------------------ training
    def _collate(self, model: torch.nn.Module, train: bool) -> ClassificationCollate:
        import timm

        cfg = self._data_config or timm.data.resolve_model_data_config(model)
        return ClassificationCollate(
            self.spec.image_size, len(self.classes), train=train,
            train_crop=option(self.spec, "train_crop", "resize"), eval_crop=option(self.spec, "eval_crop", "resize"),
            hflip=bool(option(self.spec, "hflip", True)), crop_pct=float(cfg.get("crop_pct", 0.875)))

    def _set_train_mode(self, model: torch.nn.Module) -> None:
        if self.linear_probe:
            model.eval()  # frozen backbone: BatchNorm statistics and dropout stay in inference mode
            model.get_classifier().train()
        else:
            model.train()

    def fit(self, model: Any, train: Any, *, on_epoch: EpochCallback | None = None,
            state: dict[str, Any] | None = None) -> None:
        device = torch.device(self.device)
        model.to(device)
        seed = self.seed
        collate = self._collate(model, train=True)
        workers = int(option(self.spec, "num_workers", 0))

        def loader(epoch: int):
            return make_loader(train, self.spec.batch_size, collate, shuffle=True, num_workers=workers,
                               seed=seed * 1000 + epoch, device=self.device)

        iters = len(loader(1))
        params = [p for p in model.parameters() if p.requires_grad]
        kind = option(self.spec, "optimizer", "adamw")
        if kind == "sgd":  # e.g. SwAV's linear evaluation protocol
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=self.spec.lr, momentum=float(option(self.spec, "momentum", 0.9)),
                weight_decay=self.spec.weight_decay)
        elif kind == "adamw":
            optimizer = torch.optim.AdamW(params, lr=self.spec.lr, weight_decay=self.spec.weight_decay)
        else:
            raise ValueError(f"option optimizer: unknown value {kind!r}; known: {', '.join(OPTIMIZERS)}")
        scheduler = make_scheduler(optimizer, self.spec, self.spec.epochs, iters, schedule="cosine",
                                   lr_steps=option(self.spec, "lr_steps", ()))
        amp = bool(option(self.spec, "amp", False))
        net = data_parallel(model, self.device)  # DDP in a data-parallel trial (resources.trial.workers)

        def step(batch):
            x, y = batch
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(self.device, amp):
                logits = self._logits(net, x)
            loss = F.cross_entropy(logits.float(), y)
            correct = (logits.argmax(1) == y).sum().item()
            return loss, len(y), {"train_acc": correct}

        train_epochs(model, loader, step, optimizer=optimizer, scheduler=scheduler, epochs=self.spec.epochs,
                     on_epoch=on_epoch, state=state, set_train_mode=lambda: self._set_train_mode(model),
                     grad_clip=option(self.spec, "grad_clip"), seed=seed)

    # ------------------------------------------------------------------ evaluation
    def serving(self, model: Any) -> Serving:
        mean, std = self._norm(model, torch.device("cpu"))
        return Serving(ClassifierServing(model.cpu().eval(), mean, std).eval(), int(self.spec.image_size),
                       f"class probabilities over {len(self.classes)} classes (metadata: classes)")

    @torch.no_grad()
    def predict(self, model: Any, test: Any) -> tuple[np.ndarray, np.ndarray]:
        """(scores N x C float32 softmax probabilities, labels N) over ``test``."""
        device = torch.device(self.device)
        model.to(device).eval()
        loader = make_loader(test, int(option(self.spec, "eval_batch_size", self.spec.batch_size)),
                             self._collate(model, train=False), shuffle=False,
                             num_workers=int(option(self.spec, "num_workers", 0)), device=self.device)
        scores, labels = [], []
        amp = bool(option(self.spec, "amp", False))
        for x, y in loader:
            with autocast(self.device, amp):
                logits = self._logits(model, x.to(device, non_blocking=True))
            scores.append(torch.softmax(logits.float(), 1).cpu().numpy())
            labels.append(y.numpy())
        if not scores:
            raise ValueError("no test samples: the test split is empty")
        return np.concatenate(scores), np.concatenate(labels)

    def outcomes(self, model: Any, test: Any) -> ClassificationOutcomes:
        scores, labels = self.predict(model, test)
        return ClassificationOutcomes.from_scores(sample_ids(test), scores, labels)


def check_timm_arch(arch: str, pretrained: bool | str) -> None:
    """``arch`` is in timm's registry (or a timm hub model); a local ``pretrained`` file exists."""
    import os

    import timm

    if isinstance(pretrained, str) and pretrained.strip() and not is_url(pretrained.strip()):
        if not os.path.exists(pretrained.strip()):
            raise ValueError(f"pretrained weights {pretrained.strip()} do not exist")
    if arch.startswith(("hf-hub:", "hf_hub:")):
        if pretrained is not True:
            from huggingface_hub import try_to_load_from_cache

            repo = arch.split(":", 1)[1].split("@", 1)[0]
            if not isinstance(try_to_load_from_cache(repo, "config.json"), str):
                raise ValueError(f"arch {arch!r}: without pretrained: true timm still needs the model's config "
                                 "from the hub, and it is not in the local cache")
        return
    if not timm.is_model(arch):
        raise ValueError(f"unknown timm architecture {arch!r} (see timm.list_models()); for your own model use "
                         "arch: 'package.module:factory', for a Hugging Face classifier its hub id 'org/name'")
