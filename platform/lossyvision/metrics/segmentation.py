"""Semantic segmentation: mIoU and mAcc from a confusion matrix accumulated over the test set.

As in MMSegmentation's ``IoUMetric`` (the numbers the study reports), the per-class values are
computed from pixel counts summed over *all* images (not averaged per image), then averaged over
classes with NaN-aware means:

- IoU_c = TP_c / (GT_c + Pred_c - TP_c) is NaN, so excluded from mIoU, for a class absent from both
  the ground truth and the prediction (a class only predicted has IoU 0 and counts).
- Acc_c = TP_c / GT_c is NaN, so excluded from mAcc, for a class absent from the ground truth.

Pixels whose ground truth is ``ignore_index`` (255: Cityscapes' void) are not counted at all,
whatever was predicted there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lossyvision.metrics.base import METRICS, OUTCOMES, Outcomes, as_str_ids


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(num_classes, num_classes) int64 counts: rows are ground truth, columns prediction."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    valid = gt != ignore_index
    g = gt[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    if g.size and (g.min() < 0 or g.max() >= num_classes):
        raise ValueError(f"ground-truth ids must lie in [0, {num_classes}) or be {ignore_index}, "
                         f"got {g.min()}..{g.max()}")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predicted ids must lie in [0, {num_classes}), got {p.min()}..{p.max()}")
    return np.bincount(g * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_iou(confusion: np.ndarray) -> np.ndarray:
    """IoU per class; NaN where the class is in neither ground truth nor prediction."""
    conf = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(axis=1) + conf.sum(axis=0) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Pixel accuracy (recall) per class; NaN where the class is absent from the ground truth."""
    conf = np.asarray(confusion, dtype=np.float64)
    gt = conf.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gt > 0, np.diag(conf) / gt, np.nan)


def _nanmean(v: np.ndarray) -> float:
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


@METRICS.register("miou")
def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over classes present in the ground truth or the prediction."""
    return _nanmean(per_class_iou(confusion))


@METRICS.register("macc")
def mean_accuracy(confusion: np.ndarray) -> float:
    """Mean per-class pixel accuracy over classes present in the ground truth."""
    return _nanmean(per_class_accuracy(confusion))


@METRICS.register("pixel_accuracy")
def pixel_accuracy(confusion: np.ndarray) -> float:
    """Overall fraction of correctly labelled (non-ignored) pixels (mmseg's aAcc)."""
    conf = np.asarray(confusion, dtype=np.float64)
    total = conf.sum()
    return float(np.trace(conf) / total) if total > 0 else float("nan")


def _batched_scores(conf: np.ndarray) -> dict[str, np.ndarray]:
    """mIoU and mAcc of every confusion matrix in a (B, C, C) stack, as the functions above do."""
    conf = conf.astype(np.float64)
    tp = np.diagonal(conf, axis1=1, axis2=2)
    gt = conf.sum(axis=2)
    pred = conf.sum(axis=1)
    union = gt + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
        miou = np.nansum(iou, axis=1) / np.sum(~np.isnan(iou), axis=1)
        macc = np.nansum(acc, axis=1) / np.sum(~np.isnan(acc), axis=1)
    return {"miou": miou, "macc": macc}


@OUTCOMES.register("segmentation")
@dataclass
class SegmentationOutcomes(Outcomes):
    """Per image: its (C, C) confusion matrix (rows ground truth, columns prediction).

    The cell's mIoU/mAcc come from the matrices summed over images (mmseg's way), so a resample
    of images is a weighted sum of the per-image matrices.
    """

    ids: np.ndarray             # (n,) image ids
    confusion: np.ndarray       # (n, C, C) int64 pixel counts

    kind = "segmentation"

    @property
    def num_classes(self) -> int:
        return int(self.confusion.shape[-1])

    metric_names = ("miou", "macc")

    @property
    def resample_cost(self) -> int:
        return len(self) * self.num_classes ** 2

    def metrics(self) -> dict[str, float]:
        total = self.confusion.sum(axis=0)
        return {"miou": mean_iou(total), "macc": mean_accuracy(total)}

    def weighted(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        c = self.num_classes
        stacked = (w @ self.confusion.reshape(len(self), c * c).astype(np.float64)).reshape(-1, c, c)
        return _batched_scores(stacked)

    def take(self, index: np.ndarray) -> "SegmentationOutcomes":
        return SegmentationOutcomes(self.ids[index], self.confusion[index])

    @classmethod
    def concat(cls, parts: Sequence["SegmentationOutcomes"]) -> "SegmentationOutcomes":
        if not parts:
            raise ValueError("nothing to concatenate")
        return cls(np.concatenate([p.ids for p in parts]), np.concatenate([p.confusion for p in parts]))

    def to_table(self) -> Any:
        import pyarrow as pa

        c = self.num_classes
        flat = self.confusion.reshape(len(self), c * c).astype(np.int64)
        table = pa.table({"image": pa.array(self.ids.tolist(), pa.string()),
                          "confusion": pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel(), pa.int64()), c * c)})
        return table.replace_schema_metadata({b"num_classes": str(c).encode()})

    @classmethod
    def from_table(cls, table: Any) -> "SegmentationOutcomes":
        c = int(table.schema.metadata[b"num_classes"])
        col = table.column("confusion").combine_chunks()
        flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.int64)
        return cls(as_str_ids(table.column("image").to_pylist()), flat.reshape(len(table), c, c))
