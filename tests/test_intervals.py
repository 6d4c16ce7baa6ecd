"""Per-sample outcomes and the intervals built on them: exact metrics, resamples, pairing, verdicts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lossyvision.intervals import metric_interval, relative_interval
from lossyvision.metrics import outcomes_from_parquet, outcomes_to_parquet
from lossyvision.metrics.base import weights_from_indices
from lossyvision.metrics.classification import ClassificationOutcomes, topk_correct
from lossyvision.metrics.segmentation import SegmentationOutcomes, confusion_matrix, mean_accuracy, mean_iou
from lossyvision.metrics.voc import DetectionOutcomes, voc_map
from report_data import outcomes_for


# --- outcomes: the file recomputes the metric; a resample is a weighting ------------------------------
def test_classification_outcomes_equal_topk_and_round_trip():
    rng = np.random.default_rng(0)
    scores, labels = rng.random((50, 7)), rng.integers(0, 7, 50)
    scores[3] = 0.5  # a row of ties: the lower class index wins, as topk_correct breaks them
    o = ClassificationOutcomes.from_scores([f"i{k}" for k in range(50)], scores, labels)
    counts = topk_correct(scores, labels, (1, 5))
    assert o.metrics() == {"top1": counts[1] / 50, "top5": counts[5] / 50}
    back = outcomes_from_parquet(outcomes_to_parquet(o))
    assert isinstance(back, ClassificationOutcomes) and back.metrics() == o.metrics()
    assert list(back.ids) == list(o.ids) and (back.predicted == scores.argmax(1)).all()
    # weights: all ones is the metric; counts equal an expanded (resampled) set
    np.testing.assert_allclose(o.weighted(np.ones((1, 50)))["top1"], [o.metrics()["top1"]])
    idx = rng.integers(0, 50, 50)
    expanded = ClassificationOutcomes.from_scores([f"i{k}" for k in idx], scores[idx], labels[idx])
    np.testing.assert_allclose(o.weighted(weights_from_indices(idx[None], 50))["top5"], [expanded.metrics()["top5"]])
    # fewer than five classes: top5 counts every image
    assert ClassificationOutcomes.from_scores(["a", "b"], np.eye(2), np.array([1, 1])).metrics()["top5"] == 1.0


def test_segmentation_outcomes_sum_per_image_confusions():
    rng = np.random.default_rng(1)
    gts = [rng.integers(0, 4, (6, 5)) for _ in range(8)]
    preds = [np.where(rng.random(g.shape) < 0.7, g, rng.integers(0, 4, g.shape)) for g in gts]
    gts[2][0, :] = 255  # ignored pixels
    per = np.stack([confusion_matrix(p, g, 4) for p, g in zip(preds, gts)])
    o = SegmentationOutcomes(np.array([f"i{k}" for k in range(8)], dtype=object), per)
    total = per.sum(0)
    assert o.metrics() == {"miou": mean_iou(total), "macc": mean_accuracy(total)}
    assert outcomes_from_parquet(outcomes_to_parquet(o)).metrics() == o.metrics()
    idx = np.array([0, 0, 3, 5, 5, 5, 7, 1])
    w = weights_from_indices(idx[None], 8)
    expected = per[idx].sum(0)
    assert o.weighted(w)["miou"][0] == pytest.approx(mean_iou(expected))
    assert o.weighted(w)["macc"][0] == pytest.approx(mean_accuracy(expected))


def _detections(rng, n_images=12, n_classes=3):
    dets, gts = [], []
    for _ in range(n_images):
        m = int(rng.integers(1, 4))
        xy = rng.uniform(0, 50, (m, 2))
        boxes = np.column_stack([xy, xy + rng.uniform(5, 20, (m, 2))])
        labels = rng.integers(0, n_classes, m)
        gts.append({"boxes": boxes, "labels": labels, "difficult": rng.random(m) < 0.15})
        k = int(rng.integers(0, 5))
        pick = rng.integers(0, m, k)
        jitter = rng.normal(0, 3, (k, 4))
        dets.append({"boxes": boxes[pick] + jitter, "scores": rng.random(k),
                     "labels": np.where(rng.random(k) < 0.8, labels[pick], rng.integers(0, n_classes, k))})
    return dets, gts


@pytest.mark.parametrize("mode", ["area", "11point"])
def test_detection_weights_equal_an_expanded_image_list(mode):
    rng = np.random.default_rng(2)
    dets, gts = _detections(rng)
    o = DetectionOutcomes([f"i{k}" for k in range(len(dets))], dets, gts, 3, mode=mode)
    assert o.metrics()["map50"] == voc_map(dets, gts, 3, mode=mode)
    np.testing.assert_allclose(o.weighted(np.ones((1, len(dets))))["map50"], [o.metrics()["map50"]], atol=1e-12)
    for seed in range(5):
        idx = np.random.default_rng(seed).integers(0, len(dets), len(dets))
        # scores made distinct per copy would change nothing: copies tie only with themselves
        expanded = voc_map([dets[i] for i in idx], [gts[i] for i in idx], 3, mode=mode)
        got = o.weighted(weights_from_indices(idx[None], len(dets)))["map50"][0]
        assert got == pytest.approx(expanded, abs=1e-12) or (math.isnan(got) and math.isnan(expanded))
    back = outcomes_from_parquet(outcomes_to_parquet(o))
    assert back.metrics() == o.metrics() and back.mode == mode


def test_a_foreign_or_damaged_predictions_file_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"x": [1]}), buf)
    with pytest.raises(ValueError, match="not a lossyvision predictions file"):
        outcomes_from_parquet(buf.getvalue().to_pybytes(), "p.parquet")
    with pytest.raises(ValueError, match="p.parquet: not a readable Parquet file"):
        outcomes_from_parquet(b"PAR1 nothing", "p.parquet")


# --- intervals -----------------------------------------------------------------------------------------
def test_image_bootstrap_matches_the_binomial_interval_and_is_seeded():
    from scipy.stats import binomtest

    o = outcomes_for(0.8, n=400, seed=3)
    ci = metric_interval([o], "top1", seed=0)
    wilson = binomtest(320, 400).proportion_ci()
    assert ci.estimate == 0.8 and ci.n_images == 400 and ci.n_repeats == 1
    assert ci.low == pytest.approx(wilson.low, abs=0.01) and ci.high == pytest.approx(wilson.high, abs=0.01)
    assert metric_interval([o], "top1", seed=0) == ci  # same seed, same interval
    assert metric_interval([o], "top1", seed=1) != ci


def test_relative_interval_is_paired_on_images():
    """Two models that differ on few images: the paired ratio is far tighter than either cell alone."""
    base = outcomes_for(0.8, n=400, seed=5)
    hits = base.rank == 0
    # the cell: the same right/wrong images, except 8 right ones turned wrong (a 2.5% relative drop)
    rank = base.rank.copy()
    rank[np.flatnonzero(hits)[:8]] = 3
    cell = ClassificationOutcomes(base.ids, base.labels, base.predicted, rank, base.num_classes)
    rel = relative_interval([cell], [base], "top1", seed=0)
    assert rel.estimate == pytest.approx(100 * (320 - 8) / 320)
    assert rel.high < 100.0 and rel.half_width < 2.0          # the drop is detected
    alone = metric_interval([cell], "top1", seed=0)
    assert 100 * alone.half_width / 0.8 > 2.5 * rel.half_width  # unpaired it would be lost in noise
    # a cell identical to the baseline: exactly 100 with a zero-width interval
    same = relative_interval([base], [base], "top1", seed=0)
    assert (same.estimate, same.low, same.high) == (100.0, 100.0, 100.0)
    # images are matched by id, whatever their order and whatever only one side has
    order = np.random.default_rng(0).permutation(400)[:390]
    shuffled = relative_interval([cell.take(order)], [base], "top1", seed=0)
    assert shuffled.n_images == 390


def test_repeats_widen_the_interval_when_they_disagree():
    a, b = outcomes_for(0.9, n=300, seed=1), outcomes_for(0.7, n=300, seed=2)
    one = metric_interval([a], "top1", seed=0)
    both = metric_interval([a, b], "top1", seed=0)
    assert both.estimate == pytest.approx(0.8) and both.n_repeats == 2
    assert both.half_width > 2 * one.half_width  # the repeats' spread is in it
    agree = metric_interval([a, a], "top1", seed=0)
    assert agree.half_width < 1.5 * one.half_width


# --- verdicts --------------------------------------------------------------------------------------------
def rel_table(values: dict[tuple[float, float], tuple[float, float, float]], n_images=1000, n=1) -> pd.DataFrame:
    rows = []
    for (tr, te), (rel, lo, hi) in values.items():
        rows.append(dict(model="m", metric="top1", budget=-1, train_level=tr, test_level=te, n=n, mean=rel / 100,
                         ci_low=np.nan, ci_high=np.nan, n_images=n_images, train_dcr=0.2 * tr, test_dcr=0.2 * te,
                         baseline_train_level=0.0, baseline_test_level=0.0, baseline=1.0, rel=rel, rel_low=lo,
                         rel_high=hi))
    return pd.DataFrame(rows)


def test_verdict_advises_the_last_level_of_the_unbroken_keeping_run():
    from lossyvision.report.verdict import verdicts

    table = rel_table({(0, 0): (100, 100, 100), (1, 1): (100.2, 99.4, 101.0), (2, 2): (99.8, 99.1, 100.4),
                       (4, 4): (97.0, 95.0, 98.9), (1, 0): (99.9, 99.5, 100.3), (0, 1): (100, 99.9, 100.1),
                       (2, 0): (98.0, 96.5, 99.8), (4, 0): (99.9, 99.2, 100.5)})
    found = {v.question: v for v in verdicts(table, keep=0.99)}
    matched = found["matched"]
    assert matched.level == 2 and matched.outcome == "advised" and matched.rel_low == 99.1
    assert "Store everything at distance 2 (DCR 0.40: files 40% smaller than the originals)" in matched.text
    assert "lower bound 99.1%" in matched.text and "At distance 4 it drops below: 97.0%" in matched.text
    # level 2 cannot be told, so level 4 (which keeps) is not advised: noise would be choosing
    assert found["train"].level == 1 and "At distance 2 the data cannot tell" in found["train"].text
    assert found["test"].level == 1


def test_verdict_says_when_the_data_cannot_tell_and_when_compression_costs_too_much():
    from lossyvision.report.verdict import verdicts

    wide = rel_table({(0, 0): (100, 100, 100), (3, 3): (99.0, 94.9, 103.1)}, n_images=108)
    [v] = verdicts(wide, keep=0.99)
    assert v.outcome == "cannot tell" and v.level is None
    assert "cannot tell" in v.text and "108 test images and 1 repeat" in v.text
    assert "a drop smaller than 4.1 points" in v.text and "add test images" in v.text
    bad = rel_table({(0, 0): (100, 100, 100), (3, 3): (90.0, 88.0, 92.0)})
    [v] = verdicts(bad, keep=0.99)
    assert v.outcome == "keep originals" and "keeps only 90.0% [88.0%, 92.0%]" in v.text


def test_heatmap_colour_scale_is_symmetric_and_does_not_stretch_noise():
    from lossyvision.report.heatmap import colour_range, indistinguishable

    assert colour_range(np.array([99.2, 100.4, 101.0])) == (90.0, 110.0)   # a wobble stays pale
    assert colour_range(np.array([75.3, 100.0])) == (75.0, 125.0)          # symmetric around 100
    table = rel_table({(0, 0): (100, 100, 100), (1, 1): (99, 97, 101), (2, 2): (95, 93, 97)})
    assert indistinguishable(table).tolist() == [True, True, False]


def test_a_baseline_that_scores_zero_on_some_resamples_gives_an_open_interval_not_nan():
    """Tiny test sets: a resample can leave the baseline with no correct image; the ratio is unbounded."""
    base = outcomes_for(0.1, n=10, seed=0)     # one correct image of ten
    cell = outcomes_for(0.2, n=10, seed=1)
    rel = relative_interval([cell], [base], "top1", seed=0, n_resamples=500)
    assert rel.estimate == pytest.approx(200.0) and rel.high == math.inf and math.isfinite(rel.low)
    zero = outcomes_for(0.0, n=10, seed=2)
    both = relative_interval([zero], [zero], "top1", seed=0, n_resamples=200)
    assert (both.low, both.high) == (100.0, 100.0)


def test_verdict_per_codec_orders_quality_levels_by_fidelity_and_names_the_best_codec():
    """A quality codec's baseline is its highest quality; across codecs the smallest files that keep win."""
    from lossyvision.report.verdict import verdicts

    jxl = rel_table({(0, 0): (100, 100, 100), (1, 1): (99.9, 99.5, 100.3), (3, 3): (99.5, 99.1, 99.9)})
    jxl = jxl.assign(codec="jpegxl", test_codec="jpegxl", train_dcr=jxl.train_level * 0.1,
                     train_bpp=2.0 / (1 + jxl.train_level))
    avif = rel_table({(90, 90): (100, 100, 100), (70, 70): (99.8, 99.3, 100.2), (50, 50): (99.6, 99.2, 100.0),
                      (30, 30): (96.0, 94.0, 98.0)})
    avif = avif.assign(codec="avif", test_codec="avif", baseline_train_level=90.0, baseline_test_level=90.0,
                       train_dcr=(100 - avif.train_level) / 100, train_bpp=avif.train_level / 100)
    found = verdicts(pd.concat([jxl, avif], ignore_index=True), keep=0.99)
    by = {(v.codec, v.question): v for v in found}
    assert by[("avif", "matched")].level == 50.0  # 70 then 50 keep (fidelity order: 90, 70, 50, 30), 30 loses
    assert "Store everything at avif quality 50" in by[("avif", "matched")].text
    assert "At quality 30 it drops below: 96.0%" in by[("avif", "matched")].text
    assert by[("jpegxl", "matched")].level == 3.0
    best = found[0]
    assert best.question == "codecs" and best.codec == "avif" and best.level == 50.0
    assert best.text.startswith("Across codecs: store with avif at quality 50 (DCR 0.50, 0.50 bits per pixel)")
    assert "Next: jpegxl distance 3: DCR 0.30, 0.50 bpp." in best.text
