"""Where a sweep stands: done, running, failed and missing trials and cells.

The state comes from what the sweep leaves in OUTPUT: its plan (``plan.json``: the current
configuration's trial and cell keys), results rows (done cells), final checkpoints (done trials)
and ``OUTPUT/state.json``, a small file the driver keeps with the trials and cells that are
running or failed and the driver's pid. A "running" entry whose driver is gone (killed) shows as
interrupted. Checkpoints and results of keys the plan no longer has are *stale*: an earlier
configuration's, kept on disk and listed, never used.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lossyvision.codecs import CODECS, DEFAULT_CODEC
from lossyvision.output import OutputFolder
from lossyvision.store import exists, filesystem, format_level
from lossyvision.sweep.plan import done_cell_keys
from lossyvision.sweep.trials import META_FILE, finished_keys

DONE, RUNNING, FAILED, MISSING, INTERRUPTED = "done", "running", "failed", "missing", "interrupted"
SYMBOLS = {DONE: "[green]done[/]", RUNNING: "[yellow]running[/]", FAILED: "[red]failed[/]",
           MISSING: "[dim]missing[/]", INTERRUPTED: "[magenta]interrupted[/]"}


class SweepState:
    """``OUTPUT/state.json``: trial and cell states the driver records as they change."""

    def __init__(self, output: str) -> None:
        self.folder = OutputFolder(output)
        self.path = self.folder.state
        self.data: dict[str, Any] = {"driver": None, "trials": {}, "cells": {}}
        self.data.update(self.folder.read_state() or {})  # a damaged one is never overwritten silently

    def driver_started(self) -> None:
        self.data["driver"] = {"pid": os.getpid(), "host": socket.gethostname()}
        self.save()

    def driver_finished(self) -> None:
        self.data["driver"] = None
        self.save()

    def set_trial(self, key: str, state: str, error: str | None = None) -> None:
        self._set("trials", key, state, error)

    def set_cell(self, key: str, state: str, error: str | None = None) -> None:
        self._set("cells", key, state, error)

    def _set(self, kind: str, key: str, state: str, error: str | None) -> None:
        entry = {"state": state}
        if error:
            entry["error"] = error
        self.data[kind][key] = entry
        self.save()

    def save(self) -> None:
        self.folder.write_state(self.data)

    def driver_alive(self) -> bool:
        d = self.data.get("driver")
        if not d or d.get("host") != socket.gethostname():
            return bool(d)  # another host: trust the file
        try:
            os.kill(int(d["pid"]), 0)
            return True
        except (OSError, ValueError):
            return False

    def trial(self, key: str) -> dict[str, Any]:
        return self.data["trials"].get(key, {})

    def cell(self, key: str) -> dict[str, Any]:
        return self.data["cells"].get(key, {})


@dataclass(frozen=True)
class CellStatus:
    model: str
    trial: str
    train_level: float
    repeat: int
    budget: int
    test_level: float
    trial_state: str
    state: str
    error: str | None = None
    codec: str = DEFAULT_CODEC
    test_codec: str = DEFAULT_CODEC


def level_label(codec: str, level: float, own: str | None = None) -> str:
    """``d3`` (a JPEG XL distance), ``q70`` (a quality); ``avif q70`` outside the grid's own codec ``own``."""
    letter = "d" if codec in CODECS and not CODECS.get(codec).higher_level_is_better else "q"
    label = f"{letter}{format_level(level)}"
    return label if own is None or codec == own else f"{codec} {label}"


@dataclass(frozen=True)
class Stale:
    """Keys in OUTPUT that the current plan does not have: finished trials and evaluated cells."""

    trials: list[str]
    cells: list[str]


def stale_entries(output: str, grid: Any, results: pd.DataFrame | None = None) -> Stale:
    """Finished trials (checkpoints) and result cells of configurations no longer in the plan."""
    out = OutputFolder(output)
    results = out.results() if results is None else results
    planned_cells = {c.key for c in grid.cells}
    cells = sorted(done_cell_keys(results) - planned_cells)
    planned_trials = {t.key for t in grid.trials}
    folder = out.checkpoints
    trials: list[str] = []
    if exists(folder):
        fs, path = filesystem(folder)
        for meta in sorted(fs.glob(path.rstrip("/") + f"/*/{META_FILE}")):
            key = meta.rstrip("/").split("/")[-2]
            if key not in planned_trials:
                trials.append(key)
    return Stale(trials, cells)


