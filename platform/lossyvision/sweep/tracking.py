"""MLflow tracking: a parent run per sweep, a nested child run per trial. The only mlflow import.

Runs are found by tags (``lossyvision.sweep`` + ``lossyvision.trial``), never remembered, so
logging is idempotent: logging a trial twice (a rerun, ``sweep sync``) adds only what is
missing. A trial's tag is its key, which carries its configuration hash: an edited trial gets a
new run. The parent run belongs to one configuration of the sweep (``lossyvision.plan``, the
plan's digest; MLflow params cannot change), and a trial reused by a new configuration moves under
its parent.

What a trial's run holds: its params and per-epoch ``train/*`` metrics; its trained model
(``mlflow.pytorch.log_model``, a signature and an input example, as a LoggedModel of the run); its
training data as a dataset input (source: the store's level, digest: the manifest rows it trained
on) and its test levels as evaluation inputs; test metrics twice: as series (``test/top1`` with
step = the test level's index in the sweep's sorted test levels, and ``test/dcr`` at the same
steps, so the UI draws accuracy against test distance), and as ``test/top1/d2`` (one number per
level: MLflow's runs table, sorting and parallel-coordinates plots show one value per metric, the
latest step of a series, so comparing trials at one test distance needs a name per level); and a
``cells`` table (``cells.json``: level, DCR, value and intervals per cell). The parent run holds
the report's verdict (metrics ``verdict/...``, tags, the run description) and the report's files.
The experiment is tagged ``mlflow.experimentKind = custom_model_development``.

Ray's MLflow integration (``MLflowLoggerCallback``, ``setup_mlflow``) is not used: it keys runs by
Tune's trial ids (a rerun or a retried trial gets a new run), does not nest them (ray#19978), and
fails the trial or the callback when the server is down; trials here never need MLflow.

Outages: the first failed call logs one warning and turns the tracker off for the rest of the
run (results live in ``results.parquet``); ``lossyvision sweep sync OUTPUT`` pushes everything
later. HTTP retries and timeouts are kept short so an unreachable server costs seconds.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

import lossyvision
from lossyvision.cache import cache_mode, describe
from lossyvision.codecs import CODECS
from lossyvision.output import load_output_sweep, load_plan
from lossyvision.store import format_level, is_remote, read_bytes

log = logging.getLogger(__name__)

TAG_SWEEP = "lossyvision.sweep"
TAG_ROLE = "lossyvision.role"
TAG_TRIAL = "lossyvision.trial"
TAG_CONFIG = "lossyvision.config"
TAG_PLAN = "lossyvision.plan"
TAG_TEST_LEVELS = "lossyvision.test_levels"   # the ladder a trial's series steps index
TAG_PARENT = "mlflow.parentRunId"
TAG_NOTE = "mlflow.note.content"              # the run's description in the UI
#: The experiment's kind: MLflow 3's UI treats an experiment of this kind as model training.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: MLflow 3.17's UI opens experiments on the page of its GenAI/Model-training switch, which this
#: query sets (the tag alone does not switch it; the choice is then remembered by the browser).
UI_QUERY = "?workflowType=machine_learning"
ARTIFACTS_DIR = "mlartifacts"
CELLS_TABLE = "cells.json"
MODEL_NAME = "model"   # the model's folder in its artifacts (the LoggedModel is named by the trial key)
REGISTERED_ALIAS = "recommended"
DATASET_CONTEXT = "mlflow.data.context"

#: Short HTTP retry/timeout defaults (MLflow's are 7 retries with backoff and 120 s per request).
HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
#: Columns of a trial's ``cells`` table (from the results rows).
CELL_COLUMNS = ("test_codec", "test_level", "test_dcr", "test_bpp", "metric", "value", "ci_low", "ci_high", "rel", "rel_low", "rel_high",
                "n_test_images", "train_level", "repeat", "budget", "cell_id")


def eval_metric_name(metric: str, test_level: float, codec: str = "jpegxl") -> str:
    """``test/top1/d2`` (JPEG XL distance 2), ``test/top1/avif-q70``: one metric per test level,
    comparable across child runs.

    (MLflow names allow letters, digits, ``_-. :/`` only, so not ``@``; the slash groups the
    levels of one metric in the UI.)
    """
    letter = "d" if codec in CODECS and not CODECS.get(codec).higher_level_is_better else "q"
    prefix = "" if codec == "jpegxl" else f"{codec}-"
    return f"test/{metric}/{prefix}{letter}{format_level(test_level)}"


def series_name(metric: str) -> str:
    """``test/top1``: the metric as a series over the test levels (step = the level's index)."""
    return f"test/{metric}"


DCR_SERIES = "test/dcr"


def train_metric_name(metric: str) -> str:
    return f"train/{metric}"


def ui_command(tracking_uri: str, experiment_id: str | None = None) -> str:
    """How to look at the sweep: the experiment's runs page (a server) or the command to start the UI."""
    page = f"/#/experiments/{experiment_id}/runs{UI_QUERY}" if experiment_id else ""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri.rstrip('/')}{page}"
    command = f"mlflow ui --backend-store-uri {tracking_uri}"
    return f"{command}, then open http://127.0.0.1:5000{page}" if page else command


