"""The Kubernetes manifests and the container image, checked offline.

Each overlay renders with ``kubectl kustomize``; every rendered document validates (core kinds
against the Kubernetes OpenAPI schemas of ``kubernetes-validate``, Ray kinds against the KubeRay
v1.7 CRD's openAPIV3Schema, made strict so a misspelt field fails instead of being pruned); and
policy: non-root, no privilege, requests and limits everywhere, secrets only through secretKeyRef,
GPUs only on the GPU group, the bucket named in one place.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
OVERLAYS = ["local", "gpu"]
# Test ids avoid the bare word "gpu": conftest skips tests whose keywords contain the gpu marker's name.
OVERLAY_IDS = [f"overlay-{o}" for o in OVERLAYS]
KUBERNETES_VERSION = "1.32"
CRD_ENV = "LOSSYVISION_KUBERAY_CRDS"
SECRETISH = re.compile(r"PASSWORD|SECRET|KEY|TOKEN|CREDENTIAL", re.IGNORECASE)

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


def render(path: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return [d for d in yaml.load_all(out.stdout, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if d]


@pytest.fixture(scope="module", params=OVERLAYS, ids=OVERLAY_IDS)
def overlay(request) -> tuple[str, list[dict]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    return request.param, render(K8S / "overlays" / request.param)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def rayjob(docs: list[dict]) -> dict:
    (job,) = by_kind(docs, "RayJob")
    return job


# --- walking pod specs -----------------------------------------------------------------------
def pod_specs(node: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every pod spec (a mapping with a ``containers`` list) anywhere in a document."""
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield path, node
        for k, v in node.items():
            yield from pod_specs(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from pod_specs(v, f"{path}/{i}")


def containers(doc: dict) -> Iterator[tuple[str, dict, dict]]:
    """``(where, container, pod security context)`` for every container and init container."""
    for path, spec in pod_specs(doc):
        pod_sc = spec.get("securityContext") or {}
        for field in ("initContainers", "containers"):
            for c in spec.get(field) or []:
                yield f"{doc['kind']}/{doc['metadata']['name']}{path}/{field}/{c['name']}", c, pod_sc
    auto = doc.get("spec", {}).get("rayClusterSpec", {}).get("autoscalerOptions")
    if auto is not None:  # KubeRay injects the autoscaler sidecar with these settings
        yield f"{doc['kind']}/{doc['metadata']['name']}/autoscaler", auto, {}


# --- rendering and schema validation ---------------------------------------------------------
@needs_kubectl
@pytest.mark.parametrize("name", OVERLAYS, ids=OVERLAY_IDS)
def test_overlay_renders_the_expected_kinds(name):
    docs = render(K8S / "overlays" / name)
    kinds = sorted(d["kind"] for d in docs)
    for kind in ("Namespace", "RayJob", "Deployment", "Service", "StatefulSet", "ConfigMap"):
        assert kind in kinds, f"{name}: no {kind} in {kinds}"
    assert "Secret" not in kinds, f"{name}: overlays must not carry Secrets (k8s/secrets does)"
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] != "Namespace"} == {"lossyvision"}
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "mlflow") in names and ("StatefulSet", "postgres") in names
    assert (("Deployment", "minio") in names) == (name == "local")


def test_core_kinds_validate_against_the_kubernetes_schema(overlay):
    import kubernetes_validate

    name, docs = overlay
    core = [d for d in docs if not d["apiVersion"].startswith("ray.io/")]
    assert core
    for doc in core:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")


def strict(schema: Any) -> Any:
    """The CRD schema with ``additionalProperties: false`` on every closed object.

    The API server prunes unknown fields of a structural schema silently; this makes a misspelt
    field (``preRunningDeadline``) a validation error instead.
    """
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def crd_schemas() -> dict[str, dict]:
    root = os.environ.get(CRD_ENV)
    if not root:
        pytest.skip(f"{CRD_ENV} is not set: point it at the KubeRay v1.7 CRD folder "
                    "(ray.io_rayjobs.yaml, ray.io_rayclusters.yaml); .ci/run sets it")
    schemas = {}
    for f in sorted(Path(root).glob("*.yaml")):
        crd = yaml.load(f.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 2 MB files
        if crd.get("kind") != "CustomResourceDefinition":
            continue
        for v in crd["spec"]["versions"]:
            if v["name"] == "v1":
                schemas[crd["spec"]["names"]["kind"]] = strict(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
    assert "RayJob" in schemas, f"no RayJob v1 CRD in {root}"
    return schemas


def test_ray_kinds_validate_against_the_kuberay_crd(overlay, crd_schemas):
    import jsonschema

    name, docs = overlay
    ray_docs = [d for d in docs if d["apiVersion"].startswith("ray.io/")]
    assert ray_docs
    for doc in ray_docs:
        assert doc["apiVersion"] == "ray.io/v1"
        validator = jsonschema.Draft7Validator(crd_schemas[doc["kind"]])
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{name}: " + "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_strict_schema_catches_a_misspelt_field(crd_schemas):
    import jsonschema

    job = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "x"},
           "spec": {"entrypoint": "true", "preRunningDeadline": 60}}
    errors = list(jsonschema.Draft7Validator(crd_schemas["RayJob"]).iter_errors(job))
    assert any("preRunningDeadline" in e.message for e in errors)


