"""Ray's Job Submission API: submit a sweep, follow it, read its status, stop it.

The only module that imports ``ray.job_submission``. What is shipped and how statuses read are
plain functions in :mod:`lossyvision.submit`.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ray.exceptions import AuthenticationError
from ray.job_submission import JobSubmissionClient

from lossyvision import submit as submission

Echo = Callable[[str], None]


@dataclass(frozen=True)
class SubmitResult:
    job_id: str
    status: str  # a terminal state when followed, else the state right after submission
    message: str = ""


def connect(address: str, headers: Mapping[str, str] | None = None) -> JobSubmissionClient:
    """A client for the job server at ``address`` (the dashboard, port 8265), token header included.

    Raises :class:`lossyvision.submit.SubmitError` when the server cannot be reached.
    """
    address = submission.normalize_address(address)
    headers = {**submission.auth_headers(), **dict(headers or {})}
    try:
        return JobSubmissionClient(address, headers=headers or None)
    except ConnectionError as e:
        raise submission.SubmitError(f"cannot reach the Ray job server at {address}: {e}") from None
    except AuthenticationError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "authentication failed"
        hint = ("the token in RAY_AUTH_TOKEN was refused" if "Authorization" in headers
                else "this cluster uses token authentication: set RAY_AUTH_TOKEN to its token")
        raise submission.SubmitError(f"the Ray job server at {address} refused the request ({reason}); "
                                     f"{hint} (docs/kubernetes.md, section 5)") from None


def submit_sweep(sweep_file: str, address: str, *, wait: bool = True, env_vars: Mapping[str, str] | None = None,
                 ship_code: bool = False, echo: Echo = print,
                 client: JobSubmissionClient | None = None, yes: bool = False,
                 wait_for_nodes: bool = False) -> SubmitResult:
    """Submit ``lossyvision sweep run <sweep file>`` as a Ray job; stream its logs until it ends.

    The sweep file is checked first (see :func:`lossyvision.submit.check_sweep_file`) and shipped
    in the job's working dir; ``yes`` lets a grid over the cap run (``sweep run --yes``),
    ``wait_for_nodes`` passes ``--wait-for-nodes``. The job's id
    is ``<sweep name>-<short id>`` (:func:`lossyvision.submit.submission_name`): unique per
    submission, and readable in ``ray job list`` and the dashboard. ``echo`` gets the job id line,
    then log chunks as they arrive.
    """
    sweep_name = submission.check_sweep_file(sweep_file, yes=yes)
    client = client or connect(address)
    with tempfile.TemporaryDirectory(prefix="lossyvision-submit-") as staging:
        name = submission.stage_sweep(sweep_file, staging)
        runtime_env = submission.build_runtime_env(staging, env_vars=env_vars, ship_code=ship_code)
        try:
            job_id = client.submit_job(entrypoint=submission.entrypoint(name, yes=yes, wait_for_nodes=wait_for_nodes), runtime_env=runtime_env,
                                       submission_id=submission.submission_name(sweep_name),
                                       metadata={"lossyvision_sweep": sweep_name})
        except RuntimeError as e:  # the server refused the job (bad runtime env, package too large, ...)
            raise submission.SubmitError(f"the Ray job server refused the job: {e}") from None
    echo(f"submitted job {job_id} (sweep {sweep_name}) to {submission.normalize_address(address)}\n")
    if not wait:
        return SubmitResult(job_id, str(client.get_job_status(job_id).value))
    return follow(client, job_id, echo=echo)


def follow(client: JobSubmissionClient, job_id: str, *, echo: Echo = print, poll_s: float = 1.0) -> SubmitResult:
    """Stream a job's logs until it reaches a terminal state; returns that state."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            echo(chunk)

    try:
        asyncio.run(tail())
    except RuntimeError as e:  # the log socket closed early: keep waiting on the status
        echo(f"[lossyvision] log stream interrupted ({e}); waiting for the job to finish\n")
    while True:
        info = client.get_job_info(job_id)
        status = str(info.status.value)
        if status in submission.TERMINAL_STATES:
            return SubmitResult(job_id, status, info.message or "")
        time.sleep(poll_s)


def job_info(address: str, job_id: str, client: JobSubmissionClient | None = None) -> dict[str, Any]:
    """A job's details as a plain dict (status, message, entrypoint, times in ms)."""
    client = client or connect(address)
    try:
        info = client.get_job_info(job_id)
    except RuntimeError as e:
        raise submission.SubmitError(f"job {job_id}: {e}") from None
    data = info.model_dump() if hasattr(info, "model_dump") else info.dict()
    data["status"] = str(info.status.value)
    return data


def stop_job(address: str, job_id: str, client: JobSubmissionClient | None = None) -> bool:
    """Ask Ray to stop a job; False if it had already ended."""
    client = client or connect(address)
    try:
        return bool(client.stop_job(job_id))
    except RuntimeError as e:
        raise submission.SubmitError(f"job {job_id}: {e}") from None
