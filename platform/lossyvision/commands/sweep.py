"""The bodies of ``lossyvision sweep run``, ``plan``, ``status`` and ``sync``: run a sweep file, say what it would
do, show where an output stands, push its results to MLflow."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from lossyvision.commands.errors import check_output, clean_errors, error_line, fail, refuse_sweep_file
from lossyvision.output import OutputFolder
from lossyvision.preflight import load_checked
from lossyvision.spec import GRID_CAP, check_grid, grid_counts
from lossyvision.sweep.plan import PlanError
from lossyvision.sweep.preview import preview, render_preview
from lossyvision.sweep.run import resolve_paths, run_sweep, summary_lines, sync_output
from lossyvision.sweep.searchgrid import plan_lines
from lossyvision.sweep.status import grid_status, render_status, stale_entries


def run(sweep_file: Path, *, address: Optional[str], num_cpus: Optional[int], no_report: bool, yes: bool,
        wait_for_nodes: bool, register: Optional[str]) -> None:
    with clean_errors():
        sweep = load_checked(sweep_file)
        check_grid(sweep, yes, source=str(sweep_file))
        try:
            outcome = run_sweep(sweep, echo=typer.echo, ray_address=address, num_cpus=num_cpus,
                                build_report=not no_report, register=register,
                                wait_for_nodes=wait_for_nodes)
        except PlanError as e:
            fail(str(e))
    for line in summary_lines(outcome):
        typer.echo(line)
    if not outcome.ok:
        raise typer.Exit(1)


def plan(sweep_file: Path, *, sample: int) -> None:
    with clean_errors():
        sweep = resolve_paths(load_checked(sweep_file))
        result = preview(sweep, sample=sample)
    for line in render_preview(result):
        typer.echo(line)
    if sweep.search is not None:
        cpu = sweep.resources.trial.cpu  # the levels explored at once: this machine's trial slots, unless set
        for line in plan_lines(sweep, max(1, int((os.cpu_count() or 1) // cpu) if cpu else 1)):
            typer.echo(line)
    trials, evaluations = grid_counts(sweep)
    if trials > GRID_CAP["trials"] or evaluations > GRID_CAP["evaluations"]:
        typer.echo(f"note: the grid is over the cap ({GRID_CAP['trials']} trials or {GRID_CAP['evaluations']} "
                   "evaluations): `sweep run` needs --yes")


def status(output: str) -> None:
    refuse_sweep_file(output, "sweep status")
    check_output(output)
    with clean_errors():
        folder = OutputFolder(output)
        sweep, grid = folder.sweep(), folder.plan()
        table = grid_status(sweep, output, grid)
        stale = stale_entries(output, grid)
    Console().print(render_status(sweep, table, stale))


def sync(output: str) -> None:
    check_output(output)
    try:
        sync_output(output, echo=typer.echo)
    except (typer.Exit, typer.Abort):
        raise
    except Exception as e:  # the server is still down: say so, no traceback
        found = error_line(e)
        if found is not None:
            fail(*found)
        fail(f"cannot reach MLflow: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", code=1)
