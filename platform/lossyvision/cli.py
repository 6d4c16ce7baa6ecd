"""The ``lossyvision`` command line. Each command is a thin shell over a module function."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    help="How far can you lossily compress your image data before your vision models notice?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sweep_app = typer.Typer(help="Run, inspect and sync sweeps (train x test grids).", no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print a clear error (no traceback) and exit."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


# --- demo data ----------------------------------------------------------------------------------
@app.command("demo-data")
def demo_data(
    out: Path = typer.Argument(..., help="Folder to write the demo dataset into."),
    png: bool = typer.Option(False, "--png", help="Store originals as PNG (as Cityscapes) instead of JPEG."),
) -> None:
    """Build the small labelled demo dataset of real photos, offline and deterministically."""
    raise NotImplementedError


# --- compress -----------------------------------------------------------------------------------
@app.command()
def compress() -> None:
    """Compress a dataset at every level with Ray Data and write the manifest."""
    raise NotImplementedError


# --- sweeps -------------------------------------------------------------------------------------
@sweep_app.command("run")
def sweep_run(sweep_file: Path = typer.Argument(..., help="Sweep YAML file.")) -> None:
    """Compress, train every (model, train level, repeat) on Ray Tune, evaluate the grid, report."""
    raise NotImplementedError


@sweep_app.command("status")
def sweep_status(output: str = typer.Argument(..., help="The sweep's output folder.")) -> None:
    """Show the grid with done, running, failed and missing cells."""
    raise NotImplementedError


@sweep_app.command("sync")
def sweep_sync(output: str = typer.Argument(..., help="The sweep's output folder.")) -> None:
    """Push results missing from MLflow (after an outage) to the tracking server."""
    raise NotImplementedError


# --- report and analysis -----------------------------------------------------------------------
@app.command()
def report(output: str = typer.Argument(..., help="The sweep's output folder.")) -> None:
    """Draw the study's figures and write OUTPUT/report/index.html."""
    raise NotImplementedError


@app.command()
def sensitivity() -> None:
    """DCT-frequency sensitivity maps of a trained classifier."""
    raise NotImplementedError


@app.command()
def advise() -> None:
    """Recommend a compression level for a storage budget from a budget sweep's fitted scaling law."""
    raise NotImplementedError


@app.command()
def submit() -> None:
    """Submit a sweep to a Ray cluster through the Job Submission API."""
    raise NotImplementedError


def main() -> None:
    app()


if __name__ == "__main__":
    main()
