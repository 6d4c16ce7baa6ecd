"""What one run of a sweep did (:class:`SweepOutcome`) and the lines that tell the user, the answer first."""

from __future__ import annotations

from dataclasses import dataclass, field

from lossyvision.output import RESULTS_CSV_NAME, OutputFolder
from lossyvision.sweep.mlnames import UI_FIRST_STEPS, ui_command


@dataclass
class SweepOutcome:
    output: str
    trials: int
    cells: int
    trials_run: int = 0
    cells_run: int = 0
    trial_failures: dict[str, str] = field(default_factory=dict)
    cell_failures: dict[str, str] = field(default_factory=dict)
    tracking_uri: str = ""
    tracking_ok: bool = True
    tracking_error: str | None = None
    experiment_id: str | None = None                      # MLflow's, for the UI link
    registered: list[str] = field(default_factory=list)  # what --register did, one line per model
    report: str | None = None
    verdict: list[str] = field(default_factory=list)      # the report's answer, first lines
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase (compress, train, ...)

    @property
    def ok(self) -> bool:
        return not self.trial_failures and not self.cell_failures


def summary_lines(outcome: SweepOutcome) -> list[str]:
    """What to tell the user at the end: the answer first, then where the results are."""
    lines = list(outcome.verdict) + list(outcome.registered)
    if lines:
        lines.append("")
    lines += [f"sweep done in {outcome.seconds:.0f}s: {outcome.trials_run} trial(s) and {outcome.cells_run} "
              f"cell(s) run now, grid {outcome.trials} trials x {outcome.cells} evaluations",
              f"results: {OutputFolder(outcome.output).results_file} (and {RESULTS_CSV_NAME})"]
    if outcome.phases:
        lines.append("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in outcome.phases.items()))
    for key, err in list(outcome.trial_failures.items())[:5]:
        lines.append(f"FAILED trial {key}: {err}")
    for key, err in list(outcome.cell_failures.items())[:5]:
        lines.append(f"FAILED cell {key}: {err}")
    if not outcome.ok:
        lines.append("rerun the same command to retry what failed; "
                     f"`lossyvision sweep status {outcome.output}` shows the grid")
    if outcome.report:
        lines.append(f"report: {outcome.report}")
    if outcome.tracking_ok:
        lines.append(f"MLflow: {ui_command(outcome.tracking_uri, outcome.experiment_id)}")
        lines.append(f"  {UI_FIRST_STEPS}")
    else:
        lines.append(f"MLflow was unreachable ({outcome.tracking_error}); once it is back: "
                     f"lossyvision sweep sync {outcome.output}")
    return lines
