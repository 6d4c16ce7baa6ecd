"""End to end on a real local Ray (2 CPUs), real MLflow (SQLite, and a real server with moto's S3 for its
artifacts), real timm models.

Tiny everywhere: a few dozen 32 px demo photos, resnet10t, 2 train x 2 test levels. What is
checked is the engine: the full grid lands in results.parquet, MLflow has a parent and a child
per trial with its model, inputs, test series and cells table, the parent the verdict, reruns do
no work, a killed driver resumes without redoing finished work, an MLflow outage does not stop the
sweep and ``sweep sync`` repairs MLflow afterwards. The printed progress (epochs k/N, the sweep's
counts and ETAs) is checked on the way.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.ray

LEVELS = [0, 4]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> str:
    from lossyvision.demo import build_demo_dataset

    root = tmp_path_factory.mktemp("data") / "demo"
    build_demo_dataset(str(root), train_per_class=4, test_per_class=2, image_size=32)
    return str(root)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("store"))  # shared by the sweeps: compressed once


@pytest.fixture(scope="module")
def ray_cluster():
    from lossyvision.runners.cluster import init_ray, shutdown_ray

    resources = init_ray(num_cpus=2)
    yield resources
    shutdown_ray()


def write_sweep(path: Path, demo_root: str, store: str, output: Path, **over) -> Path:
    data = {
        "name": output.name, "dataset": {"kind": "imagefolder", "root": demo_root},
        "codec": {"name": "jpegxl", "effort": 1}, "train_levels": LEVELS, "test_levels": LEVELS,
        "models": [{"name": "r10", "task": "classification", "arch": "resnet10t", "epochs": 1,
                    "lr": 0.003, "batch_size": 16, "image_size": 32}],
        "resources": {"trial": {"cpu": 1}, "eval": {"cpu": 1}},
        "store": store, "output": str(output), "max_failures": 0,
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    path.write_text(yaml.safe_dump(data))
    return path


def child_runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment} at {uri}"
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("lossyvision.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("lossyvision.role") == "trial"]
    return client, parents, children


def check_mlflow(uri: str, experiment: str, output: Path | None = None, verdict: bool = False) -> None:
    client, parents, children = child_runs(uri, experiment)
    assert len(parents) == 1 and len(children) == 2
    pid = parents[0].info.run_id
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {pid}
    assert parents[0].data.params["n_trials"] == "2" and parents[0].data.params["n_evaluations"] == "4"
    assert client.get_experiment_by_name(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    identities = json.loads((output / "plan.json").read_text())["identities"] if output else {}
    for c in children:
        rid, key = c.info.run_id, c.data.tags["lossyvision.trial"]
        assert {"test/top1/d0", "test/top1/d4", "test/top5/d4"} <= set(c.data.metrics)
        assert {"model", "task", "train_level", "train_dcr", "budget", "n_images"} <= set(c.data.params)
        assert [m.step for m in client.get_metric_history(rid, "train/loss")] == [1]
        assert c.info.status == "FINISHED"
        # The model, once; the data it trained on and was tested on; the series over test levels; the table.
        models = c.outputs.model_outputs
        assert len(models) == 1 and client.get_logged_model(models[0].model_id).status.name == "READY"
        contexts = {(d.dataset.name.split()[-1], d.tags[0].value): d.dataset.digest for d in c.inputs.dataset_inputs}
        assert set(contexts) == {("train", "training"), ("test", "evaluation")} and len(c.inputs.dataset_inputs) == 3
        if identities:
            assert contexts[("train", "training")] == identities[key]["train_rows"]
        assert sorted(m.step for m in client.get_metric_history(rid, "by_test_level/top1")) == [0, 1]
        assert sorted(m.step for m in client.get_metric_history(rid, "by_test_level/dcr")) == [0, 1]
        assert "cells.json" in [a.path for a in client.list_artifacts(rid)]
    assert "sweep.yaml" in [a.path for a in client.list_artifacts(pid)]
    if verdict:
        metrics, tags = parents[0].data.metrics, parents[0].data.tags
        # one run per level: the matched claim has no interval (the seeds' spread is unmeasured); the test
        # question's (about the model trained at 0) has one
        assert "verdict/r10/top1/matched/rel" in metrics and "verdict/r10/top1/test/rel_low" in metrics
        assert tags["lossyvision.recommended.r10"] in ("none", "4") and "r10 (top1)" in tags["mlflow.note.content"]


def test_sweep_fills_the_grid_tracks_it_and_reruns_do_nothing(ray_cluster, demo_root, store, tmp_path, capsys):
    from lossyvision.output import load_output_sweep, load_plan, read_predictions
    from lossyvision.sweep.results import read_results
    from lossyvision.sweep.run import run_sweep
    from lossyvision.sweep.status import grid_status

    out = tmp_path / "grid"
    sweep_file = write_sweep(tmp_path / "s.yaml", demo_root, store, out, limit_per_split=24)
    outcome = run_sweep(sweep_file, build_report=False, register="lv-grid")
    assert outcome.ok and outcome.trials_run == 2 and outcome.cells_run == 4
    printed = capsys.readouterr().out
    # The store is checked first (the keys hash the images it holds), then the grid is announced.
    assert printed.startswith("compress: ") and "\ngrid: 2 trials, 4 evaluations (2 trials" in printed
    # Progress: the compression (no terminal here: plain lines, the last one with the totals), then each
    # epoch k/N with its time and the trial's ETA, and the sweep's counts with the phase's ETA.
    compressed = re.search(r"^compress: (\d+)/(\d+) images in \d+:\d\d \([\d.]+ images/s\), 0 failed$", printed, re.M)
    assert compressed is None or compressed[1] == compressed[2]  # None: an earlier test compressed the store
    assert re.search(r"^trial r10__jpegxl-0__r0__\w+: epoch 1/1 \([\d.]+ s/epoch, ETA 0:00\) loss=", printed, re.M), printed
    assert re.search(r"^sweep: 1/2 trials, 0/4 cells done; training ETA \d+:\d\d$", printed, re.M)
    assert re.search(r"^sweep: 2/2 trials, 4/4 cells done; evaluation ETA 0:00$", printed, re.M)
    assert printed.count("MLflow: logged the model of trial") == 2
    # --register: the verdict's advised level's model, or a clear line that there is none.
    (line,) = outcome.registered
    from mlflow.tracking import MlflowClient

    if line.startswith("registered lv-grid version 1"):
        assert MlflowClient(outcome.tracking_uri).get_model_version_by_alias("lv-grid", "recommended")
    else:
        assert line.startswith("register lv-grid: nothing registered: no advised level for r10"), line

    results = read_results(str(out))
    assert len(results) == 2 * 2 * 2  # trials x test levels x (top1, top5)
    assert set(zip(results.train_level, results.test_level)) == {(a, b) for a in (0.0, 4.0) for b in (0.0, 4.0)}
    assert results.value.between(0, 1).all() and results.test_dcr.notna().all()
    # The DCR columns come from the manifest: more compression, higher DCR.
    dcr = results.groupby("test_level").test_dcr.first()
    assert dcr[4.0] > dcr[0.0]
    assert (results.n_train_images == 24).all()
    # Every value has its interval, and its paired value relative to the baseline cell.
    assert ((results.ci_low <= results.value) & (results.value <= results.ci_high)).all()
    assert results.rel.notna().all() and (results.rel_low <= results.rel_high).all()
    base = results[(results.train_level == 0) & (results.test_level == 0)]
    assert np.allclose(base.rel, 100.0) and set(results.baseline_cell) == set(base.cell_id)
    # Each cell's predictions file recomputes its metrics exactly.
    for cell_id, rows in results.groupby("cell_id"):
        metrics = read_predictions(str(out), cell_id).metrics()
        assert {r.metric: r.value for r in rows.itertuples()} == metrics
        assert rows.n_test_images.iloc[0] == len(read_predictions(str(out), cell_id))
    check_mlflow(outcome.tracking_uri, "grid", out, verdict=True)

    status = grid_status(load_output_sweep(str(out)), str(out), load_plan(str(out)))
    assert (status.state == "done").all() and len(status) == 4

    # Rerun: nothing trained, evaluated or logged twice.
    mtime = os.path.getmtime(out / "results.parquet")
    again = run_sweep(sweep_file, build_report=False)
    assert again.trials_run == 0 and again.cells_run == 0 and again.ok
    assert os.path.getmtime(out / "results.parquet") == mtime
    assert "0 trials and 0 evaluations to run" in capsys.readouterr().out
    check_mlflow(outcome.tracking_uri, "grid", out, verdict=True)


def test_budget_sweep_trains_on_subsets_that_fit_and_tracks_them(ray_cluster, demo_root, store, tmp_path):
    """#6 end to end: the budget axis through Tune; every trial's bytes fit its budget; MLflow has them."""
    import pandas as pd

    from lossyvision.manifest import read_manifest
    from lossyvision.sweep.results import read_results
    from lossyvision.sweep.run import run_sweep

    out = tmp_path / "budget"
    sweep_file = write_sweep(tmp_path / "b.yaml", demo_root, store, out, budgets=["6kB", "1MB"],
                             eval_levels="baseline")
    outcome = run_sweep(sweep_file, build_report=False)
    assert outcome.ok and outcome.trials_run == 4 and outcome.cells_run == 4  # 2 levels x 2 budgets, 1 test level

    results = read_results(str(out))
    assert set(results.test_level) == {0.0} and set(results.budget) == {6000, 1_000_000}
    trials = results.drop_duplicates(["train_level", "budget"]).set_index(["train_level", "budget"])
    assert (trials.train_bytes <= trials.index.get_level_values("budget")).all()
    train_ok = read_manifest(store).query("split == 'train' and status == 'ok'")
    for level in (0.0, 4.0):
        # The large budget takes every image; the small one fewer, and more of them where files are smaller.
        assert trials.loc[(level, 1_000_000), "n_train_images"] == (train_ok.level == level).sum()
        assert 0 < trials.loc[(level, 6000), "n_train_images"] < trials.loc[(level, 1_000_000), "n_train_images"]
    assert trials.loc[(4.0, 6000), "n_train_images"] > trials.loc[(0.0, 6000), "n_train_images"]

    _, parents, children = child_runs(outcome.tracking_uri, "budget")
    assert len(parents) == 1 and len(children) == 4
    params = pd.DataFrame([c.data.params for c in children])
    assert set(params.budget) == {"6000", "1000000"} and params.n_images.astype(int).gt(0).all()