# --- policy ----------------------------------------------------------------------------------
def test_every_container_is_locked_down(overlay):
    name, docs = overlay
    seen = 0
    for doc in docs:
        for where, c, pod_sc in containers(doc):
            seen += 1
            sc = c.get("securityContext") or {}
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot"
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            assert isinstance(uid, int) and uid > 0, f"{where}: runAsUser must be a non-root uid"
            assert sc.get("privileged") is False, f"{where}: privileged must be false"
            assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
            assert "ALL" in (sc.get("capabilities") or {}).get("drop", []), f"{where}: drop ALL capabilities"
            assert sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    assert r in (res.get(kind) or {}), f"{where}: no {kind}.{r}"
    # head, cpu workers, submitter, autoscaler, mlflow, postgres (+ gpu workers | minio and the seed)
    assert seen >= 7, f"{name}: only {seen} containers found"
    # the rest of the "restricted" Pod Security Standard: a seccomp profile, only these volume types
    for doc in docs:
        for path, spec in pod_specs(doc):
            where = f"{doc['kind']}/{doc['metadata']['name']}{path}"
            assert (spec.get("securityContext") or {}).get("seccompProfile") == {"type": "RuntimeDefault"}, where
            # no Kubernetes API token in pods, except the Ray head's: its autoscaler sidecar needs one
            wants_token = where.endswith("/rayClusterSpec/headGroupSpec/template/spec")
            assert spec.get("automountServiceAccountToken") is wants_token, f"{where}: automountServiceAccountToken"
            for volume in spec.get("volumes") or []:
                kinds = set(volume) - {"name"}
                assert kinds <= {"emptyDir", "configMap", "secret", "persistentVolumeClaim"}, f"{where}: {volume}"
            assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where


def test_no_literal_secrets(overlay):
    name, docs = overlay
    for doc in docs:
        for where, c, _ in containers(doc):
            for env in c.get("env") or []:
                if SECRETISH.search(env["name"]):
                    assert "value" not in env, f"{where}: {env['name']} has a literal value"
                    assert "secretKeyRef" in (env.get("valueFrom") or {}), f"{where}: {env['name']} not from a Secret"
        if doc["kind"] == "ConfigMap":
            for key, value in (doc.get("data") or {}).items():
                assert not SECRETISH.search(key), f"ConfigMap {doc['metadata']['name']}: {key} looks secret"
                for line in str(value).splitlines():
                    assert not re.match(r"\s*\w*(PASSWORD|SECRET_ACCESS|ACCESS_KEY_ID)\w*\s*[=:]", line), line


