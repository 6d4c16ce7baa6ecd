"""Submitting a sweep to a Ray cluster: the plain parts (no Ray import).

What is shipped (a runtime env whose ``working_dir`` holds the sweep file, optionally the local
``lossyvision`` package), what runs (``lossyvision sweep run <file>``), how a request
authenticates (``RAY_AUTH_TOKEN`` as a bearer token), and how a job's status reads. The Ray calls
live in :mod:`lossyvision.runners.submit`.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shlex
import shutil
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from lossyvision.spec import SpecError, check_grid, parse_sweep, parse_yaml_text, read_sweep_file, substitute_env

#: Job states after which nothing changes.
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
#: The env var whose value is sent as ``Authorization: Bearer <token>`` (Ray's own token variable).
TOKEN_ENV = "RAY_AUTH_TOKEN"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
        sweep = parse_sweep(data, source=path)
        check_grid(sweep, yes, source=path)
        return sweep.name
    except SpecError as e:
        real = [p for p in e.problems if not p.startswith(_CLUSTER_ONLY)]
        if e.problems and not real:
            return str(data["name"]) if isinstance(data, dict) and "name" in data else "sweep"
        raise SubmitError(str(SpecError.of(path, real)) if e.problems else str(e)) from None


#: Fields whose checks look at local paths: the cluster's disks, not this machine's.
_CLUSTER_ONLY = ("dataset.root:", "output:", "store:", "models.0.checkpoint:")


def stage_sweep(sweep_file: str | os.PathLike[str], staging_dir: str | os.PathLike[str]) -> str:
    """Copy the sweep file into the folder shipped as the job's ``working_dir``; returns its name there."""
    name = os.path.basename(str(sweep_file))
    shutil.copyfile(sweep_file, os.path.join(staging_dir, name))
    return name


def entrypoint(sweep_name_in_working_dir: str, yes: bool = False) -> str:
    """The shell command the job runs, inside its working dir on the cluster."""
    return f"lossyvision sweep run {'--yes ' if yes else ''}{shlex.quote(sweep_name_in_working_dir)}"


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
        import lossyvision

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
