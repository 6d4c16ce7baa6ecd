"""PASCAL VOC detection mAP, as the VOC devkit (``VOCevaldet.m``) computes it.

Not COCO-style AP50 (torchmetrics, pycocotools): those interpolate precision at 101 recall points
and differ from VOC by up to a few hundredths when same-class objects overlap.

Per class, over the whole test set:

1. Detections are sorted by descending score (a stable sort: ties keep their input order).
2. Each detection is matched greedily to the ground-truth box of its image with the highest IoU
   (the first one on ties). If that IoU is ``>= iou_threshold``: a *difficult* box makes the
   detection neither TP nor FP (it is ignored); an unmatched box makes it a TP and marks the box
   as taken; a box already taken makes it a FP (duplicate). Below the threshold it is a FP.
3. Recall = TP / (non-difficult boxes); precision = TP / (TP + FP) after each detection.
4. AP: ``mode="area"`` (VOC2010+, the default): area under the precision envelope (precision made
   monotonically non-increasing) at every recall change; ``mode="11point"`` (VOC2007): mean of the
   envelope at recall 0, 0.1, ..., 1.
5. mAP is the mean over classes that have at least one non-difficult ground-truth box; other
   classes are left out (their AP is NaN in :func:`voc_average_precisions`).

Box convention. The devkit reads the XML's 1-based *inclusive* pixel indices and counts a box's
width as ``xmax - xmin + 1``. The project's VOC reader stores boxes in continuous coordinates,
``[xmin - 1, ymin - 1, xmax, ymax]`` (see :mod:`lossyvision.datasets.voc`), where the same width is
simply ``x2 - x1``; detectors (torchvision) predict in that frame too. So the default
``legacy_coordinates=False`` (width ``x2 - x1``) on stored boxes gives exactly the devkit's IoU on
the XML boxes (a test checks this), and ``legacy_coordinates=True`` (the devkit's +1) is for boxes
given as raw inclusive pixel indices. Use one convention for detections and ground truth alike.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from lossyvision.metrics.base import METRICS

AP_MODES = ("area", "11point")


def box_iou(a: np.ndarray, b: np.ndarray, legacy_coordinates: bool = False) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4) -> (N, M).

    ``legacy_coordinates``: corners are inclusive pixel indices (width ``x2 - x1 + 1``).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    one = 1.0 if legacy_coordinates else 0.0
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + one
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + one
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
    area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray, mode: str = "area") -> float:
    """AP from the recall/precision after each ranked detection (the devkit's ``VOCap``)."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if mode == "area":
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # envelope: max precision to the right
        i = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
        return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))
    if mode == "11point":
        ap = 0.0
        for t in np.linspace(0.0, 1.0, 11):
            p = precision[recall >= t]
            ap += (p.max() if p.size else 0.0) / 11.0
        return float(ap)
    raise ValueError(f"unknown AP mode {mode!r}; known: {', '.join(AP_MODES)}")


def _field(d: Mapping[str, Any], key: str, shape_tail: tuple[int, ...], dtype: Any, n: int | None,
           where: str) -> np.ndarray:
    if key not in d:
        raise ValueError(f"{where}: missing {key!r} (has {sorted(d)})")
    v = np.asarray(d[key], dtype=dtype)
    if shape_tail:
        v = v.reshape((-1,) + shape_tail) if v.size == 0 else v
    if v.shape[1:] != shape_tail or (n is not None and len(v) != n):
        want = f"({n if n is not None else 'N'}{''.join(', ' + str(s) for s in shape_tail)})"
        raise ValueError(f"{where}: {key!r} must have shape {want}, got {v.shape}")
    return v


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{where}: labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")


