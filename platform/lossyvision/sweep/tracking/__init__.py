"""MLflow tracking, the only package that imports mlflow: a parent run per sweep and a nested child run per trial.

Runs are found by tags (``lossyvision.sweep`` + ``lossyvision.trial``), never remembered, so
logging is idempotent: logging a trial twice (a rerun, ``sweep sync``) adds only what is
missing. A trial's tag is its key, which carries its configuration hash: an edited trial gets a
new run. The parent run belongs to one configuration of the sweep (``lossyvision.plan``, the
plan's digest; MLflow params cannot change), and a trial reused by a new configuration moves under
its parent.

What a trial's run holds: its params and per-epoch ``train/*`` metrics; its trained model
(``mlflow.pytorch.log_model``, a signature and an input example, as a LoggedModel of the run); its
training data as a dataset input (source: the store's level, digest: the manifest rows it trained
on) and its test levels as evaluation inputs; test metrics per level (``test/top1/d2``) and as series
over the test levels (``by_test_level/top1``; :mod:`lossyvision.sweep.mlnames` says why both); and a
``cells`` table (``cells.json``: level, DCR, value and intervals per cell). The trial's logged model
carries its metrics (the per-level test metrics and the last epoch's training metrics). The parent run
holds the report's verdict (metrics ``verdict/...``, tags, the run description) and the report's files.
The experiment is tagged ``mlflow.experimentKind = custom_model_development``. What is sent is built
without MLflow in :mod:`lossyvision.sweep.trackdata`; where the store and its artifacts live, in
:mod:`lossyvision.sweep.mlstore`.

Ray's MLflow integration (``MLflowLoggerCallback``, ``setup_mlflow``) is not used: it keys runs by
Tune's trial ids (a rerun or a retried trial gets a new run), does not nest them (ray#19978), and
fails the trial or the callback when the server is down; trials here never need MLflow.

Outages: the first failed call logs one warning and turns the tracker off for the rest of the
run (results live in ``results.parquet``); ``lossyvision sweep sync OUTPUT`` pushes everything
later. HTTP retries and timeouts are kept short so an unreachable server costs seconds.

Its modules: :mod:`.tracker` (the runs, trials, epochs and the verdict), :mod:`.models` (a trial's logged model
and its registration), :mod:`.client` (short HTTP settings and what counts as an outage), :mod:`.source` (git
tags of the running code) and :mod:`.artifacts` (the report's files on the parent run).
"""

from lossyvision.sweep.tracking.artifacts import log_report_artifacts
from lossyvision.sweep.tracking.client import HTTP_ENV, is_outage
from lossyvision.sweep.tracking.source import source_tags
from lossyvision.sweep.tracking.tracker import Tracker, tracker_for

__all__ = ["HTTP_ENV", "Tracker", "is_outage", "log_report_artifacts", "source_tags", "tracker_for"]
