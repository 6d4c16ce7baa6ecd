"""The report at the end of a sweep, which never fails it: built (or only its verdicts analysed), and its verdicts
and files sent onto the sweep's parent run in MLflow."""

from __future__ import annotations

from typing import Any

from lossyvision.progress import Log
from lossyvision.report import build_report
from lossyvision.report.build import REPORT_DIR, analyse
from lossyvision.report.verdict import headline, verdict_lines
from lossyvision.store import exists, filesystem, join
from lossyvision.sweep.summary import SweepOutcome
from lossyvision.sweep.tracking import log_report_artifacts


def maybe_report(output: str, echo: Log, outcome: SweepOutcome) -> list[Any] | None:
    """Build the report; its failure never fails the sweep. The verdict lines go into ``outcome``;
    returns the verdicts (None when the report failed)."""
    try:
        result = build_report(output)
    except Exception as e:  # the sweep's results are safe; say what went wrong and go on
        echo(f"warning: the report failed ({type(e).__name__}: {e}); run `lossyvision report {output}`")
        return None
    log_report_artifacts(output, result.paths)  # warns and goes on when MLflow is down
    outcome.report = str(result)
    outcome.verdict = list(result.verdict)
    return list(result.verdicts)


def log_verdicts(tracker: Any, verdicts: list[Any]) -> None:
    """The report's verdicts onto the sweep's parent run (metrics, tags, its description)."""
    tracker.log_verdicts(verdicts, verdict_lines(headline(verdicts)), headline(verdicts))


def analyse_quietly(output: str, echo: Log) -> list[Any] | None:
    """The report's verdicts without building its files (None, with a warning line, when they cannot be made)."""
    try:
        return list(analyse(output).verdicts)
    except Exception as e:  # noqa: BLE001 - the sweep's results are safe; say why there is no verdict
        echo(f"warning: no verdict ({type(e).__name__}: {e})")
        return None


def sync_report_files(output: str) -> None:
    """The report's files in OUTPUT/report, if a report was built, onto the parent run."""
    folder = join(output, REPORT_DIR)
    if not exists(folder):
        return
    fs, path = filesystem(folder)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    log_report_artifacts(output, [join(folder, n) for n in names])
