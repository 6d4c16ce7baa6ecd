"""MLflow tracking against a real SQLite store and a real ``mlflow server`` with moto's S3 for artifacts:
parent + nested children, names, models, inputs, series, the cells table, the verdict, registration,
idempotence, outage."""

from __future__ import annotations

import time

import pytest

from lossyvision.sweep.mlnames import TAG_PARENT, TAG_TRIAL, eval_metric_name, ui_command
from lossyvision.sweep.tracking import Tracker


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """One SQLite store for the module: creating MLflow's tables takes seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture()
def tracker(db, tmp_path, request):
    return Tracker(db, request.node.name[:40], "demo", str(tmp_path))  # an experiment per test


def log_everything(t: Tracker) -> None:
    t.start_sweep({"n_trials": 2, "n_evaluations": 4}, sweep_file=None)
    for key in ("m__d0__r0", "m__d2__r0"):
        t.log_epoch(key, 1, {"loss": 2.0})
        t.log_trial(key, {"model": "m", "train_level": key[4], "train_dcr": 0.5},
                    history=[{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0, "top1": 0.5}],
                    test_metrics={eval_metric_name("top1", 0): 0.8, eval_metric_name("top1", 2.0): 0.7},
                    status="FINISHED")
    t.finish_sweep()


def test_parent_and_nested_children_with_comparable_metric_names(tracker, tmp_path):
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("name: demo\n")
    tracker.start_sweep({"n_trials": 2}, sweep_file=str(sweep_file))
    log_everything(tracker)
    runs = tracker.runs()
    assert len(runs) == 3
    parent = runs[runs["tags.lossyvision.role"] == "sweep"]
    children = runs[runs["tags.lossyvision.role"] == "trial"]
    pid = parent["run_id"].item()
    assert set(children[f"tags.{TAG_PARENT}"]) == {pid}
    assert set(children[f"tags.{TAG_TRIAL}"]) == {"m__d0__r0", "m__d2__r0"}
    assert "metrics.test/top1/d0" in runs.columns and "metrics.test/top1/d2" in runs.columns
    assert parent["params.n_trials"].item() == "2"
    assert (children["params.train_dcr"] == "0.5").all()
    assert (children["status"] == "FINISHED").all()
    client = tracker.client
    hist = client.get_metric_history(children["run_id"].iloc[0], "train/loss")
    assert sorted((m.step, m.value) for m in hist) == [(1, 2.0), (2, 1.0)]
    artifacts = [a.path for a in client.list_artifacts(pid)]
    assert "sweep.yaml" in artifacts
    # Artifacts live next to the database, not in ./mlruns.
    assert (tmp_path / "mlartifacts").is_dir()
    assert ui_command(tracker.uri).startswith("mlflow ui --backend-store-uri sqlite:///")


def test_logging_twice_duplicates_nothing(tracker, tmp_path):
    log_everything(tracker)
    again = Tracker(tracker.uri, tracker.experiment_name, "demo", str(tmp_path))  # a fresh process: finds runs by tags
    log_everything(again)
    runs = again.runs()
    assert len(runs) == 3
    for rid in runs["run_id"]:
        for m in ("train/loss", "train/top1"):
            steps = [x.step for x in again.client.get_metric_history(rid, m)]
            assert len(steps) == len(set(steps))


def test_unreachable_server_warns_once_and_turns_off(tmp_path, caplog):
    t = Tracker("http://127.0.0.1:9", "exp", "demo", str(tmp_path))  # port 9: nothing listens
    started = time.time()
    with caplog.at_level("WARNING"):
        log_everything(t)
        assert t.log_model("m__d0__r0", object()) is None
        t.log_verdicts([], ["a line"])
        assert t.register_model("m__d0__r0", "lv") is None
    assert time.time() - started < 30
    assert not t.available and t.error
    assert len([r for r in caplog.records if "unreachable or failing" in r.message]) == 1


def test_the_experiment_id_for_the_ui_link_is_none_once_mlflow_is_off(tracker, tmp_path):
    """The driver's link to the experiment: the id on a working store; None, and the tracker off, on an outage."""
    assert tracker.experiment_link_id() == tracker.experiment_id() and tracker.available
    down = Tracker("http://127.0.0.1:9", "exp", "demo", str(tmp_path))  # port 9: nothing listens
    assert down.experiment_link_id() is None
    assert not down.available and down.error


