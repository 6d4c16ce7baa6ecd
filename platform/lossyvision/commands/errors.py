"""The error handling every command shares: one line on stderr and an exit code for each error a user can meet.

Every refusal is one line (``error: ...``) and a non-zero exit, never a traceback: 2 for a problem with the
command line, a sweep file or an input (a cloud URL without credentials, unreachable, denied or without its
bucket: :mod:`lossyvision.cloud`), 1 for one met while running (a damaged file lossyvision wrote, whichever it
is; a busy output; an OS error, which names its path). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import typer
import yaml

from lossyvision.cloud import cloud_error
from lossyvision.compress import CompressError
from lossyvision.lock import LockHeld
from lossyvision.output import OutputError
from lossyvision.places import check_output_files
from lossyvision.report.cells import ReportError
from lossyvision.spec import SpecError
from lossyvision.store import DamagedFileError
from lossyvision.sweep.results import ResultsError

#: Met while running (exit 1): a damaged file lossyvision wrote, a busy place.
RUNNING_ERRORS = (CompressError, LockHeld, DamagedFileError)
#: A bad command line, sweep file or input (exit 2).
INPUT_ERRORS = (SpecError, OutputError, ResultsError, ReportError)


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print a clear error (no traceback) and exit."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def os_error_line(exc: OSError) -> str:
    """An OS error as ``PATH: what happened`` (a full disk names the file it was writing)."""
    what = exc.strerror or str(exc) or type(exc).__name__
    where = exc.filename if exc.filename is not None else None
    return f"{where}: {what}" if where else f"{type(exc).__name__}: {what}"


def error_line(exc: BaseException) -> tuple[str, int] | None:
    """The one line and exit code for an error a user can meet, or None for a bug (keeps its traceback).

    2: a bad command line, sweep file or input (a cloud URL that cannot be reached or read included);
    1: met while running: a busy place, a damaged file lossyvision wrote (any of them: sweep copy,
    state, manifest, results), an OS error naming its path.
    """
    cloud = cloud_error(exc)
    if cloud is not None:
        return str(cloud), 2
    if isinstance(exc, RUNNING_ERRORS):
        return str(exc), 1
    if isinstance(exc, INPUT_ERRORS):
        return str(exc), 2
    if isinstance(exc, OSError):
        return os_error_line(exc), 1
    return None


@contextlib.contextmanager
def clean_errors() -> Iterator[None]:
    """Turn the errors a user can meet into one line (:func:`error_line`). Anything else is a bug
    and keeps its traceback."""
    try:
        yield
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise
    except Exception as exc:
        found = error_line(exc)
        if found is None:
            raise
        fail(*found)


def check_output(output: str) -> None:
    """Commands that read an output first check its small files read back (one line if not)."""
    with clean_errors():
        check_output_files(output)


def refuse_sweep_file(output: str, command: str) -> None:
    """A sweep file given where an output folder belongs: say so, and name the file's output."""
    if "://" in str(output) or not os.path.isfile(output) or not str(output).endswith((".yaml", ".yml")):
        return
    try:
        named = yaml.safe_load(Path(output).read_text(encoding="utf-8")).get("output")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        named = None
    where = f", here {named}" if isinstance(named, str) else ""
    fail(f"{output} is a sweep file; `{command}` takes its output folder{where}")
