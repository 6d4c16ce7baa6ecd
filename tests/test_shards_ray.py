"""The sharded store layout end to end on a local 2-CPU Ray: compress, train, evaluate and report,
on the local disk and on moto's S3 server (a real S3 API: every request goes over HTTP).

The sharded sweep must give exactly the numbers of the per-file one (same bytes, same seeds), write
a few shards instead of a file per image and level, and leave shards that Ray Data's own
``read_webdataset`` reads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from test_s3 import BUCKET, s3, s3_server  # noqa: E402,F401  (the module's moto server fixture)

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray(s3_server):
    """One local 2-CPU Ray, started after the AWS variables point at moto (workers inherit them)."""
    from ray.data import DataContext

    from lossyvision.runners.cluster import init_ray, shutdown_ray

    shutdown_ray()
    init_ray(num_cpus=2)
    DataContext.get_current().execution_no_progress_timeout_s = 120  # a hang fails, not waits
    try:
        yield
    finally:
        shutdown_ray()


@pytest.fixture(scope="module")
def demo_local(tmp_path_factory) -> str:
    from lossyvision.demo import build_demo_dataset

    root = tmp_path_factory.mktemp("data") / "demo"
    build_demo_dataset(str(root), train_per_class=3, test_per_class=2, image_size=32)
    return str(root)


def sweep_file(path: Path, root: str, output: str, tracking: str, layout: str | None) -> Path:
    data = {
        "name": "shards", "dataset": {"kind": "imagefolder", "root": root},
        "codec": {"name": "jpegxl", "effort": 1}, "train_levels": [0, 4], "test_levels": [0, 4],
        "models": [{"name": "r10", "task": "classification", "arch": "resnet10t", "epochs": 1, "lr": 0.003,
                    "batch_size": 16, "image_size": 32}],
        "resources": {"trial": {"cpu": 1}, "eval": {"cpu": 1}}, "max_failures": 0,
        "tracking": {"uri": tracking}, "output": output,
    }
    if layout:
        data["compress"] = {"layout": layout, "shard_size": "8kB"}
    path.write_text(yaml.safe_dump(data))
    return path


def store_objects(store_uri: str) -> list[str]:
    """Every image object in the store's level folders (not the manifest, summary, lock)."""
    from lossyvision.store import filesystem

    fs, base = filesystem(store_uri)
    fs.invalidate_cache()
    return sorted(p for p in fs.find(base) if "/jpegxl-" in p and "/.tmp-" not in p)


def check_sharded_store(store_uri: str) -> pd.DataFrame:
    from lossyvision import shards
    from lossyvision.manifest import read_manifest

    m = read_manifest(store_uri)
    assert len(m) and (m.status == "ok").all()
    objects = store_objects(store_uri)
    assert all(p.endswith(".tar") and "/shard-" in p for p in objects), objects[:5]
    assert len(objects) == len(shards.referenced(m.output_path))
    assert 4 <= len(objects) < len(m) / 3, (len(objects), len(m))  # a few shards, not a file per image
    return m


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.nightly)])
def test_sharded_sweep_round_trips_with_the_numbers_of_the_per_file_layout(where, local_ray, demo_local, tmp_path):
    from lossyvision.report.build import REPORT_DIR
    from lossyvision.store import exists, join
    from lossyvision.sweep.results import read_results
    from lossyvision.sweep.run import run_sweep

    if where == "s3":
        from lossyvision.demo import build_demo_dataset

        root = f"s3://{BUCKET}/shards-demo"
        if not exists(join(root, "README.md")):
            build_demo_dataset(root, train_per_class=3, test_per_class=2, image_size=32)
        output = f"s3://{BUCKET}/shard-sweeps/{tmp_path.name}"
    else:
        root, output = demo_local, str(tmp_path / "sharded")
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = run_sweep(sweep_file(tmp_path / "s.yaml", root, output, tracking, "shards"), echo=lambda m: None)
    assert outcome.ok and outcome.trials_run == 2 and outcome.cells_run == 4, outcome
    assert exists(join(output, REPORT_DIR, "index.html"))  # the report reads the sharded store too
    m = check_sharded_store(join(output, "store"))
    results = read_results(output)
    assert len(results) == 8 and results.cell_id.nunique() == 4 and results.node.notna().all()
    import json

    from lossyvision.store import read_bytes

    for trial_id in results.trial_id.unique():  # on S3 each trial copied its shards whole before training
        meta = json.loads(read_bytes(join(output, "checkpoints", trial_id, "trial.json")))
        assert (meta["train_shards"] >= 1) is meta["train_shards_staged"] is (where == "s3"), meta

    # The same sweep on the per-file layout gives the same numbers: the readers do not see the layout.
    files_out = str(tmp_path / "files")
    files = run_sweep(sweep_file(tmp_path / "f.yaml", demo_local, files_out, tracking, None), echo=lambda m: None,
                      build_report=False)
    assert files.ok
    from lossyvision.manifest import read_manifest

    per_file = read_manifest(join(files_out, "store")).set_index(["relpath", "level"]).sort_index()
    assert (m.set_index(["relpath", "level"]).sort_index().compressed_bytes == per_file.compressed_bytes).all()
    ref = read_results(files_out).set_index(["cell_id", "metric"]).sort_index()
    got = results.set_index(["cell_id", "metric"]).sort_index()
    assert list(got.index) == list(ref.index)  # the same keys: the same images, whichever layout
    assert (got.value == ref.value).all(), pd.concat([got.value, ref.value], axis=1)


