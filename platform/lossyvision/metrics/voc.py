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

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from lossyvision.metrics.base import METRICS, OUTCOMES, Outcomes, as_str_ids

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


def _parse(detections: Sequence[Mapping[str, Any]], ground_truths: Sequence[Mapping[str, Any]],
           num_classes: int) -> tuple[list, list]:
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} images of detections but {len(ground_truths)} of ground truth")
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
    return dets, gts


@dataclass(frozen=True)
class ClassMatches:
    """One class's counted detections in ranked order (descending score, stable): image, TP or FP.

    A detection's status depends only on its own image's boxes and the higher-ranked detections of
    that image, so it is fixed once; any resample of images reuses it (see :func:`weighted_ap`).
    """

    image: np.ndarray   # (D,) image index of each detection
    tp: np.ndarray      # (D,) 1.0 for a true positive, else 0.0 (a false positive)


@dataclass(frozen=True)
class Matches:
    classes: list[ClassMatches]   # one per class
    positives: np.ndarray         # (n_images, num_classes) non-difficult ground-truth boxes


def match_detections(
    detections: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    num_classes: int,
    iou_threshold: float = 0.5,
    legacy_coordinates: bool = False,
) -> Matches:
    """The devkit's greedy matching (module docstring, steps 1-2), without the AP."""
    dets, gts = _parse(detections, ground_truths, num_classes)
    positives = np.zeros((len(gts), num_classes), dtype=np.int64)
    for i, (_, gl, gd) in enumerate(gts):
        np.add.at(positives[i], gl[~gd], 1)
    classes = []
    for c in range(num_classes):
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
            classes.append(ClassMatches(np.zeros(0, np.int64), np.zeros(0)))
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
        classes.append(ClassMatches(image[order][counted].astype(np.int64), tp[counted]))
    return Matches(classes, positives)


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
    if mode not in AP_MODES:
        raise ValueError(f"unknown AP mode {mode!r}; known: {', '.join(AP_MODES)}")
    matches = match_detections(detections, ground_truths, num_classes, iou_threshold, legacy_coordinates)
    aps = np.full(num_classes, np.nan)
    for c, m in enumerate(matches.classes):
        npos = int(matches.positives[:, c].sum())
        if npos == 0:
            continue
        if not len(m.tp):
            aps[c] = 0.0
            continue
        tpc = np.cumsum(m.tp)
        fpc = np.cumsum(1.0 - m.tp)
        recall = tpc / npos
        precision = tpc / np.maximum(tpc + fpc, np.finfo(np.float64).eps)
        aps[c] = average_precision(recall, precision, mode)
    return aps


def weighted_ap(matches: Matches, weights: np.ndarray, mode: str = "area") -> np.ndarray:
    """mAP for each row of (B, n_images) image weights: image ``i`` counted ``weights[b, i]`` times.

    Counting an image k times is the same as listing it k times (a bootstrap resample): its
    detections' cumulative TP/FP counts step by k at once, and the precision envelope over a run of
    identical detections is its value at the run's end, so the AP is the one of the longer list.
    With all weights 1 this is :func:`voc_map` (to rounding).
    """
    if mode not in AP_MODES:
        raise ValueError(f"unknown AP mode {mode!r}; known: {', '.join(AP_MODES)}")
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    npos = w @ matches.positives.astype(np.float64)            # (B, C)
    aps = np.full(npos.shape, np.nan)
    eps = np.finfo(np.float64).eps
    for c, m in enumerate(matches.classes):
        has = npos[:, c] > 0
        if not has.any():
            continue
        if not len(m.tp):
            aps[has, c] = 0.0
            continue
        wd = w[:, m.image]                                      # (B, D)
        tpw = wd * m.tp
        tpc = np.cumsum(tpw, axis=1)
        fpc = np.cumsum(wd - tpw, axis=1)
        precision = tpc / np.maximum(tpc + fpc, eps)
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = tpc / npos[:, c:c + 1]
        if mode == "area":
            envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
            with np.errstate(divide="ignore", invalid="ignore"):
                ap = (tpw * envelope).sum(axis=1) / npos[:, c]
        else:
            ap = sum(np.where(recall >= t, precision, 0.0).max(axis=1) for t in np.linspace(0.0, 1.0, 11)) / 11.0
        aps[has, c] = ap[has]
    valid = ~np.isnan(aps)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(valid.any(axis=1), np.nansum(aps, axis=1) / valid.sum(axis=1), np.nan)


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


