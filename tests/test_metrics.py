"""Metrics against hand-worked cases (the arithmetic is in the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from lossyvision.metrics import METRICS
from lossyvision.metrics.classification import topk_accuracy, topk_correct
from lossyvision.metrics.segmentation import (
    confusion_matrix,
    mean_accuracy,
    mean_iou,
    per_class_accuracy,
    per_class_iou,
    pixel_accuracy,
)
from lossyvision.metrics.voc import average_precision, box_iou, voc_average_precisions, voc_map


# --------------------------------------------------------------------------- classification
SCORES = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
LABELS = np.array([1, 1, 0, 2])


def test_topk_hand_case():
    # ranks of the true class: 0, 1, 2, 2
    assert topk_accuracy(SCORES, LABELS, 1) == 0.25
    assert topk_accuracy(SCORES, LABELS, 2) == 0.5
    assert topk_accuracy(SCORES, LABELS, 3) == 1.0
    assert topk_correct(SCORES, LABELS, (1, 2)) == {1: 1, 2: 2}


def test_top5_with_fewer_than_five_classes_counts_everything():
    assert METRICS.get("top5")(SCORES, LABELS) == 1.0
    assert METRICS.get("top1")(SCORES, LABELS) == 0.25


def test_topk_rejects_bad_input():
    with pytest.raises(ValueError, match="labels must lie"):
        topk_accuracy(SCORES, np.array([0, 1, 2, 3]), 1)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        topk_accuracy(np.zeros(4), LABELS, 1)
    with pytest.raises(ValueError, match="empty"):
        topk_accuracy(np.zeros((0, 3)), np.zeros(0, dtype=int), 1)


# --------------------------------------------------------------------------- VOC mAP
def det(boxes, scores, labels):
    return {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4), "scores": np.array(scores, dtype=np.float32),
            "labels": np.array(labels, dtype=np.int64)}


def gt(boxes, labels, difficult=None):
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    return {"boxes": boxes, "labels": np.array(labels, dtype=np.int64),
            "difficult": np.array(difficult if difficult is not None else [False] * len(boxes), dtype=bool)}


def test_box_iou_conventions():
    # inclusive pixels: [0,0,9,9] and [5,0,14,9] are 10x10 boxes sharing columns 5..9: 50 / 150
    assert box_iou([[0, 0, 9, 9]], [[5, 0, 14, 9]], legacy_coordinates=True)[0, 0] == pytest.approx(1 / 3)
    # continuous (the default): 4*9 / (81 + 81 - 36)
    assert box_iou([[0, 0, 9, 9]], [[5, 0, 14, 9]])[0, 0] == pytest.approx(36 / 126)
    # touching on one pixel column overlaps with inclusive pixels, not in continuous coordinates
    assert box_iou([[0, 0, 9, 9]], [[9, 0, 18, 9]], legacy_coordinates=True)[0, 0] > 0
    assert box_iou([[0, 0, 9, 9]], [[9, 0, 18, 9]])[0, 0] == 0
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)


def test_iou_threshold_is_inclusive():
    # det covers the top half of the GT: 50 / 100 = 0.5 exactly -> TP (devkit: ovmax >= 0.5)
    g = [gt([[0, 0, 10, 10]], [0])]
    d = [det([[0, 0, 10, 5]], [0.9], [0])]
    assert voc_map(d, g, 1) == 1.0
    assert voc_map(d, g, 1, iou_threshold=0.51) == 0.0


def test_stored_boxes_give_the_devkit_iou_of_the_xml_boxes():
    # XML (inclusive, 1-based) GT 1..10 x 1..10, det 1..10 x 1..5: the devkit's +1 gives 50/100.
    xml_gt, xml_det = [[1, 1, 10, 10]], [[1, 1, 10, 5]]
    assert box_iou(xml_det, xml_gt, legacy_coordinates=True)[0, 0] == pytest.approx(0.5)
    # the reader stores [xmin - 1, ymin - 1, xmax, ymax]: the default continuous IoU is the same
    stored = lambda b: [[x1 - 1, y1 - 1, x2, y2] for x1, y1, x2, y2 in b]  # noqa: E731
    assert box_iou(stored(xml_det), stored(xml_gt))[0, 0] == pytest.approx(0.5)
    # using the +1 on stored boxes would be off by a pixel: 6*11 / (121 + 121 - 66) != 0.5
    assert box_iou(stored(xml_det), stored(xml_gt), legacy_coordinates=True)[0, 0] == pytest.approx(66 / 121)
    assert voc_map([det(xml_det, [0.9], [0])], [gt(xml_gt, [0])], 1, legacy_coordinates=True) == 1.0


def test_area_and_11point_ap_hand_case():
    # TP, FP, TP over 2 GT: recall .5 .5 1, precision 1 .5 2/3
    g = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0])]
    d = [det([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0])]
    # area: envelope 1 up to recall .5, 2/3 up to 1 -> .5*1 + .5*2/3
    assert voc_map(d, g, 1) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # 11 point: t = 0..0.5 (6 points) -> 1; t = 0.6..1 (5 points) -> 2/3
    assert voc_map(d, g, 1, mode="11point") == pytest.approx((6 + 5 * 2 / 3) / 11)
    # the score order decides, not the input order
    d_shuffled = [det([[20, 20, 30, 30], [0, 0, 10, 10], [50, 50, 60, 60]], [0.7, 0.9, 0.8], [0, 0, 0])]
    assert voc_map(d_shuffled, g, 1) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_duplicates_are_false_positives():
    # two detections on the first GT: the second (lower score) is a duplicate
    g = [gt([[0, 0, 10, 10], [40, 40, 50, 50]], [0, 0])]
    d = [det([[0, 0, 10, 10], [0, 0, 10, 10], [40, 40, 50, 50]], [0.9, 0.8, 0.7], [0, 0, 0])]
    # TP FP TP: recall .5 .5 1, precision 1 .5 2/3 -> .5 + .5*2/3 (a duplicate costs precision)
    assert voc_map(d, g, 1) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_difficult_objects_are_neither_tp_nor_fp():
    # g1 normal, g2 difficult. Detections: on g2 (ignored), elsewhere (FP), on g1 (TP).
    g = [gt([[0, 0, 10, 10], [30, 30, 40, 40]], [0, 0], [False, True])]
    d = [det([[30, 30, 40, 40], [60, 60, 70, 70], [0, 0, 10, 10]], [0.9, 0.8, 0.7], [0, 0, 0])]
    # counted: FP, TP over npos = 1 -> recall 0 1, precision 0 .5 -> AP .5
    assert voc_map(d, g, 1) == pytest.approx(0.5)
    # the same boxes without the difficult flag: TP FP TP over 2 GT -> 5/6
    g_plain = [gt([[0, 0, 10, 10], [30, 30, 40, 40]], [0, 0])]
    assert voc_map(d, g_plain, 1) == pytest.approx(5 / 6)
    # a class whose only GT is difficult is left out of the mean
    g2 = [gt([[0, 0, 10, 10], [30, 30, 40, 40]], [0, 1], [False, True])]
    d2 = [det([[0, 0, 10, 10], [30, 30, 40, 40]], [0.9, 0.8], [0, 1])]
    aps = voc_average_precisions(d2, g2, 2)
    assert aps[0] == 1.0 and np.isnan(aps[1])
    assert voc_map(d2, g2, 2) == 1.0


def test_classes_without_gt_are_excluded_from_the_mean():
    # class 0: the TP/FP/TP case (AP 5/6); class 1: GT but no detections (AP 0);
    # class 2: detections but no GT (excluded); class 3: nothing (excluded)
    g = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0]), gt([[0, 0, 20, 20]], [1])]
    d = [det([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0]),
         det([[0, 0, 20, 20]], [0.99], [2])]
    aps = voc_average_precisions(d, g, 4)
    assert aps[0] == pytest.approx(5 / 6)
    assert aps[1] == 0.0
    assert np.isnan(aps[2]) and np.isnan(aps[3])
    assert METRICS.get("voc_map")(d, g, 4) == pytest.approx(5 / 12)
    # no ground truth at all: undefined
    assert np.isnan(voc_map([det([], [], [])], [gt([], [])], 2))


def test_matching_is_per_image():
    # the same box in another image does not match
    g = [gt([[0, 0, 10, 10]], [0]), gt([], [])]
    d = [det([], [], []), det([[0, 0, 10, 10]], [0.9], [0])]
    assert voc_map(d, g, 1) == 0.0


def coco_style_ap50(dets, gts, num_classes):
    """COCO-style AP50 written out: a detection may take the best *unmatched* GT, and precision is
    read at 101 recall points (pycocotools' ``COCOeval.accumulate``)."""
    aps = []
    for c in range(num_classes):
        npos = sum(int(((g["labels"] == c) & ~g["difficult"]).sum()) for g in gts)
        if npos == 0:
            continue
        rows = [(s, i, b) for i, d in enumerate(dets) for b, s, l in zip(d["boxes"], d["scores"], d["labels"]) if l == c]
        rows.sort(key=lambda r: -r[0])
        taken = [np.zeros(len(g["boxes"]), bool) for g in gts]
        tp, fp = [], []
        for _s, i, b in rows:
            m = gts[i]["labels"] == c
            ious = np.where(m & ~taken[i], box_iou([b], gts[i]["boxes"])[0], -1)
            j = int(np.argmax(ious)) if len(ious) else -1
            if j >= 0 and ious[j] >= 0.5:
                taken[i][j] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        tpc, fpc = np.cumsum(tp), np.cumsum(fp)
        rc = tpc / npos
        pr = tpc / np.maximum(tpc + fpc, 1e-12)
        pr = np.maximum.accumulate(pr[::-1])[::-1]
        idx = np.searchsorted(rc, np.linspace(0, 1, 101), side="left")
        aps.append(np.mean([pr[k] if k < len(pr) else 0.0 for k in idx]))
    return float(np.mean(aps))


def test_overlapping_same_class_objects_voc_differs_from_coco_ap50():
    # g1 and g2 overlap (IoU 0.82). d1 sits on g1. d2 overlaps g1 (IoU 0.923) more than g2 (0.887).
    # VOC: d2's best GT is g1, already taken -> FP. COCO: d2 takes the unmatched g2 -> TP.
    g = [gt([[0, 0, 100, 100], [10, 0, 110, 100], [200, 200, 250, 250]], [0, 0, 0])]
    d = [det([[0, 0, 100, 100], [4, 0, 104, 100], [200, 200, 250, 250]], [0.9, 0.8, 0.7], [0, 0, 0])]
    assert box_iou([[4, 0, 104, 100]], [[0, 0, 100, 100], [10, 0, 110, 100]])[0] == pytest.approx([96 / 104, 94 / 106])
    # VOC: TP FP TP over 3 GT: recall 1/3 1/3 2/3, precision 1 .5 2/3 -> 1/3*1 + 1/3*2/3 = 5/9
    assert voc_map(d, g, 1) == pytest.approx(5 / 9)
    # VOC2007 11 point: t=0..0.3 -> 1 (4 points), t=0.4..0.6 -> 2/3 (3 points) -> 6/11
    assert voc_map(d, g, 1, mode="11point") == pytest.approx(6 / 11)
    # COCO-style: all three TP -> 1.0
    assert coco_style_ap50(d, g, 1) == pytest.approx(1.0)


def test_101_point_interpolation_alone_differs_from_voc_area():
    # the TP/FP/TP case has no overlap, so both match the same way; only the interpolation differs:
    # 101 points: t=0..0.5 (51 points) -> 1, t=0.51..1 (50 points) -> 2/3
    g = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0])]
    d = [det([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0])]
    coco = coco_style_ap50(d, g, 1)
    assert coco == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert voc_map(d, g, 1) == pytest.approx(5 / 6)
    assert abs(coco - voc_map(d, g, 1)) > 1e-3


