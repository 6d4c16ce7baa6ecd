"""Submitting a sweep to a Ray cluster: the plain parts (no Ray import).

What is shipped (a runtime env whose ``working_dir`` holds the sweep file, optionally the local
``lossyvision`` package), what runs (``lossyvision sweep run <file>``), how a request
authenticates (``RAY_AUTH_TOKEN`` as a bearer token), and how a job's status reads. The Ray calls
live in :mod:`lossyvision.runners.submit`.

Every submission is named ``<sweep name>-<short id>`` (:func:`submission_name`): the Ray job's
submission id, or the RayJob's name when the submission is a Kubernetes manifest
(:func:`rayjob_manifests`). Two submissions of one sweep never clash, and each stays findable by
its sweep's name.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import re
import secrets
import shlex
import shutil
import string
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

import lossyvision
from lossyvision.preflight import preflight
from lossyvision.spec import SpecError, check_grid, parse_sweep, parse_yaml_text, read_sweep_file, substitute_env

#: Job states after which nothing changes.
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
#: The env var whose value is sent as ``Authorization: Bearer <token>`` (Ray's own token variable).
TOKEN_ENV = "RAY_AUTH_TOKEN"

#: KubeRay's limit on a RayJob's name: its RayCluster adds "-xxxxx", that cluster's head Service "-head-svc".
MAX_RAYJOB_NAME = 47
#: The ConfigMap holding the sweep file that an overlay's RayJob mounts (k8s/overlays/*/kustomization.yaml).
SWEEP_CONFIGMAP = "lossyvision-sweep"
#: Labels on what ``--manifest`` creates: ``kubectl delete rayjob,configmap -l lossyvision.io/submission=NAME``.
SUBMISSION_LABEL = "lossyvision.io/submission"
SWEEP_LABEL = "lossyvision.io/sweep"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ID_CHARS = string.ascii_lowercase + string.digits
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


class SubmitError(ValueError):
    """A problem the user can fix: a bad sweep file, address or option."""


def normalize_address(address: str | None) -> str:
    """``HOST:8265`` -> ``http://HOST:8265``; the job server speaks HTTP(S)."""
    if not address:
        raise SubmitError("no Ray address: pass --address http://HEAD:8265 (or set RAY_API_SERVER_ADDRESS)")
    address = address.strip().rstrip("/")
    if "://" not in address:
        address = "http://" + address
    scheme = address.split("://", 1)[0]
    if scheme not in ("http", "https"):
        raise SubmitError(f"--address {address}: the job server is the dashboard's HTTP address, "
                          "e.g. http://127.0.0.1:8265 (not ray:// or the GCS port)")
    return address