def safe_name(text: str) -> str:
    """A name MLflow accepts in metric keys (letters, digits, ``_-. /``)."""
    return re.sub(r"[^A-Za-z0-9_.\- /]", "_", str(text))


def trial_params(sweep: Any, trial: Any, meta: dict[str, Any] | None, train_dcr: float | None) -> dict[str, Any]:
    """Params of a child run (n_images and bytes once the trial has run)."""
    spec = sweep.model(trial.model)
    params: dict[str, Any] = {
        "model": trial.model, "task": spec.task, "arch": spec.arch, "mode": spec.mode,
        "pretrained": spec.pretrained, "epochs": spec.epochs, "lr": spec.lr,
        "batch_size": spec.batch_size, "image_size": spec.image_size,
        "train_level": trial.train_level, "repeat": trial.repeat,
        "budget": trial.budget, "codec": trial.codec, "config_hash": trial.config, "seed": sweep.seed,
        "data_order": spec.data_order,  # changes what the model sees: runs are compared within one order
    }
    if spec.data_order != "random":
        params["shuffle_buffer"] = spec.shuffle_buffer
    if getattr(spec, "cache", None) is not None:  # docs/scale.md

        params["cache"] = describe(cache_mode(spec.cache))
    if getattr(sweep.resources.trial, "workers", 1) > 1:
        params["workers"] = sweep.resources.trial.workers
    if train_dcr is not None and train_dcr == train_dcr:
        params["train_dcr"] = round(float(train_dcr), 6)
    if meta:
        params["n_images"] = meta.get("n_train_images")
        params["train_bytes"] = meta.get("train_bytes")
        if meta.get("budget_exhausted"):
            params["budget_exhausted"] = True
    return params


@lru_cache(maxsize=1)
def source_tags() -> dict[str, str]:
    """MLflow's source tags for the lossyvision code that runs: its git commit, branch, remote, dirtiness.

    Taken from the repository holding the ``lossyvision`` package (not the current folder, not the
    entry point's), and only where there is one: an installed package (a container) has none.
    """
    from mlflow.utils import mlflow_tags
    from mlflow.utils.git_utils import get_git_branch, get_git_commit, get_git_repo_url

    path = str(Path(lossyvision.__file__).parent)
    tags = {mlflow_tags.MLFLOW_SOURCE_NAME: "lossyvision", mlflow_tags.MLFLOW_SOURCE_TYPE: "LOCAL",
            "lossyvision.version": lossyvision.__version__}
    commit = get_git_commit(path)
    if commit:
        tags[mlflow_tags.MLFLOW_GIT_COMMIT] = commit
        for key, value in ((mlflow_tags.MLFLOW_GIT_BRANCH, get_git_branch(path)),
                           (mlflow_tags.MLFLOW_GIT_REPO_URL, get_git_repo_url(path)),
                           (mlflow_tags.MLFLOW_GIT_DIRTY, _git_dirty(path))):
            if value is not None:
                tags[key] = value
    return tags