def test_average_precision_modes():
    assert average_precision([0.5, 1.0], [1.0, 1.0]) == 1.0
    assert average_precision([], []) == 0.0
    with pytest.raises(ValueError, match="unknown AP mode"):
        average_precision([1.0], [1.0], mode="coco")


def test_voc_map_rejects_bad_input():
    g = [gt([[0, 0, 9, 9]], [0])]
    with pytest.raises(ValueError, match="1 images of detections but 2"):
        voc_map([det([], [], [])], g + g, 1)
    with pytest.raises(ValueError, match="missing 'scores'"):
        voc_map([{"boxes": np.zeros((0, 4)), "labels": np.zeros(0)}], g, 1)
    with pytest.raises(ValueError, match="labels must lie"):
        voc_map([det([[0, 0, 1, 1]], [0.5], [3])], g, 1)
    with pytest.raises(ValueError, match="shape"):
        voc_map([det([[0, 0, 1, 1]], [0.5, 0.4], [0])], g, 1)


# --------------------------------------------------------------------------- segmentation
GT_MASK = np.array([[0, 0, 1, 255], [1, 1, 1, 0]], dtype=np.uint8)
PRED_MASK = np.array([[0, 1, 1, 2], [1, 0, 1, 0]], dtype=np.uint8)


def test_confusion_and_scores_hand_case():
    conf = confusion_matrix(PRED_MASK, GT_MASK, 3)
    # the pixel labelled 255 (predicted 2) is not counted: 7 pixels
    assert conf.sum() == 7
    assert conf.tolist() == [[2, 1, 0], [1, 3, 0], [0, 0, 0]]
    # class 0: TP 2, GT 3, pred 3 -> IoU 2/4, acc 2/3; class 1: TP 3, GT 4, pred 4 -> IoU 3/5, acc 3/4
    # class 2: in neither GT nor (counted) prediction -> excluded
    iou = per_class_iou(conf)
    assert iou[:2] == pytest.approx([0.5, 0.6]) and np.isnan(iou[2])
    acc = per_class_accuracy(conf)
    assert acc[:2] == pytest.approx([2 / 3, 3 / 4]) and np.isnan(acc[2])
    assert mean_iou(conf) == pytest.approx(0.55)
    assert mean_accuracy(conf) == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert pixel_accuracy(conf) == pytest.approx(5 / 7)
    assert METRICS.get("miou")(conf) == pytest.approx(0.55)
    assert METRICS.get("macc")(conf) == pytest.approx((2 / 3 + 3 / 4) / 2)


