"""``lossyvision submit``: the plain helpers (fast), then real jobs on a real ``ray start --head``.

The Ray tests submit through Ray's Job Submission API to a 2-CPU head on 127.0.0.1 started by
this module (token auth off), and check what the job leaves behind: the results table and the
MLflow runs of the demo sweep (sweeps/demo.yaml on smaller settings).
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from lossyvision import submit as submission  # noqa: E402
# Import Ray now, outside CliRunner: Ray's log handler binds to the sys.stderr of its first import,
# and CliRunner closes its stand-in stream after each invoke.
import lossyvision.runners.submit  # noqa: E402,F401
from lossyvision.cli import app  # noqa: E402

runner = CliRunner()


def tiny_sweep(tmp: Path, root: str, *, levels=(0, 4), name: str = "tiny-submit") -> Path:
    sweep = {
        "name": name,
        "dataset": {"kind": "imagefolder", "root": str(root)},
        "codec": {"name": "jpegxl", "effort": 1},
        "train_levels": [levels[0]],
        "test_levels": list(levels),
        "models": [{"name": "rn", "task": "classification", "arch": "resnet10t", "epochs": 1,
                    "batch_size": 4, "image_size": 32}],
        "output": str(tmp / "out"),
    }
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


# --- fast: the plain helpers -------------------------------------------------------------------
def test_normalize_address():
    assert submission.normalize_address("127.0.0.1:8265") == "http://127.0.0.1:8265"
    assert submission.normalize_address("https://ray.example.com/") == "https://ray.example.com"
    with pytest.raises(submission.SubmitError, match="--address"):
        submission.normalize_address(None)
    with pytest.raises(submission.SubmitError, match="dashboard's HTTP address"):
        submission.normalize_address("ray://head:10001")


def test_auth_headers_from_token_env():
    assert submission.auth_headers({}) == {}
    assert submission.auth_headers({"RAY_AUTH_TOKEN": " abc "}) == {"Authorization": "Bearer abc"}


def test_parse_env_pairs():
    assert submission.parse_env_pairs(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    for bad in ("novalue", "=x", "1A=2"):
        with pytest.raises(submission.SubmitError, match="NAME=VALUE"):
            submission.parse_env_pairs([bad])


def test_entrypoint_and_runtime_env(tmp_path):
    sweep = tmp_path / "my sweep.yaml"
    sweep.write_text("name: x\n")
    staging = tmp_path / "staging"
    staging.mkdir()
    name = submission.stage_sweep(sweep, staging)
    assert (staging / name).read_text() == "name: x\n"
    assert submission.entrypoint(name) == "lossyvision sweep run 'my sweep.yaml'"
    env = submission.build_runtime_env(str(staging), env_vars={"A": 1})
    assert env == {"working_dir": str(staging), "env_vars": {"A": "1"}}
    shipped = submission.build_runtime_env(str(staging), ship_code=True)["py_modules"]
    assert len(shipped) == 1 and (Path(shipped[0]) / "cli.py").is_file()


def test_check_sweep_file_accepts_cluster_only_paths_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("LV_TEST_BUCKET", raising=False)
    path = tiny_sweep(tmp_path, "/data/only/on/the/cluster")
    assert submission.check_sweep_file(path) == "tiny-submit"
    text = path.read_text().replace("/data/only/on/the/cluster", "s3://${LV_TEST_BUCKET}/datasets/x")
    path.write_text(text)
    assert submission.check_sweep_file(path) == "tiny-submit"


def test_check_sweep_file_rejects_real_problems(tmp_path):
    with pytest.raises(submission.SubmitError, match="does not exist"):
        submission.check_sweep_file(tmp_path / "missing.yaml")
    path = tiny_sweep(tmp_path, "/data/x")
    path.write_text(path.read_text() + "epochz: 3\n")
    with pytest.raises(submission.SubmitError, match="epochz: unknown field"):
        submission.check_sweep_file(path)
    path.write_text("name: [unclosed\n")
    with pytest.raises(submission.SubmitError, match="not valid YAML"):
        submission.check_sweep_file(path)


def test_submission_name_is_the_sweep_plus_a_short_id():
    names = {submission.submission_name("food101-vit") for _ in range(50)}
    assert len(names) == 50 and all(re.fullmatch(r"food101-vit-[a-z0-9]{6}", n) for n in names)
    assert submission.submission_name("Demo Sweep_2", "abc123") == "demo-sweep-2-abc123"
    assert submission.submission_name("2024 grid", "abc123") == "sweep-2024-grid-abc123"  # starts with a letter
    long = submission.submission_name("x" * 100, "abc123")
    assert len(long) == 47 and long.endswith("-abc123")  # KubeRay's RayJob name limit
    for name in ("---", "é", "a.b/c", "A" * 60 + "-"):
        assert re.fullmatch(r"[a-z]([-a-z0-9]{0,45}[a-z0-9])?", submission.submission_name(name)), name


def test_format_status_and_exit_code():
    text = submission.format_status({"submission_id": "raysubmit_1", "status": "FAILED", "entrypoint": "x",
                                     "start_time": 1_700_000_000_000, "end_time": 1_700_000_002_500,
                                     "message": "boom"})
    assert "raysubmit_1" in text and "FAILED" in text and "2.5 s" in text and "boom" in text
    assert "2023-11-14 22:13:20 UTC" in text
    assert [submission.exit_code(s) for s in ("SUCCEEDED", "RUNNING", "PENDING", "FAILED", "STOPPED")] == [0, 0, 0, 1, 1]


def test_cli_needs_exactly_one_action():
    result = runner.invoke(app, ["submit", "--address", "http://127.0.0.1:1"])
    assert result.exit_code == 2 and "exactly one of" in result.output
    result = runner.invoke(app, ["submit", "x.yaml", "--status", "j", "--address", "http://127.0.0.1:1"])
    assert result.exit_code == 2 and "exactly one of" in result.output


def test_cli_unreachable_server_is_a_clear_error(tmp_path):
    sweep = tiny_sweep(tmp_path, "/data/x")
    result = runner.invoke(app, ["submit", str(sweep), "--address", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "cannot reach the Ray job server at http://127.0.0.1:9" in result.output


# --- Ray: real jobs on a real head ---------------------------------------------------------------
@pytest.fixture(scope="module")
def head():
    from ray_head import start_head

    h = start_head(num_cpus=2)
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "demo"
    result = runner.invoke(app, ["demo-data", str(root)])
    assert result.exit_code == 0, result.output
    return root


def demo_sweep(tmp: Path, data: Path) -> Path:
    """sweeps/demo.yaml as shipped, on smaller settings: 2 cells, 1 epoch, 18 images per split, effort 1."""
    sweep = yaml.safe_load((Path(__file__).parents[1] / "sweeps" / "demo.yaml").read_text())
    sweep["dataset"]["root"] = str(data)
    sweep["output"] = str(tmp / "out")
    sweep["codec"]["effort"] = 1
    sweep["train_levels"], sweep["test_levels"] = [0], [0, 8]
    sweep.pop("seed_spread", None)  # one training: the job's plumbing is under test, not the verdict
    sweep["limit_per_split"] = 18
    for model in sweep["models"]:
        model["epochs"] = 1
    path = tmp / "demo.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def job_id_of(output: str) -> str:
    match = re.search(r"submitted job (\S+)", output)
    assert match, output
    return match.group(1)


@pytest.mark.ray
@pytest.mark.timeout(600)
@pytest.mark.nightly
def test_submit_runs_the_demo_sweep_and_streams_its_logs(head, demo_data, tmp_path):
    sweep = demo_sweep(tmp_path, demo_data)
    result = runner.invoke(app, ["submit", str(sweep), "--address", head.address])
    assert result.exit_code == 0, result.output
    job_id = job_id_of(result.output)
    assert "sweep done" in result.output  # the driver's log lines came back through tail_job_logs
    assert result.output.rstrip().splitlines()[-1].startswith(f"job {job_id}: SUCCEEDED")

    results = pd.read_parquet(tmp_path / "out" / "results.parquet")
    cells = results[["model", "train_level", "test_level", "repeat"]].drop_duplicates()
    assert len(cells) == 2 and set(cells["test_level"]) == {0.0, 8.0}  # one row per (cell, metric)
    assert "top1" in set(results["metric"])
    with sqlite3.connect(tmp_path / "out" / "mlflow.db") as db:
        runs = db.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0]
    assert runs >= 1

    status = runner.invoke(app, ["submit", "--status", job_id, "--address", head.address])
    assert status.exit_code == 0 and "SUCCEEDED" in status.output and "lossyvision sweep run" in status.output


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_failed_job_exits_nonzero(head, tmp_path):
    # Valid to the client (the root may exist on the cluster's disks); the job fails on the cluster.
    from lossyvision.runners.submit import job_info

    sweep = tiny_sweep(tmp_path, tmp_path / "no-such-dataset")
    result = runner.invoke(app, ["submit", str(sweep), "--address", head.address, "--ship-code",
                                 "--env", "LV_SUBMIT_TEST=1"])
    assert result.exit_code == 1, result.output
    assert re.search(r"job \S+: FAILED", result.output)
    assert "does not exist" in result.output  # the driver's own error, streamed back
    job_id = job_id_of(result.output)
    assert re.fullmatch(r"tiny-submit-[a-z0-9]{6}", job_id), "the job is named after its sweep, plus a short id"
    info = job_info(head.address, job_id)
    assert info["submission_id"] == job_id and info["metadata"] == {"lossyvision_sweep": "tiny-submit"}
    runtime_env = info["runtime_env"]
    assert runtime_env["env_vars"] == {"LV_SUBMIT_TEST": "1"}
    assert len(runtime_env["py_modules"]) == 1  # this checkout's package went with the job


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_no_wait_then_status_and_stop(head, demo_data, tmp_path):
    sweep = demo_sweep(tmp_path, demo_data)
    result = runner.invoke(app, ["submit", str(sweep), "--address", head.address, "--no-wait"])
    assert result.exit_code == 0, result.output
    job_id = job_id_of(result.output)
    status = runner.invoke(app, ["submit", "--status", job_id, "--address", head.address])
    assert status.exit_code == 0 and re.search(r"status:\s+(PENDING|RUNNING)", status.output), status.output

    stop = runner.invoke(app, ["submit", "--stop", job_id, "--address", head.address])
    assert stop.exit_code == 0 and "stop requested" in stop.output
    deadline = time.monotonic() + 60
    while True:
        status = runner.invoke(app, ["submit", "--status", job_id, "--address", head.address])
        if "STOPPED" in status.output or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status.exit_code == 1 and re.search(r"status:\s+STOPPED", status.output), status.output

    unknown = runner.invoke(app, ["submit", "--status", "raysubmit_nope", "--address", head.address])
    assert unknown.exit_code == 2 and "raysubmit_nope" in unknown.output


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_driver_that_joined_a_cluster_passes_its_workers_absolute_paths(head, tmp_path):
    """`lossyvision compress --source data --out store` with RAY_ADDRESS: the cluster's workers run in
    another folder, where the relative paths name nothing (every image failed "file not found")."""
    from badimages import jpeg_bytes, photo

    for i in range(3):
        d = tmp_path / "data" / "train" / "cat"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}.jpg").write_bytes(jpeg_bytes(photo("chelsea", (48 + 8 * i, 40))))
    env = {**head.env, "RAY_ADDRESS": head.gcs}
    out = subprocess.run([str(Path(sys.executable).with_name("lossyvision")), "compress", "--source", "data",
                          "--out", "store", "--levels", "1", "--effort", "1"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    m = pd.read_parquet(tmp_path / "store" / "manifest.parquet")
    assert len(m) == 3 and (m.status == "ok").all(), m[["relpath", "status", "error"]]
    assert all((tmp_path / "store" / p).is_file() for p in m.output_path)  # written where the driver said
    assert set(m.node) == {head_node_id(head)}  # by the cluster's workers, not a Ray of its own


def head_node_id(h) -> str:
    import ray

    ray.init(address=h.gcs, log_to_driver=False)
    try:
        return ray.get_runtime_context().get_node_id()
    finally:
        ray.shutdown()


@pytest.mark.slow  # starts a Ray head (`ray start`) with token auth: not for the fast tier
@pytest.mark.nightly
def test_token_auth_cluster_takes_the_token_from_ray_auth_token():
    from ray_head import start_head

    token = "lossyvision-test-token-0123456789"
    secured = start_head(num_cpus=1, auth_token=token)
    try:
        args = ["submit", "--status", "raysubmit_nope", "--address", secured.address]
        refused = runner.invoke(app, args, env={"RAY_AUTH_TOKEN": None})
        assert refused.exit_code == 2 and "set RAY_AUTH_TOKEN" in refused.output, refused.output
        wrong = runner.invoke(app, args, env={"RAY_AUTH_TOKEN": "not-the-token"})
        assert wrong.exit_code == 2 and "token in RAY_AUTH_TOKEN was refused" in wrong.output, wrong.output
        accepted = runner.invoke(app, args, env={"RAY_AUTH_TOKEN": token})
        # past authentication: the server itself answers that the job does not exist
        assert accepted.exit_code == 2 and "raysubmit_nope does not exist" in accepted.output, accepted.output
    finally:
        secured.stop()
