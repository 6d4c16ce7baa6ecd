"""The names a sweep's runs carry in MLflow: tags, metric and series names, and the link to the UI (no mlflow import).

Test metrics are named twice. As ``test/top1/d2``: one number per level, grouped by the UI under
``test/top1``; MLflow's runs table, sorting and parallel-coordinates plots show one value per metric, so
comparing trials at one test distance needs a name per level. And as series named for their x-axis,
``by_test_level/top1``, ``by_test_level/dcr`` and ``by_test_level/level`` (the distance itself), with
step = the test level's index in the sweep's sorted test levels (the ``lossyvision.test_levels`` tag): a
line chart of ``by_test_level/top1`` with the metric ``by_test_level/level`` (or ``/dcr``) as its x-axis
draws accuracy against distance (or DCR). No metric is named plainly ``test/top1``: a series' last step
(the most compressed level) would read as "the" accuracy.
"""

from __future__ import annotations

import re

from lossyvision.codecs import CODECS, DEFAULT_CODEC
from lossyvision.store import format_level

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
CELLS_TABLE = "cells.json"
MODEL_NAME = "model"   # the model's folder in its artifacts (the LoggedModel is named by the trial key)
REGISTERED_ALIAS = "recommended"
DATASET_CONTEXT = "mlflow.data.context"


def eval_metric_name(metric: str, test_level: float, codec: str = DEFAULT_CODEC) -> str:
    """``test/top1/d2`` (JPEG XL distance 2), ``test/top1/avif-q70``: one metric per test level,
    comparable across child runs (the default codec's names have no prefix).

    (MLflow names allow letters, digits, ``_-. :/`` only, so not ``@``; the slash groups the
    levels of one metric in the UI.)
    """
    letter = "d" if codec in CODECS and not CODECS.get(codec).higher_level_is_better else "q"
    prefix = "" if codec == DEFAULT_CODEC else f"{codec}-"
    return f"test/{metric}/{prefix}{letter}{format_level(test_level)}"


#: Series over the test levels: the name says what the x-axis is (step = the level's index).
SERIES_PREFIX = "by_test_level/"


def series_name(metric: str) -> str:
    """``by_test_level/top1``: the metric as a series over the test levels (step = the level's index)."""
    return f"{SERIES_PREFIX}{metric}"


DCR_SERIES = f"{SERIES_PREFIX}dcr"
#: The test level itself at each step: the x-axis that turns the step (an index) into the distance.
LEVEL_SERIES = f"{SERIES_PREFIX}level"


def train_metric_name(metric: str) -> str:
    return f"train/{metric}"


def safe_name(text: str) -> str:
    """A name MLflow accepts in metric keys (letters, digits, ``_-. /``)."""
    return re.sub(r"[^A-Za-z0-9_.\- /]", "_", str(text))


def ui_command(tracking_uri: str, experiment_id: str | None = None) -> str:
    """How to look at the sweep: the experiment's runs page (a server) or the command to start the UI."""
    page = f"/#/experiments/{experiment_id}/runs{UI_QUERY}" if experiment_id else ""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri.rstrip('/')}{page}"
    command = f"mlflow ui --backend-store-uri {tracking_uri}"
    return f"{command}, then open http://127.0.0.1:5000{page}" if page else command


#: Where to click first on the experiment's page (printed under its link; docs/mlflow.md shows it).
UI_FIRST_STEPS = ("first: expand the sweep's run (the ⊞ beside its name) to list one run per trial, and the "
                  "chart view shows their curves; in a chart's ⋮ → Configure, X-axis → Metric → "
                  "by_test_level/level plots a metric against the test distance (docs/mlflow.md)")