@pytest.mark.slow
@pytest.mark.nightly
def test_remote_server_then_outage_then_sync(ray_cluster, demo_root, store, tmp_path):
    """A real mlflow server whose artifacts (models, tables, the sweep file) go to moto's S3."""
    from mlflow_server import moto_s3, start_mlflow_server, stop
    from ray_head import free_port

    from lossyvision.sweep.results import read_results
    from lossyvision.sweep.run import run_sweep, sync_output

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    db = tmp_path / "server" / "mlflow.db"
    db.parent.mkdir()
    with moto_s3() as s3:
        def serve():
            return start_mlflow_server(db, port, tmp_path / "server.log", artifacts=f"s3://{s3.bucket}/mlflow",
                                       env=s3.env)

        server = serve()
        try:
            # The remote path: a live server.
            live = run_sweep(write_sweep(tmp_path / "live.yaml", demo_root, store, tmp_path / "live",
                                         limit_per_split=24, tracking={"uri": uri}), build_report=False)
            assert live.ok and live.tracking_ok
            check_mlflow(uri, "live", tmp_path / "live")
            assert sum(k.endswith("data/model.pt2") for k in s3.keys("mlflow/")) == 2
        finally:
            stop(server)

        # The outage: the server is down for a whole sweep; the sweep still completes, fast.
        started = time.time()
        down = run_sweep(write_sweep(tmp_path / "down.yaml", demo_root, store, tmp_path / "down",
                                     limit_per_split=24, tracking={"uri": uri}), build_report=False)
        assert down.ok and not down.tracking_ok and down.tracking_error
        assert len(read_results(str(tmp_path / "down"))) == 8
        assert time.time() - started < 240

        server = serve()
        try:
            assert sync_output(str(tmp_path / "down"), echo=lambda m: None) == 2
            check_mlflow(uri, "down", tmp_path / "down", verdict=True)  # models too; sync adds the verdict
            sync_output(str(tmp_path / "down"), echo=lambda m: None)  # idempotent: nothing duplicated
            check_mlflow(uri, "down", tmp_path / "down", verdict=True)
            check_mlflow(uri, "live", tmp_path / "live")  # the other sweep's runs untouched
            assert sum(k.endswith("data/model.pt2") for k in s3.keys("mlflow/")) == 4
        finally:
            stop(server)