def test_class_only_predicted_counts_in_miou_not_in_macc():
    conf = confusion_matrix(np.array([[0, 3]]), np.array([[0, 0]]), 4)
    # class 0: TP 1, GT 2, pred 1 -> IoU 1/2, acc 1/2; class 3: IoU 0 (counts), acc NaN (GT absent)
    assert mean_iou(conf) == pytest.approx(0.25)
    assert mean_accuracy(conf) == pytest.approx(0.5)


def test_scores_come_from_the_summed_matrix_not_per_image_means():
    a = confusion_matrix(PRED_MASK, GT_MASK, 3)
    b = confusion_matrix(np.array([[2, 2]]), np.array([[2, 0]]), 3)
    total = a + b
    # after b: class 0 GT 4 pred 3 TP 2 -> 2/5; class 1 unchanged 3/5; class 2 GT 1 pred 2 TP 1 -> 1/2
    assert per_class_iou(total) == pytest.approx([2 / 5, 3 / 5, 1 / 2])
    assert mean_iou(total) == pytest.approx((2 / 5 + 3 / 5 + 1 / 2) / 3)
    assert mean_iou(total) != pytest.approx((mean_iou(a) + mean_iou(b)) / 2)


def test_confusion_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match="ground-truth ids"):
        confusion_matrix(np.zeros((1, 1)), np.full((1, 1), 7), 3)
    with pytest.raises(ValueError, match="predicted ids"):
        confusion_matrix(np.full((1, 1), 5), np.zeros((1, 1)), 3)
    assert np.isnan(mean_iou(np.zeros((3, 3))))
