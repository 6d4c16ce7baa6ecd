"""End to end on one local 2-CPU Ray: a reduced sweep (compress, train, evaluate, report) per new dataset kind.

COCO trains the docs' own detector (``my_models:tiny_faster_rcnn``, an entry point) and WebDataset
the docs' own classifier (``my_models:small_cnn``); CSV and Hugging Face train timm's resnet10t.
Two levels, one trial, tiny images, one epoch. Then CSV lists and WebDataset shards served by moto's
S3, read by the Ray workers through fsspec. One Ray for the whole file, started after moto's AWS
variables and the user models' PYTHONPATH are set, so its workers inherit both.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from sources_fixtures import CLASSES, make_coco, make_csv_list, make_hf, make_webdataset  # noqa: E402
from test_entrypoint import docs_models_source  # noqa: E402
from test_s3 import BUCKET, s3, s3_server  # noqa: E402,F401  (s3_server: the module's moto fixture)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

R10 = {"name": "r10", "task": "classification", "arch": "resnet10t", "epochs": 1, "lr": 0.003, "batch_size": 8,
       "image_size": 32}
WDS_OPTIONS = {"classes": list(CLASSES)}


@pytest.fixture(scope="module")
def user_models(tmp_path_factory):
    """The docs' ``my_models.py`` on the driver's sys.path and on PYTHONPATH (for Ray's workers)."""
    d = tmp_path_factory.mktemp("models")
    (d / "my_models.py").write_text(docs_models_source())
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(d), saved) if p)
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory) -> str:
    """One SQLite MLflow store for the file's sweeps (creating one costs seconds of migrations)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(scope="module")
def ray_cluster(s3_server, user_models):  # noqa: F811
    from lossyvision.runners.cluster import init_ray, shutdown_ray

    shutdown_ray()
    init_ray(num_cpus=2)
    yield
    shutdown_ray()


def run(tmp_path: Path, mlflow_uri: str, name: str, dataset: dict, model: dict, *, report: bool = True, **over):
    """Run a reduced sweep (levels 0 and 4, one trial) and return (outcome, results, output)."""
    from lossyvision.sweep.results import read_results
    from lossyvision.sweep.run import run_sweep

    output = tmp_path / name
    data = {"name": name, "dataset": dataset, "codec": {"name": "jpegxl", "effort": 1},
            "train_levels": [0], "test_levels": [0, 4], "models": [model],
            "resources": {"trial": {"cpu": 1}, "eval": {"cpu": 1}}, "output": str(output), "max_failures": 0,
            "tracking": {"uri": mlflow_uri}, **over}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    outcome = run_sweep(str(path), echo=lambda m: None, num_cpus=2, build_report=report)
    print(f"{name}: seconds per phase {outcome.phases}")  # shown with -s, and on failure
    assert outcome.ok and outcome.trials_run == 1 and outcome.cells_run == 2, outcome
    results = read_results(str(output))
    assert set(results["test_level"]) == {0.0, 4.0} and (results["train_level"] == 0.0).all()
    assert results["value"].between(0, 1).all() and results["test_dcr"].notna().all()
    if report:
        html = (output / "report" / "index.html").read_text()
        assert name in html
    return outcome, results, output


def manifest_of(output: Path):
    from lossyvision.manifest import read_manifest

    return read_manifest(str(output / "store"))


def test_csv_list_sweep(ray_cluster, mlflow_db, tmp_path):
    root = make_csv_list(tmp_path / "data", per_class=6, n_test=2, size=(32, 32))
    _, results, output = run(tmp_path, mlflow_db, "csv-e2e", {"kind": "csv", "root": str(root)}, R10)
    assert set(results["metric"]) == {"top1", "top5"} and (results["n_train_images"] == 12).all()
    m = manifest_of(output)
    assert len(m) == 2 * 18 and (m["status"] == "ok").all()


def test_hugging_face_dataset_sweep(ray_cluster, mlflow_db, tmp_path):
    root = make_hf(tmp_path / "hf", per_class=4, n_test_per_class=2, size=(32, 32))
    _, results, output = run(tmp_path, mlflow_db, "hf-e2e", {"kind": "hf", "root": str(root)}, R10)
    assert (results["n_train_images"] == 12).all()
    m = manifest_of(output)
    assert (m["status"] == "ok").all() and set(m["source_format"]) == {"JPEG", "PNG"}


def test_webdataset_sweep_with_the_docs_classifier(ray_cluster, mlflow_db, tmp_path):
    import ray

    root = make_webdataset(tmp_path / "wds", per_class=4, n_test_per_class=2, size=(32, 32))
    model = {"name": "mine", "task": "classification", "arch": "my_models:small_cnn", "epochs": 1, "batch_size": 8,
             "lr": 0.003, "image_size": 32, "options": {"model_kwargs": {"width": 8}}}
    dataset = {"kind": "webdataset", "root": str(root), "options": WDS_OPTIONS}
    _, results, output = run(tmp_path, mlflow_db, "wds-e2e", dataset, model)
    assert (results["n_train_images"] == 12).all() and set(results["model"]) == {"mine"}
    # The reader sees the shards as Ray Data's own WebDataset reader does: same samples, same labels.
    from lossyvision.datasets import create_dataset

    reader = create_dataset("webdataset", str(root), **WDS_OPTIONS)
    # (Ray's blocks need one column set: the fixture's samples mix jpg+cls and png+json, so the
    # fields are renamed to "image" and "label" as they are read.)
    def rename(name: str) -> str:
        key, _, field = name.partition(".")
        return f"{key}.{'label' if field in ('cls', 'json') else 'image'}"

    rows = ray.data.read_webdataset(str(root), decoder=None, filerename=[rename], include_paths=True).take_all()
    theirs = {}
    for row in rows:
        label = bytes(row["label"])
        shard = Path(row["path"]).name[:-len(".tar")]
        theirs[(shard, row["__key__"])] = int(label) if label.isdigit() else CLASSES.index(json.loads(label)["label"])
    ours = {tuple(r.relpath.rsplit(".", 1)[0].split("/", 1)): r.label for r in reader.records()}
    assert ours == theirs and len(ours) == 18


def test_coco_sweep_with_the_docs_detector(ray_cluster, mlflow_db, tmp_path):
    root = make_coco(tmp_path / "coco", n_train=4, n_val=2)
    model = {"name": "det", "task": "detection", "arch": "my_models:tiny_faster_rcnn", "epochs": 1, "batch_size": 2,
             "lr": 0.01, "image_size": 64, "options": {"warmup_iters": 1}}
    _, results, output = run(tmp_path, mlflow_db, "coco-e2e", {"kind": "coco", "root": str(root)}, model,
                             test_split="val")
    assert set(results["metric"]) == {"map50"} and (results["n_train_images"] == 4).all()
    import imagecodecs

    m = manifest_of(output)
    for row in m[m["level"] == 0.0].itertuples():  # level 0 gives back every JPEG bit-exactly
        stored = (output / "store" / row.output_path).read_bytes()
        assert imagecodecs.jpegxl_decode_jpeg(stored) == (root / row.relpath).read_bytes()


# --- sources on moto's S3 ----------------------------------------------------------------------------
@pytest.mark.nightly
def test_csv_list_on_s3(ray_cluster, mlflow_db, tmp_path):
    local = make_csv_list(tmp_path / "data", per_class=4, n_test=2, size=(32, 32))
    fs = s3()
    fs.put(str(local.parent) + "/", f"{BUCKET}/csv-e2e", recursive=True)
    # one row names an absolute s3:// URI elsewhere in the bucket
    fs.put(str(local.parent / "images" / "coffee" / "coffee_0.jpg"), f"{BUCKET}/elsewhere/extra.jpg")
    fs.pipe_file(f"{BUCKET}/csv-e2e/list.csv", (local.read_text()
                                                 + f"s3://{BUCKET}/elsewhere/extra.jpg,coffee,train\n").encode())
    fs.invalidate_cache()
    uri = f"s3://{BUCKET}/csv-e2e/list.csv"
    _, results, output = run(tmp_path, mlflow_db, "csv-s3", {"kind": "csv", "root": uri}, R10, report=False)
    assert (results["n_train_images"] == 7).all()
    m = manifest_of(output)
    assert len(m) == 2 * 13 and (m["status"] == "ok").all()
    assert f"_uri/s3/{BUCKET}/elsewhere/extra.jpg" in set(m["relpath"])


@pytest.mark.nightly
def test_webdataset_shards_on_s3(ray_cluster, mlflow_db, tmp_path):
    local = make_webdataset(tmp_path / "wds", per_class=4, n_test_per_class=2, size=(32, 32))
    s3().put(str(local) + "/", f"{BUCKET}/wds-e2e", recursive=True)
    s3().invalidate_cache()
    uri = f"s3://{BUCKET}/wds-e2e"
    dataset = {"kind": "webdataset", "root": uri, "options": WDS_OPTIONS}
    _, results, output = run(tmp_path, mlflow_db, "wds-s3", dataset, R10, report=False)
    assert (results["n_train_images"] == 12).all()
    m = manifest_of(output)
    assert len(m) == 2 * 18 and (m["status"] == "ok").all()
