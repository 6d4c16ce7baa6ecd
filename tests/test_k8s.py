"""The Kubernetes manifests and the container image, checked offline.

Each overlay renders with ``kubectl kustomize``; every rendered document validates (core kinds
against the Kubernetes OpenAPI schemas of ``kubernetes-validate``, Ray kinds against the KubeRay
v1.7 CRD's openAPIV3Schema, made strict so a misspelt field fails instead of being pruned); and
policy: non-root, no privilege, requests and limits everywhere, secrets only through secretKeyRef,
GPUs only on the GPU group, the bucket named in one place.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
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
    # Worker groups start at 0 pods: the resource check must wait for the autoscaler, not refuse.
    assert "--wait-for-nodes" in spec["entrypoint"].split()
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


# --- what a cluster admin needs: placement, policies, auth, disruption, upgrades, queueing --------
GPU = K8S / "overlays" / "gpu"
NAMESPACE = "lossyvision"


def at(doc: Any, pointer: str) -> Any:
    """The value at a JSON pointer (RFC 6901) in ``doc``."""
    for part in pointer.lstrip("/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def ray_pod_templates(job: dict) -> dict[str, dict]:
    """``{"head": template, "cpu": template, ...}``: the Ray pod templates of a RayJob."""
    cluster = job["spec"]["rayClusterSpec"]
    out = {"head": cluster["headGroupSpec"]["template"]}
    out.update({g["groupName"]: g["template"] for g in cluster["workerGroupSpecs"]})
    return out


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env") or []}


def secret_key(env: dict) -> str | None:
    return ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("key")


def crd_errors(schemas: dict[str, dict] | None, doc: dict) -> list[str]:
    """Validation errors of a Ray kind against the KubeRay CRD; none checked when the CRDs are not at hand."""
    import jsonschema

    if schemas is None:
        return []
    validator = jsonschema.Draft7Validator(schemas[doc["kind"]])
    return [f"{list(e.path)}: {e.message}" for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path))]


def crd_schemas_if_set(request) -> dict[str, dict] | None:
    """The CRD schemas, or None without LOSSYVISION_KUBERAY_CRDS (the rest of a test still runs)."""
    try:
        return request.getfixturevalue("crd_schemas")
    except pytest.skip.Exception:
        return None


def render_with_components(tmp_path: Path, overlay_name: str, components: list[str]) -> list[dict]:
    """An overlay rendered with extra components in its own ``components:`` list, as an admin adds them.

    A copy of k8s/ is edited, so the overlay's patches still run after the components (overlays/local
    removes the gpu group after components patched it).
    """
    root = tmp_path / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("secrets.env"))
    path = root / "overlays" / overlay_name / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    kustomization["components"] = list(kustomization.get("components") or []) + [
        f"../../components/{c}" for c in components]
    path.write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return render(path.parent)


def test_gpu_placement_and_priority_come_from_one_patch_file():
    """placement.yaml sets the GPU group's nodeSelector, tolerations and every Ray pod's priority class."""
    job = rayjob(render(GPU))
    ops = yaml.safe_load((GPU / "placement.yaml").read_text())
    assert ops and all(op["op"] in ("add", "replace") for op in ops)
    for op in ops:
        assert at(job, op["path"]) == op["value"], op["path"]
    gpu = next(g for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    spec = gpu["template"]["spec"]
    assert spec["nodeSelector"], "GPU workers go to GPU nodes only"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    (priority_class,) = render(K8S / "cluster")
    classes = {name: t["spec"].get("priorityClassName") for name, t in ray_pod_templates(job).items()}
    classes["submitter"] = job["spec"]["submitterPodTemplate"]["spec"].get("priorityClassName")
    assert set(classes.values()) == {priority_class["metadata"]["name"]}, classes
    # the one place: nothing else in the manifests names node selectors or priority classes
    for path in K8S.rglob("*.yaml"):
        if path != GPU / "placement.yaml":
            text = path.read_text()
            assert "nodeSelector" not in text and "priorityClassName" not in text, path


@needs_kubectl
def test_cluster_scoped_priority_class_validates():
    import kubernetes_validate

    (pc,) = render(K8S / "cluster")
    assert pc["kind"] == "PriorityClass" and "namespace" not in pc["metadata"]
    assert pc["preemptionPolicy"] == "Never" and pc["globalDefault"] is False and pc["value"] > 0
    kubernetes_validate.validate(pc, KUBERNETES_VERSION, strict=True)


def test_worker_group_sizes_are_consistent(overlay):
    """KubeRay rejects a group whose minReplicas exceeds maxReplicas; replicas starts between them."""
    _, docs = overlay
    for group in rayjob(docs)["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]


# NetworkPolicies, evaluated: which pod may open a connection to which, on which port.
@dataclass(frozen=True)
class Endpoint:
    labels: dict
    namespace: str | None = NAMESPACE
    ip: str | None = None  # set for addresses outside the cluster

    @property
    def namespace_labels(self) -> dict:
        return {"kubernetes.io/metadata.name": self.namespace} if self.namespace else {}


def selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def peer_matches(peer: dict, endpoint: Endpoint) -> bool:
    if "ipBlock" in peer:
        if endpoint.ip is None:
            return False
        ip = ipaddress.ip_address(endpoint.ip)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except") or [])
    if endpoint.ip is not None:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], endpoint.namespace_labels):
            return False
    elif endpoint.namespace != NAMESPACE:
        return False
    return selects(peer.get("podSelector") or {}, endpoint.labels)


def policy_allows(policies: list[dict], direction: str, pod: Endpoint, other: Endpoint, port: int,
                  protocol: str) -> bool:
    """Whether ``pod`` (in the namespace) may send to (Egress) or receive from (Ingress) ``other``."""
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    selecting = [p["spec"] for p in policies if selects(p["spec"]["podSelector"], pod.labels)
                 and direction in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True  # a pod no policy selects is not isolated
    for spec in selecting:
        for rule in spec.get(key) or []:
            peers = rule.get(peers_key)
            ports = rule.get("ports")
            if peers and not any(peer_matches(p, other) for p in peers):
                continue
            if ports and not any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port)
                                 for p in ports):
                continue
            return True
    return False


def connects(policies: list[dict], src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
    egress = src.ip is not None or src.namespace != NAMESPACE or policy_allows(
        policies, "Egress", src, dst, port, protocol)
    ingress = dst.ip is not None or dst.namespace != NAMESPACE or policy_allows(
        policies, "Ingress", dst, src, port, protocol)
    return egress and ingress


def pods_of(docs: list[dict]) -> dict[str, Endpoint]:
    """The pods the rendered workloads create, with the labels KubeRay adds to Ray pods."""
    pods = {}
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            pods[doc["metadata"]["name"]] = Endpoint(doc["spec"]["template"]["metadata"]["labels"])
        if doc["kind"] == "RayJob":
            pods["submitter"] = Endpoint(doc["spec"]["submitterPodTemplate"]["metadata"]["labels"])
            for group, template in ray_pod_templates(doc).items():
                kuberay = {"ray.io/is-ray-node": "yes", "ray.io/node-type": "head" if group == "head" else "worker",
                           "ray.io/group": "headgroup" if group == "head" else group}
                pods[f"ray-{group}"] = Endpoint({**template["metadata"]["labels"], **kuberay})
    return pods


@pytest.fixture(scope="module", params=["gpu", "local"], ids=["overlay-gpu", "overlay-local-with-policies"])
def policy_render(request, tmp_path_factory) -> tuple[str, list[dict]]:
    """overlays/gpu as shipped, and overlays/local with the network-policies component (its MinIO is real)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    if request.param == "gpu":
        return "gpu", render(GPU)
    return "local", render_with_components(tmp_path_factory.mktemp("policies"), "local", ["network-policies"])