def test_ray_data_reads_the_shards_natively(local_ray, demo_local, tmp_path):
    """The shards are plain WebDataset tars: ``ray.data.read_webdataset`` reads every member."""
    import ray

    from lossyvision.runners.compress import compress_job

    store_uri = f"s3://{BUCKET}/shard-stores/{tmp_path.name}"
    job = compress_job(demo_local, store_uri, levels=[2], codec_options={"effort": 1}, layout="shards",
                       shard_size=20_000, keep_ray=True, log=lambda m: None)
    assert job.done == len(job.manifest) and (job.manifest.status == "ok").all()
    m = check_sharded_store(store_uri)
    assert m.node.notna().all()  # which Ray node wrote each row
    ds = ray.data.read_webdataset(f"{store_uri}/jpegxl-2")
    rows = ds.take_all()
    assert sum(len(r["jxl"]) for r in rows) == int(m.compressed_bytes.sum())
    assert len(rows) == len(m)
    again = compress_job(demo_local, store_uri, levels=[2], codec_options={"effort": 1}, layout="shards",
                         shard_size=20_000, keep_ray=True, log=lambda m: None)
    assert again.done == 0 and again.skipped == len(m)  # resumes from the manifest and shards on S3


def test_shard_order_reads_blocks_and_gives_the_same_numbers_staged_or_not(local_ray, tmp_path):
    """``data_order: shards`` from moto's S3: read through blocks (nothing staged) or from staged copies,
    the trial has the same key and exactly the same numbers; its key is not the random order's."""
    import json

    from lossyvision.demo import build_demo_dataset
    from lossyvision.store import exists, join, read_bytes
    from lossyvision.sweep.results import read_results
    from lossyvision.sweep.run import run_sweep

    root = f"s3://{BUCKET}/shards-demo"
    if not exists(join(root, "README.md")):
        build_demo_dataset(root, train_per_class=3, test_per_class=2, image_size=32)
    tracking = f"sqlite:///{tmp_path}/mlflow.db"

    def run(name: str, order: str, stage_bytes: int | None):
        output = f"s3://{BUCKET}/shard-order/{tmp_path.name}/{name}"
        path = sweep_file(tmp_path / f"{name}.yaml", root, output, tracking, "shards")
        data = yaml.safe_load(path.read_text())
        data.update(train_levels=[4], test_levels=[4])
        data["models"][0].update(data_order=order, **({"shuffle_buffer": 4} if order == "shards" else {}))
        if stage_bytes is not None:
            data["resources"]["trial"]["stage_bytes"] = stage_bytes
        path.write_text(yaml.safe_dump(data))
        outcome = run_sweep(path, echo=lambda m: None, build_report=False)
        assert outcome.ok and outcome.trials_run == 1, outcome
        results = read_results(output)
        meta = json.loads(read_bytes(join(output, "checkpoints", results.trial_id.iloc[0], "trial.json")))
        return results.set_index(["cell_id", "metric"]).sort_index(), meta

    streamed, meta = run("streamed", "shards", 0)
    assert meta["data_order"] == "shards" and meta["shuffle_buffer"] == 4
    assert meta["train_shards_staged"] is False and meta["train_read_blocks"] >= 1, meta
    staged, staged_meta = run("staged", "shards", None)
    assert staged_meta["train_shards_staged"] is True
    assert list(staged.index) == list(streamed.index)  # the same keys: where bytes come from is not identity
    assert (staged.value == streamed.value).all(), pd.concat([staged.value, streamed.value], axis=1)
    shuffled, random_meta = run("random", "random", None)
    assert random_meta["data_order"] == "random" and random_meta["key"] != meta["key"]
