"""The sweep driver: compress, plan, train on Tune, evaluate the grid, track, report; one sweep end to end.

Every step skips what OUTPUT already holds (the store's manifest, final checkpoints, results
rows), so rerunning a sweep, or running it after the driver was killed, does only what is
missing. Keys carry a hash of each trial's and cell's configuration (:mod:`lossyvision.sweep.plan`):
after an edit exactly the changed trials and cells run again, and the old ones stay in OUTPUT as
stale, never mixed into the results used. The resolved sweep file and its plan are copied to
``OUTPUT/sweep.yaml`` and ``OUTPUT/plan.json`` (:mod:`lossyvision.output`): status, sync and the
report need nothing but OUTPUT.

The steps' parts live beside it: the paths (:mod:`~lossyvision.sweep.paths`), the resource checks
(:mod:`~lossyvision.sweep.resources`), Tune's events (:mod:`~lossyvision.sweep.listener`), the
evaluation step (:mod:`~lossyvision.sweep.scoring`), MLflow (:mod:`~lossyvision.sweep.push`), the report
(:mod:`~lossyvision.sweep.reporting`), ``--register`` (:mod:`~lossyvision.sweep.register`), ``sweep sync``
(:mod:`~lossyvision.sweep.sync`) and the closing lines (:mod:`~lossyvision.sweep.summary`).
"""

from __future__ import annotations

import os
import time
from typing import Any

import pandas as pd

from lossyvision import output as outdir
from lossyvision.compress import sweep_job_args
from lossyvision.compress_report import describe_failures
from lossyvision.lock import writer_lock
from lossyvision.preflight import preflight
from lossyvision.progress import Log, SweepProgress
from lossyvision.runners.cluster import init_ray, node_shapes
from lossyvision.runners.search import Locked, search_trials, worst_trainings
from lossyvision.runners.tune import train_trials
from lossyvision.spec import Sweep, load_sweep
from lossyvision.store import is_remote
from lossyvision.sweep.listener import DriverListener
from lossyvision.sweep.paths import resolve_paths
from lossyvision.sweep.plan import Grid, TrialSpec, done_cell_keys, grid_size, pending, plan
from lossyvision.sweep.push import push_models, push_trials, sweep_params
from lossyvision.sweep.register import register_recommended
from lossyvision.sweep.relative import fill_relative
from lossyvision.sweep.reporting import analyse_quietly, log_verdicts, maybe_report
from lossyvision.sweep.resources import (
    check_cache_disk, check_cluster_resources, check_local_resources, local_resources)
from lossyvision.sweep.results import read_results
from lossyvision.sweep.scoring import evaluate_grid
from lossyvision.sweep.searchgrid import search_grid
from lossyvision.sweep.status import FAILED, SweepState, stale_entries
from lossyvision.sweep.summary import SweepOutcome, summary_lines
from lossyvision.sweep.sync import sync_output
from lossyvision.sweep.tracking import tracker_for
from lossyvision.sweep.trials import drop_progress, finished_keys

#: What the command line imports from here (``summary_lines``, ``resolve_paths`` and ``sync_output`` live beside it).
__all__ = ["SweepOutcome", "compress_for", "resolve_paths", "run_sweep", "summary_lines", "sync_output"]


def compress_for(sweep: Sweep, echo: Log, ray_address: str | None = None,
                 num_cpus: int | None = None) -> pd.DataFrame:
    """Compress (or reuse) the store at every level the sweep needs, codec by codec; returns the manifest rows.

    Ray starts only when something is left to compress, and stays up for training.
    """
    from lossyvision.runners.compress import compress_dataset  # lazy: loads ray

    jobs = sweep_job_args(sweep)
    prefix = "compress: " if len(jobs) == 1 else "compress {codec}: "
    frames = []
    for args in jobs:
        p = prefix.format(codec=args["codec"])
        rows = compress_dataset(**args, address=ray_address, num_cpus=num_cpus, keep_ray=True,
                                log=lambda m, p=p: echo(f"{p}{m}"))
        for line in describe_failures(rows, args["store_uri"]):  # the sweep goes on without them
            echo(f"{p}{line}")
        frames.append(rows)
    return pd.concat(frames, ignore_index=True)