def voc_average_precisions(
    detections: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    num_classes: int,
    iou_threshold: float = 0.5,
    mode: str = "area",
    legacy_coordinates: bool = False,
) -> np.ndarray:
    """Per-class VOC AP, shape (num_classes,); NaN for classes without non-difficult ground truth.

    ``detections[i]`` (image i): ``boxes`` (N, 4), ``scores`` (N,), ``labels`` (N,) class indices.
    ``ground_truths[i]``: ``boxes`` (M, 4), ``labels`` (M,), optional ``difficult`` (M,) bools.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} images of detections but {len(ground_truths)} of ground truth")
    if mode not in AP_MODES:
        raise ValueError(f"unknown AP mode {mode!r}; known: {', '.join(AP_MODES)}")
    dets, gts = [], []
    for i, (d, g) in enumerate(zip(detections, ground_truths)):
        db = _field(d, "boxes", (4,), np.float64, None, f"detections[{i}]")
        ds = _field(d, "scores", (), np.float64, len(db), f"detections[{i}]")
        dl = _field(d, "labels", (), np.int64, len(db), f"detections[{i}]")
        gb = _field(g, "boxes", (4,), np.float64, None, f"ground_truths[{i}]")
        gl = _field(g, "labels", (), np.int64, len(gb), f"ground_truths[{i}]")
        gd = (_field(g, "difficult", (), bool, len(gb), f"ground_truths[{i}]") if "difficult" in g
              else np.zeros(len(gb), dtype=bool))
        _check_labels(dl, num_classes, f"detections[{i}]")
        _check_labels(gl, num_classes, f"ground_truths[{i}]")
        dets.append((db, ds, dl))
        gts.append((gb, gl, gd))

    aps = np.full(num_classes, np.nan)
    for c in range(num_classes):
        npos = sum(int(np.count_nonzero((gl == c) & ~gd)) for _, gl, gd in gts)
        if npos == 0:
            continue
        # (score, image, iou row with this image's class-c boxes) for every class-c detection
        scores, images, ious = [], [], []
        difficult, taken = [], []
        for i, ((db, ds, dl), (gb, gl, gd)) in enumerate(zip(dets, gts)):
            gmask = gl == c
            difficult.append(gd[gmask])
            taken.append(np.zeros(int(gmask.sum()), dtype=bool))
            dmask = dl == c
            if not dmask.any():
                continue
            scores.append(ds[dmask])
            images.append(np.full(int(dmask.sum()), i))
            ious.extend(box_iou(db[dmask], gb[gmask], legacy_coordinates))
        if not scores:
            aps[c] = 0.0
            continue
        score = np.concatenate(scores)
        image = np.concatenate(images)
        order = np.argsort(-score, kind="stable")
        tp = np.zeros(len(order))
        fp = np.zeros(len(order))
        for rank, d in enumerate(order):
            row = ious[d]
            if row.size == 0:
                fp[rank] = 1
                continue
            j = int(np.argmax(row))
            if row[j] >= iou_threshold:
                if difficult[image[d]][j]:
                    continue  # ignored: neither TP nor FP
                if not taken[image[d]][j]:
                    tp[rank] = 1
                    taken[image[d]][j] = True
                else:
                    fp[rank] = 1  # duplicate detection
            else:
                fp[rank] = 1
        counted = (tp + fp) > 0  # drop ignored detections: they add no point to the curve
        tpc = np.cumsum(tp[counted])
        fpc = np.cumsum(fp[counted])
        recall = tpc / npos
        precision = tpc / np.maximum(tpc + fpc, np.finfo(np.float64).eps)
        aps[c] = average_precision(recall, precision, mode)
    return aps


@METRICS.register("voc_map")
def voc_map(
    detections: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    num_classes: int,
    iou_threshold: float = 0.5,
    mode: str = "area",
    legacy_coordinates: bool = False,
) -> float:
    """VOC mAP (at IoU 0.5 by default): the mean AP over classes with non-difficult ground truth.

    NaN when no class has ground truth. See the module docstring for the exact rules.
    """
    aps = voc_average_precisions(detections, ground_truths, num_classes, iou_threshold, mode,
                                 legacy_coordinates)
    valid = ~np.isnan(aps)
    return float(aps[valid].mean()) if valid.any() else float("nan")
