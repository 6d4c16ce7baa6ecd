"""Streaming evaluation without Ray: test levels cut into bounded shards, each decoded once and scored by
every model, give exactly the outcomes of the whole level; workers keep the models they loaded."""

from __future__ import annotations

import numpy as np
import pytest

from lossyvision.sweep.evaluate import cut_shards


def _covered(cuts, n):
    return [i for c in cuts for i in range(n)[c]]


def test_cut_shards_bounds_images_and_bytes_and_keeps_order():
    sizes = [10] * 7 + [100] + [10] * 5
    cuts = cut_shards(sizes, max_images=4, max_bytes=35)
    assert _covered(cuts, len(sizes)) == list(range(len(sizes)))
    for c in cuts:
        part = sizes[c]
        assert len(part) <= 4 and (sum(part) <= 35 or len(part) == 1)  # an oversize image is a shard of its own
    assert [sizes[c] for c in cuts if 100 in sizes[c]] == [[100]]


def test_cut_shards_are_even_when_the_limits_allow():
    assert [c.stop - c.start for c in cut_shards([1] * 300, max_images=256, max_bytes=10**9)] == [150, 150]
    assert [c.stop - c.start for c in cut_shards([1] * 10 + [50], max_images=8, max_bytes=55)] == [6, 5]
    # even slices that would break a limit: the greedy cut
    assert [c.stop - c.start for c in cut_shards([1] * 10 + [50], max_images=8, max_bytes=52)] == [8, 3]


def test_cut_shards_splits_a_small_level_evenly_for_idle_workers():
    assert cut_shards([5] * 10, max_images=100, max_bytes=10**9) == [slice(0, 10)]
    cuts = cut_shards([5] * 10, max_images=100, max_bytes=10**9, min_shards=3)
    assert [c.stop - c.start for c in cuts] == [3, 4, 3] and _covered(cuts, 10) == list(range(10))
    assert len(cut_shards([5] * 2, 100, 10**9, min_shards=4)) == 2  # never an empty shard
    assert len(cut_shards([5] * 100, 256, 10**9, min_shards=8, min_images=16)) == 6  # not below 16 images
    assert cut_shards([], 4, 10) == []


def test_evaluation_block_takes_sizes_with_units():
    from lossyvision.spec import EvaluationSpec, SpecError, parse_sweep

    ev = EvaluationSpec(shard_images=16, shard_bytes="64MB", model_cache_bytes="1GiB")
    assert (ev.shard_bytes, ev.model_cache_bytes) == (64_000_000, 2**30)
    assert EvaluationSpec().shard_bytes == 256_000_000
    with pytest.raises(SpecError, match="evaluation.shard_images"):
        parse_sweep({"name": "x", "dataset": {"root": "."}, "train_levels": [0], "test_levels": [0],
                     "models": [{"name": "m", "task": "classification", "arch": "resnet10t"}], "output": "o",
                     "evaluation": {"shard_images": 0}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two trials of resnet10t (32 px, 1 epoch) trained from a compressed demo store, and the store's manifest."""
    from lossyvision import compress
    from lossyvision.datasets import create_dataset
    from lossyvision.demo import build_demo_dataset
    from lossyvision.spec import parse_sweep
    from lossyvision.sweep.plan import plan
    from lossyvision.sweep.trials import read_manifest, run_trial

    tmp = tmp_path_factory.mktemp("shards")
    root = tmp / "demo"
    build_demo_dataset(str(root), train_per_class=2, test_per_class=3, image_size=32)
    model = {"task": "classification", "arch": "resnet10t", "epochs": 1, "batch_size": 16, "image_size": 32}
    sweep = parse_sweep({
        "name": "shards", "dataset": {"kind": "imagefolder", "root": str(root)},
        "codec": {"name": "jpegxl", "effort": 1}, "train_levels": [2], "test_levels": [2],
        "models": [{"name": "a", **model}, {"name": "b", **model, "lr": 0.01}], "output": str(tmp / "out"),
        "evaluation": {"shard_images": 5},
    })
    reader = create_dataset("imagefolder", str(root))
    options = compress.CompressOptions(codec="jpegxl", codec_options={"effort": 1}, levels=(2.0,))
    compress.run_job(reader.records(), str(root), sweep.store_uri, options, compress.execute_serially)
    manifest = read_manifest(sweep)
    grid = plan(sweep, manifest)
    for trial in grid.trials:
        run_trial(sweep, trial, sweep.output, manifest=manifest)
    return sweep, manifest, grid


def test_shards_concatenate_to_the_whole_level_and_models_load_once(trained):
    from lossyvision.sweep.evaluate import (TrainedModels, decode_test_level, evaluate_trial, plan_shards,
                                            score_shard)

    sweep, manifest, grid = trained
    shards = plan_shards(sweep, manifest, 2.0)
    assert len(shards) == 6 and {len(s) for s in shards} == {4, 5}  # 27 test images, at most 5 a shard
    assert [s.index for s in shards] == list(range(6)) and {s.count for s in shards} == {6}
    whole = decode_test_level(sweep, manifest, 2.0)
    assert [i for s in shards for i in s.ids] == whole.ids  # relpath order, every image once
    assert sum(s.decoded_bytes for s in shards) == 27 * 32 * 32 * 3

    models = TrainedModels(max_bytes=10**9)
    models.scope("run-1")
    parts = [score_shard(sweep, grid.cells, s, sweep.output, models=models) for s in shards]
    assert models.loads == 2  # each model once, for all six shards
    for cell in grid.cells:
        outcomes = type(parts[0][cell.key]).concat([p[cell.key] for p in parts])
        reference = evaluate_trial(sweep, cell, sweep.output, whole)
        assert list(outcomes.ids) == whole.ids
        np.testing.assert_array_equal(outcomes.predicted, reference.predicted)
        assert outcomes.metrics() == reference.metrics()
    models.scope("run-2")  # a new evaluation drops the models of the last one
    assert models.held == {} and models.held_bytes == 0


def test_models_beyond_the_cache_reload_per_shard_and_a_broken_model_fails_only_its_cell(trained, tmp_path):
    import shutil

    from lossyvision.sweep.evaluate import TrainedModels, plan_shards, score_shard, weights_bytes
    from lossyvision.sweep.trials import load_trained

    sweep, manifest, grid = trained
    shards = plan_shards(sweep, manifest, 2.0)[:3]
    _, model = load_trained(sweep, grid.trials[0], sweep.output)
    models = TrainedModels(max_bytes=weights_bytes(model))  # room for one model
    for s in shards:
        score_shard(sweep, grid.cells, s, sweep.output, models=models)
    assert models.loads == 1 + len(shards) and len(models.held) == 1

    output = tmp_path / "out"
    shutil.copytree(sweep.output, output)
    broken = grid.cells[1].trial
    (output / "checkpoints" / broken.key / "model.pt").write_bytes(b"not a checkpoint")
    parts = score_shard(sweep, grid.cells, shards[0], str(output), models=TrainedModels(0))
    assert len(parts[grid.cells[0].key]) == len(shards[0])
    error = parts[grid.cells[1].key]
    assert isinstance(error, str) and "\n" not in error and error.split(":")[0].endswith("Error")
