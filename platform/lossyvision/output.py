"""A sweep's output folder: where each file lives, its format, the sweep copy, the plan, predictions.

On a low floor on purpose: status, tracking, the report, sensitivity and advice read an output
through this module, never through the sweep driver (``sweep.run``), so nothing but the CLI
imports the driver.

An output holds (names relative to it):

- ``lossyvision-output.json``: the marker, with the format version: an older output (no marker)
  is refused rather than mixed with results of unknown configuration;
- ``sweep.yaml``: the sweep as last run; ``plan.json``: its grid (trial and cell keys, and what
  each key's hash was made of) -- what status, report and advice take as "current";
- ``checkpoints/<trial key>/``, ``predictions/<cell key>.parquet``, ``results.parquet`` (+ ``.csv``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import yaml

from lossyvision import __version__, store
from lossyvision.metrics import outcomes_from_parquet, outcomes_to_parquet
from lossyvision.places import MARKER_NAME, SWEEP_COPY
from lossyvision.spec import SpecError, parse_sweep
from lossyvision.sweep.plan import Grid

FORMAT = 2
PLAN_NAME = "plan.json"
PREDICTIONS_DIR = "predictions"
CHECKPOINTS_DIR = "checkpoints"
RESULTS_NAME = "results.parquet"


class OutputError(ValueError):
    """An output folder that cannot be used as asked; the message says why and what to do."""


def path(output: str, *parts: str) -> str:
    return store.join(str(output), *parts)


def is_sweep_output(output: str) -> bool:
    """Whether ``output`` holds a sweep's output (this format or an older one)."""
    return any(store.exists(path(output, name)) for name in (MARKER_NAME, SWEEP_COPY))


def check_format(output: str) -> None:
    """Refuse an output written by an earlier lossyvision: its results carry no configuration hash.

    A folder without any sweep output in it passes (a new output).
    """
    marker = path(output, MARKER_NAME)
    if store.exists(marker):
        try:
            fmt = int(json.loads(store.read_bytes(marker)).get("format", 0))
        except (ValueError, TypeError, AttributeError):
            raise OutputError(f"{marker} is damaged; delete it only if {output} holds no results you need") from None
        if fmt != FORMAT:
            raise OutputError(f"{output} was written in output format {fmt}; this lossyvision reads format "
                              f"{FORMAT}: run the sweep into a new output folder")
        return
    if any(store.exists(path(output, name)) for name in (SWEEP_COPY, RESULTS_NAME, CHECKPOINTS_DIR)):
        raise OutputError(
            f"{output} was written by an earlier lossyvision, whose results are not keyed by their configuration "
            "(an edited sweep could not be told from the one that made them); run the sweep into a new output "
            "folder, or move this one aside")


def mark(output: str) -> None:
    """Write the marker (once): this folder is a sweep output of the current format."""
    marker = path(output, MARKER_NAME)
    if not store.exists(marker):
        store.atomic_write_bytes(marker, json.dumps({"format": FORMAT, "created_by": f"lossyvision {__version__}"},
                                                    indent=1).encode())


# --- the sweep copy --------------------------------------------------------------------------------
def sweep_to_yaml(sweep: Any) -> str:
    return yaml.safe_dump(sweep.model_dump(mode="json", exclude_none=True), sort_keys=False)


def write_sweep(output: str, sweep: Any) -> str:
    uri = path(output, SWEEP_COPY)
    store.atomic_write_bytes(uri, sweep_to_yaml(sweep).encode())
    return uri


def _read_sweep_copy(output: str) -> tuple[str, Any]:
    """``(URI, parsed YAML)`` of ``OUTPUT/sweep.yaml``; a missing or unreadable copy is a :class:`SpecError`."""
    check_format(output)
    uri = path(output, SWEEP_COPY)
    if not store.exists(uri):
        raise SpecError(f"{uri} does not exist: is {output} the output folder of a sweep run?")
    try:
        return uri, yaml.safe_load(store.read_bytes(uri).decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SpecError(f"{uri} is damaged ({type(e).__name__}); rerun `lossyvision sweep run` with the "
                        "original sweep file to rewrite it") from None


def raw_sweep(output: str) -> dict[str, Any]:
    """``OUTPUT/sweep.yaml`` as plain data, unvalidated: readable where its dataset is not reachable."""
    uri, data = _read_sweep_copy(output)
    if not isinstance(data, dict):
        raise SpecError(f"{uri} is damaged (not a mapping); rerun `lossyvision sweep run` to rewrite it")
    return data


def load_output_sweep(output: str) -> Any:
    """The sweep a run left in OUTPUT (``OUTPUT/sweep.yaml``), its output set to OUTPUT."""
    uri, data = _read_sweep_copy(output)
    if isinstance(data, dict):
        data["output"] = str(output) if store.is_remote(str(output)) else os.path.abspath(output)
    return parse_sweep(data, source=uri)


# --- the plan ----------------------------------------------------------------------------------------
def write_plan(output: str, grid: Any) -> None:
    """``plan.json``: the current grid, so status, report and advice need no manifest or dataset."""
    payload = {"format": FORMAT, "digest": grid.digest, **grid.to_dict()}
    store.atomic_write_bytes(path(output, PLAN_NAME), json.dumps(payload, indent=1, sort_keys=True).encode())


def load_plan(output: str) -> Any:
    """The grid ``sweep run`` last planned for OUTPUT (a :class:`lossyvision.sweep.plan.Grid`)."""
    check_format(output)
    uri = path(output, PLAN_NAME)
    if not store.exists(uri):
        raise OutputError(f"{uri} does not exist: run `lossyvision sweep run` on the sweep first")
    try:
        return Grid.from_dict(json.loads(store.read_bytes(uri)))
    except (ValueError, KeyError, TypeError) as e:
        raise OutputError(f"{uri} is damaged ({type(e).__name__}); rerun `lossyvision sweep run` to rewrite it") from None


# --- predictions -------------------------------------------------------------------------------------
def predictions_uri(output: str, cell_key: str) -> str:
    return path(output, PREDICTIONS_DIR, f"{cell_key}.parquet")


def write_predictions(output: str, cell_key: str, outcomes: Any) -> str:
    """One cell's per-sample outcomes, atomically (the file names the outcome kind)."""
    uri = predictions_uri(output, cell_key)
    store.atomic_write_bytes(uri, outcomes_to_parquet(outcomes))
    return uri


def read_predictions(output: str, cell_key: str) -> Any:
    uri = predictions_uri(output, cell_key)
    return outcomes_from_parquet(store.read_bytes(uri), source=uri)


def has_predictions(output: str, cell_key: str) -> bool:
    return store.exists(predictions_uri(output, cell_key))