# --- the MLflow contents of a trial and a sweep, on both backends (issue 13) --------------------------
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lossyvision.sweep.mlnames import CELLS_TABLE, TAG_EXPERIMENT_KIND  # noqa: E402
from lossyvision.sweep.trackdata import DatasetRef, cells_table_of, eval_series_of, ladder_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "coffee", "rocket"]
KEY = "r10__d2__r0__0123456789"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("server+s3", marks=pytest.mark.slow)])
def backend(request, tmp_path_factory):
    """(tracking URI, S3 or None): SQLite with local artifacts, or a real mlflow server with moto's S3."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/mlflow.db", None
        return
    from mlflow_server import moto_s3, start_mlflow_server, stop
    from ray_head import free_port

    folder = tmp_path_factory.mktemp("server")
    with moto_s3() as s3:
        port = free_port()
        server = start_mlflow_server(folder / "mlflow.db", port, folder / "server.log",
                                     artifacts=f"s3://{s3.bucket}/mlartifacts", env=s3.env)
        try:
            yield f"http://127.0.0.1:{port}", s3
        finally:
            stop(server)


def classifier():
    """A real timm classifier wrapped as the classification task serves it, with a 2-image example."""
    from lossyvision.spec import ModelSpec
    from lossyvision.sweep.models import LoggableModel, requirements
    from lossyvision.tasks import create_task

    spec = ModelSpec(name="r10", task="classification", arch="resnet10t", image_size=32)
    task = create_task("classification", spec, CLASSES)
    serving = task.serving(task.build_model())
    example = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    return LoggableModel(serving.module, example, serving.serialization, {"classes": CLASSES},
                         requirements(task))


def results_rows() -> pd.DataFrame:
    rows = []
    for level, dcr, top1 in ((0.0, -0.05, 0.8), (2.0, 0.5, 0.7), (5.0, 0.8, 0.4)):
        cell = f"{KEY}__t{level:g}__abc"
        for metric, value in (("top1", top1), ("top5", 1.0)):
            rows.append({"trial_id": KEY, "cell_id": cell, "metric": metric, "value": value, "test_level": level,
                         "test_dcr": dcr, "ci_low": value - 0.1, "ci_high": min(1.0, value + 0.1), "rel": 100 * value,
                         "rel_low": 90.0, "rel_high": 110.0, "n_test_images": 20, "train_level": 2.0, "repeat": 0,
                         "budget": -1})
    return pd.DataFrame(rows)


def log_trial_fully(t: Tracker, store: str, model) -> str | None:
    """What the sweep sends for one finished, evaluated trial."""
    rows = results_rows()
    t.start_sweep({"n_trials": 1}, sweep_file=None)
    t.log_trial(KEY, {"model": "r10", "train_level": 2.0}, history=[{"epoch": 1, "loss": 1.5}],
                test_metrics={eval_metric_name(r.metric, r.test_level): r.value for r in rows.itertuples()},
                series=eval_series_of(rows, [5, 0, 2]), test_levels=ladder_text([5, 0, 2]),
                inputs=[DatasetRef("jpegxl-2 train", f"{store}/jpegxl-2", "a" * 32, "training"),
                        DatasetRef("jpegxl-5 test", f"{store}/jpegxl-5", "b" * 32, "evaluation")],
                cells=cells_table_of(rows), status="FINISHED")
    return t.log_model(KEY, model)


def test_trial_run_holds_model_inputs_series_cells_and_source_tags(backend, tmp_path):
    import mlflow

    uri, s3 = backend
    model = classifier()
    t = Tracker(uri, "contents", "demo", str(tmp_path))
    model_id = log_trial_fully(t, "s3://bucket/store", model)
    assert model_id and t.available, t.error
    client = t.client
    assert client.get_experiment(t.experiment_id()).tags[TAG_EXPERIMENT_KIND] == "custom_model_development"
    run = client.get_run(t.child_run(KEY))

    # The model: a LoggedModel of the run, ready, with a signature and an input example, and it predicts.
    assert [o.model_id for o in run.outputs.model_outputs] == [model_id]
    logged = client.get_logged_model(model_id)
    assert logged.name == KEY and logged.source_run_id == run.info.run_id and logged.tags["lossyvision.trial"] == KEY
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(f"models:/{model_id}")
    inputs_spec = info.signature.inputs.to_dict()[0]["tensor-spec"]
    assert inputs_spec["dtype"] == "uint8" and list(inputs_spec["shape"]) == [-1, 3, 32, 32]
    assert list(info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, len(CLASSES)]
    assert info.saved_input_example_info is not None and info.metadata["classes"] == CLASSES
    assert "pytorch" in info.flavors and info.flavors["pytorch"].get("serialization_format", "pt2") == "pt2"
    probs = mlflow.pyfunc.load_model(f"models:/{model_id}").predict(model.example)
    assert np.asarray(probs).shape == (2, len(CLASSES)) and np.allclose(np.asarray(probs).sum(1), 1, atol=1e-5)

    # Inputs: the training level and the test levels, with their digests and contexts.
    inputs = {(d.dataset.name, d.dataset.digest, d.tags[0].value) for d in run.inputs.dataset_inputs}
    assert inputs == {("jpegxl-2 train", "a" * 32, "training"), ("jpegxl-5 test", "b" * 32, "evaluation")}
    sources = {d.dataset.name: d.dataset.source for d in run.inputs.dataset_inputs}
    assert "s3://bucket/store/jpegxl-2" in sources["jpegxl-2 train"]

    # Test metrics as series over the sorted test levels (0, 2, 5 -> steps 0, 1, 2), per level, and the table.
    top1 = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "by_test_level/top1"))
    assert top1 == [(0, 0.8), (1, 0.7), (2, 0.4)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "by_test_level/dcr")] != []
    levels = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "by_test_level/level"))
    assert levels == [(0, 0.0), (1, 2.0), (2, 5.0)]  # the x-axis that turns steps into distances
    assert "test/top1" not in run.data.metrics  # no series whose last step reads as "the" accuracy

    # The logged model carries the trial's metrics: every test level's and the last epoch's.
    model_metrics = {m.key: m.value for m in client.get_logged_model(model_id).metrics}
    assert model_metrics["test/top1/d0"] == 0.8 and model_metrics["test/top1/d5"] == 0.4
    assert model_metrics["train/loss"] == 1.5
    assert len(client.get_metric_history(run.info.run_id, "test/top1/d0")) == 1  # linked, not logged twice
    assert run.data.metrics["test/top1/d5"] == 0.4 and run.data.tags["lossyvision.test_levels"] == "0,2,5"
    cells = t.cells_table(run.info.run_id)
    assert len(cells) == 6 and set(cells.columns) >= {"test_level", "test_dcr", "value", "ci_low", "ci_high", "rel"}
    assert cells.set_index(["test_level", "metric"]).loc[(5.0, "top1"), "ci_high"] == pytest.approx(0.5)

    # Source tags: the commit of the repository that holds lossyvision's code.
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert run.data.tags["mlflow.source.git.commit"] == head.stdout.strip()
    assert run.data.tags["mlflow.source.name"] == "lossyvision"
    if s3 is not None:  # the server keeps artifacts in S3: the model's files are there
        keys = s3.keys("mlartifacts/")
        assert any(k.endswith(f"{model_id}/artifacts/data/model.pt2") for k in keys), keys[:20]
        assert any(k.endswith(CELLS_TABLE) for k in keys)

    # Logging it all again from a fresh tracker (a rerun, `sweep sync`) adds nothing.
    again = Tracker(uri, "contents", "demo", str(tmp_path))
    assert log_trial_fully(again, "s3://bucket/store", model) == model_id
    run2 = client.get_run(again.child_run(KEY))
    assert run2.info.run_id == run.info.run_id and len(run2.outputs.model_outputs) == 1
    assert len(client.get_metric_history(run.info.run_id, "by_test_level/top1")) == 3
    assert len(run2.inputs.dataset_inputs) == 2 and len(again.cells_table(run.info.run_id)) == 6


def test_parent_run_gets_the_verdict_and_register_names_the_advised_model(backend, tmp_path):
    from lossyvision.report.verdict import Verdict

    uri, _ = backend
    t = Tracker(uri, "verdicts", "demo", str(tmp_path))
    assert t.log_model(KEY, classifier())
    verdicts = [
        Verdict("r10", "top1", "matched", 2.0, 0.5, 99.5, 99.1, 100.2, "advised", "Store everything at distance 2."),
        Verdict("r10", "top1", "test", None, None, 97.0, 95.0, 99.0, "keep originals", "Keep the originals."),
    ]
    for _ in range(2):  # idempotent
        t.log_verdicts(verdicts, ["r10 (top1):", "  Store everything at distance 2."], verdicts)
    parent = t.client.get_run(t.parent_run())
    m = parent.data.metrics
    assert m["verdict/r10/top1/matched/level"] == 2.0 and m["verdict/r10/top1/matched/rel_low"] == 99.1
    assert "verdict/r10/top1/test/level" not in m and m["verdict/r10/top1/test/rel_high"] == 99.0
    assert len(t.client.get_metric_history(parent.info.run_id, "verdict/r10/top1/matched/rel")) == 1
    tags = parent.data.tags
    assert tags["lossyvision.recommended.r10"] == "2" and tags["lossyvision.verdict.r10.top1.test"].startswith("keep")
    assert "Store everything at distance 2" in tags["mlflow.note.content"]

    assert t.register_model(KEY, "lv-demo", {"level": "2"}) == "1"
    assert t.register_model(KEY, "lv-demo", {"level": "2"}) == "1"  # the same model is not registered twice
    version = t.client.get_model_version_by_alias("lv-demo", "recommended")
    assert str(version.version) == "1" and version.tags["level"] == "2"
    assert t.register_model("no__such__trial", "lv-demo") is None


def test_a_model_that_cannot_be_exported_is_a_warning_not_an_outage(db, tmp_path, caplog):
    import torch

    from lossyvision.sweep.models import LoggableModel

    class DataDependent(torch.nn.Module):
        def forward(self, x):
            if x.float().mean() > 100:  # torch.export cannot trace a branch on data
                return x.float()[:, :1, 0, 0]
            return -x.float()[:, :1, 0, 0]

    t = Tracker(db, "unexportable", "demo", str(tmp_path))
    example = np.zeros((2, 3, 8, 8), dtype=np.uint8)
    with caplog.at_level("WARNING"):
        assert t.log_model(KEY, LoggableModel(DataDependent(), example, "pt2")) is None
    assert t.available and any("was not logged" in r.message for r in caplog.records)
    t.log_trial(KEY, {"model": "m"})  # MLflow stays on for the rest
    assert t.client.get_run(t.child_run(KEY)).data.params["model"] == "m"


def test_ui_command_opens_the_runs_page():
    assert ui_command("http://mlflow:5000", "7") == "open http://mlflow:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert ui_command("sqlite:////x/mlflow.db", "1").endswith("#/experiments/1/runs?workflowType=machine_learning")
    assert ui_command("sqlite:////x/mlflow.db") == "mlflow ui --backend-store-uri sqlite:////x/mlflow.db"


def test_series_follow_the_sorted_test_levels_and_cells_keep_intervals():
    rows = results_rows()
    series = eval_series_of(rows, [5.0, 0.0, 2.0])
    assert series["by_test_level/top1"] == {0: 0.8, 1: 0.7, 2: 0.4}
    assert series["by_test_level/dcr"] == {0: -0.05, 1: 0.5, 2: 0.8}
    assert series["by_test_level/level"] == {0: 0.0, 1: 2.0, 2: 5.0}
    assert ladder_text([5, 0.5, 0]) == "0,0.5,5"
    table = cells_table_of(rows)
    assert list(table["test_level"]) == [0.0, 0.0, 2.0, 2.0, 5.0, 5.0] and "ci_low" in table.columns


def test_segmentation_and_detection_models_log_and_predict_back(db, tmp_path):
    """SegFormer exports (pt2); torchvision's detector is pickled with lossyvision's code beside it."""
    import mlflow

    from lossyvision.spec import ModelSpec
    from lossyvision.sweep.models import LoggableModel, requirements
    from lossyvision.tasks import create_task

    t = Tracker(db, "tasks", "demo", str(tmp_path))
    for kw in (dict(task="segmentation", arch="segformer-tiny", options={"crop_size": 32}),
               dict(task="detection", arch="fasterrcnn_mobilenet_v3_large_320_fpn",
                    options={"min_size": 64, "max_size": 64})):
        task = create_task(kw["task"], ModelSpec(name="m", **kw), CLASSES)
        serving = task.serving(task.build_model())
        example = np.random.default_rng(0).integers(0, 256, (2, 3, serving.size, serving.size), dtype=np.uint8)
        import lossyvision

        code = [lossyvision.__path__[0]] if serving.serialization == "pickle" else []
        model_id = t.log_model(f"{kw['task']}__k", LoggableModel(serving.module, example, serving.serialization, {},
                                                                requirements(task), code))
        assert model_id and t.available
        mlflow.set_tracking_uri(db)
        out = np.asarray(mlflow.pyfunc.load_model(f"models:/{model_id}").predict(example))
        assert out.shape == ((2, len(CLASSES), 32, 32) if kw["task"] == "segmentation" else (2, 100, 6))


def test_a_copied_output_logs_into_its_own_artifacts_never_the_original(tmp_path):
    """``cp -r runs/demo runs/demo-moved``: MLflow in the copy must not write into ``runs/demo``."""
    import shutil

    from lossyvision.sweep.mlstore import relocate_artifacts

    original = tmp_path / "runs" / "demo"
    original.mkdir(parents=True)
    uri = f"sqlite:///{original}/mlflow.db"
    first = Tracker(uri, "portable", "demo", str(original))
    (tmp_path / "sweep.yaml").write_text("name: demo\n")
    first.start_sweep({"n_trials": 1}, sweep_file=str(tmp_path / "sweep.yaml"))
    before = sorted(p.relative_to(original) for p in (original / "mlartifacts").rglob("*"))
    assert before and relocate_artifacts(uri, str(original)) == 0  # in place: nothing to rewrite

    moved = tmp_path / "runs" / "demo-moved"
    shutil.copytree(original, moved)
    moved_uri = f"sqlite:///{moved}/mlflow.db"
    assert relocate_artifacts(moved_uri, str(moved)) >= 2  # the experiment and the parent run
    assert relocate_artifacts(moved_uri, str(moved)) == 0  # idempotent
    # the copy is used by a later command: a new process (MLflow caches artifact stores per run in one)
    import subprocess
    import sys

    (tmp_path / "notes.txt").write_text("from the copy")
    code = ("import sys; from lossyvision.sweep.tracking import Tracker; "
            "t = Tracker(sys.argv[1], 'portable', 'demo', sys.argv[2]); "
            "t.client.log_artifact(t.parent_run(), sys.argv[3])")
    subprocess.run([sys.executable, "-c", code, moved_uri, str(moved), str(tmp_path / "notes.txt")], check=True,
                   timeout=120)
    copy = Tracker(moved_uri, "portable", "demo", str(moved))
    assert list(moved.joinpath("mlartifacts").rglob("notes.txt"))
    assert sorted(p.relative_to(original) for p in (original / "mlartifacts").rglob("*")) == before  # untouched
    assert copy.client.get_experiment(copy.experiment_id()).artifact_location == (moved / "mlartifacts").as_uri()
    # a store outside the output is not this output's to rewrite
    assert relocate_artifacts(moved_uri, str(tmp_path / "elsewhere")) == 0


def test_the_sweep_summary_says_where_to_click_first_in_mlflow():
    from lossyvision.sweep.summary import SweepOutcome, summary_lines

    lines = summary_lines(SweepOutcome(output="runs/demo", trials=4, cells=16, tracking_uri="http://mlflow:5000",
                                       experiment_id="3"))
    at = next(i for i, line in enumerate(lines) if line.startswith("MLflow: open http://mlflow:5000/#/experiments/3"))
    assert "expand the sweep's run" in lines[at + 1] and "by_test_level/level" in lines[at + 1]