def test_network_policies_allow_only_what_the_sweep_needs(policy_render):
    name, docs = policy_render
    policies = by_kind(docs, "NetworkPolicy")
    assert {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]} in [p["spec"] for p in policies], \
        "default-deny for the whole namespace"
    pods = pods_of(docs)
    if name == "gpu":
        assert "minio" not in pods
        pods["minio"] = Endpoint({"app.kubernetes.io/name": "minio"})  # an admin's in-namespace S3
    ray = [pods[k] for k in pods if k.startswith("ray-")]
    assert len(ray) == (3 if name == "gpu" else 2)  # head, cpu (, gpu)
    head, submitter = pods["ray-head"], pods["submitter"]
    mlflow, postgres, upgrade, minio = pods["mlflow"], pods["postgres"], pods["mlflow-db-upgrade"], pods["minio"]
    stranger = Endpoint({"app": "someone-else"})
    foreign = Endpoint({"app": "web"}, namespace="default")
    dns = Endpoint({"k8s-app": "kube-dns"}, namespace="kube-system")
    operator = Endpoint({"app.kubernetes.io/name": "kuberay-operator"}, namespace="kuberay-system")
    s3, api = Endpoint({}, None, "52.216.8.1"), Endpoint({}, None, "10.0.0.1")

    allowed = [(a, b, port) for a in ray for b in ray for port in (6379, 8265, 10002, 20000)]
    allowed += [(r, target, port) for r in ray for target, port in ((mlflow, 5000), (minio, 9000), (s3, 443))]
    allowed += [(submitter, head, 8265), (operator, head, 8265), (head, api, 443), (head, api, 6443),
                (mlflow, postgres, 5432), (upgrade, postgres, 5432), (mlflow, minio, 9000), (mlflow, s3, 443),
                (mlflow, mlflow, 5000)]
    denied = [(src, mlflow, 5000) for src in (stranger, foreign, submitter, postgres, upgrade, minio, operator)]
    denied += [(src, postgres, 5432) for src in (stranger, foreign, submitter, minio, *ray)]
    denied += [(src, minio, 9000) for src in (stranger, foreign, submitter, postgres, upgrade)]
    denied += [(submitter, head, 6379), (stranger, head, 8265), (foreign, head, 8265), (operator, head, 6379),
               (mlflow, head, 8265), (stranger, stranger, 80), (submitter, s3, 443), (postgres, s3, 443),
               (upgrade, s3, 443), (stranger, s3, 443), (pods["ray-cpu"], api, 6443), (s3, mlflow, 5000),
               (s3, head, 8265)]
    wrong = [f"{a.labels} -> {b.labels or b.ip}:{p} should be allowed"
             for a, b, p in allowed if not connects(policies, a, b, p)]
    wrong += [f"{a.labels or a.ip} -> {b.labels}:{p} should be denied"
              for a, b, p in denied if connects(policies, a, b, p)]
    for pod in [*pods.values(), stranger]:  # DNS for everyone, or nothing resolves a Service name
        if not connects(policies, pod, dns, 53, "UDP"):
            wrong.append(f"{pod.labels} cannot resolve names")
    assert not wrong, "\n".join(wrong)
    # every policy selects pods that exist (a misspelt label would select nothing and isolate nothing)
    for policy in policies:
        assert any(selects(policy["spec"]["podSelector"], p.labels) for p in pods.values()), policy["metadata"]


