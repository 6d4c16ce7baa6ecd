"""Object storage: datasets, stores and sweep outputs on ``s3://``, against a real S3 server.

moto's server runs on 127.0.0.1 in this process; everything reaches it only through the standard
AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), as on a cluster.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

BUCKET = "lossyvision-test"


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server on a free port, with the AWS variables pointing at it (restored afterwards)."""
    from moto_s3 import moto_s3

    with moto_s3(BUCKET) as endpoint:
        yield endpoint


def s3() -> "s3fs.S3FileSystem":  # noqa: F821
    import s3fs

    return s3fs.S3FileSystem()


# --- fast: the store helpers on s3:// ------------------------------------------------------------
def test_store_helpers_on_s3(s3_server):
    from lossyvision import store

    uri = store.join(f"s3://{BUCKET}", "helpers", "a b", "x.bin")
    assert uri == f"s3://{BUCKET}/helpers/a b/x.bin"
    assert not store.exists(uri)
    store.atomic_write_bytes(uri, b"hello")
    assert store.exists(uri) and store.size(uri) == 5 and store.read_bytes(uri) == b"hello"
    fs, path = store.filesystem(uri)
    assert path == f"{BUCKET}/helpers/a b/x.bin" and fs.cat_file(path) == b"hello"
    assert s3().cat_file(f"{BUCKET}/helpers/a b/x.bin") == b"hello"  # really on the server


def test_sweep_file_with_s3_paths_and_env_bucket(tmp_path, monkeypatch):
    from lossyvision.spec import load_sweep

    monkeypatch.setenv("LV_BUCKET", BUCKET)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "name": "s3", "dataset": {"root": "s3://${LV_BUCKET}/datasets/tiny"},
        "train_levels": [0], "test_levels": [0],
        "models": [{"name": "m", "task": "classification", "arch": "resnet10t"}],
        "output": "s3://${LV_BUCKET}/sweeps/s3", "tracking": {"uri": "sqlite:////tmp/x.db"}}))
    sweep = load_sweep(path)
    assert sweep.dataset.root == f"s3://{BUCKET}/datasets/tiny"
    assert sweep.store_uri == f"s3://{BUCKET}/sweeps/s3/store"


def test_local_overlay_seed_script_uploads_the_demo_data_once(s3_server):
    """k8s/overlays/local/seed_demo_data.py, as the head's init container runs it."""
    import subprocess

    script = Path(__file__).parents[1] / "k8s" / "overlays" / "local" / "seed_demo_data.py"
    env = {**os.environ, "LOSSYVISION_BUCKET": "seed-test",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    first = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "uploaded the demo dataset to s3://seed-test/datasets/demo" in first.stdout
    fs = s3()
    fs.invalidate_cache()
    images = [k for k in fs.find("seed-test/datasets/demo") if k.endswith((".jpg", ".png"))]
    assert len(images) > 100 and fs.exists("seed-test/datasets/demo/.lossyvision-seeded")
    from lossyvision.datasets.base import create_dataset

    records = create_dataset("imagefolder", "s3://seed-test/datasets/demo").records()
    assert len(records) == len(images)  # the reader sees every image on s3, and the marker is no image
    again = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "already holds the demo dataset" in again.stdout


def test_expand_env_defaults_and_missing_variables():
    from lossyvision.spec import SpecError, expand_env

    text = "root: s3://${B}/d\nout: s3://${O:-fallback}/o\nkeep: $B\n"
    assert expand_env(text, {"B": "bkt"}) == "root: s3://bkt/d\nout: s3://fallback/o\nkeep: $B\n"
    assert "s3://set/o" in expand_env(text, {"B": "bkt", "O": "set"})
    with pytest.raises(SpecError, match="not set: B"):
        expand_env(text, {}, source="x.yaml")
    with pytest.raises(SpecError, match="not set: B"):
        expand_env(text, {"B": ""})  # empty counts as unset: an empty bucket name is never meant


# --- Ray: compress and a sweep with source and output on s3:// -----------------------------------
@pytest.fixture(scope="module")
def s3_dataset(s3_server, tmp_path_factory) -> str:
    from datasets_fixtures import make_imagefolder

    local = make_imagefolder(tmp_path_factory.mktemp("s3data") / "tiny", per_class=2, size=(32, 32))
    uri = f"s3://{BUCKET}/datasets/tiny"
    s3().put(str(local) + "/", uri.removeprefix("s3://"), recursive=True)
    return uri


@pytest.fixture(scope="module")
def local_ray(s3_server):
    """One local 2-CPU Ray for this module, started after the AWS variables are set (workers inherit them)."""
    from lossyvision.runners.cluster import init_ray, shutdown_ray

    shutdown_ray()
    init_ray(num_cpus=2)
    try:
        yield
    finally:
        shutdown_ray()


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_compress_reads_and_writes_s3(s3_dataset, local_ray):
    from lossyvision.runners.compress import compress_job

    store_uri = f"s3://{BUCKET}/stores/tiny"
    result = compress_job(s3_dataset, store_uri, levels=[0, 4], codec_options={"effort": 1}, log=lambda m: None)
    assert result.done == 24 and result.skipped == 0

    fs = s3()
    manifest = pd.read_parquet(f"{store_uri}/manifest.parquet", storage_options={})
    assert len(manifest) == 24 and set(manifest["status"]) == {"ok"}, manifest[manifest["status"] != "ok"]
    assert fs.exists(f"{BUCKET}/stores/tiny/summary.csv")
    for row in manifest.itertuples():  # output_path is relative to the store
        assert row.output_path.startswith("jpegxl-"), row.output_path
        assert fs.size(f"{BUCKET}/stores/tiny/{row.output_path}") == row.compressed_bytes
    assert len(fs.find(f"{BUCKET}/stores/tiny/jpegxl-4")) == 12
    # the source is untouched: still 12 originals, nothing written beside them
    assert len(fs.find(s3_dataset.removeprefix("s3://"))) == 12

    again = compress_job(s3_dataset, store_uri, levels=[0, 4], codec_options={"effort": 1}, log=lambda m: None)
    assert again.done == 0 and again.skipped == 24  # resumes from the manifest on s3


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_sweep_with_dataset_and_output_on_s3(s3_dataset, local_ray, tmp_path):
    from lossyvision.sweep.results import read_results
    from lossyvision.sweep.run import run_sweep

    output = f"s3://{BUCKET}/sweeps/tiny"
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "tiny-s3", "dataset": {"kind": "imagefolder", "root": s3_dataset},
        "codec": {"name": "jpegxl", "effort": 1}, "train_levels": [0], "test_levels": [0, 4],
        "models": [{"name": "rn", "task": "classification", "arch": "resnet10t", "epochs": 1,
                    "batch_size": 4, "image_size": 32}],
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "output": output}))
    run_sweep(str(sweep_file), echo=lambda m: None, num_cpus=2, build_report=False)

    fs = s3()
    assert fs.exists(f"{BUCKET}/sweeps/tiny/store/manifest.parquet")
    assert fs.exists(f"{BUCKET}/sweeps/tiny/results.parquet")
    results = read_results(output)
    cells = results[["model", "train_level", "test_level", "repeat"]].drop_duplicates()
    assert len(cells) == 2 and set(cells["test_level"]) == {0.0, 4.0}
