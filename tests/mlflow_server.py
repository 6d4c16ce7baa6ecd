"""A real ``mlflow server`` on 127.0.0.1 for tests, optionally with moto's S3 as its artifact store.

The server proxies artifacts (``mlflow-artifacts:/``): clients upload over HTTP and only the server
holds S3 credentials, as on a cluster. moto runs in this process (``ThreadedMotoServer``); the
server process reaches it through the standard AWS variables and ``MLFLOW_S3_ENDPOINT_URL``.
Teardown ends the server's process group, never anything by name.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ray_head import free_port


@dataclass
class S3:
    endpoint: str
    bucket: str
    env: dict[str, str]

    def keys(self, prefix: str = "") -> list[str]:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@contextmanager
def moto_s3(bucket: str = "mlflow-artifacts") -> Iterator[S3]:
    """moto's S3 server on a free port with one bucket (this process's AWS variables untouched)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint}
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=bucket)
        yield S3(endpoint, bucket, env)
    finally:
        server.stop()


def start_mlflow_server(db: Path, port: int, log: Path, artifacts: str | None = None,
                        env: dict[str, str] | None = None) -> subprocess.Popen:
    """``mlflow server`` on SQLite ``db``, artifacts proxied to ``artifacts`` (default: a folder beside it)."""
    run_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
         "--artifacts-destination", artifacts or str(db.parent / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env=run_env, start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            break
    stop(proc)
    raise RuntimeError(f"mlflow server did not start: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
