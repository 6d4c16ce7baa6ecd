"""A sweep on a real multi-node Ray cluster on this machine, and a sweep that loses nodes.

The cluster: a head (1 CPU) and two worker nodes (1 CPU and a custom ``trainer`` resource each),
every one its own ``ray start`` with its own temp folder (:mod:`ray_cluster`). Trials ask for
``trainer``, so they run on the workers; compression and evaluation run anywhere. The dataset,
the store (sharded) and the output live on moto's S3 server, reached over HTTP by every node, as
on a cluster; MLflow is the driver's SQLite file.

* ``test_sweep_on_three_nodes_records_where_everything_ran``: compression, trials and evaluation
  run on several nodes; the manifest, ``trial.json`` and the results rows say which.
* ``test_losing_nodes_loses_nothing``: the driver is a separate process (a RayJob's entry point);
  once a trial has an epoch checkpoint on S3, its worker node is SIGKILLed: Tune retries the trial
  on the other worker from that checkpoint. When evaluation tasks run on the other worker, that
  node is killed too: they are retried on the head. The sweep completes with every cell once, the
  retried trial's history whole, and MLflow holding exactly what ``trial.json`` and the results say.

Nodes are ended by their own processes' pids, never with ``ray stop``; the cluster is stopped
even when a test fails. Kept short: 64 px demo crops, resnet10t, 2 trials x 2 test levels.
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

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from test_s3 import BUCKET, s3, s3_server  # noqa: E402,F401  (the module's moto server fixture)

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.nightly]

EPOCHS_LOSS = 5  # long enough to lose a node between two epoch checkpoints
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")


@pytest.fixture(scope="module")
def cluster(s3_server):
    from ray_cluster import start_cluster

    from lossyvision.runners.cluster import shutdown_ray

    shutdown_ray()  # this process joins the cluster as a driver in the first test
    cluster = start_cluster([{"trainer": 1}, {"trainer": 1}],
                            env={k: os.environ[k] for k in AWS_VARS})
    try:
        yield cluster
    finally:
        shutdown_ray()
        cluster.stop()


@pytest.fixture(scope="module")
def s3_demo(s3_server) -> str:
    from lossyvision.demo import build_demo_dataset

    root = f"s3://{BUCKET}/multinode/demo"
    build_demo_dataset(root, train_per_class=4, test_per_class=2, image_size=64)
    return root


def write_sweep(path: Path, root: str, output: str, tmp: Path, epochs: int) -> Path:
    path.write_text(yaml.safe_dump({
        "name": path.stem, "dataset": {"kind": "imagefolder", "root": root},
        "codec": {"name": "jpegxl", "effort": 1}, "train_levels": [0, 4], "test_levels": [0, 4],
        "models": [{"name": "r10", "task": "classification", "arch": "resnet10t", "epochs": epochs,
                    "lr": 0.003, "batch_size": 8, "image_size": 64}],
        "resources": {"trial": {"cpu": 1, "custom": {"trainer": 1}}, "eval": {"cpu": 1}},
        "compress": {"layout": "shards", "shard_size": "12kB"},
        "store": f"s3://{BUCKET}/multinode/store", "output": output, "max_failures": 2,
        "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db"}}))
    return path


def read_json(uri: str) -> dict:
    from lossyvision.store import read_bytes

    return json.loads(read_bytes(uri))


def trial_keys(output: str) -> list[str]:
    from lossyvision.sweep.plan import TrialSpec

    return [TrialSpec.from_dict(t).key for t in read_json(f"{output}/plan.json")["trials"]]


def check_results_and_mlflow(output: str, tracking: str, experiment: str, epochs: int) -> tuple[pd.DataFrame, dict]:
    """Every planned cell once, its trial's node; MLflow's runs hold exactly trial.json and the results."""
    from mlflow.tracking import MlflowClient

    from lossyvision.sweep.plan import CellSpec
    from lossyvision.sweep.results import read_results
    from lossyvision.sweep.mlnames import eval_metric_name

    plan = read_json(f"{output}/plan.json")
    cells = {CellSpec.from_dict(c).key for c in plan["cells"]}
    results = read_results(output)
    assert set(results.cell_id) == cells and len(results) == 2 * len(cells)  # none missing
    assert not results.duplicated(["cell_id", "metric"]).any()  # none twice
    metas = {k: read_json(f"{output}/checkpoints/{k}/trial.json") for k in trial_keys(output)}
    for key, meta in metas.items():
        assert [h["epoch"] for h in meta["history"]] == list(range(1, epochs + 1))
        assert meta["node"] and meta["nodes"][-1] == meta["node"]
        assert set(results[results.trial_id == key].trial_node) == {meta["node"]}
    assert results.node.notna().all()

    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("lossyvision.role") == "sweep"]
    children = {r.data.tags["lossyvision.trial"]: r for r in runs if r.data.tags.get("lossyvision.role") == "trial"}
    assert len(parents) == 1 and set(children) == set(metas)
    for key, run in children.items():
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert sorted((m.step, m.value) for m in history) == [(h["epoch"], h["loss"]) for h in metas[key]["history"]]
        for r in results[results.trial_id == key].itertuples():
            assert run.data.metrics[eval_metric_name(r.metric, r.test_level)] == pytest.approx(r.value)
    return results, metas


def test_resources_no_node_offers_are_refused_before_anything_is_written(cluster, s3_demo, tmp_path):
    from lossyvision.spec import SpecError
    from lossyvision.store import exists
    from lossyvision.sweep.run import run_sweep

    output = f"s3://{BUCKET}/multinode/{tmp_path.name}"
    path = write_sweep(tmp_path / "too-big.yaml", s3_demo, output, tmp_path, epochs=1)
    spec = yaml.safe_load(path.read_text())
    spec["resources"]["trial"] = {"cpu": 2, "custom": {"trainer": 1}}  # the trainer nodes have 1 CPU each
    spec["store"] = f"s3://{BUCKET}/multinode/store-{tmp_path.name}"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError) as refused:
        run_sweep(path, echo=print, ray_address=cluster.address, build_report=False)
    assert str(refused.value).startswith("resources.trial: no node of the cluster offers 2 CPU, 1 trainer")
    assert "1 CPU, 1 trainer" in str(refused.value) and "--wait-for-nodes" in str(refused.value)
    assert not exists(output) and not exists(spec["store"])  # nothing written
    spec["resources"]["trial"] = {"cpu": 1, "custom": {"trainer": 1}}
    spec["resources"]["eval"] = {"cpu": 1, "gpu": 1}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match=r"^resources.eval: no node of the cluster offers 1 CPU, 1 GPU"):
        run_sweep(path, echo=print, ray_address=cluster.address, build_report=False)
    assert not exists(output) and not exists(spec["store"])


def test_sweep_on_three_nodes_records_where_everything_ran(cluster, s3_demo, tmp_path):
    from lossyvision.manifest import read_manifest
    from lossyvision.sweep.run import run_sweep

    output = f"s3://{BUCKET}/multinode/{tmp_path.name}"
    sweep = write_sweep(tmp_path / "three-nodes.yaml", s3_demo, output, tmp_path, epochs=2)
    outcome = run_sweep(sweep, echo=print, ray_address=cluster.address, build_report=False)
    assert outcome.ok and outcome.trials_run == 2 and outcome.cells_run == 4

    ids = {n.node_id: n.name for n in cluster.nodes}
    manifest = read_manifest(f"s3://{BUCKET}/multinode/store")
    assert (manifest.status == "ok").all() and set(manifest.node) <= set(ids)
    assert manifest.node.nunique() >= 2, manifest.node.map(ids).value_counts()  # compressed on several nodes
    results, metas = check_results_and_mlflow(output, outcome.tracking_uri, "three-nodes", epochs=2)
    # The two trials ran at once, one on each trainer node; cells ran on nodes of the cluster.
    assert sorted(ids[m["node"]] for m in metas.values()) == ["worker1", "worker2"]
    assert all(m["nodes"] == [m["node"]] for m in metas.values())
    assert set(results.node) <= set(ids)
    print("trials:", {k: [ids[n] for n in m["nodes"]] for k, m in metas.items()})
    print("cells:", results.drop_duplicates("cell_id").set_index("cell_id").node.map(ids).to_dict())
    print("compression rows per node:", manifest.node.map(ids).value_counts().to_dict())


def test_losing_nodes_loses_nothing(cluster, s3_demo, tmp_path):
    from lossyvision.store import filesystem

    output = f"s3://{BUCKET}/multinode/{tmp_path.name}"
    sweep = write_sweep(tmp_path / "lost-nodes.yaml", s3_demo, output, tmp_path, epochs=EPOCHS_LOSS)
    log_path = tmp_path / "driver.log"
    cmd = [sys.executable, "-m", "lossyvision.cli", "sweep", "run", str(sweep), "--no-report",
           "--address", cluster.address]
    with log_path.open("wb") as log:
        driver = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=cluster.env, start_new_session=True)
    ids = {n.node_id: n.name for n in cluster.nodes}
    fs, base = filesystem(output)
    lost_trial = first_lost = second_lost = None
    try:
        # 1. The driver has a trial's epoch checkpoint (it printed the epoch) and the trial has epochs to
        #    go: lose the trial's node (its checkpoint on S3 says which).
        deadline = time.monotonic() + 420
        while lost_trial is None:
            assert driver.poll() is None, "the sweep ended before a node could be lost:\n" + log_path.read_text()[-4000:]
            assert time.monotonic() < deadline, "no trial reported an epoch:\n" + log_path.read_text()[-4000:]
            for key, epoch in re.findall(rf"^trial (\S+): epoch (\d+)/{EPOCHS_LOSS} ", log_path.read_text(), re.M):
                if not 1 <= int(epoch) <= EPOCHS_LOSS - 2 or fs.exists(f"{base}/checkpoints/{key}/trial.json"):
                    continue
                fs.invalidate_cache()
                progress = [json.loads(fs.cat_file(p)) for p in fs.glob(f"{base}/tune/*/{key}/checkpoint_*/progress.json")]
                if progress and max(p["epoch"] for p in progress) <= EPOCHS_LOSS - 2:
                    first_lost = cluster.by_id(max(progress, key=lambda p: p["epoch"])["nodes"][-1])
                    assert first_lost.name in ("worker1", "worker2")
                    lost_trial, lost_at = key, int(epoch)
                    cluster.kill(first_lost)
                    break
            time.sleep(0.2)
        # 2. Evaluation tasks run on the other worker: lose that node too; the head is left.
        survivor = cluster.node("worker2" if first_lost.name == "worker1" else "worker1")
        deadline = time.monotonic() + 420
        while second_lost is None:
            assert driver.poll() is None, "the sweep ended before evaluation ran on the other worker:\n" + \
                log_path.read_text()[-4000:]
            assert time.monotonic() < deadline, "no evaluation task ran on " + survivor.name
            if "evaluating " in log_path.read_text():
                running = [t for t in survivor.busy_workers() if "ImplicitFunc" not in t]
                if running:
                    cluster.kill(survivor)
                    second_lost, evaluating = survivor, running
                    continue
            time.sleep(0.05)
        rc = driver.wait(timeout=420)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(30)
    printed = log_path.read_text()
    assert rc == 0, printed[-5000:]
    assert f"trial {lost_trial}: FAILED: failed; retrying from its last checkpoint" in printed

    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    results, metas = check_results_and_mlflow(output, tracking, "lost-nodes", epochs=EPOCHS_LOSS)
    # The lost trial resumed on the other worker from its checkpoint; the other trial never moved.
    moved = metas[lost_trial]
    assert moved["nodes"] == [first_lost.node_id, survivor.node_id], [ids.get(n) for n in moved["nodes"]]
    assert 1 <= lost_at <= moved["resumed_from"] < EPOCHS_LOSS
    (other,) = [m for k, m in metas.items() if k != lost_trial]
    assert other["nodes"] == [survivor.node_id] and other["resumed_from"] == 0
    # Evaluation: the cells that were running on the lost node were retried; all ended on live nodes.
    assert set(results.node) <= {cluster.head.node_id, survivor.node_id}
    late = results[results.node == cluster.head.node_id]
    assert len(late), "no cell was evaluated on the head after the second loss"
    print("killed:", first_lost.name, "at epoch", lost_at, "then", second_lost.name, "while running", evaluating)
    print("trials:", {k: [ids[n] for n in m["nodes"]] for k, m in metas.items()},
          "resumed_from:", {k: m["resumed_from"] for k, m in metas.items()})
    print("cells:", results.drop_duplicates("cell_id").set_index("cell_id").node.map(ids).to_dict())
