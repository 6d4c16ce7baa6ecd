"""``sweep sync``: whatever MLflow lacks for the sweep in OUTPUT, pushed from OUTPUT alone (idempotent)."""

from __future__ import annotations

from lossyvision import output as outdir
from lossyvision.progress import Log
from lossyvision.store import is_remote
from lossyvision.sweep.plan import done_cell_keys
from lossyvision.sweep.push import push_models, push_trials, sweep_params
from lossyvision.sweep.reporting import analyse_quietly, log_verdicts, sync_report_files
from lossyvision.sweep.results import read_results
from lossyvision.sweep.status import FAILED, SweepState
from lossyvision.sweep.tracking import tracker_for
from lossyvision.sweep.trials import read_manifest


def sync_output(output: str, echo: Log = print) -> int:
    """Push whatever MLflow lacks for the sweep in OUTPUT; returns how many trial runs were checked.

    Idempotent: runs are found by tags and only missing params/metrics are sent. Raises if the
    tracking server is still unreachable.
    """
    sweep = outdir.load_output_sweep(output)
    grid = outdir.load_plan(output)
    tracker = tracker_for(sweep, plan_digest=grid.digest, strict=True)
    tracker.start_sweep(sweep_params(sweep, grid),
                        sweep_file=outdir.path(sweep.output, outdir.SWEEP_COPY) if not is_remote(sweep.output) else None)
    try:
        manifest = read_manifest(sweep)
    except Exception:  # noqa: BLE001 - only MLflow params need it; a missing store is no reason to fail
        manifest = None
    state = SweepState(sweep.output)
    failures = {k: v.get("error", "") for k, v in state.data["trials"].items() if v.get("state") == FAILED}
    results = read_results(sweep.output)
    push_models(tracker, sweep, grid, manifest, echo)
    n = push_trials(tracker, sweep, grid, manifest, results, failures)
    complete = {c.key for c in grid.cells} <= done_cell_keys(results)
    if complete and not state.driver_alive():
        verdicts = analyse_quietly(sweep.output, echo)
        if verdicts is not None:
            log_verdicts(tracker, verdicts)
        sync_report_files(sweep.output)
        tracker.finish_sweep("FINISHED")
    echo(f"synced {n} trial run(s) of {sweep.name} to {tracker.uri}")
    return n
