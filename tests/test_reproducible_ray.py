"""Same input, same answer: the demo data swept twice from two working folders into two outputs gives
equal numbers; an edited sweep retrains exactly the trials whose configuration changed.

Real everything: the demo dataset (built twice, in two places), JPEG XL, Ray Tune on a local 2-CPU Ray,
timm models, MLflow on SQLite, the report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.nightly]

METRIC_COLUMNS = ["value", "ci_low", "ci_high", "rel", "rel_low", "rel_high", "train_dcr", "test_dcr",
                  "train_dcr_raw", "test_dcr_raw", "n_train_images", "train_bytes", "n_test_images"]


@pytest.fixture(scope="module")
def ray_cluster():
    from lossyvision.runners.cluster import init_ray, shutdown_ray

    yield init_ray(num_cpus=2)
    shutdown_ray()


def sweep_dict(output: str, epochs_b: int = 2) -> dict:
    model = {"task": "classification", "arch": "resnet10t", "pretrained": False, "image_size": 32,
             "batch_size": 32, "weight_decay": 0.05}
    return {
        "name": "repro", "dataset": {"kind": "imagefolder", "root": "data/demo"},  # relative: per working folder
        "codec": {"name": "jpegxl", "effort": 3}, "train_levels": [0, 3], "test_levels": [0, 3],
        "models": [{"name": "a", **model, "epochs": 2, "lr": 0.003},
                   {"name": "b", **model, "epochs": epochs_b, "lr": 0.002}],
        "resources": {"trial": {"cpu": 1}, "eval": {"cpu": 1}}, "seed": 7, "max_failures": 0,
        "report": {"resamples": 500}, "output": output,
    }


def run_in(folder: Path, output: str, monkeypatch, **over):
    from lossyvision.demo import build_demo_dataset
    from lossyvision.sweep.run import run_sweep

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "data" / "demo").exists():
        build_demo_dataset(str(folder / "data" / "demo"))
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep_dict(output, **over)))
    monkeypatch.chdir(folder)
    return run_sweep("sweep.yaml", echo=lambda m: None)


def table(output: Path) -> pd.DataFrame:
    from lossyvision.sweep.results import read_results

    return read_results(str(output)).sort_values(["cell_id", "metric"]).reset_index(drop=True)


def test_the_same_sweep_twice_gives_the_same_numbers_and_an_edit_retrains_only_what_changed(
        ray_cluster, tmp_path, monkeypatch):
    first = run_in(tmp_path / "one", "runs/demo", monkeypatch)
    second = run_in(tmp_path / "two" / "deeper", "elsewhere/out", monkeypatch)
    assert first.ok and second.ok and first.trials_run == second.trials_run == 4
    a, b = table(tmp_path / "one" / "runs" / "demo"), table(tmp_path / "two" / "deeper" / "elsewhere" / "out")

    # The same keys (configuration hashes do not depend on where things are) and the same numbers.
    assert list(a.cell_id) == list(b.cell_id) and len(a) == 2 * 2 * 2 * 2
    diff = (a[METRIC_COLUMNS].astype(float) - b[METRIC_COLUMNS].astype(float)).abs().max()
    assert (diff <= 1e-6).all(), diff
    for cell_id in a.cell_id.unique():  # and the same predictions, image by image
        pa_, pb_ = (pd.read_parquet(root / "predictions" / f"{cell_id}.parquet")
                    for root in (tmp_path / "one" / "runs" / "demo", tmp_path / "two" / "deeper" / "elsewhere" / "out"))
        pd.testing.assert_frame_equal(pa_, pb_)
    assert first.verdict == second.verdict and first.verdict  # the same answer, stated first

    # Edit model b's epochs and rerun on the second output: b's two trials train anew, a's are reused.
    out = tmp_path / "two" / "deeper" / "elsewhere" / "out"
    plan_before = json.loads((out / "plan.json").read_text())
    a_keys = [t for t in plan_before["trials"] if t["model"] == "a"]
    a_meta = {(out / "checkpoints" / k).name: (out / "checkpoints" / k / "trial.json").stat().st_mtime_ns
              for k in os.listdir(out / "checkpoints") if k.startswith("a__")}
    edited = run_in(tmp_path / "two" / "deeper", "elsewhere/out", monkeypatch, epochs_b=3)
    assert edited.ok and edited.trials_run == 2 and edited.cells_run == 4
    plan_after = json.loads((out / "plan.json").read_text())
    assert [t for t in plan_after["trials"] if t["model"] == "a"] == a_keys
    for name, mtime in a_meta.items():  # a's checkpoints were not rewritten
        assert (out / "checkpoints" / name / "trial.json").stat().st_mtime_ns == mtime
    new_b = {t["config"] for t in plan_after["trials"] if t["model"] == "b"}
    old_b = {t["config"] for t in plan_before["trials"] if t["model"] == "b"}
    assert new_b and not new_b & old_b
    for t in plan_after["trials"]:
        if t["model"] == "b":
            meta = json.loads((out / "checkpoints" / f"b__jpegxl-{int(t['train_level'])}__r0__{t['config']}" /
                               "trial.json").read_text())
            assert len(meta["history"]) == 3  # trained with the edited epochs

    # The old b results stay on disk as stale; status lists them, the report and results use the current ones.
    from lossyvision.output import load_plan
    from lossyvision.report.build import analyse
    from lossyvision.sweep.status import stale_entries

    stale = stale_entries(str(out), load_plan(str(out)))
    assert len(stale.trials) == 2 and len(stale.cells) == 4 and all(k.startswith("b__") for k in stale.trials)
    current = {c["trial"]["config"] for c in plan_after["cells"]}
    rel = analyse(str(out)).rel
    assert len(rel) == 2 * 4 * 2 and set(rel["model"]) == {"a", "b"}
    assert all(cid.split("__")[3] in current for ids in rel["cell_ids"] for cid in ids)
    assert len(table(out)) == 16 + 8  # the stale rows are kept

    # MLflow: b's new trials are new runs; the edited configuration has its own parent, a's runs moved under it.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=edited.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("repro").experiment_id])
    parents = [r for r in runs if r.data.tags.get("lossyvision.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("lossyvision.role") == "trial"]
    assert len(parents) == 2 and len(children) == 6
    newest = next(p for p in parents if p.data.tags["lossyvision.plan"] == plan_digest(out))
    current_trials = {f"{t['model']}__jpegxl-{int(t['train_level'])}__r0__{t['config']}" for t in plan_after["trials"]}
    for c in children:
        if c.data.tags["lossyvision.trial"] in current_trials:
            assert c.data.tags["mlflow.parentRunId"] == newest.info.run_id
            assert c.data.params["config_hash"] == c.data.tags["lossyvision.config"]
    assert np.isfinite(a.value).all()


def plan_digest(out: Path) -> str:
    return json.loads((out / "plan.json").read_text())["digest"]