def _git_dirty(path: str) -> str | None:
    try:
        from git import Repo

        return str(Repo(path, search_parent_directories=True).is_dirty(untracked_files=False)).lower()
    except Exception:  # noqa: BLE001 - no git executable, a damaged repository: leave the tag out
        return None


@dataclass(frozen=True)
class DatasetRef:
    """A dataset input of a run: ``source`` is a folder or URI, ``digest`` the manifest rows' digest."""

    name: str
    source: str
    digest: str
    context: str  # "training" | "evaluation"


def _is_outage(error: BaseException) -> bool:
    """An error of the server or the way to it (not of the model being logged)."""
    from mlflow.exceptions import MlflowException

    return isinstance(error, (MlflowException, OSError)) or type(error).__module__.startswith(("requests", "urllib3"))


class Tracker:
    """Logs one sweep to MLflow through an ``MlflowClient``; turns itself off on an outage."""

    def __init__(self, tracking_uri: str, experiment: str, sweep_name: str, output: str,
                 *, plan_digest: str = "", artifact_location: str | None = None, strict: bool = False) -> None:
        from mlflow.tracking import MlflowClient

        for k, v in {**HTTP_ENV, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
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
        self._warned_ladder: set[str] = set()

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

    def _fluent(self) -> Any:
        """``mlflow`` pointed at this tracker's server, for MLflow's fluent-only APIs (log_model, register)."""
        import mlflow

        if mlflow.get_tracking_uri() != self.uri:
            mlflow.set_tracking_uri(self.uri)
        return mlflow

    # --- runs ---------------------------------------------------------------------------------------
    def experiment_id(self) -> str:
        """The experiment (created on first use), tagged as model training so the UI opens on its runs."""
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                self._experiment_id = self.client.create_experiment(
                    self.experiment_name, artifact_location=self.artifact_location,
                    tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND})
            else:
                self._experiment_id = exp.experiment_id
                if TAG_EXPERIMENT_KIND not in exp.tags:
                    self.client.set_experiment_tag(exp.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
        return self._experiment_id

    def _find(self, **tags: str) -> str | None:
        flt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id()], filter_string=flt, max_results=2,
                                       order_by=["attributes.start_time ASC"])
        return runs[0].info.run_id if runs else None

    def _add_missing_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        have = self.client.get_run(run_id).data.tags
        new = [RunTag(k, v) for k, v in tags.items() if k not in have]
        if new:
            self.client.log_batch(run_id, tags=new)

    def parent_run(self) -> str:
        """The parent run of this configuration of the sweep, created on first use, found by tag afterwards."""
        if self._parent is None:
            tags = {TAG_SWEEP: self.sweep_name, TAG_ROLE: "sweep", TAG_PLAN: self.plan_digest}
            rid = self._find(**tags)
            if rid is None:
                run = self.client.create_run(self.experiment_id(), run_name=self.sweep_name,
                                             tags={**source_tags(), **tags})
                rid = run.info.run_id
            else:
                self._add_missing_tags(rid, source_tags())
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
                    **source_tags(), TAG_SWEEP: self.sweep_name, TAG_ROLE: "trial", TAG_TRIAL: trial_key,
                    TAG_CONFIG: config, TAG_PARENT: parent})
                rid = run.info.run_id
            else:
                tags = self.client.get_run(rid).data.tags
                if tags.get(TAG_PARENT) != parent:
                    self.client.set_tag(rid, TAG_PARENT, parent)  # reused by this configuration
                self._add_missing_tags(rid, source_tags())
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
                  test_metrics: dict[str, float] | None = None, status: str | None = None,
                  series: Mapping[str, Mapping[int, float]] | None = None, test_levels: str | None = None,
                  inputs: Iterable[DatasetRef] = (), cells: pd.DataFrame | None = None) -> None:
        """Everything known about a trial; only what the run lacks is sent.

        ``series`` maps a metric name to ``{step: value}`` (steps index ``test_levels``, the sweep's
        sorted test levels as text); ``cells`` are rows for the ``cells`` table.
        """
        self._guard(self._log_trial, trial_key, params, list(history), test_metrics or {}, status,
                    series or {}, test_levels, list(inputs), cells)

    def _log_trial(self, trial_key, params, history, test_metrics, status, series, test_levels, inputs,
                   cells) -> None:
        from mlflow.entities import Metric

        rid = self.child_run(trial_key)
        self._log_new_params(rid, params)
        self._log_history(trial_key, history)
        have = self.client.get_run(rid).data.metrics
        new = [Metric(k, float(v), _now_ms(), 0) for k, v in test_metrics.items() if k not in have]
        if series and self._series_ladder_ok(rid, trial_key, test_levels):
            for name, points in series.items():
                logged = {m.step for m in self.client.get_metric_history(rid, name)} if name in have else set()
                new += [Metric(name, float(v), _now_ms(), int(step)) for step, v in sorted(points.items())
                        if int(step) not in logged and _finite(v)]
        for i in range(0, len(new), 900):  # log_batch takes at most 1000 metrics
            self.client.log_batch(rid, metrics=new[i:i + 900])
        if inputs:
            self._log_inputs(rid, inputs)
        if cells is not None and len(cells):
            self._log_cells(rid, cells)
        if status:
            run = self.client.get_run(rid)
            if run.info.status != status:
                self.client.set_terminated(rid, status)

    def _series_ladder_ok(self, rid: str, trial_key: str, test_levels: str | None) -> bool:
        """Steps index the sweep's test levels: a run whose series indexed other levels gets no new points."""
        if test_levels is None:
            return True
        logged = self.client.get_run(rid).data.tags.get(TAG_TEST_LEVELS)
        if logged is None:
            self.client.set_tag(rid, TAG_TEST_LEVELS, test_levels)
            return True
        if logged != test_levels and trial_key not in self._warned_ladder:
            self._warned_ladder.add(trial_key)
            log.warning("MLflow run of trial %s has test series over the levels %s, this sweep tests %s: its series "
                        "are left as they are (the per-level metrics and the cells table have every level)",
                        trial_key, logged, test_levels)
        return logged == test_levels

    def _log_inputs(self, rid: str, inputs: list[DatasetRef]) -> None:
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        run = self.client.get_run(rid)
        have = set()
        for d in (run.inputs.dataset_inputs if run.inputs else []):
            context = next((t.value for t in d.tags if t.key == DATASET_CONTEXT), None)
            have.add((d.dataset.name, d.dataset.digest, context))
        new = []
        for ref in inputs:
            if (ref.name, ref.digest, ref.context) in have:
                continue
            with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local folder is one
                warnings.simplefilter("ignore")
                source = resolve_dataset_source(ref.source)
            dataset = MetaDataset(source, name=ref.name, digest=ref.digest)._to_mlflow_entity()
            new.append(DatasetInput(dataset, tags=[InputTag(DATASET_CONTEXT, ref.context)]))
        if new:
            self.client.log_inputs(rid, datasets=new)

    def _log_cells(self, rid: str, cells: pd.DataFrame) -> None:
        """Append the rows the run's ``cells`` table lacks (``log_table`` appends to an existing table)."""
        have: set[tuple[str, str]] = set()
        if CELLS_TABLE in {a.path for a in self.client.list_artifacts(rid)}:
            old = self.cells_table(rid)
            have = set(zip(old["cell_id"].astype(str), old["metric"].astype(str)))
        new = cells[[(c, m) not in have for c, m in zip(cells["cell_id"].astype(str), cells["metric"].astype(str))]]
        if len(new):
            self.client.log_table(rid, data=new.reset_index(drop=True), artifact_file=CELLS_TABLE)

    def cells_table(self, run_id: str) -> pd.DataFrame:
        """A run's ``cells`` table as logged (``log_table`` writes pandas' ``split`` JSON).

        Not ``MlflowClient.load_table``: it finds runs through the fluent API's global tracking URI.
        """
        import tempfile

        with tempfile.TemporaryDirectory(prefix="lossyvision-cells-") as tmp:
            path = self.client.download_artifacts(run_id, CELLS_TABLE, tmp)
            return pd.read_json(path, orient="split")

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

    # --- models -------------------------------------------------------------------------------------
    def model_id(self, trial_key: str) -> str | None:
        """The trial's logged model (a ready one), or None."""
        return self._guard(lambda: self._ready_model(self.child_run(trial_key)))

    def _ready_model(self, rid: str) -> str | None:
        from mlflow.entities import LoggedModelStatus

        run = self.client.get_run(rid)
        for out in (run.outputs.model_outputs if run.outputs else []):
            if self.client.get_logged_model(out.model_id).status == LoggedModelStatus.READY:
                return out.model_id
        return None

    def has_model(self, trial_key: str) -> bool:
        return bool(self.model_id(trial_key))

    def log_model(self, trial_key: str, model: Any) -> str | None:
        """Log a trial's model (a :class:`lossyvision.sweep.models.LoggableModel`) once; returns its model id.

        ``mlflow.pytorch.log_model`` with a signature inferred from the input example and the
        module's output on it. A model that cannot be saved (an export error) is a warning, not an
        outage: MLflow stays on for the rest.
        """
        return self._guard(self._log_model, trial_key, model)

    def _log_model(self, trial_key: str, model: Any) -> str | None:
        import torch

        rid = self.child_run(trial_key)
        existing = self._ready_model(rid)
        if existing:
            return existing
        mlflow = self._fluent()
        import mlflow.pytorch  # noqa: F811  (loads the submodule into the module _fluent returned)
        from mlflow.models import infer_signature

        with torch.no_grad():
            output = model.module(torch.from_numpy(model.example))
        signature = infer_signature(model.example, output.numpy())
        logged = self.client.create_logged_model(
            self.experiment_id(), name=trial_key, source_run_id=rid,
            tags={TAG_SWEEP: self.sweep_name, TAG_TRIAL: trial_key},
            params={k: str(v) for k, v in self.client.get_run(rid).data.params.items()})
        # MLflow validates the example by loading and running the saved model: the signature above
        # already ran it, so a pt2 model skips that (with pickle the option would reach torch.save).
        extra = {"validate_serving_input": False} if model.serialization == "pt2" else {}
        try:
            mlflow.pytorch.log_model(
                model.module, name=MODEL_NAME, signature=signature, input_example=model.example,
                pip_requirements=model.requirements, code_paths=model.code_paths or None, metadata=model.metadata,
                serialization_format=model.serialization, model_id=logged.model_id, run_id=rid, **extra)
        except Exception as e:
            if _is_outage(e):
                raise
            log.warning("trial %s: its model was not logged to MLflow (%s: %s); the checkpoint is in %s",
                        trial_key, type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "", self.output)
            return None
        return logged.model_id

    def register_model(self, trial_key: str, name: str, tags: Mapping[str, Any] | None = None) -> str | None:
        """Register the trial's logged model as a version of ``name`` (once) with the alias ``recommended``.

        Returns the version, or None when the trial has no logged model (or MLflow is off).
        """
        return self._guard(self._register_model, trial_key, name, dict(tags or {}))

    def _register_model(self, trial_key: str, name: str, tags: dict[str, Any]) -> str | None:
        model_id = self._ready_model(self.child_run(trial_key))
        if model_id is None:
            return None
        source = f"models:/{model_id}"
        version = None
        try:
            versions = self.client.search_model_versions(f"name = '{name}'")
        except Exception as e:  # noqa: BLE001 - a name that does not exist yet
            if _is_outage(e) and "RESOURCE_DOES_NOT_EXIST" not in str(e):
                raise
            versions = []
        for v in versions:
            if v.source == source or getattr(v, "model_id", None) == model_id:
                version = v.version
                break
        if version is None:
            mv = self._fluent().register_model(source, name, tags={k: str(v) for k, v in tags.items()})
            version = mv.version
        self.client.set_registered_model_alias(name, REGISTERED_ALIAS, version)
        return str(version)

    # --- the parent run: the report's verdict -------------------------------------------------------
    def log_verdicts(self, verdicts: Iterable[Any], lines: Iterable[str] = (), headline: Iterable[Any] = ()) -> None:
        """The report's verdicts on the parent run (:class:`lossyvision.report.verdict.Verdict` objects).

        Metrics ``verdict/<model>/<metric>/<question>/{level,dcr,rel,rel_low,rel_high}`` (sent when
        their latest value differs), a tag per verdict with its outcome and sentence, tags
        ``lossyvision.recommended.<model>`` (the headline metric's "store everything at" level, or
        ``none``), and the verdict's lines as the run's description.
        """
        self._guard(self._log_verdicts, list(verdicts), list(lines), list(headline))

    def _log_verdicts(self, verdicts: list[Any], lines: list[str], headline: list[Any]) -> None:
        from mlflow.entities import Metric, RunTag

        rid = self.parent_run()
        run = self.client.get_run(rid)
        metrics, tags = [], []
        for v in verdicts:
            prefix = f"verdict/{safe_name(v.model)}/{safe_name(v.metric)}/{v.question}"
            for field in ("level", "dcr", "rel", "rel_low", "rel_high"):
                value = getattr(v, field)
                key = f"{prefix}/{field}"
                if value is not None and _finite(value) and run.data.metrics.get(key) != float(value):
                    metrics.append(Metric(key, float(value), _now_ms(), 0))
            tags.append(RunTag(f"lossyvision.verdict.{safe_name(v.model)}.{safe_name(v.metric)}.{v.question}",
                               f"{v.outcome}: {v.text}"[:4000]))
        for v in headline:
            if v.question == "matched":
                tags.append(RunTag(f"lossyvision.recommended.{safe_name(v.model)}",
                                   format_level(v.level) if v.level is not None else "none"))
        if lines:
            tags.append(RunTag(TAG_NOTE, verdict_markdown(lines)))
        self.client.log_batch(rid, metrics=metrics, tags=[t for t in tags if run.data.tags.get(t.key) != t.value])

    # --- reading back (tests, status) -------------------------------------------------------------
    def runs(self) -> pd.DataFrame:
        """The sweep's runs (parent and children) as MLflow's DataFrame."""
        mlflow = self._fluent()
        return mlflow.search_runs([self.experiment_id()],
                                  filter_string=f"tags.`{TAG_SWEEP}` = '{self.sweep_name}'")


