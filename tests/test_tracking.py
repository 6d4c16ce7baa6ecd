"""MLflow tracking against a real SQLite store: parent + nested children, names, idempotence, outage."""

from __future__ import annotations

import time

import pytest

from lossyvision.sweep.tracking import TAG_PARENT, TAG_TRIAL, Tracker, eval_metric_name, ui_command


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
    assert time.time() - started < 30
    assert not t.available and t.error
    assert len([r for r in caplog.records if "unreachable or failing" in r.message]) == 1