@pytest.mark.slow
def test_killed_driver_resumes_without_redoing_finished_work(demo_root, store, tmp_path):
    """SIGKILL the driver once trial 1 is done and trial 2 has an epoch checkpoint; rerun finishes."""
    out = tmp_path / "killed"
    sweep_file = write_sweep(tmp_path / "k.yaml", demo_root, store, out, limit_per_split=24,
                             resources={"trial": {"cpu": 2}, "eval": {"cpu": 1}},  # trials one at a time
                             models=[{"name": "r10", "task": "classification", "arch": "resnet10t",
                                      "epochs": 12, "lr": 0.003, "batch_size": 16, "image_size": 32}])
    cmd = [sys.executable, "-m", "lossyvision.cli", "sweep", "run", str(sweep_file), "--num-cpus", "2",
           "--no-report"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    log = (tmp_path / "driver.log").open("wb")
    driver = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 400
        first = second = None
        while time.time() < deadline and driver.poll() is None:
            if first is None:  # the keys carry the configuration's hash: read them from the plan
                if not (out / "plan.json").exists():
                    time.sleep(0.2)
                    continue
                keys = [t for t in json.loads((out / "plan.json").read_text())["trials"]]
                from lossyvision.sweep.plan import TrialSpec

                first, second = [TrialSpec.from_dict(t).key for t in keys]
            done = [k for k in (first, second) if (out / "checkpoints" / k / "trial.json").exists()]
            running = [k for k in (first, second) if k not in done
                       and list(out.glob(f"tune/*/{k}/checkpoint_*/state.pt"))]
            if len(done) == 1 and running:
                break
            time.sleep(0.2)
        assert driver.poll() is None, "the sweep finished before it could be killed: " + \
            (tmp_path / "driver.log").read_text()[-3000:]
        os.kill(driver.pid, signal.SIGKILL)  # the driver only: as a lost head pod would
        driver.wait(30)
    finally:
        time.sleep(1)
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # then the local Ray it had started
        except ProcessLookupError:
            pass
    finished_key = done[0]
    finished_meta = json.loads((out / "checkpoints" / finished_key / "trial.json").read_text())
    interrupted = running[0]
    assert not (out / "checkpoints" / interrupted / "trial.json").exists()

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, start_new_session=True)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "grid: 2 trials, 4 evaluations (1 trials and 4 evaluations to run)" in rerun.stdout
    # The finished trial was not trained again; the interrupted one resumed from its checkpoint.
    assert json.loads((out / "checkpoints" / finished_key / "trial.json").read_text()) == finished_meta
    resumed = json.loads((out / "checkpoints" / interrupted / "trial.json").read_text())
    assert resumed["resumed_from"] >= 1
    assert [h["epoch"] for h in resumed["history"]] == list(range(1, 13))
    import pandas as pd

    assert len(pd.read_parquet(out / "results.parquet")) == 8


def test_tune_state_never_pickles_the_listener_even_after_ray_replaced_print():
    """Tune pickles its callbacks into tuner.pkl. Ray's tqdm replaces builtins.print in a driver
    that showed a Ray Data bar, after which pickling ``print`` by reference fails: that broke every
    later sweep of the process. The callback saves a plain Callback instead of the listener."""
    import builtins

    from ray import cloudpickle
    from ray.tune import Callback

    from lossyvision.runners.tune import _ListenerCallback

    class Listener:
        echo = print

    callback = _ListenerCallback(Listener())
    original = builtins.print
    builtins.print = lambda *args, **kwargs: original(*args, **kwargs)  # what ray.experimental.tqdm_ray does
    try:
        restored = cloudpickle.loads(cloudpickle.dumps({"callbacks": [callback]}))["callbacks"][0]
    finally:
        builtins.print = original
    assert type(restored) is Callback