def verdict_markdown(lines: Iterable[str]) -> str:
    """The report's verdict lines as the run's description: a bold heading per model, a bullet per answer."""
    out = ["### Verdict"]
    for line in lines:
        if line.startswith(" "):
            out.append(f"- {line.strip()}")
        else:
            out += ["", f"**{line.strip().rstrip(':')}**", ""]
    return "\n".join(out).strip() + "\n"


def absolute_tracking_uri(uri: str) -> str:
    """``sqlite:///runs/x.db`` -> ``sqlite:////abs/runs/x.db``: trials run in other folders."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + os.path.abspath(uri[len(prefix):])
    return uri


def tracker_for(sweep: Any, *, plan_digest: str = "", strict: bool = False) -> Tracker:
    """The sweep's tracker (its URI made absolute); ``strict`` raises on an outage (``sweep sync``).

    A SQLite store inside OUTPUT that was copied or moved with it is first pointed at the artifacts
    beside it (:func:`relocate_artifacts`), so the copy never writes into the original.
    """
    uri = absolute_tracking_uri(sweep.tracking_uri)
    relocate_artifacts(uri, sweep.output)
    return Tracker(uri, sweep.experiment, sweep.name, sweep.output, plan_digest=plan_digest, strict=strict)


#: Columns of MLflow's SQL store that hold artifact URIs (MLflow 3: runs, logged models, registry).
ARTIFACT_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("logged_models", "artifact_location"), ("model_versions", "source"),
                    ("model_versions", "storage_location"))


def relocate_artifacts(tracking_uri: str, output: str) -> int:
    """Point a copied or moved output's own SQLite store at the artifacts that moved with it.

    MLflow records absolute ``file://`` artifact URIs. An output copied elsewhere (``cp -r``, a sync
    to S3 and back) keeps them, so a run on the copy would write into the original's
    ``mlartifacts``. Only a database *inside* OUTPUT is touched: it belongs to this output. Returns
    how many URIs were rewritten (0 when nothing moved). MLflow has no API for this; the columns are
    those of its SQL schema (:data:`ARTIFACT_COLUMNS`), stable since MLflow 1, and a missing one is
    skipped.
    """
    import sqlite3

    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or is_remote(str(output)):
        return 0
    db = Path(tracking_uri[len(prefix):])
    out = Path(output).resolve()
    if not db.exists() or out not in db.resolve().parents:
        return 0
    new = default_artifact_location(tracking_uri, str(out))
    changed = 0
    with sqlite3.connect(str(db)) as con:
        try:
            olds = {row[0] for row in con.execute("SELECT artifact_location FROM experiments")}
        except sqlite3.Error:
            return 0
        for old in olds:
            if not old or not old.endswith("/" + ARTIFACTS_DIR) or old == new:
                continue
            for table, column in ARTIFACT_COLUMNS:
                try:
                    cur = con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                                      f"WHERE substr({column}, 1, ?) = ?", (new, len(old) + 1, len(old), old))
                    changed += cur.rowcount
                except sqlite3.OperationalError:  # a table or column this MLflow version lacks
                    continue
    if changed:
        log.info("MLflow artifacts of %s now point at %s (the output was copied or moved)", db, new)
    return changed


def default_artifact_location(tracking_uri: str, output: str) -> str | None:
    """Artifacts next to a SQLite store (MLflow would use ./mlruns); a server keeps its own."""
    if tracking_uri.startswith(("http://", "https://", "databricks")) or is_remote(str(output)):
        return None
    return Path(output).resolve().joinpath(ARTIFACTS_DIR).as_uri()


def eval_metrics_of(results: pd.DataFrame) -> dict[str, float]:
    """``test/<metric>/d<level>`` -> value for the rows of one trial."""
    return {eval_metric_name(r.metric, r.test_level, getattr(r, "test_codec", None) or "jpegxl"): float(r.value)
            for r in results.itertuples()}


def ladder_text(test_levels: Iterable[float]) -> str:
    """The sweep's sorted test levels as the series' steps index them: ``0,1,3,8``."""
    return ",".join(format_level(x) for x in sorted(float(v) for v in test_levels))


def eval_series_of(results: pd.DataFrame, test_levels: Iterable[float],
                   codec: str | None = None) -> dict[str, dict[int, float]]:
    """``test/<metric>`` and ``test/dcr`` -> {step: value}, step = the level's index in the sorted test levels.

    Only the trial's own codec (``codec``) makes the series; cross-codec cells are in the per-level
    metrics and the cells table.
    """
    ladder = sorted(float(v) for v in test_levels)
    series: dict[str, dict[int, float]] = {}
    for r in results.itertuples():
        if codec is not None and (getattr(r, "test_codec", None) or codec) != codec:
            continue
        level = float(r.test_level)
        if level not in ladder:
            continue
        step = ladder.index(level)
        series.setdefault(series_name(r.metric), {})[step] = float(r.value)
        dcr = getattr(r, "test_dcr", None)
        if dcr is not None and _finite(dcr):
            series.setdefault(DCR_SERIES, {})[step] = float(dcr)
    return series


def cells_table_of(results: pd.DataFrame) -> pd.DataFrame:
    """A trial's rows for its ``cells`` table (level, DCR, value and intervals), by level and metric."""
    cols = [c for c in CELL_COLUMNS if c in results.columns]
    order = [c for c in ("test_codec", "test_level", "metric") if c in cols]
    return results[cols].sort_values(order, kind="stable").reset_index(drop=True)


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


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
