"""The sweep's tracker: finds or makes its parent run and a child run per trial by tags, and logs params, epochs,
test metrics by level, inputs, cells and the verdict; it turns itself off on an outage."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Iterable, Mapping

import pandas as pd

from lossyvision.store import format_level
from lossyvision.sweep.mlnames import (
    CELLS_TABLE, DATASET_CONTEXT, EXPERIMENT_KIND, TAG_CONFIG, TAG_EXPERIMENT_KIND,
    TAG_NOTE, TAG_PARENT, TAG_PLAN, TAG_ROLE, TAG_SWEEP, TAG_TEST_LEVELS, TAG_TRIAL, safe_name, train_metric_name)
from lossyvision.sweep.mlstore import absolute_tracking_uri, default_artifact_location, relocate_artifacts
from lossyvision.sweep.trackdata import DatasetRef, is_finite, verdict_markdown
from lossyvision.sweep.tracking.client import HTTP_ENV
from lossyvision.sweep.tracking.models import ModelLog
from lossyvision.sweep.tracking.source import source_tags

log = logging.getLogger(__name__)


class Tracker(ModelLog):
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

    def experiment_link_id(self) -> str | None:
        """The experiment's id for the UI link, or None when MLflow is off (a failure turns it off, as any call)."""
        return self._guard(self.experiment_id)

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
        model_id = self._ready_model(rid) if test_metrics else None  # a logged model carries its metrics
        new = [Metric(k, float(v), _now_ms(), 0, model_id=model_id) for k, v in test_metrics.items() if k not in have]
        if series and self._series_ladder_ok(rid, trial_key, test_levels):
            for name, points in series.items():
                logged = {m.step for m in self.client.get_metric_history(rid, name)} if name in have else set()
                new += [Metric(name, float(v), _now_ms(), int(step)) for step, v in sorted(points.items())
                        if int(step) not in logged and is_finite(v)]
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
                if value is not None and is_finite(value) and run.data.metrics.get(key) != float(value):
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


def tracker_for(sweep: Any, *, plan_digest: str = "", strict: bool = False) -> Tracker:
    """The sweep's tracker (its URI made absolute); ``strict`` raises on an outage (``sweep sync``).

    A SQLite store inside OUTPUT that was copied or moved with it is first pointed at the artifacts
    beside it (:func:`relocate_artifacts`), so the copy never writes into the original.
    """
    uri = absolute_tracking_uri(sweep.tracking_uri)
    relocate_artifacts(uri, sweep.output)
    return Tracker(uri, sweep.experiment, sweep.name, sweep.output, plan_digest=plan_digest, strict=strict)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
