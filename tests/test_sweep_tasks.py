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
    from lossyvision.sweep.plan import cells, plan
    from lossyvision.sweep.trials import read_manifest, run_trial

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
    [trial] = plan(sweep, manifest)
    meta = run_trial(sweep, trial, sweep.output, manifest=manifest)
    assert meta["n_train_images"] == len(reader.select("train"))
    [cell] = cells(sweep, [trial])
    return evaluate_trial(sweep, cell, sweep.output, decode_test_level(sweep, manifest, 2.0))


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