@OUTCOMES.register("detection")
class DetectionOutcomes(Outcomes):
    """Per image: its detections (boxes, scores, 0-based labels) and its ground truth.

    The ground truth is kept beside the detections so that the file alone recomputes the cell's
    VOC mAP (``map50``); the matching is done once (:func:`match_detections`) and reused by every
    resample (:func:`weighted_ap`).
    """

    kind = "detection"

    def __init__(self, ids: Sequence[Any], detections: Sequence[Mapping[str, Any]],
                 ground_truths: Sequence[Mapping[str, Any]], num_classes: int,
                 iou_threshold: float = 0.5, mode: str = "area") -> None:
        if len(ids) != len(detections) or len(detections) != len(ground_truths):
            raise ValueError(f"{len(ids)} ids, {len(detections)} detections, {len(ground_truths)} ground truths")
        self.ids = as_str_ids(ids)
        self.detections = [{k: np.asarray(v) for k, v in d.items()} for d in detections]
        self.ground_truths = [{k: np.asarray(v) for k, v in g.items()} for g in ground_truths]
        self.num_classes = int(num_classes)
        self.iou_threshold = float(iou_threshold)
        self.mode = mode
        self._matches: Matches | None = None

    metric_names = ("map50",)

    @property
    def matches(self) -> Matches:
        if self._matches is None:
            self._matches = match_detections(self.detections, self.ground_truths, self.num_classes,
                                             self.iou_threshold)
        return self._matches

    @property
    def resample_cost(self) -> int:
        return max(len(self), sum(len(m.tp) for m in self.matches.classes))

    def metrics(self) -> dict[str, float]:
        return {"map50": voc_map(self.detections, self.ground_truths, self.num_classes, self.iou_threshold,
                                 self.mode)}

    def weighted(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        return {"map50": weighted_ap(self.matches, weights, self.mode)}

    def take(self, index: np.ndarray) -> "DetectionOutcomes":
        index = np.asarray(index, dtype=np.int64)
        return DetectionOutcomes(self.ids[index], [self.detections[i] for i in index],
                                 [self.ground_truths[i] for i in index], self.num_classes, self.iou_threshold,
                                 self.mode)

    @classmethod
    def concat(cls, parts: Sequence["DetectionOutcomes"]) -> "DetectionOutcomes":
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        return cls(np.concatenate([p.ids for p in parts]), [d for p in parts for d in p.detections],
                   [g for p in parts for g in p.ground_truths], first.num_classes, first.iou_threshold, first.mode)

    def __getstate__(self) -> dict[str, Any]:  # Ray ships outcomes between processes: not the cache
        return {**self.__dict__, "_matches": None}

    def to_table(self) -> Any:
        import pyarrow as pa

        def boxes(items: Sequence[Mapping[str, Any]]) -> Any:
            return pa.array([np.asarray(d.get("boxes", np.zeros((0, 4))), np.float64).reshape(-1).tolist()
                             for d in items], pa.list_(pa.float64()))

        def column(items: Sequence[Mapping[str, Any]], key: str, typ: Any, dtype: Any) -> Any:
            return pa.array([np.asarray(d.get(key, []), dtype).reshape(-1).tolist() for d in items], pa.list_(typ))

        d, g = self.detections, self.ground_truths
        table = pa.table({
            "image": pa.array(self.ids.tolist(), pa.string()),
            "boxes": boxes(d), "scores": column(d, "scores", pa.float64(), np.float64),
            "labels": column(d, "labels", pa.int64(), np.int64),
            "gt_boxes": boxes(g), "gt_labels": column(g, "labels", pa.int64(), np.int64),
            "gt_difficult": column(g, "difficult", pa.bool_(), bool),
        })
        return table.replace_schema_metadata({
            b"num_classes": str(self.num_classes).encode(), b"iou_threshold": repr(self.iou_threshold).encode(),
            b"ap_mode": self.mode.encode(), b"box_format": b"xyxy, continuous pixel coordinates"})

    @classmethod
    def from_table(cls, table: Any) -> "DetectionOutcomes":
        meta = table.schema.metadata
        cols = table.to_pydict()
        dets, gts = [], []
        for i in range(len(table)):
            dets.append({"boxes": np.asarray(cols["boxes"][i], np.float64).reshape(-1, 4),
                         "scores": np.asarray(cols["scores"][i], np.float64),
                         "labels": np.asarray(cols["labels"][i], np.int64)})
            gt_boxes = np.asarray(cols["gt_boxes"][i], np.float64).reshape(-1, 4)
            difficult = np.asarray(cols["gt_difficult"][i], bool)
            gts.append({"boxes": gt_boxes, "labels": np.asarray(cols["gt_labels"][i], np.int64),
                        "difficult": difficult if len(difficult) == len(gt_boxes) else np.zeros(len(gt_boxes), bool)})
        return cls(cols["image"], dets, gts, int(meta[b"num_classes"]), float(meta[b"iou_threshold"]),
                   meta[b"ap_mode"].decode())