def auth_headers(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The bearer-token header for clusters with Ray token auth (KubeRay ``authOptions: token``)."""
    env = os.environ if env is None else env
    token = (env.get(TOKEN_ENV) or "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def parse_env_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``["A=1", "B=x=y"]`` -> ``{"A": "1", "B": "x=y"}``: extra env vars for the job."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not _ENV_NAME.fullmatch(name):
            raise SubmitError(f"--env {pair!r}: expected NAME=VALUE")
        out[name] = value
    return out


def check_sweep_file(path: str | os.PathLike[str], yes: bool = False) -> str:
    """Validate a sweep file before shipping it; returns the sweep's name.

    The file is checked as the cluster will read it, except what only the cluster knows: its
    environment (``${VAR}`` the client lacks stand in as placeholders) and its local paths (a
    dataset root, output or store on the cluster's disks, not here). Every other problem is
    reported now, not minutes later; so is a grid over the cap without ``yes`` (``--yes``).
    """
    path = str(path)
    try:
        data = parse_yaml_text(read_sweep_file(path), path)
        placeholders = {name: f"cluster-{name.lower()}"
                        for name in re.findall(r"\$\{([A-Za-z_]\w*)\}", yaml.safe_dump(data))}
        env = {**placeholders, **{k: v for k, v in os.environ.items() if v}}
        data = substitute_env(data, env, source=path)
    except SpecError as e:
        raise SubmitError(str(e)) from None
    try:
        sweep = preflight(parse_sweep(data, source=path), source=path)
        check_grid(sweep, yes, source=path)
        return sweep.name
    except SpecError as e:
        real = [p for p in e.problems if not p.startswith(_CLUSTER_ONLY)]
        if e.problems and not real:
            return str(data["name"]) if isinstance(data, dict) and "name" in data else "sweep"
        raise SubmitError(str(SpecError.of(path, real)) if e.problems else str(e)) from None


#: Fields whose checks look at local paths: the cluster's disks, not this machine's.
_CLUSTER_ONLY = ("dataset.root:", "output:", "store:", "models.0.checkpoint:")


def short_id(length: int = 6) -> str:
    """Random lowercase letters and digits (36**6, about 2e9, values for the default length)."""
    return "".join(secrets.choice(_ID_CHARS) for _ in range(length))


def name_slug(sweep_name: str, max_length: int = 63) -> str:
    """The sweep's name as a DNS-1035 label: lowercased, other characters as ``-``, cut to fit.

    A name that does not start with a letter gets a ``sweep-`` prefix.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", str(sweep_name).lower()).strip("-")
    if not slug[:1].isalpha():
        slug = f"sweep-{slug}".rstrip("-")
    return slug[:max_length].rstrip("-")


def submission_name(sweep_name: str, suffix: str | None = None) -> str:
    """``<sweep name>-<short id>``: a valid RayJob name (a DNS-1035 label of at most 47 characters)."""
    suffix = suffix or short_id()
    name = f"{name_slug(sweep_name, MAX_RAYJOB_NAME - len(suffix) - 1)}-{suffix}"
    if not _DNS1035.fullmatch(name) or len(name) > MAX_RAYJOB_NAME:
        raise SubmitError(f"cannot make a RayJob name from sweep name {sweep_name!r} and id {suffix!r}")
    return name


def render_overlay(overlay: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The documents ``kubectl kustomize <overlay>`` renders (offline; kubectl must be installed)."""
    overlay = str(overlay)
    if not os.path.isfile(os.path.join(overlay, "kustomization.yaml")):
        raise SubmitError(f"--manifest {overlay}: not a kustomize overlay (no kustomization.yaml), "
                          "e.g. k8s/overlays/gpu")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise SubmitError("--manifest renders the overlay with `kubectl kustomize`: install kubectl")
    out = subprocess.run([kubectl, "kustomize", overlay], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        reason = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise SubmitError(f"kubectl kustomize {overlay} failed: {reason}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _rename_configmap_refs(node: Any, old: str, new: str) -> int:
    """Point every ``configMap: {name: old}`` volume source under ``node`` at ``new``; returns how many."""
    count = 0
    if isinstance(node, dict):
        source = node.get("configMap")
        if isinstance(source, dict) and source.get("name") == old:
            source["name"] = new
            count += 1
        for value in node.values():
            count += _rename_configmap_refs(value, old, new)
    elif isinstance(node, list):
        for value in node:
            count += _rename_configmap_refs(value, old, new)
    return count


def rayjob_manifests(docs: list[dict[str, Any]], sweep_text: str, sweep_name: str, *,
                     name: str | None = None) -> list[dict[str, Any]]:
    """A new submission from an overlay's rendered documents: its own ConfigMap and RayJob.

    The overlay's RayJob is copied under the name ``<sweep>-<id>``, with the sweep file in a
    ConfigMap of the same name in place of the overlay's shared ``lossyvision-sweep``; both carry
    the ``lossyvision.io/submission`` and ``lossyvision.io/sweep`` labels. Everything else
    (placement, priority, Kueue label and ``suspend``, credentials) is the overlay's.
    """
    jobs = [d for d in docs if d.get("kind") == "RayJob"]
    if len(jobs) != 1:
        raise SubmitError(f"the overlay renders {len(jobs)} RayJobs; --manifest needs exactly one to copy")
    job = copy.deepcopy(jobs[0])
    name = name or submission_name(sweep_name)
    labels = {"app.kubernetes.io/part-of": "lossyvision", SUBMISSION_LABEL: name, SWEEP_LABEL: name_slug(sweep_name)}
    job["metadata"]["name"] = name
    job["metadata"]["labels"] = {**(job["metadata"].get("labels") or {}), **labels}
    namespace = job["metadata"].get("namespace")
    if not _rename_configmap_refs(job["spec"], SWEEP_CONFIGMAP, name):
        raise SubmitError(f"the overlay's RayJob mounts no ConfigMap {SWEEP_CONFIGMAP!r} "
                          "to replace with the sweep file")
    overlay_cm = next((d for d in docs if d.get("kind") == "ConfigMap"
                       and d["metadata"].get("name") == SWEEP_CONFIGMAP), None)
    keys = list((overlay_cm or {}).get("data") or {}) or ["sweep.yaml"]
    if len(keys) != 1:
        raise SubmitError(f"ConfigMap {SWEEP_CONFIGMAP} holds {len(keys)} files; expected the sweep file alone")
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {**({"namespace": namespace} if namespace else {}), "name": name, "labels": labels},
                 "data": {keys[0]: sweep_text}}
    return [configmap, job]


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the sweep file) as ``|`` blocks, so the manifest reads like the file."""


_BlockDumper.add_representer(
    str, lambda dumper, s: dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def dump_manifests(docs: list[dict[str, Any]]) -> str:
    """Documents as one YAML stream, for ``kubectl create -f -``."""
    return yaml.dump_all(docs, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False)


def stage_sweep(sweep_file: str | os.PathLike[str], staging_dir: str | os.PathLike[str]) -> str:
    """Copy the sweep file into the folder shipped as the job's ``working_dir``; returns its name there."""
    name = os.path.basename(str(sweep_file))
    shutil.copyfile(sweep_file, os.path.join(staging_dir, name))
    return name


def entrypoint(sweep_name_in_working_dir: str, yes: bool = False, wait_for_nodes: bool = False) -> str:
    """The shell command the job runs, inside its working dir on the cluster."""
    flags = ("--yes " if yes else "") + ("--wait-for-nodes " if wait_for_nodes else "")
    return f"lossyvision sweep run {flags}{shlex.quote(sweep_name_in_working_dir)}"


def build_runtime_env(working_dir: str, *, env_vars: Mapping[str, str] | None = None,
                      ship_code: bool = False) -> dict[str, Any]:
    """The job's runtime env: the staged sweep file, extra env vars, and optionally this checkout's code.

    ``ship_code`` uploads the local ``lossyvision`` package (``py_modules``) so the cluster runs the
    code being edited without rebuilding the image; its dependencies must already be in the image.
    """
    runtime_env: dict[str, Any] = {"working_dir": str(working_dir)}
    if env_vars:
        runtime_env["env_vars"] = {str(k): str(v) for k, v in env_vars.items()}
    if ship_code:
        runtime_env["py_modules"] = [os.path.dirname(os.path.abspath(lossyvision.__file__))]
    return runtime_env


def exit_code(status: str) -> int:
    """0 for a job that succeeded or is still going, 1 for one that failed or was stopped."""
    return 1 if str(status).upper() in ("FAILED", "STOPPED") else 0


def _time(ms: Any) -> str:
    if not ms:
        return "-"
    return _dt.datetime.fromtimestamp(int(ms) / 1000, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_status(info: Mapping[str, Any]) -> str:
    """A job's status as a few ``key: value`` lines (from :func:`runners.submit.job_info`)."""
    start, end = info.get("start_time"), info.get("end_time")
    lines = [
        f"job:        {info.get('submission_id') or info.get('job_id')}",
        f"status:     {info.get('status')}",
        f"entrypoint: {info.get('entrypoint') or '-'}",
        f"started:    {_time(start)}",
        f"ended:      {_time(end)}",
    ]
    if start and end:
        lines.append(f"duration:   {(int(end) - int(start)) / 1000:.1f} s")
    if info.get("message"):
        lines.append(f"message:    {info['message']}")
    if info.get("error_type"):
        lines.append(f"error:      {info['error_type']}")
    return "\n".join(lines)
