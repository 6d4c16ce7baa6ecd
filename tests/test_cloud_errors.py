"""A cloud URL that cannot be used is one line naming it and what to set, exit 2, never a traceback:
no credentials, an unreachable endpoint (fast: nothing listens on 127.0.0.1:9), and against moto's
real S3 server a missing bucket and denied access; ``inspect`` tells "not found" from "cannot reach"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from lossyvision.cli import app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLATFORM = str(ROOT / "platform")
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once

#: The README's and bundled sweep files' commands that touch s3:// (run from the repository root).
COMMANDS = {
    "plan csv-list": ["sweep", "plan", "sweeps/csv-list.yaml", "--sample", "1"],
    "plan webdataset": ["sweep", "plan", "sweeps/webdataset.yaml", "--sample", "1"],
    "compress csv": ["compress", "--kind", "csv", "--source", "s3://my-bucket/lists/products.csv", "--out", "OUT"],
    "inspect webdataset": ["inspect", "s3://my-bucket/shards", "--kind", "webdataset"],
    "inspect --sweep": ["inspect", "--sweep", "sweeps/csv-list.yaml"],
    "status": ["sweep", "status", "s3://my-bucket/runs/products"],
    "advise": ["advise", "s3://my-bucket/runs/products"],
}


def _aws_env(monkeypatch, **values: str) -> None:
    """Only the given AWS variables, no profile or metadata service, one attempt per request."""
    import s3fs

    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()


def _run(monkeypatch, tmp_path, args: list[str]):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////nonexistent/mlflow.db")
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    return CliRunner().invoke(app, args)


def _one_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: s3://my-bucket/"), result.output
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=list(COMMANDS))
def test_no_credentials_is_one_line_naming_the_url_and_the_variables(monkeypatch, tmp_path, command):
    _aws_env(monkeypatch)
    line = _one_line(_run(monkeypatch, tmp_path, COMMANDS[command]))
    assert "no credentials found" in line and "AWS_ACCESS_KEY_ID" in line and "AWS_SECRET_ACCESS_KEY" in line
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("command", COMMANDS, ids=list(COMMANDS))
def test_unreachable_endpoint_is_one_line_naming_the_endpoint_variable(monkeypatch, tmp_path, command):
    _aws_env(monkeypatch, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_DEFAULT_REGION="us-east-1",
             AWS_ENDPOINT_URL=UNREACHABLE)
    line = _one_line(_run(monkeypatch, tmp_path, COMMANDS[command]))
    assert "cannot reach the endpoint" in line and f"AWS_ENDPOINT_URL (now {UNREACHABLE})" in line
    assert not (tmp_path / "out").exists()


def test_the_real_command_prints_no_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(PYTHONPATH=PLATFORM, AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent",
               AWS_EC2_METADATA_DISABLED="true")
    r = subprocess.run([sys.executable, "-m", "lossyvision.cli", "sweep", "plan", "sweeps/csv-list.yaml"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: s3://my-bucket/runs/products/") and "AWS_ACCESS_KEY_ID" in line


def test_classify_tells_a_cloud_error_from_a_local_one():
    import errno

    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    from lossyvision.cloud import classify, cloud_error

    assert classify(NoCredentialsError())[0] == "credentials"
    assert classify(EndpointConnectionError(endpoint_url="http://x"))[0] == "endpoint"
    assert classify(PermissionError("Forbidden"))[0] == "denied"  # what s3fs makes of a 403
    assert classify(FileNotFoundError("The specified bucket does not exist"))[0] == "bucket"
    local = PermissionError(errno.EACCES, "Permission denied", "/etc/shadow")
    assert classify(local) is None and classify(FileNotFoundError(errno.ENOENT, "No such file", "/x")) is None
    assert classify(ValueError("a bug")) is None
    err = cloud_error(NoCredentialsError(), "gs://b/x")
    assert "gs://b/x" in str(err) and "GOOGLE_APPLICATION_CREDENTIALS" in str(err)


# --- against moto's S3 server --------------------------------------------------------------------
@pytest.fixture(scope="module")
def moto_server():
    from moto_s3 import moto_s3

    with moto_s3("lossyvision-cloud-errors") as endpoint:
        yield endpoint


def _moto_env(monkeypatch, endpoint: str) -> None:
    _aws_env(monkeypatch, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
             AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=list(COMMANDS))
def test_missing_bucket_is_one_line_not_a_plain_not_found(monkeypatch, tmp_path, moto_server, command):
    _moto_env(monkeypatch, moto_server)  # my-bucket does not exist on the server
    line = _one_line(_run(monkeypatch, tmp_path, COMMANDS[command]))
    assert "the bucket does not exist" in line and "create the bucket" in line, line


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=list(COMMANDS))
def test_denied_access_is_one_line(monkeypatch, tmp_path, moto_server, command):
    import moto.settings

    _moto_env(monkeypatch, moto_server)
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys: "testing" is unknown
    line = _one_line(_run(monkeypatch, tmp_path, COMMANDS[command]))
    assert "access denied" in line and "AWS_ACCESS_KEY_ID" in line, line


@pytest.mark.slow
def test_inspect_tells_not_found_from_cannot_reach(monkeypatch, tmp_path, moto_server):
    import s3fs

    _moto_env(monkeypatch, moto_server)
    s3fs.S3FileSystem().mkdir("my-bucket")
    try:
        r = _run(monkeypatch, tmp_path, COMMANDS["inspect --sweep"])
        assert r.exit_code == 2 and r.output.strip() == "error: csv: s3://my-bucket/lists/products.csv not found"
        r = _run(monkeypatch, tmp_path, COMMANDS["inspect webdataset"])
        assert r.exit_code == 2 and "s3://my-bucket/shards not found" in r.output
    finally:
        s3fs.S3FileSystem().rm("my-bucket", recursive=True)
