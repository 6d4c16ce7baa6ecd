"""How the tracker talks to MLflow: short HTTP retries and timeouts, and which errors are an outage."""

from __future__ import annotations

#: Short HTTP retry/timeout defaults (MLflow's are 7 retries with backoff and 120 s per request).
HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def is_outage(error: BaseException) -> bool:
    """An error of the server or the way to it (not of the model being logged)."""
    from mlflow.exceptions import MlflowException

    return isinstance(error, (MlflowException, OSError)) or type(error).__module__.startswith(("requests", "urllib3"))
