"""MLflow behind its basic-auth app, run from the rendered gpu overlay's own command lines.

The MLflow container's command, arguments and environment, and the mlflow-db-upgrade Job's command,
are taken from ``kubectl kustomize k8s/overlays/gpu`` and run here, with SQLite in place of PostgreSQL
and a folder in place of the bucket: the options are the installed MLflow's real ones, the Secret's
keys are the ones the pods read, and the Ray pods' variables are what MLflow's client signs in with.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from mlflow_server import stop  # noqa: E402  (a server's process group: TERM, then KILL)

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "k8s" / "overlays" / "gpu"
POSTGRES_URI = "postgresql://postgres:5432/mlflow"
# What k8s/secrets/secrets.env would hold (the example's keys, test values).
SECRET = {"MLFLOW_TRACKING_USERNAME": "lossyvision", "MLFLOW_TRACKING_PASSWORD": "a-long-test-password",
          "MLFLOW_FLASK_SERVER_SECRET_KEY": "0123456789abcdef", "POSTGRES_USER": "mlflow",
          "POSTGRES_PASSWORD": "unused-here", "AWS_ACCESS_KEY_ID": "unused", "AWS_SECRET_ACCESS_KEY": "unused"}

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")]


def rendered() -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(GPU)], capture_output=True, text=True, timeout=60, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def resolve_env(container: dict, configmaps: dict[str, dict]) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: ConfigMaps, Secret keys, literal values."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"])
        elif "secretKeyRef" in item.get("valueFrom", {}):
            env[item["name"]] = SECRET[item["valueFrom"]["secretKeyRef"]["key"]]
    return env


def free_port() -> int:
    from ray_head import free_port as pick

    return pick()


def request(url: str, *, auth: tuple[str, str] | None = None, body: dict | None = None) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:  # not listening yet
        return 0


@pytest.mark.timeout(300)
def test_mlflow_asks_for_the_secret_account_and_ray_pods_have_it(tmp_path):
    docs = rendered()
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    env = resolve_env(server, configmaps)

    # basic_auth.ini as mounted, with SQLite for the accounts
    config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"])
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"]
                 if any(m["name"] == v["name"] and m["mountPath"] == str(config_path.parent)
                        for m in server["volumeMounts"])]
    ini = configmaps[volume["configMap"]["name"]]["data"][config_path.name]
    assert POSTGRES_URI in ini
    (tmp_path / "basic_auth.ini").write_text(ini.replace(POSTGRES_URI, f"sqlite:///{tmp_path / 'mlflow.db'}"))
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(tmp_path / "basic_auth.ini")
    env["HOME"] = str(tmp_path)

    port = free_port()
    args = []
    for arg in server["args"]:
        name = arg.split("=", 1)[0]
        replaced = {"--host": "--host=127.0.0.1", "--port": f"--port={port}",
                    "--backend-store-uri": f"--backend-store-uri=sqlite:///{tmp_path / 'mlflow.db'}",
                    "--artifacts-destination": f"--artifacts-destination={tmp_path / 'artifacts'}"}
        args.append(replaced.get(name, arg))
    assert server["command"] == ["mlflow", "server"] and "--app-name=basic-auth" in args
    log = tmp_path / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", *args], env={**os.environ, **env},
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while request(f"{base}/health") != 200:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        account = (SECRET["MLFLOW_TRACKING_USERNAME"], SECRET["MLFLOW_TRACKING_PASSWORD"])
        search = f"{base}/api/2.0/mlflow/experiments/search?max_results=5"
        assert request(search) == 401, "MLflow answers anonymous requests"
        assert request(search, auth=(account[0], "not-the-password")) == 401
        assert request(search, auth=account) == 200
        assert request(f"{base}/health") == 200  # probes need no account

        # A Ray container's own environment signs MLflow's client in.
        job = next(d for d in docs if d["kind"] == "RayJob")
        worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][-1]["template"]["spec"]["containers"][0]
        ray_env = resolve_env(worker, configmaps)
        assert ray_env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        ray_env["MLFLOW_TRACKING_URI"] = base
        client = ("import mlflow; c = mlflow.MlflowClient(); e = c.create_experiment('from-a-ray-pod'); "
                  "r = c.create_run(e); c.log_metric(r.info.run_id, 'x', 1.0); print('logged', r.info.run_id)")
        out = subprocess.run([sys.executable, "-c", client], env={**os.environ, **ray_env, "HOME": str(tmp_path)},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "logged" in out.stdout, out.stderr[-3000:]
        anonymous = {k: v for k, v in ray_env.items() if not k.startswith("MLFLOW_TRACKING_") or k.endswith("URI")}
        out = subprocess.run([sys.executable, "-c", client],
                             env={**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")},
                                  **anonymous, "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=120)
        assert out.returncode != 0 and "401" in out.stderr, "without the Secret's account the client is refused"
    finally:
        stop(proc)


@pytest.mark.timeout(300)
def test_upgrade_job_creates_both_schemas(tmp_path):
    """The mlflow-db-upgrade Job's command on an empty database: MLflow's tables and the accounts' tables."""
    docs = rendered()
    job = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "mlflow-db-upgrade")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    command = [part.replace(POSTGRES_URI, f"sqlite:///{tmp_path / 'mlflow.db'}") for part in container["command"]]
    bin_dir = str(Path(sys.executable).parent)  # `mlflow` and `python` as the image has them
    out = subprocess.run(command, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)},
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    assert {"alembic_version", "experiments", "runs", "metrics"} <= tables
    assert {"alembic_version_auth", "users", "experiment_permissions"} <= tables