def grid_status(sweep: Any, output: str, grid: Any) -> pd.DataFrame:
    """One row per planned cell with its trial's state and its own (a :class:`CellStatus`)."""
    state = SweepState(output)
    alive = state.driver_alive()
    trials = grid.trials
    done_trials = finished_keys(output, [t.key for t in trials])
    done_cells = done_cell_keys(OutputFolder(output).results())

    def live(entry: dict[str, Any]) -> str:
        s = entry.get("state", MISSING)
        if s == RUNNING and not alive:
            return INTERRUPTED
        return s if s in (RUNNING, FAILED) else MISSING

    rows = []
    for cell in grid.cells:
        t = cell.trial
        trial_state = DONE if t.key in done_trials else live(state.trial(t.key))
        if cell.key in done_cells:
            cell_state = DONE
        else:
            cell_state = live(state.cell(cell.key))
            if cell_state == MISSING and trial_state in (RUNNING, FAILED, INTERRUPTED):
                cell_state = trial_state
        error = state.cell(cell.key).get("error") or state.trial(t.key).get("error")
        rows.append(CellStatus(t.model, t.key, t.train_level, t.repeat, t.budget, cell.test_level,
                               trial_state, cell_state, error if cell_state == FAILED else None,
                               t.codec, cell.test_codec).__dict__)
    return pd.DataFrame(rows)


def render_status(sweep: Any, table: pd.DataFrame, stale: Stale | None = None):
    """A rich renderable: per model, a train x test grid of cell states, a summary line, stale keys."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    counts = table["state"].value_counts().to_dict() if not table.empty else {}
    trials = table.drop_duplicates("trial")
    tcounts = trials["trial_state"].value_counts().to_dict() if not trials.empty else {}
    parts.append(Text.from_markup(
        f"[bold]{sweep.name}[/]: trials " + _summary(tcounts, len(trials)) +
        "; cells " + _summary(counts, len(table))))
    several = table["codec"].nunique() > 1 if not table.empty else False
    for (model, codec), rows in table.groupby(["model", "codec"], sort=False):
        grid = Table(title=f"model {model}" + (f", trained on {codec}" if several else ""), title_justify="left")
        grid.add_column("train \\ test" + (" (repeat, budget)" if _has_axes(rows) else ""))
        grid.add_column("trial")
        points = list(dict.fromkeys(zip(rows["test_codec"], rows["test_level"])))
        points.sort(key=lambda p: (p[0] != codec, p[0], p[1]))  # its own codec first
        for c, level in points:
            grid.add_column(level_label(c, level, codec), justify="center")
        for _trial, trows in rows.groupby("trial", sort=False):
            first = trows.iloc[0]  # a Series: first.repeat would be the Series.repeat method
            label = level_label(codec, first["train_level"])
            if _has_axes(rows):
                label += f" / r{first['repeat']}" + (f" / {first['budget']}B" if first["budget"] >= 0 else "")
            by_point = dict(zip(zip(trows["test_codec"], trows["test_level"]), trows["state"]))
            grid.add_row(label, SYMBOLS[first["trial_state"]],
                         *[SYMBOLS[by_point[p]] if p in by_point else "" for p in points])
        parts.append(grid)
    failed = table[table["state"] == FAILED].drop_duplicates("error")
    for row in failed.head(5).itertuples():
        parts.append(Text(f"failed {row.trial} @ {level_label(row.test_codec, row.test_level)}: {row.error}",
                          style="red"))
    if stale is not None and (stale.trials or stale.cells):
        parts.append(Text(f"stale (an earlier configuration of this sweep; kept on disk, not used): "
                          f"{len(stale.trials)} trial(s), {len(stale.cells)} cell(s)", style="dim"))
        for key in stale.trials[:10]:
            parts.append(Text(f"  stale trial {key}", style="dim"))
        if len(stale.trials) > 10:
            parts.append(Text(f"  ... and {len(stale.trials) - 10} more", style="dim"))
    return Group(*parts)


def _summary(counts: dict[str, int], total: int) -> str:
    shown = [f"{counts[s]} {s}" for s in (DONE, RUNNING, INTERRUPTED, FAILED, MISSING) if counts.get(s)]
    return f"{total} ({', '.join(shown) or 'none'})"


def _has_axes(rows: pd.DataFrame) -> bool:
    return rows["repeat"].nunique() > 1 or (rows["budget"] >= 0).any()
