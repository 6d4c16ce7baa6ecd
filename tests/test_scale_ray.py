"""Scale on a real Ray: ``cache: exact`` gives equal results.parquet; a 2-worker data-parallel trial (Ray Train
``TorchTrainer`` inside the Tune trial, gloo) completes on a 2-CPU Ray, resumes after one of its worker
processes is killed, and (slow) spreads over two nodes of a ``ray start`` cluster.

Tiny: the demo's 32 px photos, resnet10t, one train and one test level.
"""

from __future__ import annotations

import glob
import json
import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> str:
    from lossyvision.demo import build_demo_dataset

    root = tmp_path_factory.mktemp("data") / "demo"
    build_demo_dataset(str(root), train_per_class=2, test_per_class=1, image_size=32)
    return str(root)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def local_ray():
    from lossyvision.runners.cluster import init_ray, shutdown_ray

    resources = init_ray(num_cpus=2)
    yield resources
    shutdown_ray()


def write_sweep(path: Path, demo_root: str, store: str, output: Path, model: dict | None = None,
                trial: dict | None = None) -> Path:
    data = {
        "name": output.name, "dataset": {"kind": "imagefolder", "root": demo_root},
        "codec": {"name": "jpegxl", "effort": 1}, "train_levels": [4], "test_levels": [4],
        "models": [{"name": "r10", "task": "classification", "arch": "resnet10t", "epochs": 2, "lr": 0.003,
                    "batch_size": 8, "image_size": 32, **(model or {})}],
        "resources": {"trial": {"cpu": 1, **(trial or {})}, "eval": {"cpu": 1}},
        "store": store, "output": str(output), "max_failures": 1,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def metas(output: Path) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in glob.glob(str(output / "checkpoints" / "*" / "trial.json"))]


def test_cache_exact_gives_equal_results(local_ray, demo_root, store, tmp_path):
    from lossyvision.sweep.run import run_sweep

    tables = []
    for name, model in (("plain", {}), ("cached", {"cache": "exact"})):
        out = tmp_path / name / "same-name"  # the sweep's name is its output folder's: the same for both
        out.parent.mkdir()
        outcome = run_sweep(write_sweep(tmp_path / f"{name}.yaml", demo_root, store, out, model), echo=print,
                            build_report=False)
        assert outcome.ok
        tables.append(pd.read_parquet(out / "results.parquet").drop(columns=["node"], errors="ignore")
                      .sort_values(["cell_id", "metric"]).reset_index(drop=True))
        [meta] = metas(out)
        assert meta["cache"] == ({"mode": "exact"} if model else None)
    same = [c for c in tables[0].columns if not c.endswith(("_at", "seconds"))]
    pd.testing.assert_frame_equal(tables[0][same], tables[1][same])


def test_two_worker_trial_runs_on_a_two_cpu_ray_and_records_its_workers(local_ray, demo_root, store, tmp_path):
    from lossyvision.sweep.run import run_sweep

    out = tmp_path / "ddp"
    outcome = run_sweep(write_sweep(tmp_path / "ddp.yaml", demo_root, store, out, trial={"workers": 2}),
                        echo=print, build_report=False)
    assert outcome.ok and outcome.trials_run == 1 and outcome.cells_run == 1
    [meta] = metas(out)
    assert meta["workers"] == 2 and len(meta["worker_nodes"]) == 2 and [h["epoch"] for h in meta["history"]] == [1, 2]
    results = pd.read_parquet(out / "results.parquet")
    assert set(results.trial_id) == {meta["key"]}
    # A finished trial's epoch checkpoints are gone (as a single-worker trial's); its model stays.
    assert not os.path.exists(out / "tune" / "train" / meta["key"])
    assert os.path.exists(out / "checkpoints" / meta["key"] / "model.pt")


def _train_workers() -> list:
    """This machine's Ray Train worker processes (their title names the actor class)."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if "RayTrainWorker" in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.mark.nightly
def test_two_worker_trial_resumes_after_a_worker_process_is_killed(local_ray, demo_root, store, tmp_path):
    from lossyvision.sweep.run import run_sweep

    out = tmp_path / "killed"
    epochs = 8
    sweep = write_sweep(tmp_path / "killed.yaml", demo_root, store, out, {"epochs": epochs}, {"workers": 2})
    killed: list[int] = []
    reported = threading.Event()

    def echo(line: str) -> None:
        print(line)
        if f"epoch 1/{epochs}" in line:  # the driver has the epoch's report: Ray Train registered its checkpoint
            reported.set()

    def kill_after_first_checkpoint() -> None:
        # Files under checkpoint_* appear while Ray Train is still persisting the report; a kill then restarts
        # from scratch. The driver's epoch line comes after the checkpoint is registered.
        if not reported.wait(240):
            return
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            if glob.glob(str(out / "tune" / "train" / "*" / "checkpoint_*" / "progress.json")):
                workers = _train_workers()
                if workers:
                    workers[-1].kill()
                    killed.append(workers[-1].pid)
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    watcher.start()
    outcome = run_sweep(sweep, echo=echo, build_report=False)
    watcher.join(timeout=5)
    assert killed, "no Ray Train worker was found to kill"
    assert outcome.ok
    [meta] = metas(out)
    assert 1 <= meta["resumed_from"] < epochs  # restarted from an epoch checkpoint, not from scratch
    assert [h["epoch"] for h in meta["history"]] == list(range(1, epochs + 1))


@pytest.mark.slow
@pytest.mark.nightly
def test_two_worker_trial_spans_two_nodes(demo_root, tmp_path):
    from ray_cluster import start_cluster

    from lossyvision.runners.cluster import shutdown_ray
    from lossyvision.sweep.run import run_sweep

    shutdown_ray()
    cluster = start_cluster([{"trainer": 1}, {"trainer": 1}])
    try:
        out = tmp_path / "two-nodes"
        sweep = write_sweep(tmp_path / "nodes.yaml", demo_root, str(tmp_path / "store"), out, {"epochs": 1},
                            {"workers": 2, "custom": {"trainer": 1}})
        sweep.write_text(sweep.read_text().replace("max_failures: 1", "max_failures: 0"))
        outcome = run_sweep(sweep, echo=print, ray_address=cluster.address, build_report=False)
        assert outcome.ok
        [meta] = metas(out)
        ids = {n.node_id: n.name for n in cluster.nodes}
        assert sorted(ids[n] for n in meta["worker_nodes"]) == ["worker1", "worker2"]
        print("worker nodes:", [ids[n] for n in meta["worker_nodes"]])
    finally:
        shutdown_ray()
        cluster.stop()
