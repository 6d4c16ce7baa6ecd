"""The sweep engine's plain functions on detection and segmentation, without Ray.

Compress a tiny VOC / Cityscapes layout into a store, train one trial from the store, evaluate it
on a decoded test level: the path a real VOC or Cityscapes sweep takes, minus the scheduling.
"""

from __future__ import annotations

import pytest

from datasets_fixtures import make_cityscapes, make_voc


def _run_one_cell(tmp_path, dataset: dict, model: dict) -> dict[str, float]:
    from lossyvision import compress
    from lossyvision.datasets import create_dataset
    from lossyvision.spec import parse_sweep
    from lossyvision.sweep.evaluate import decode_test_level, evaluate_trial
    from lossyvision.output import read_predictions, write_predictions
    from lossyvision.sweep.plan import plan
    from lossyvision.sweep.trials import load_trained, read_manifest, run_trial

    sweep = parse_sweep({
        "name": "t", "dataset": dataset, "codec": {"name": "jpegxl", "effort": 1},
        "train_levels": [2], "test_levels": [2], "train_split": "train", "test_split": "val",
        "models": [model], "output": str(tmp_path / "out"),
    })
    reader = create_dataset(sweep.dataset.kind, sweep.dataset.root, **sweep.dataset.options)
    options = compress.CompressOptions(codec="jpegxl", codec_options={"effort": 1}, levels=(2.0,))
    job = compress.run_job(reader.records(), sweep.dataset.root, sweep.store_uri, options, compress.execute_serially)
    assert (job.manifest.status == "ok").all()

    manifest = read_manifest(sweep)
    grid = plan(sweep, manifest)
    [trial], [cell] = grid.trials, grid.cells
    meta = run_trial(sweep, trial, sweep.output, manifest=manifest)
    assert meta["n_train_images"] == len(reader.select("train")) and meta["config"] == trial.config
    test = decode_test_level(sweep, manifest, 2.0)
    outcomes = evaluate_trial(sweep, cell, sweep.output, test)
    metrics = outcomes.metrics()
    # The predictions file alone recomputes the cell's metrics, and they are the task's own.
    write_predictions(sweep.output, cell.key, outcomes)
    again = read_predictions(sweep.output, cell.key)
    assert list(again.ids) == list(test.ids) and again.metrics() == metrics
    task, model = load_trained(sweep, trial, sweep.output)
    assert task.evaluate(model, test) == metrics
    return metrics


@pytest.mark.slow
def test_detection_trial_from_the_store_on_a_voc_layout(tmp_path):
    root = make_voc(tmp_path / "VOC2012", n_train=2, n_val=2)
    metrics = _run_one_cell(tmp_path, {"kind": "voc", "root": str(root)}, {
        "name": "frcnn", "task": "detection", "arch": "fasterrcnn_mobilenet_v3_large_320_fpn",
        "batch_size": 2, "epochs": 1, "options": {"min_size": 128, "max_size": 160, "warmup_iters": 1}})
    assert set(metrics) == {"map50"} and 0.0 <= metrics["map50"] <= 1.0


def test_segmentation_trial_from_the_store_on_a_cityscapes_layout(tmp_path):
    root = make_cityscapes(tmp_path / "cityscapes", n_train=2, n_val=2, label_ids_only=True)
    metrics = _run_one_cell(tmp_path, {"kind": "cityscapes", "root": str(root)}, {
        "name": "segformer", "task": "segmentation", "arch": "segformer-tiny", "batch_size": 2, "epochs": 1,
        "lr": 1.0e-3, "options": {"crop_size": 64}})
    assert {"miou", "macc"} <= set(metrics) and all(0.0 <= v <= 1.0 for v in metrics.values())
