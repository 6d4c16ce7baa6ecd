"""MLflow tracking: a parent run per sweep, a nested child run per trial. The only mlflow import.

Runs are found by tags (``lossyvision.sweep`` + ``lossyvision.trial``), never remembered, so
logging is idempotent: logging a trial twice (a rerun, ``sweep sync``) adds only what is
missing. A trial's tag is its key, which carries its configuration hash: an edited trial gets a
new run. The parent run belongs to one configuration of the sweep (``lossyvision.plan``, the
plan's digest; MLflow params cannot change), and a trial reused by a new configuration moves under
its parent. Metrics per test level are named ``test/<metric>/d<level>`` so the MLflow UI compares
them across runs.

Outages: the first failed call logs one warning and turns the tracker off for the rest of the
run (results live in ``results.parquet``); ``lossyvision sweep sync OUTPUT`` pushes everything
later. HTTP retries and timeouts are kept short so an unreachable server costs seconds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from lossyvision.store import format_level, is_remote

log = logging.getLogger(__name__)

TAG_SWEEP = "lossyvision.sweep"
TAG_ROLE = "lossyvision.role"
TAG_TRIAL = "lossyvision.trial"
TAG_CONFIG = "lossyvision.config"
TAG_PLAN = "lossyvision.plan"
TAG_PARENT = "mlflow.parentRunId"
ARTIFACTS_DIR = "mlartifacts"

#: Short HTTP retry/timeout defaults (MLflow's are 7 retries with backoff and 120 s per request).
HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def eval_metric_name(metric: str, test_level: float) -> str:
    """``test/top1/d2``: one metric per test level, comparable across child runs.

    (MLflow names allow letters, digits, ``_-. :/`` only, so not ``@``; the slash groups the
    levels of one metric in the UI.)
    """
    return f"test/{metric}/d{format_level(test_level)}"


def train_metric_name(metric: str) -> str:
    return f"train/{metric}"


def ui_command(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri}"


def trial_params(sweep: Any, trial: Any, meta: dict[str, Any] | None, train_dcr: float | None) -> dict[str, Any]:
    """Params of a child run (n_images and bytes once the trial has run)."""
    spec = sweep.model(trial.model)
    params: dict[str, Any] = {
        "model": trial.model, "task": spec.task, "arch": spec.arch, "mode": spec.mode,
        "pretrained": spec.pretrained, "epochs": spec.epochs, "lr": spec.lr,
        "batch_size": spec.batch_size, "image_size": spec.image_size,
        "train_level": trial.train_level, "repeat": trial.repeat,
        "budget": trial.budget, "codec": sweep.codec.name, "config_hash": trial.config, "seed": sweep.seed,
    }
    if train_dcr is not None and train_dcr == train_dcr:
        params["train_dcr"] = round(float(train_dcr), 6)
    if meta:
        params["n_images"] = meta.get("n_train_images")
        params["train_bytes"] = meta.get("train_bytes")
        if meta.get("budget_exhausted"):
            params["budget_exhausted"] = True
    return params


class Tracker:
    """Logs one sweep to MLflow through an ``MlflowClient``; turns itself off on an outage."""

    def __init__(self, tracking_uri: str, experiment: str, sweep_name: str, output: str,
                 *, plan_digest: str = "", artifact_location: str | None = None, strict: bool = False) -> None:
        from mlflow.tracking import MlflowClient

        for k, v in HTTP_ENV.items():
            os.environ.setdefault(k, v)
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating tables..."
        self.uri = tracking_uri
        self.experiment_name = experiment
        self.sweep_name = sweep_name
        self.plan_digest = plan_digest
        self.output = str(output)
        self.strict = strict  # raise instead of switching off (sweep sync)
        self.available = True
        self.error: str | None = None
        self.artifact_location = artifact_location or default_artifact_location(tracking_uri, output)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._experiment_id: str | None = None
        self._parent: str | None = None
        self._children: dict[str, str] = {}

    # --- outage handling ------------------------------------------------------------------------
    def _guard(self, fn, *args, **kwargs):
        if not self.available:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # MlflowException, requests' connection errors, sqlite errors
            if self.strict:
                raise
            self.available = False
            self.error = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            log.warning("MLflow at %s is unreachable or failing (%s); the sweep goes on without it. "
                        "Run `lossyvision sweep sync %s` once it is back.", self.uri, self.error, self.output)
            return None

    # --- runs ---------------------------------------------------------------------------------------
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                self._experiment_id = self.client.create_experiment(
                    self.experiment_name, artifact_location=self.artifact_location)
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    def _find(self, **tags: str) -> str | None:
        flt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id()], filter_string=flt, max_results=2,
                                       order_by=["attributes.start_time ASC"])
        return runs[0].info.run_id if runs else None

    def parent_run(self) -> str:
        """The parent run of this configuration of the sweep, created on first use, found by tag afterwards."""
        if self._parent is None:
            tags = {TAG_SWEEP: self.sweep_name, TAG_ROLE: "sweep", TAG_PLAN: self.plan_digest}
            rid = self._find(**tags)
            if rid is None:
                run = self.client.create_run(self.experiment_id(), run_name=self.sweep_name, tags=tags)
                rid = run.info.run_id
            self._parent = rid
        return self._parent

    def child_run(self, trial_key: str) -> str:
        """The trial's child run, nested under the current parent through ``mlflow.parentRunId``."""
        if trial_key not in self._children:
            parent = self.parent_run()
            rid = self._find(**{TAG_SWEEP: self.sweep_name, TAG_TRIAL: trial_key})
            if rid is None:
                config = trial_key.rsplit("__", 1)[-1]
                run = self.client.create_run(self.experiment_id(), run_name=trial_key, tags={
                    TAG_SWEEP: self.sweep_name, TAG_ROLE: "trial", TAG_TRIAL: trial_key, TAG_CONFIG: config,
                    TAG_PARENT: parent})
                rid = run.info.run_id
            elif self.client.get_run(rid).data.tags.get(TAG_PARENT) != parent:
                self.client.set_tag(rid, TAG_PARENT, parent)  # reused by this configuration
            self._children[trial_key] = rid
        return self._children[trial_key]

    # --- logging (each call is guarded and idempotent) ----------------------------------------
    def start_sweep(self, params: dict[str, Any], sweep_file: str | None = None) -> str | None:
        """Parent run with the grid sizes as params and the sweep file as an artifact."""
        return self._guard(self._start_sweep, params, sweep_file)

    def _start_sweep(self, params: dict[str, Any], sweep_file: str | None) -> str:
        rid = self.parent_run()
        self._log_new_params(rid, params)
        if sweep_file and os.path.exists(sweep_file):
            self.client.log_artifact(rid, sweep_file)
        return rid

    def finish_sweep(self, status: str = "FINISHED") -> None:
        self._guard(lambda: self.client.set_terminated(self.parent_run(), status))

    def log_epoch(self, trial_key: str, epoch: int, metrics: dict[str, float]) -> None:
        self._guard(self._log_history, trial_key, [{"epoch": epoch, **metrics}])

    def log_trial(self, trial_key: str, params: dict[str, Any], history: Iterable[dict[str, Any]] = (),
                  test_metrics: dict[str, float] | None = None, status: str | None = None) -> None:
        """Everything known about a trial; only what the run lacks is sent."""
        self._guard(self._log_trial, trial_key, params, list(history), test_metrics or {}, status)

    def _log_trial(self, trial_key, params, history, test_metrics, status) -> None:
        from mlflow.entities import Metric

        rid = self.child_run(trial_key)
        self._log_new_params(rid, params)
        self._log_history(trial_key, history)
        have = self.client.get_run(rid).data.metrics
        new = [Metric(k, float(v), _now_ms(), 0) for k, v in test_metrics.items() if k not in have]
        if new:
            self.client.log_batch(rid, metrics=new)
        if status:
            run = self.client.get_run(rid)
            if run.info.status != status:
                self.client.set_terminated(rid, status)

    def _log_history(self, trial_key: str, history: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric

        if not history:
            return
        rid = self.child_run(trial_key)
        names = sorted({k for h in history for k in h if k != "epoch"})
        metrics = []
        for name in names:
            key = train_metric_name(name)
            logged = {m.step for m in self.client.get_metric_history(rid, key)}
            metrics += [Metric(key, float(h[name]), _now_ms(), int(h["epoch"]))
                        for h in history if name in h and int(h["epoch"]) not in logged]
        for i in range(0, len(metrics), 900):  # log_batch takes at most 1000 metrics
            self.client.log_batch(rid, metrics=metrics[i:i + 900])

    def _log_new_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        have = self.client.get_run(run_id).data.params
        new = [Param(k, str(v)) for k, v in params.items() if v is not None and k not in have]
        if new:
            self.client.log_batch(run_id, params=new)

    # --- reading back (tests, status) -------------------------------------------------------------
    def runs(self) -> pd.DataFrame:
        """The sweep's runs (parent and children) as MLflow's DataFrame."""
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        return mlflow.search_runs([self.experiment_id()],
                                  filter_string=f"tags.`{TAG_SWEEP}` = '{self.sweep_name}'")


def absolute_tracking_uri(uri: str) -> str:
    """``sqlite:///runs/x.db`` -> ``sqlite:////abs/runs/x.db``: trials run in other folders."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + os.path.abspath(uri[len(prefix):])
    return uri


def tracker_for(sweep: Any, *, plan_digest: str = "", strict: bool = False) -> Tracker:
    """The sweep's tracker (its URI made absolute); ``strict`` raises on an outage (``sweep sync``)."""
    return Tracker(absolute_tracking_uri(sweep.tracking_uri), sweep.experiment, sweep.name, sweep.output,
                   plan_digest=plan_digest, strict=strict)


def default_artifact_location(tracking_uri: str, output: str) -> str | None:
    """Artifacts next to a SQLite store (MLflow would use ./mlruns); a server keeps its own."""
    if tracking_uri.startswith(("http://", "https://", "databricks")) or is_remote(str(output)):
        return None
    return Path(output).resolve().joinpath(ARTIFACTS_DIR).as_uri()


def eval_metrics_of(results: pd.DataFrame) -> dict[str, float]:
    """``test/<metric>/d<level>`` -> value for the rows of one trial."""
    return {eval_metric_name(r.metric, r.test_level): float(r.value) for r in results.itertuples()}


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


# --- report and sensitivity artifacts (issue #4: the report helper's block) ---------------------------
def log_report_artifacts(output: str, paths: Iterable[str], *, artifact_path: str = "report") -> bool:
    """Log files (report figures, index.html, sensitivity maps) to the sweep's parent run.

    The sweep comes from ``OUTPUT/sweep.yaml``. Remote files (``s3://...``) are copied to a temp
    folder first (MLflow uploads local files). Returns False, with a warning, when MLflow is
    unreachable: the files stay in OUTPUT either way.
    """
    import shutil
    import tempfile

    from lossyvision.output import load_output_sweep, load_plan
    from lossyvision.store import read_bytes

    tracker = tracker_for(load_output_sweep(output), plan_digest=load_plan(output).digest)
    paths = [str(p) for p in paths]

    def _log() -> None:
        rid = tracker.parent_run()
        tmp = tempfile.mkdtemp(prefix="lossyvision-artifacts-")
        try:
            for p in paths:
                local = p
                if is_remote(p):
                    local = os.path.join(tmp, p.rstrip("/").rsplit("/", 1)[-1])
                    with open(local, "wb") as f:
                        f.write(read_bytes(p))
                tracker.client.log_artifact(rid, local, artifact_path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    tracker._guard(_log)
    return tracker.available