def test_gpu_overlay_puts_mlflow_behind_basic_auth():
    import configparser

    docs = render(GPU)
    deployment = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "mlflow")
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert "--app-name=basic-auth" in server["args"]
    env = env_of(server)
    config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"])
    (mount,) = [m for m in server["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (configmap,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == volume["configMap"]["name"]]
    ini = configparser.ConfigParser()
    ini.read_string(configmap["data"][config_path.name])
    assert ini["mlflow"]["default_permission"] == "READ"
    assert ini["mlflow"]["database_uri"] == "postgresql://postgres:5432/mlflow"  # MLflow's own PostgreSQL
    assert not any("password" in key for key in ini["mlflow"]), "no credentials in the ConfigMap"
    assert secret_key(env["MLFLOW_AUTH_ADMIN_USERNAME"]) == "MLFLOW_TRACKING_USERNAME"
    assert secret_key(env["MLFLOW_AUTH_ADMIN_PASSWORD"]) == "MLFLOW_TRACKING_PASSWORD"
    assert secret_key(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == "MLFLOW_FLASK_SERVER_SECRET_KEY"
    assert (secret_key(env["PGUSER"]), secret_key(env["PGPASSWORD"])) == ("POSTGRES_USER", "POSTGRES_PASSWORD")
    # every Ray container logs in with the same account
    for group, template in ray_pod_templates(rayjob(docs)).items():
        ray_env = env_of(template["spec"]["containers"][0])
        assert ray_env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000", group
        assert secret_key(ray_env["MLFLOW_TRACKING_USERNAME"]) == "MLFLOW_TRACKING_USERNAME", group
        assert secret_key(ray_env["MLFLOW_TRACKING_PASSWORD"]) == "MLFLOW_TRACKING_PASSWORD", group
    # the local overlay keeps an open MLflow (a laptop cluster, reached by port-forward only)
    local = next(d for d in by_kind(render(K8S / "overlays" / "local"), "Deployment")
                 if d["metadata"]["name"] == "mlflow")
    assert not any("--app-name" in a for a in local["spec"]["template"]["spec"]["containers"][0]["args"])


def test_mlflow_has_a_disruption_budget(overlay):
    name, docs = overlay
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    deployment = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "mlflow")
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(pdb["spec"]["selector"], template_labels)
    others = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job") and d is not deployment]
    assert not any(selects(pdb["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]) for d in others)
    # maxUnavailable, not minAvailable: one pod at a time goes, and a one-replica MLflow never blocks a drain
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert deployment["spec"]["replicas"] == (2 if name == "gpu" else 1)
    (spread,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and selects(spread["labelSelector"], template_labels)


def test_mlflow_db_upgrade_job(overlay):
    name, docs = overlay
    (job,) = [d for d in by_kind(docs, "Job") if d["metadata"]["name"] == "mlflow-db-upgrade"]
    pod = job["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    command = " ".join(container["command"] + container.get("args", []))
    assert "mlflow db upgrade postgresql://postgres:5432/mlflow" in command
    assert ("python -m mlflow.server.auth db upgrade --url postgresql://postgres:5432/mlflow" in command) == (
        name == "gpu"), "the accounts' tables migrate where MLflow has accounts"
    server = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "mlflow")
    store = next(a for a in server["spec"]["template"]["spec"]["containers"][0]["args"]
                 if a.startswith("--backend-store-uri="))
    assert store.endswith("@postgres:5432/mlflow"), "the Job migrates the database MLflow uses"
    env = env_of(container)
    assert (secret_key(env["PGUSER"]), secret_key(env["PGPASSWORD"])) == ("POSTGRES_USER", "POSTGRES_PASSWORD")
    assert pod["spec"]["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] >= 3
    assert 0 < job["spec"]["ttlSecondsAfterFinished"] and 0 < job["spec"]["activeDeadlineSeconds"]
    service = next(d for d in by_kind(docs, "Service") if d["metadata"]["name"] == "mlflow")
    assert not selects({"matchLabels": service["spec"]["selector"]}, pod["metadata"]["labels"]), \
        "the mlflow Service must not route requests to the upgrade Job"


@needs_kubectl
@pytest.mark.parametrize("name", OVERLAYS, ids=OVERLAY_IDS)
def test_kueue_component_queues_a_suspended_fixed_size_rayjob(name, tmp_path, request):
    plain = rayjob(render(K8S / "overlays" / name))
    assert "suspend" not in plain["spec"] and "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]
    job = rayjob(render_with_components(tmp_path, name, ["kueue"]))
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"]
    assert job["spec"]["suspend"] is True and job["spec"]["shutdownAfterJobFinishes"] is True
    # Kueue admits a fixed-size cluster: no in-tree autoscaling, every group starts at a fixed size
    assert job["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] is False
    for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        assert 1 <= group["minReplicas"] == group["replicas"] <= group["maxReplicas"], group["groupName"]
    assert len(job["spec"]["rayClusterSpec"]["workerGroupSpecs"]) == (2 if name == "gpu" else 1)
    assert not crd_errors(crd_schemas_if_set(request), job)


def test_ray_logs_are_shipped_from_every_ray_pod(overlay):
    """A sidecar in each Ray pod shares the Ray container's /tmp and copies its logs to the bucket."""
    _, docs = overlay
    job = rayjob(docs)
    for group, template in ray_pod_templates(job).items():
        spec = template["spec"]
        ray_container, *sidecars = spec["containers"]
        assert ray_container["name"] in ("ray-head", "ray-worker"), group
        (shipper,) = [c for c in sidecars if c["name"] == "ray-logs"]
        tmp_of = {c["name"]: next(m["name"] for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
                  for c in (ray_container, shipper)}
        assert tmp_of[ray_container["name"]] == tmp_of["ray-logs"], f"{group}: the shipper must see /tmp/ray"
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[tmp_of["ray-logs"]]
        env = env_of(shipper)
        assert env["RAY_CLUSTER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['ray.io/cluster']"
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert {"configMapRef": {"name": "lossyvision-storage"}} in shipper["envFrom"]  # LOSSYVISION_BUCKET
        script = Path(shipper["command"][-1])
        (mount,) = [m for m in shipper["volumeMounts"] if m["mountPath"] == str(script.parent)]
        assert volumes[mount["name"]]["configMap"]["name"] == "lossyvision-ray-logs"
    (configmap,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "lossyvision-ray-logs"]
    assert configmap["data"]["ship_ray_logs.py"] == (K8S / "base" / "ship_ray_logs.py").read_text()
    # the cluster outlives the job by more than one shipping interval (60 s), then the final pass runs
    assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["ttlSecondsAfterFinished"] > 60


# Unique RayJob names: `lossyvision submit SWEEP --manifest OVERLAY`.
def submit_manifest(sweep: Path, overlay_dir: Path) -> tuple[list[dict], str]:
    from typer.testing import CliRunner

    from lossyvision.cli import app

    result = CliRunner().invoke(app, ["submit", str(sweep), "--manifest", str(overlay_dir)])
    assert result.exit_code == 0, result.output
    return [d for d in yaml.safe_load_all(result.stdout) if d], result.stderr


@needs_kubectl
@pytest.mark.parametrize("name", OVERLAYS, ids=OVERLAY_IDS)
def test_each_manifest_submission_is_a_new_rayjob(name, request):
    import kubernetes_validate

    crd_schemas = crd_schemas_if_set(request)
    overlay_dir = K8S / "overlays" / name
    sweep = overlay_dir / "sweep.yaml"
    sweep_name = yaml.safe_load(sweep.read_text())["name"]
    first, note = submit_manifest(sweep, overlay_dir)
    second, _ = submit_manifest(sweep, overlay_dir)
    names = []
    for docs in (first, second):
        configmap, job = docs
        assert (configmap["kind"], job["kind"]) == ("ConfigMap", "RayJob")
        assert configmap["metadata"]["name"] == job["metadata"]["name"]
        job_name = job["metadata"]["name"]
        assert re.fullmatch(rf"{re.escape(sweep_name)}-[a-z0-9]{{6}}", job_name), job_name
        assert len(job_name) <= 47 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", job_name)  # KubeRay's rules
        names.append(job_name)
        assert job["metadata"]["labels"]["lossyvision.io/submission"] == job_name
        assert configmap["metadata"]["labels"]["lossyvision.io/sweep"] == sweep_name
        assert configmap["metadata"]["namespace"] == job["metadata"]["namespace"] == NAMESPACE
        assert configmap["data"] == {"sweep.yaml": sweep.read_text()}
        (sweep_volume,) = [v for v in job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"]
                           if v["name"] == "sweep"]
        assert sweep_volume["configMap"]["name"] == job_name, "each submission mounts its own sweep file"
        assert not crd_errors(crd_schemas, job)
        kubernetes_validate.validate(configmap, KUBERNETES_VERSION, strict=True)
    assert names[0] != names[1], "two submissions of one sweep get two RayJobs"
    assert names[0] in note and "kubectl create -f -" in note
    # everything else is the overlay's RayJob, unchanged
    overlay_job = rayjob(render(overlay_dir))
    job = copy.deepcopy(first[1])
    for v in job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"]:
        if v["name"] == "sweep":
            v["configMap"]["name"] = "lossyvision-sweep"
    assert job["spec"] == overlay_job["spec"]
    assert {k: v for k, v in job["metadata"]["labels"].items() if not k.startswith("lossyvision.io/")} == \
        overlay_job["metadata"]["labels"]


def test_manifest_submission_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from lossyvision.cli import app

    sweep = GPU / "sweep.yaml"
    cases = [(["--manifest", str(tmp_path)], "not a kustomize overlay"),
             (["--manifest", str(K8S / "cluster")], "renders 0 RayJobs"),
             (["--manifest", str(GPU), "--no-wait"], "--manifest takes a SWEEP_FILE")]
    for args, message in cases:
        result = CliRunner().invoke(app, ["submit", str(sweep), *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output


def test_docs_describe_the_admin_pieces():
    text = (REPO / "docs" / "kubernetes.md").read_text()
    assert not re.search(r"each evaluated cell is an? (MLflow )?run", text, re.IGNORECASE)
    for piece in ("overlays/gpu/placement.yaml", "k8s/cluster", "components/network-policies",
                  "components/mlflow-auth", "components/kueue", "mlflow-db-upgrade", "PodDisruptionBudget",
                  "ray-logs", "--manifest", "MLFLOW_TRACKING_PASSWORD", "kueue.x-k8s.io/queue-name"):
        assert piece in text, piece


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
