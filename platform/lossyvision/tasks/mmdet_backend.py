"""Optional detection backend: MMDetection 3.x's own Faster R-CNN (``options.backend: mmdet``).

The study used MMDetection's R-50-FPN 1x; the default torchvision backend approximates it (see
``docs/tasks.md``). Where mmdet and mmcv's compiled ops can be installed, this backend trains
mmdet's model from its packaged config (``faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py``, or
``options.mmdet_config``) inside the same plain-PyTorch loop, optimizer, schedule, data and VOC
metric as the torchvision backend: only the model differs.

mmdet is never a required dependency and is imported only here, lazily. No mmcv wheel exists for
Python 3.11 with torch 2.14 (mmcv 2.1 builds from source with ``setuptools<70``,
``--no-build-isolation`` and ``-std=c++20``); without it :func:`require_mmdet` explains what to do.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import torch

from lossyvision.tasks.training import autocast, option, train_epochs

DEFAULT_CONFIG = "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"
INSTALL_HINT = (
    "the mmdet detection backend needs MMDetection 3.x and mmcv 2.x with its compiled ops. Install them with "
    "`pip install 'lossyvision[mmdet]'` plus mmcv built from source (no wheel exists for Python 3.11 + "
    "torch 2.14): `pip install 'setuptools<70' && MMCV_WITH_OPS=1 pip install --no-build-isolation "
    "mmcv==2.1.0` after changing -std=c++17 to -std=c++20 in its setup.py. Or use the default backend "
    "(remove options.backend or set it to torchvision)."
)


def mmdet_available() -> bool:
    """True when mmdet, mmengine and mmcv's compiled ops all import."""
    try:
        require_mmdet()
    except ImportError:
        return False
    return True


def require_mmdet() -> None:
    """Import mmdet and mmcv's compiled extension, or raise ImportError with install instructions."""
    for module in ("mmengine", "mmcv", "mmcv._ext", "mmdet"):
        try:
            importlib.import_module(module)
        except Exception as e:  # ImportError, or mmdet's own version assertion
            raise ImportError(f"{INSTALL_HINT} (importing {module} failed: {type(e).__name__}: {e})") from None


class MMDetBackend:
    """build_model / fit / predict / load_state for :class:`~lossyvision.tasks.detection.DetectionTask`."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.spec = task.spec

    # ------------------------------------------------------------------ model
    def config(self) -> Any:
        require_mmdet()
        from mmengine.config import Config
        from mmengine.hub import get_config

        src = option(self.spec, "mmdet_config", DEFAULT_CONFIG)
        cfg = get_config(src) if src.startswith("mmdet::") else Config.fromfile(src)
        model = cfg.model
        model.roi_head.bbox_head.num_classes = len(self.task.classes)
        model.data_preprocessor.bgr_to_rgb = False  # our images are RGB already
        if self.spec.checkpoint:
            model.backbone.init_cfg = {"type": "Pretrained", "checkpoint": self.spec.checkpoint}
        elif self.spec.pretrained is not True:
            model.backbone.init_cfg = None  # offline: random backbone
        return cfg

    def build_model(self) -> torch.nn.Module:
        require_mmdet()
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules

        register_all_modules()
        model = MODELS.build(self.config().model)
        model.init_weights()
        if isinstance(self.spec.pretrained, str) and self.spec.pretrained.strip():
            from mmengine.runner import load_checkpoint

            load_checkpoint(model, self.spec.pretrained.strip(), map_location="cpu", strict=False)
        return model

    def load_state(self, model: torch.nn.Module, state: dict[str, Any]) -> torch.nn.Module:
        model.load_state_dict(state["model"])
        return model

    # ------------------------------------------------------------------ data
    def _scale(self) -> tuple[int, int]:
        return int(option(self.spec, "max_size", 1000)), int(option(self.spec, "min_size", 600))

    def _inputs(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None) -> dict[str, Any]:
        """mmdet's ``Resize(scale=(1000, 600), keep_ratio=True)`` then DetDataSamples with metainfo."""
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData
        from torchvision.transforms.v2 import functional as TF

        long_side, short_side = self._scale()
        inputs, samples = [], []
        for k, img in enumerate(images):
            h, w = img.shape[-2:]
            f = min(long_side / max(h, w), short_side / min(h, w))
            nh, nw = max(1, round(h * f)), max(1, round(w * f))
            inputs.append(TF.resize(img, [nh, nw], antialias=True))
            sample = DetDataSample(metainfo={"img_shape": (nh, nw), "ori_shape": (h, w),
                                             "scale_factor": (nw / w, nh / h)})
            if targets is not None:
                t = targets[k]
                boxes = t["boxes"].float() * torch.tensor([nw / w, nh / h, nw / w, nh / h])
                sample.gt_instances = InstanceData(bboxes=boxes, labels=t["labels"] - 1)  # mmdet: no background
            samples.append(sample)
        return {"inputs": inputs, "data_samples": samples}

    # ------------------------------------------------------------------ training
    def fit(self, model: torch.nn.Module, train: Any, *, on_epoch: Any = None,
            state: dict[str, Any] | None = None) -> None:
        task = self.task
        device = torch.device(task.device)
        model.to(device)
        seed = task.seed
        iters = len(task._loader(train, train=True))
        optimizer, scheduler = task.optimizer_and_schedule(model, iters)
        amp = bool(option(self.spec, "amp", False))

        def step(batch):
            images, targets = batch
            data = model.data_preprocessor(self._inputs(images, targets), True)
            with autocast(task.device, amp):
                losses = model(**data, mode="loss")
            loss, log_vars = model.parse_losses(losses)
            n = len(images)
            return loss.float(), n, {k: float(v) * n for k, v in log_vars.items() if k != "loss"}

        train_epochs(model, lambda e: task._loader(train, train=True, seed=seed * 1000 + e), step,
                     optimizer=optimizer, scheduler=scheduler, epochs=task.epochs, on_epoch=on_epoch, state=state,
                     grad_clip=option(self.spec, "grad_clip"), seed=seed)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, model: torch.nn.Module, test: Any) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
        task = self.task
        model.to(torch.device(task.device)).eval()
        amp = bool(option(self.spec, "amp", False))
        dets, gts = [], []
        bs = int(option(self.spec, "eval_batch_size", task.batch_size))
        for images, targets in task._loader(test, train=False, batch_size=bs):
            data = model.data_preprocessor(self._inputs(images, None), False)
            with autocast(task.device, amp):
                results = model(**data, mode="predict")  # boxes rescaled to the original image
            for res, t in zip(results, targets):
                p = res.pred_instances
                dets.append({"boxes": p.bboxes.float().cpu().numpy(), "scores": p.scores.float().cpu().numpy(),
                             "labels": p.labels.cpu().numpy()})
                gts.append({k: v.numpy() for k, v in t.items()})
        if not gts:
            raise ValueError("no test samples: the test split is empty")
        return dets, gts
