"""The bodies of ``lossyvision report`` and ``advise``: the report and the verdict of an output folder, the
scaling-law advice of a budget sweep, and logging their files to the sweep's MLflow run."""

from __future__ import annotations

import json
from typing import Optional

import typer

from lossyvision.advisor import advise_output, format_report, parse_count
from lossyvision.commands.errors import check_output, clean_errors, error_line, fail
from lossyvision.output import OutputError, OutputFolder
from lossyvision.report.build import analyse, build_report
from lossyvision.report.cells import ReportError
from lossyvision.report.verdict import verdict_records
from lossyvision.spec import SpecError, parse_keep
from lossyvision.sweep.tracking import log_report_artifacts
from lossyvision.units import parse_bytes


def report(output: str, *, keep: Optional[str], mlflow: bool) -> None:
    try:
        keep_fraction = None if keep is None else parse_keep(keep, "--keep")
    except ValueError as e:
        fail(str(e))
    check_output(output)
    try:
        with clean_errors():
            result = build_report(output, keep_fraction=keep_fraction)
    except ReportError as e:
        fail(str(e))
    for line in result.verdict:
        typer.echo(line)
    for w in result.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"wrote {result.index_html} ({len(result.figures)} figures)")
    if mlflow:
        log_artifacts(output, result.paths, "report")


def log_artifacts(output: str, paths: list[str], artifact_path: str) -> None:
    """Log files to the sweep's MLflow parent run when OUTPUT is a sweep's output; warn otherwise."""
    try:
        ok = log_report_artifacts(output, paths, artifact_path=artifact_path)
    except (SpecError, OutputError) as e:
        typer.secho(f"warning: not logged to MLflow: {str(e).splitlines()[0]}", fg=typer.colors.YELLOW, err=True)
        return
    if ok:
        typer.echo(f"logged {len(paths)} file(s) to MLflow under {artifact_path}/")
    else:
        typer.secho("warning: MLflow is unreachable; the files are only in OUTPUT", fg=typer.colors.YELLOW, err=True)


def advise(output: str, *, budget: Optional[str], images_available: Optional[str], metric: Optional[str],
           model: Optional[str], test_level: Optional[str], store_uri: Optional[str], bootstrap: int, seed: int,
           as_json: bool) -> None:
    try:
        with clean_errors():
            budgets = OutputFolder(output).sweep().budgets
    except (SpecError, OutputError) as e:
        fail(str(e))
    if not budgets:
        given = [n for n, v in (("--budget", budget), ("--images-available", images_available),
                                ("--test-level", test_level), ("--store", store_uri)) if v is not None]
        if given:
            fail(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} to a budget sweep; "
                 f"{output} has no budgets")
        try:
            result = analyse(output)
        except ReportError as e:
            fail(str(e))
        found = [v for v in result.verdicts if (model is None or v.model == model) and
                 (metric is None or v.metric == metric)]
        if not found:
            fail("no verdict: " + ("; ".join(result.notes) or "no results of the current configuration"))
        if as_json:
            typer.echo(json.dumps(verdict_records(found), indent=1))
            return
        for line in result.lines if (model is None and metric is None) else [v.text for v in found]:
            typer.echo(line)
        return
    if as_json:
        fail(f"--json prints the verdicts of a sweep without budgets; {output} is a budget sweep (its fit is in "
             "scaling_fit.json)")
    try:
        budget_bytes = parse_bytes(budget) if budget is not None else None
        if budget_bytes is not None and budget_bytes <= 0:
            raise ValueError(f"--budget must be > 0, got {budget}")
        available = parse_count(images_available) if images_available is not None else None
        level: float | str | None = test_level
        if test_level is not None and test_level != "same":
            try:
                level = float(test_level)
            except ValueError:
                raise ValueError(f"--test-level must be a number or 'same', got {test_level!r}") from None
        check_output(output)
        report = advise_output(output, budget=budget_bytes, images_available=available, metric=metric,
                               model=model, test_level=level, store_uri=store_uri, n_bootstrap=bootstrap,
                               seed=seed)
    except (SpecError, ValueError) as e:
        fail(*(error_line(e) or (str(e), 2)))
    typer.echo(format_report(report))
    typer.echo(f"\nwrote {output.rstrip('/')}/scaling_fit.json")
    if report.any_refused:
        typer.secho("advice refused: the fit cannot support extrapolating to what was asked (see above)",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(3)
