"""Streaming evaluation on a real local Ray (2 CPUs): shards scored by tasks add up to each cell's whole-level
outcomes, in image order; a broken model or an empty level fails only its cells."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from test_evaluate_shards import trained  # noqa: F401  (the module's fixture: two trained trials)

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_cluster():
    from lossyvision.runners.cluster import init_ray, shutdown_ray

    yield init_ray(num_cpus=2)
    shutdown_ray()


def test_evaluate_cells_streams_shards_into_whole_cells(ray_cluster, trained, tmp_path):  # noqa: F811
    from lossyvision.runners.evaluate import evaluate_cells
    from lossyvision.sweep.evaluate import decode_test_level, evaluate_trial
    from lossyvision.sweep.plan import CellSpec

    sweep, manifest, grid = trained
    output = tmp_path / "out"
    shutil.copytree(sweep.output, output)
    good, bad = grid.cells
    (output / "checkpoints" / bad.trial.key / "model.pt").write_bytes(b"not a checkpoint")
    empty = CellSpec(good.trial, 7.0, "x")  # a level the store does not have
    seen: dict[str, tuple] = {}

    def on_cell(cell, outcomes, error):
        assert cell.key not in seen, "each cell is reported once"
        seen[cell.key] = (outcomes, error)

    failures = evaluate_cells(sweep, [good, bad, empty], str(output), manifest, on_cell)
    assert set(failures) == {bad.key, empty.key} and set(seen) == {good.key, bad.key, empty.key}
    assert "no ok images" in failures[empty.key] and seen[bad.key] == (None, failures[bad.key])

    outcomes, error = seen[good.key]
    whole = decode_test_level(sweep, manifest, 2.0)
    reference = evaluate_trial(sweep, good, sweep.output, whole)
    assert error is None and list(outcomes.ids) == whole.ids  # 6 shards of at most 5, back in image order
    np.testing.assert_array_equal(outcomes.rank, reference.rank)
    assert outcomes.metrics() == reference.metrics()


def test_a_local_ray_runs_its_workers_at_the_callers_priority(ray_cluster):
    import os

    import ray

    # Ray's default nice 15 let any other process take the workers' CPU (docs/benchmarks.md, issue 12).
    assert ray.get(ray.remote(num_cpus=1)(lambda: os.nice(0)).remote()) == os.nice(0)
