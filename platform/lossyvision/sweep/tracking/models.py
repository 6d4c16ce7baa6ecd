"""A trial's model in MLflow: logged once as a LoggedModel of its run, with its metrics, and registered."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from lossyvision.sweep.mlnames import MODEL_NAME, REGISTERED_ALIAS, TAG_SWEEP, TAG_TRIAL
from lossyvision.sweep.tracking.client import is_outage

log = logging.getLogger(__name__)


class ModelLog:
    """The model half of :class:`lossyvision.sweep.tracking.tracker.Tracker` (its client, runs and guard)."""

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
            if is_outage(e):
                raise
            log.warning("trial %s: its model was not logged to MLflow (%s: %s); the checkpoint is in %s",
                        trial_key, type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "", self.output)
            return None
        self._link_metrics(rid, logged.model_id)
        return logged.model_id

    def _link_metrics(self, rid: str, model_id: str) -> None:
        """Give a logged model its trial's metrics: the per-level test metrics and the last training epoch's.

        Each is sent again with its own timestamp, step and value and the model's id: MLflow links it
        to the model and keeps one point in the run's history.
        """
        from mlflow.entities import Metric

        keys = [k for k in self.client.get_run(rid).data.metrics
                if (k.startswith("test/") and k.count("/") >= 2) or k.startswith("train/")]
        linked = []
        for key in keys:
            history = self.client.get_metric_history(rid, key)
            if history:
                last = max(history, key=lambda m: (m.step, m.timestamp))
                linked.append(Metric(key, last.value, last.timestamp, last.step, model_id=model_id))
        for i in range(0, len(linked), 900):
            self.client.log_batch(rid, metrics=linked[i:i + 900])

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
            if is_outage(e) and "RESOURCE_DOES_NOT_EXIST" not in str(e):
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