def run_sweep(sweep_file: str | os.PathLike[str] | Sweep, *, echo: Log = print,
              ray_address: str | None = None, num_cpus: int | None = None,
              build_report: bool = True, register: str | None = None, wait_for_nodes: bool = False) -> SweepOutcome:
    """Run a sweep end to end; only what OUTPUT lacks for the sweep's current configuration is computed.

    Everything checkable is checked before anything is written: the resources against a local
    Ray (before it starts) or against the nodes of the cluster joined (:func:`check_cluster_resources`),
    OUTPUT's format and its results table. Then OUTPUT's writer lock is taken:
    a second run on the same OUTPUT is refused at once (:class:`lossyvision.lock.LockHeld` names the
    first). ``register``: a registered-model name; the model of the level the verdict advises is
    registered under it (:func:`register_recommended`).
    """
    sweep = resolve_paths(preflight(sweep_file if isinstance(sweep_file, Sweep) else load_sweep(sweep_file),
                                    source="sweep" if isinstance(sweep_file, Sweep) else str(sweep_file)))
    if not (ray_address or os.environ.get("RAY_ADDRESS")):
        check_local_resources(sweep, local_resources(num_cpus))
    else:
        init_ray(ray_address)
        shapes, groups_known = node_shapes()
        for line in check_cluster_resources(sweep, shapes, groups_known=groups_known, wait_for_nodes=wait_for_nodes):
            echo(line)
    outdir.check_format(sweep.output)
    read_results(sweep.output)  # a damaged results table is reported now, not after training
    check_cache_disk(sweep)  # a store compressed earlier: the decoded caches' disk, before anything runs
    with writer_lock(sweep.output, "lossyvision sweep run", log=echo):
        return _run_sweep(sweep, echo=echo, ray_address=ray_address, num_cpus=num_cpus, build_report=build_report,
                          register=register)


def _run_sweep(sweep: Sweep, *, echo: Log, ray_address: str | None, num_cpus: int | None,
               build_report: bool, register: str | None = None) -> SweepOutcome:
    """The body of :func:`run_sweep`, run while it holds OUTPUT's writer lock."""
    from lossyvision.runners.evaluate import evaluate_cells  # lazy: loads torch

    started = time.time()
    output = sweep.output
    if not is_remote(output):
        os.makedirs(output, exist_ok=True)
    outdir.mark(output)
    outdir.write_sweep(output, sweep)

    outcome = SweepOutcome(output, 0, 0, tracking_uri=sweep.tracking_uri)
    clock = _Clock(outcome.phases)
    with clock("compress"):
        manifest = compress_for(sweep, echo, ray_address, num_cpus)
    check_cache_disk(sweep, manifest)  # before any trial
    grid = plan(sweep, manifest)
    if sweep.search is not None:  # its candidates: the grid's keys (one more repeat: 0 explores), the cells it reads
        grid = search_grid(sweep, plan(sweep.model_copy(update={"repeats": sweep.repeats + 1}), manifest))
    outdir.write_plan(output, grid)
    outcome.trials, outcome.cells = len(grid.trials), len(grid.cells)
    results = read_results(output)
    trials_todo = pending(grid.trials, finished_keys(output, [t.key for t in grid.trials]))
    cells_todo = pending(grid.cells, done_cell_keys(results))
    stale = stale_entries(output, grid, results)
    echo(grid_size(grid, trials_todo, cells_todo, len(stale.trials), len(stale.cells)).describe())
    if trials_todo or cells_todo:
        with clock("ray"):
            init_ray(ray_address, num_cpus=num_cpus)
    else:
        echo("nothing to run: every trial and cell of this configuration is done")

    tracker = tracker_for(sweep, plan_digest=grid.digest)
    tracker.start_sweep(sweep_params(sweep, grid),
                        sweep_file=outdir.path(output, outdir.SWEEP_COPY) if not is_remote(output) else None)
    state = SweepState(output)
    state.driver_started()
    progress = SweepProgress(len(grid.trials), len(grid.cells), len(grid.trials) - len(trials_todo),
                             len(grid.cells) - len(cells_todo))
    try:
        # Train what is missing (a search: what its answer needs; the grid becomes what it trained).
        if sweep.search is not None and trials_todo:
            grid, trials_todo = _search(sweep, grid, manifest, state, tracker, outcome, echo)
            outdir.write_plan(output, grid)
        elif trials_todo:
            echo(f"training {len(trials_todo)} trial(s) on Ray Tune "
                 f"({sweep.resources.trial.cpu:g} CPU, {sweep.resources.trial.gpu:g} GPU each)")
            progress.phase("training", len(trials_todo))
            listener = DriverListener(sweep, grid, state, tracker, manifest, echo, len(trials_todo), progress)
            with clock("train"):
                outcome.trial_failures = train_trials(sweep, trials_todo, output, manifest, listener)
            outcome.trials_run = len(trials_todo)
        finished = finished_keys(output, [t.key for t in grid.trials])
        for key in finished & {t.key for t in trials_todo}:
            drop_progress(output, key)
        for t in trials_todo:  # the listener may miss errors raised before a trial starts
            if t.key not in finished and t.key not in outcome.trial_failures:
                outcome.trial_failures[t.key] = "trial did not finish"
                state.set_trial(t.key, FAILED, "trial did not finish")

        # MLflow: every finished trial's model (from its checkpoint; only those not logged yet).
        with clock("models"):
            push_models(tracker, sweep, grid, manifest, echo)

        # Evaluate every finished trial on its test levels.
        cells_todo = [c for c in pending(grid.cells, done_cell_keys(read_results(output)))
                      if c.trial.key in finished]
        if cells_todo:
            progress.phase("evaluation", len(cells_todo))
            with clock("evaluate"):
                evaluate_grid(sweep, cells_todo, manifest, state, tracker, outcome, echo, evaluate_cells, progress)

        with clock("intervals"):
            fill_relative(output, sweep, grid)
        # MLflow: make sure every trial's run has everything (statuses, params, missed epochs).
        push_trials(tracker, sweep, grid, manifest, read_results(output), outcome.trial_failures)
        tracker.finish_sweep("FINISHED" if outcome.ok else "FAILED")
    finally:
        state.driver_finished()

    verdicts = None
    if build_report:
        with clock("report"):
            verdicts = maybe_report(output, echo, outcome)
    if verdicts is None and register:
        verdicts = analyse_quietly(output, echo)
    if verdicts is not None:
        log_verdicts(tracker, verdicts)
    if register:
        outcome.registered = register_recommended(tracker, grid, verdicts or [], register)
    outcome.tracking_ok, outcome.tracking_error = tracker.available, tracker.error
    outcome.experiment_id = tracker.experiment_link_id()
    outcome.seconds = time.time() - started
    return outcome


