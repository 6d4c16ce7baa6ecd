"""A sweep's output folder (:class:`OutputFolder`): every path, file name and format check in it.

On a low floor on purpose: status, sync, tracking, the report, sensitivity and advice read an output
through this module, never through the sweep driver (``sweep.run``), and never through the dataset or
the store the sweep named: an output whose dataset and store were deleted or moved still has its
status, report, advice and sync.

An output holds (names relative to it; each name is declared once, here or in the lower module that
writes the file, and :class:`OutputFolder` is the way to it):

- ``lossyvision-output.json`` (:data:`~lossyvision.places.MARKER_NAME`): the marker, with the format
  version: an older output (no marker) is refused rather than mixed with results of unknown configuration;
- ``.lossyvision.lock`` (:data:`~lossyvision.places.LOCK_NAME`): the one writer's lock;
- ``sweep.yaml`` (:data:`~lossyvision.places.SWEEP_COPY`): the sweep as last run; ``plan.json``: its grid
  (trial and cell keys, and what each key's hash was made of) -- what status, report and advice take as
  "current"; ``state.json`` (:data:`~lossyvision.places.STATE_NAME`): what is running or failed;
- ``checkpoints/<trial key>/``, ``predictions/<cell key>.parquet``, ``results.parquet`` (+ ``.csv``,
  :mod:`lossyvision.sweep.results`);
- ``search.json`` (an adaptive search's path), ``verdict.json``, ``report/``, ``sensitivity/``,
  ``scaling_fit.json`` (a budget sweep's advice).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pandas as pd
import yaml

from lossyvision import __version__, store
from lossyvision.metrics import outcomes_from_parquet, outcomes_to_parquet
from lossyvision.places import DEFAULT_STORE, LOCK_NAME, MARKER_NAME, STATE_NAME, SWEEP_COPY, read_state
from lossyvision.spec import SpecError, Sweep, parse_sweep
from lossyvision.sweep.plan import Grid
from lossyvision.sweep.results import RESULTS_CSV_NAME, RESULTS_NAME, current_rows, read_results

FORMAT = 2
PLAN_NAME = "plan.json"
PREDICTIONS_DIR = "predictions"
CHECKPOINTS_DIR = "checkpoints"
SEARCH_NAME = "search.json"
VERDICT_NAME = "verdict.json"
REPORT_DIR = "report"
SENSITIVITY_DIR = "sensitivity"
SCALING_FIT_NAME = "scaling_fit.json"

__all__ = ["FORMAT", "OutputError", "OutputFolder", "CHECKPOINTS_DIR", "DEFAULT_STORE", "LOCK_NAME", "MARKER_NAME",
           "PLAN_NAME", "PREDICTIONS_DIR", "REPORT_DIR", "RESULTS_CSV_NAME", "RESULTS_NAME", "SCALING_FIT_NAME",
           "SEARCH_NAME", "SENSITIVITY_DIR", "STATE_NAME", "SWEEP_COPY", "VERDICT_NAME"]


class OutputError(ValueError):
    """An output folder that cannot be used as asked; the message says why and what to do."""


class OutputFolder:
    """One sweep output folder, local or remote (``s3://...``): its paths, and its files read and written."""

    def __init__(self, uri: str | os.PathLike[str]) -> None:
        self.uri = str(uri)

    def __repr__(self) -> str:
        return f"OutputFolder({self.uri!r})"

    def __str__(self) -> str:
        return self.uri

    def path(self, *parts: str) -> str:
        return store.join(self.uri, *parts)

    # --- where each file lives ------------------------------------------------------------------
    @property
    def marker(self) -> str:
        return self.path(MARKER_NAME)

    @property
    def lock(self) -> str:
        return self.path(LOCK_NAME)

    @property
    def sweep_copy(self) -> str:
        return self.path(SWEEP_COPY)

    @property
    def plan_file(self) -> str:
        return self.path(PLAN_NAME)

    @property
    def state(self) -> str:
        return self.path(STATE_NAME)

    @property
    def results_file(self) -> str:
        return self.path(RESULTS_NAME)

    @property
    def results_csv(self) -> str:
        return self.path(RESULTS_CSV_NAME)

    @property
    def checkpoints(self) -> str:
        return self.path(CHECKPOINTS_DIR)

    @property
    def predictions(self) -> str:
        return self.path(PREDICTIONS_DIR)

    @property
    def search(self) -> str:
        return self.path(SEARCH_NAME)

    @property
    def verdict(self) -> str:
        return self.path(VERDICT_NAME)

    @property
    def report_dir(self) -> str:
        return self.path(REPORT_DIR)

    @property
    def sensitivity_dir(self) -> str:
        return self.path(SENSITIVITY_DIR)

    @property
    def scaling_fit(self) -> str:
        return self.path(SCALING_FIT_NAME)

    @property
    def default_store(self) -> str:
        """Where a sweep that names no store keeps it (``OUTPUT/store``)."""
        return self.path(DEFAULT_STORE)

    # --- what it is -----------------------------------------------------------------------------
    def exists(self) -> bool:
        return store.exists(self.uri)

    def is_sweep_output(self) -> bool:
        """Whether it holds a sweep's output (this format or an older one)."""
        return any(store.exists(p) for p in (self.marker, self.sweep_copy))

    def check_format(self) -> None:
        """Refuse an output written by an earlier lossyvision: its results carry no configuration hash.

        A folder without any sweep output in it passes (a new output).
        """
        if store.exists(self.marker):
            try:
                fmt = int(json.loads(store.read_bytes(self.marker)).get("format", 0))
            except (ValueError, TypeError, AttributeError):
                raise OutputError(f"{self.marker} is damaged; delete it only if {self.uri} holds no results you "
                                  "need") from None
            if fmt != FORMAT:
                raise OutputError(f"{self.uri} was written in output format {fmt}; this lossyvision reads format "
                                  f"{FORMAT}: run the sweep into a new output folder")
            return
        if any(store.exists(p) for p in (self.sweep_copy, self.results_file, self.checkpoints)):
            raise OutputError(
                f"{self.uri} was written by an earlier lossyvision, whose results are not keyed by their configuration "
                "(an edited sweep could not be told from the one that made them); run the sweep into a new output "
                "folder, or move this one aside")

    def mark(self) -> None:
        """Write the marker (once): this folder is a sweep output of the current format."""
        if not store.exists(self.marker):
            store.atomic_write_bytes(self.marker, json.dumps(
                {"format": FORMAT, "created_by": f"lossyvision {__version__}"}, indent=1).encode())

    # --- the sweep copy -------------------------------------------------------------------------
    def write_sweep(self, sweep: Sweep) -> str:
        store.atomic_write_bytes(self.sweep_copy, sweep_to_yaml(sweep).encode())
        return self.sweep_copy

    def has_sweep(self) -> bool:
        return store.exists(self.sweep_copy)

    def sweep(self, *, check_format: bool = True) -> Sweep:
        """The sweep a run left here (``sweep.yaml``), its output set to this folder.

        Parsing reads nothing but the copy: the dataset and the store it names need not exist. Without
        ``check_format`` the copy is read whatever the output's format (the report's title and settings;
        its results are checked where they are read).
        """
        if check_format:
            self.check_format()
        uri = self.sweep_copy
        if not store.exists(uri):
            store.check_reachable(uri)  # a remote output that cannot be reached says so, not "does not exist"
            raise SpecError(f"{uri} does not exist{store.relative_hint(self.uri)}: is {self.uri} the output folder "
                            "of a sweep run?")
        try:
            data = yaml.safe_load(store.read_bytes(uri).decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise SpecError(f"{uri} is damaged ({type(e).__name__}); rerun `lossyvision sweep run` with the "
                            "original sweep file to rewrite it") from None
        if isinstance(data, dict):
            data["output"] = self.uri if store.is_remote(self.uri) else os.path.abspath(self.uri)
        return parse_sweep(data, source=uri)

    # --- the plan -------------------------------------------------------------------------------
    def write_plan(self, grid: Grid) -> None:
        """``plan.json``: the current grid, so status, report and advice need no manifest or dataset."""
        payload = {"format": FORMAT, "digest": grid.digest, **grid.to_dict()}
        store.atomic_write_bytes(self.plan_file, json.dumps(payload, indent=1, sort_keys=True).encode())

    def plan(self) -> Grid:
        """The grid ``sweep run`` last planned for this output."""
        self.check_format()
        uri = self.plan_file
        if not store.exists(uri):
            raise OutputError(f"{uri} does not exist: run `lossyvision sweep run` on the sweep first")
        try:
            return Grid.from_dict(json.loads(store.read_bytes(uri)))
        except (ValueError, KeyError, TypeError) as e:
            raise OutputError(f"{uri} is damaged ({type(e).__name__}); rerun `lossyvision sweep run` to rewrite "
                              "it") from None

    # --- state ---------------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any] | None:
        """``state.json`` (None if absent); a damaged one is a one-line ``DamagedFileError``."""
        return read_state(self.uri)

    def write_state(self, data: dict[str, Any]) -> None:
        store.atomic_write_bytes(self.state, json.dumps(data, indent=1, sort_keys=True).encode())

    # --- results --------------------------------------------------------------------------------
    def has_results(self) -> bool:
        return store.exists(self.results_file)

    def results(self) -> pd.DataFrame:
        """Every row of ``results.parquet`` (empty, with the schema's columns, if absent)."""
        return read_results(self.uri)

    def current_results(self) -> tuple[pd.DataFrame, int]:
        """The rows of the configuration in ``plan.json``, and how many stale rows were left out."""
        results = self.results()
        current = current_rows(results, [c.key for c in self.plan().cells])
        return current, len(results) - len(current)

    # --- predictions ----------------------------------------------------------------------------
    def predictions_uri(self, cell_key: str) -> str:
        return self.path(PREDICTIONS_DIR, f"{cell_key}.parquet")

    def write_predictions(self, cell_key: str, outcomes: Any) -> str:
        """One cell's per-sample outcomes, atomically (the file names the outcome kind)."""
        uri = self.predictions_uri(cell_key)
        store.atomic_write_bytes(uri, outcomes_to_parquet(outcomes))
        return uri

    def read_predictions(self, cell_key: str) -> Any:
        uri = self.predictions_uri(cell_key)
        return outcomes_from_parquet(store.read_bytes(uri), source=uri)

    def has_predictions(self, cell_key: str) -> bool:
        return store.exists(self.predictions_uri(cell_key))

    # --- small JSON files -----------------------------------------------------------------------
    def write_json(self, uri: str, payload: Any, **dumps: Any) -> str:
        """``payload`` as JSON at ``uri`` (one of this folder's paths), atomically, ending with a newline."""
        store.atomic_write_bytes(uri, (json.dumps(payload, **dumps) + "\n").encode("utf-8"))
        return uri

    def read_json_object(self, uri: str) -> dict[str, Any] | None:
        """The JSON object at ``uri``, or None when it is absent or not a readable object."""
        if not store.exists(uri):
            return None
        try:
            data = json.loads(store.read_bytes(uri))
        except ValueError:
            return None
        return data if isinstance(data, dict) else None


def sweep_to_yaml(sweep: Any) -> str:
    return yaml.safe_dump(sweep.model_dump(mode="json", exclude_none=True), sort_keys=False)


# --- the same, by the folder's URI (for callers that hold a string) ---------------------------------
def path(output: str, *parts: str) -> str:
    return OutputFolder(output).path(*parts)


def is_sweep_output(output: str) -> bool:
    return OutputFolder(output).is_sweep_output()


def check_format(output: str) -> None:
    OutputFolder(output).check_format()


def mark(output: str) -> None:
    OutputFolder(output).mark()


def write_sweep(output: str, sweep: Any) -> str:
    return OutputFolder(output).write_sweep(sweep)


def load_output_sweep(output: str) -> Sweep:
    return OutputFolder(output).sweep()


def write_plan(output: str, grid: Grid) -> None:
    OutputFolder(output).write_plan(grid)


def load_plan(output: str) -> Grid:
    return OutputFolder(output).plan()


def predictions_uri(output: str, cell_key: str) -> str:
    return OutputFolder(output).predictions_uri(cell_key)


def write_predictions(output: str, cell_key: str, outcomes: Any) -> str:
    return OutputFolder(output).write_predictions(cell_key, outcomes)


def read_predictions(output: str, cell_key: str) -> Any:
    return OutputFolder(output).read_predictions(cell_key)


def has_predictions(output: str, cell_key: str) -> bool:
    return OutputFolder(output).has_predictions(cell_key)