def test_gpu_resources_only_on_the_gpu_group(overlay):
    name, docs = overlay
    job = rayjob(docs)
    groups = {g["groupName"]: g for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    for doc in docs:
        for where, c, _ in containers(doc):
            res = c.get("resources") or {}
            if any("nvidia.com/gpu" in (res.get(k) or {}) for k in ("requests", "limits")):
                assert "/workerGroupSpecs/" in where and where.startswith("RayJob/"), where
                index = int(where.split("/workerGroupSpecs/")[1].split("/")[0])
                assert job["spec"]["rayClusterSpec"]["workerGroupSpecs"][index]["groupName"] == "gpu", where
    if name == "local":
        assert set(groups) == {"cpu"}, "the local overlay is CPU-only"
        return
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]
    worker = gpu["template"]["spec"]["containers"][0]  # KubeRay's Ray container is the first; sidecars follow
    assert worker["name"] == "ray-worker"
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == worker["resources"]["limits"]["nvidia.com/gpu"] >= 1
    tolerations = gpu["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 1, "the GPU group scales to zero"


def test_rayjob_lifecycle_bounds(overlay):
    name, docs = overlay
    spec = rayjob(docs)["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec["activeDeadlineSeconds"] > 0
    assert 0 < spec["preRunningDeadlineSeconds"] < spec["activeDeadlineSeconds"]
    assert spec["entrypoint"].startswith("lossyvision sweep run ")
    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["rayVersion"] == __import__("ray").__version__
    cpu = next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == "cpu")
    assert cpu["minReplicas"] < cpu["maxReplicas"], "the CPU group autoscales"


def test_images_are_pinned(overlay):
    _, docs = overlay
    for doc in docs:
        for where, c, _ in containers(doc):
            if "image" not in c:
                continue  # the autoscaler defaults to the head's image
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{where}: {image}"


def test_sweep_file_uses_the_bucket_and_is_valid(overlay):
    """The mounted sweep file expands with the overlay's storage environment into a valid sweep."""
    from lossyvision.spec import expand_env, parse_sweep

    name, docs = overlay
    cms = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap")}
    storage = cms["lossyvision-storage"]["data"]
    text = cms["lossyvision-sweep"]["data"]["sweep.yaml"]
    assert "${LOSSYVISION_BUCKET}" in text
    sweep = parse_sweep(yaml.safe_load(expand_env(text, storage)), source=f"{name}/sweep.yaml")
    bucket = storage["LOSSYVISION_BUCKET"]
    assert sweep.dataset.root.startswith(f"s3://{bucket}/")
    assert sweep.output.startswith(f"s3://{bucket}/")
    assert sweep.tracking.uri == "http://mlflow:5000"
    if name == "gpu":
        assert sweep.resources.trial.gpu >= 1
    else:
        assert sweep.resources.trial.gpu == 0


@pytest.mark.parametrize("name", OVERLAYS, ids=OVERLAY_IDS)
def test_bucket_is_named_in_one_place(name):
    storage = (K8S / "overlays" / name / "storage.env").read_text()
    bucket = re.search(r"^LOSSYVISION_BUCKET=(\S+)$", storage, re.M).group(1)
    holders = [p for p in K8S.rglob("*") if p.is_file() and bucket in p.read_text()]
    assert holders == [K8S / "overlays" / name / "storage.env"], holders


@needs_kubectl
def test_example_secret_generator_renders(tmp_path):
    shutil.copy(K8S / "secrets" / "kustomization.yaml", tmp_path)
    shutil.copy(K8S / "secrets" / "secrets.env.example", tmp_path / "secrets.env")
    (secret,) = render(tmp_path)
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "lossyvision-credentials"
    assert set(secret["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "POSTGRES_USER", "POSTGRES_PASSWORD",
                                   "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                                   "MLFLOW_FLASK_SERVER_SECRET_KEY"}
    example = (K8S / "secrets" / "secrets.env.example").read_text()
    assert "CHANGE_ME" in example
    assert "secrets.env" in (K8S / "secrets" / ".gitignore").read_text().split()
    # every key the manifests read exists in the Secret
    for overlay_name in OVERLAYS:
        for doc in render(K8S / "overlays" / overlay_name):
            for where, c, _ in containers(doc):
                for env in c.get("env") or []:
                    ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        assert ref["name"] == "lossyvision-credentials", where
                        assert ref["key"] in secret["data"], f"{where}: {ref['key']}"


# --- the container image -----------------------------------------------------------------------
def test_dockerfile_starts_from_a_pinned_official_ray_image():
    import ray

    text = (REPO / "docker" / "Dockerfile").read_text()
    default = re.search(r"^ARG RAY_IMAGE=(\S+)$", text, re.M)
    assert default, "the Dockerfile names its base image in ARG RAY_IMAGE"
    assert re.search(r"^FROM \$\{RAY_IMAGE\}$", text, re.M)
    image = default.group(1)
    assert image.startswith("rayproject/ray:"), image
    tag = image.split(":", 1)[1]
    assert re.fullmatch(rf"{re.escape(ray.__version__)}-py3\d+-(gpu|cpu|cu\d+)", tag), \
        f"{image} must pin the installed Ray {ray.__version__}"
    assert re.search(r"^USER 1000:100$", text, re.M), "the image runs as the non-root ray user"
    assert 'pip install --no-cache-dir ".[s3]"' in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