def _search(sweep: Sweep, grid: Grid, manifest: pd.DataFrame, state: SweepState, tracker: Any,
            outcome: SweepOutcome, echo: Log) -> tuple[Grid, list[TrialSpec]]:
    """The training step of a search (``runners.search``): ``(the grid of what it trained, those trials)``;
    each finished trial's question cells are evaluated as it finishes, on the searcher's thread."""
    from lossyvision.runners.evaluate import evaluate_cells  # lazy: loads torch

    state, tracker = Locked(state), Locked(tracker)  # used from Tune's thread (epochs) and the searcher's
    # A finished trial's actor keeps its CPUs until Tune's controller stops it, and the controller waits
    # in suggest() (up to 10 minutes) while the search waits for that evaluation: so the evaluation reserves
    # no CPU (the actor is idle), only the GPUs it asks for.
    eval_sweep = sweep.model_copy(update={"resources": sweep.resources.model_copy(
        update={"eval": sweep.resources.eval.model_copy(update={"cpu": 0})})})

    def evaluate(trials: list[TrialSpec]) -> None:
        done = done_cell_keys(read_results(sweep.output))
        cells = [c for t in trials for c in grid.cells_of(t) if c.key not in done]
        if cells:
            now = SweepOutcome(sweep.output, 0, 0)
            evaluate_grid(eval_sweep, cells, manifest, state, tracker, now, echo, evaluate_cells)
            outcome.cell_failures.update(now.cell_failures)
            outcome.cells_run += now.cells_run

    echo(f"search ({sweep.search.question}): training only the levels its answer needs, on Ray Tune")
    listener = DriverListener(sweep, grid, state, tracker, manifest, echo, worst_trainings(sweep))
    searched, failures, ran = search_trials(sweep, grid, sweep.output, manifest, listener, evaluate, echo)
    outcome.trial_failures.update(failures)
    outcome.trials_run += ran
    return searched, list(searched.trials)



class _Clock:
    """``with clock("train"): ...`` adds the block's seconds to ``phases["train"]``."""

    def __init__(self, phases: dict[str, float]) -> None:
        self.phases = phases

    def __call__(self, name: str) -> "_Clock":
        self.name = name
        return self

    def __enter__(self) -> None:
        self.t0 = time.time()

    def __exit__(self, *exc: Any) -> None:
        self.phases[self.name] = round(self.phases.get(self.name, 0.0) + time.time() - self.t0, 2)
