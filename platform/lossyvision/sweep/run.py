"""The sweep driver: compress, plan, train on Tune, evaluate the grid, track, report.

Every step skips what OUTPUT already holds (the store's manifest, final checkpoints, results
rows), so rerunning a sweep, or running it after the driver was killed, does only what is
missing. Keys carry a hash of each trial's and cell's configuration (:mod:`lossyvision.sweep.plan`):
after an edit exactly the changed trials and cells run again, and the old ones stay in OUTPUT as
stale, never mixed into the results used. The resolved sweep file and its plan are copied to
``OUTPUT/sweep.yaml`` and ``OUTPUT/plan.json`` (:mod:`lossyvision.output`): status, sync and the
report need nothing but OUTPUT.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from lossyvision import output as outdir
from lossyvision.cache import cache_problems
from lossyvision.compress import describe_failures, sweep_job_args
from lossyvision.lock import writer_lock
from lossyvision.preflight import preflight
from lossyvision.progress import SweepProgress, epoch_line
from lossyvision.report import build_report
from lossyvision.report.build import REPORT_DIR, analyse
from lossyvision.report.verdict import headline, verdict_lines
from lossyvision.runners.cluster import init_ray, node_shapes
from lossyvision.runners.search import Locked, search_trials, worst_trainings
from lossyvision.runners.tune import train_trials
from lossyvision.spec import SpecError, Sweep, load_sweep
from lossyvision.store import absolute, exists, filesystem, format_level, is_remote, join, level_dir
from lossyvision.sweep.models import loggable_model
from lossyvision.sweep.plan import CellSpec, Grid, TrialSpec, done_cell_keys, grid_size, level_dcr, pending, plan
from lossyvision.sweep.relative import fill_relative
from lossyvision.sweep.results import NO_BUDGET, append_results, current_rows, read_results
from lossyvision.sweep.searchgrid import search_grid
from lossyvision.sweep.status import DONE, FAILED, RUNNING, SweepState, stale_entries
from lossyvision.sweep.tracking import (
    DatasetRef, absolute_tracking_uri, cells_table_of, eval_metric_name, eval_metrics_of, eval_series_of,
    UI_FIRST_STEPS, ladder_text, log_report_artifacts, tracker_for, trial_params, ui_command)
from lossyvision.sweep.trials import drop_progress, finished_keys, read_manifest, read_meta

log = logging.getLogger(__name__)

Echo = Callable[[str], None]


# --- the sweep file ---------------------------------------------------------------------------------
def resolve_paths(sweep: Sweep) -> Sweep:
    """The sweep with every local path absolute (workers and later commands run elsewhere)."""
    output = absolute(sweep.output)
    update: dict[str, Any] = {
        "output": output,
        "dataset": sweep.dataset.model_copy(update={"root": absolute(sweep.dataset.root)}),
        "store": absolute(sweep.store) if sweep.store else None,
        "tracking": sweep.tracking.model_copy(update={
            "uri": absolute_tracking_uri(sweep.tracking.uri) if sweep.tracking.uri else None}),
    }
    return sweep.model_copy(update=update)


# --- tracking glue ---------------------------------------------------------------------------------
def sweep_params(sweep: Sweep, grid: Grid) -> dict[str, Any]:
    return {
        "n_trials": len(grid.trials), "n_evaluations": len(grid.cells), "plan": grid.digest,
        "models": ",".join(m.name for m in sweep.models),
        "train_levels": " ".join(f"{a.name}:" + ",".join(format_level(x) for x in a.train_levels) for a in sweep.arms),
        "test_levels": " ".join(f"{a.name}:" + ",".join(format_level(x) for x in a.test_levels) for a in sweep.arms),
        "repeats": sweep.repeats, "seed": sweep.seed,
        "seed_spread": (f"{sweep.seed_spread.repeats}@" + ",".join(format_level(x) for x in sweep.seed_spread.levels)
                        if sweep.seed_spread else None), "codec": ",".join(a.name for a in sweep.arms),
        "budgets": ",".join(str(b) for b in sweep.budgets) if sweep.budgets else None,
        "dataset": sweep.dataset.kind,
    }


def push_trials(tracker: Any, sweep: Sweep, grid: Grid, manifest: pd.DataFrame | None,
                results: pd.DataFrame, failures: dict[str, str] | None = None) -> int:
    """Send everything known about the grid's trials to MLflow (only what is missing); returns how many.

    Params, epoch history, dataset inputs, test metrics per level and as series, the ``cells`` table
    and the run's status. Models go separately (:func:`push_models`).
    """
    failures = failures or {}
    results = current_rows(results, [c.key for c in grid.cells])
    n = 0
    for trial in grid.trials:
        if not tracker.available:
            break
        meta = _meta_or_none(sweep.output, trial.key)
        if meta is None and trial.key not in failures:
            continue
        train_dcr = meta.get("train_dcr") if meta else (
            level_dcr(manifest, sweep.train_split, trial.train_level, trial.codec).vs_source
            if manifest is not None else None)
        rows = results[results["trial_id"] == trial.key]
        expected = len(grid.cells_of(trial))
        got = rows["cell_id"].nunique()
        status = "FAILED" if trial.key in failures else ("FINISHED" if got >= expected else None)
        tracker.log_trial(trial.key, trial_params(sweep, trial, meta, train_dcr),
                          history=(meta or {}).get("history", ()), test_metrics=eval_metrics_of(rows),
                          series=eval_series_of(rows, sweep.arm(trial.codec).test_levels, trial.codec),
                          test_levels=ladder_text(sweep.arm(trial.codec).test_levels),
                          inputs=dataset_refs(sweep, grid, trial), cells=cells_table_of(rows), status=status)
        n += 1
    return n


def dataset_refs(sweep: Sweep, grid: Grid, trial: TrialSpec) -> list[Any]:
    """A trial's MLflow dataset inputs: the store level it trained on and the levels it is tested on.

    Sources are the store's level folders; digests are the manifest rows' digests the trial's and
    cells' configuration hashes were made of (``plan.json`` identities), so an input changes
    exactly when the data does.
    """
    def ref(split: str, codec: str, level: float, digest: str | None, context: str) -> list[DatasetRef]:
        if not digest:
            return []
        folder = level_dir(codec, level)
        return [DatasetRef(f"{folder} {split}", join(sweep.store_uri, folder), str(digest), context)]

    refs = ref(sweep.train_split, trial.codec, trial.train_level,
               grid.identities.get(trial.key, {}).get("train_rows"), "training")
    for cell in grid.cells_of(trial):
        refs += ref(sweep.test_split, cell.test_codec, cell.test_level,
                    grid.identities.get(cell.key, {}).get("test_rows"), "evaluation")
    return refs


def push_models(tracker: Any, sweep: Sweep, grid: Grid, manifest: pd.DataFrame | None, echo: Echo) -> int:
    """Log the model of every finished trial whose run has none yet (read from its checkpoint); returns how many."""
    done = finished_keys(sweep.output, [t.key for t in grid.trials])
    n = 0
    for trial in grid.trials:
        if not tracker.available:
            break
        if trial.key not in done or tracker.has_model(trial.key):
            continue
        t0 = time.time()
        try:
            model = loggable_model(sweep, trial, sweep.output, manifest)
        except Exception as e:  # noqa: BLE001 - a model MLflow cannot get is a warning, never a failed sweep
            echo(f"warning: MLflow: cannot prepare the model of trial {trial.key} ({type(e).__name__}: {e})")
            continue
        if model is None:
            continue
        if tracker.log_model(trial.key, model):
            n += 1
            echo(f"MLflow: logged the model of trial {trial.key} ({time.time() - t0:.0f}s)")
    return n


def _meta_or_none(output: str, key: str) -> dict[str, Any] | None:
    try:
        return read_meta(output, key)
    except (FileNotFoundError, OSError, ValueError):
        return None


class DriverListener:
    """Tune's trial events -> state file, MLflow (live per-epoch metrics), progress lines."""

    def __init__(self, sweep: Sweep, grid: Grid, state: SweepState, tracker: Any, manifest: pd.DataFrame,
                 echo: Echo, total: int, progress: SweepProgress | None = None) -> None:
        self.sweep, self.state, self.tracker, self.manifest, self.echo = sweep, state, tracker, manifest, echo
        self.total, self.done, self.t0 = total, 0, {}
        self.trials = {t.key: t for t in grid.trials}
        self.progress = progress
        self.epoch_seconds: dict[str, list[float]] = {}

    def started(self, key: str) -> None:
        self.t0[key] = time.time()
        self.state.set_trial(key, RUNNING)
        trial = self.trials.get(key)
        if trial is not None:
            dcr = level_dcr(self.manifest, self.sweep.train_split, trial.train_level, trial.codec)
            self.tracker.log_trial(key, trial_params(self.sweep, trial, None, dcr.vs_source))
        self.echo(f"trial {key}: started")

    def epoch(self, key: str, epoch: int, metrics: dict[str, float], seconds: float | None = None,
              epochs: int | None = None) -> None:
        """``seconds``: the epoch's time (Tune's ``time_this_iter_s``); ``epochs``: the trial's total."""
        self.tracker.log_epoch(key, epoch, metrics)
        if seconds is not None:
            self.epoch_seconds.setdefault(key, []).append(float(seconds))
        took = self.epoch_seconds.get(key) or []
        later = took[1:] or took  # the first epoch's time includes the trial's start (model, data)
        mean = sum(later) / len(later) if later else None
        # The model's numbers first, then the input pipeline's (images/s, the share of time waiting for data).
        shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items(), key=lambda kv: (kv[0] in _PIPELINE, kv[0])))
        self.echo(f"trial {key}: {epoch_line(epoch, epochs, seconds, mean)} {shown}")

    def finished(self, key: str) -> None:
        self.done += 1
        self.state.set_trial(key, DONE)
        took = time.time() - self.t0.get(key, time.time())
        self.echo(f"trial {key}: done in {took:.0f}s ({self.done}/{self.total})")
        if self.progress is not None:
            self.echo(self.progress.trial_done())

    def failed(self, key: str, error: str) -> None:
        self.state.set_trial(key, FAILED, error)
        self.echo(f"trial {key}: FAILED: {error}")


# --- the driver ------------------------------------------------------------------------------------
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


#: Epoch metrics about the data pipeline rather than the model (P5 in docs/benchmarks.md).
_PIPELINE = ("images_per_s", "loader_wait")


def local_resources(num_cpus: int | None) -> dict[str, float]:
    """What a local Ray started here would have: its CPUs and this machine's CUDA devices."""
    try:
        import torch

        gpus = float(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - no torch or no driver: no GPU
        gpus = 0.0
    return {"CPU": float(num_cpus or os.cpu_count() or 1), "GPU": gpus}


def check_local_resources(sweep: Sweep, resources: dict[str, float]) -> None:
    """A local Ray never grows: a trial or cell asking for more than it has would wait forever."""
    have = {"cpu": resources.get("CPU", 0.0), "gpu": resources.get("GPU", 0.0)}
    custom = sorted(sweep.resources.trial.custom)
    if custom:
        raise SpecError(f"resources.trial.custom: {', '.join(custom)} exist only on a cluster whose nodes were "
                        "started with them; run on a cluster (RAY_ADDRESS or --address)")
    for what, res in (("trial", sweep.resources.trial), ("eval", sweep.resources.eval)):
        for kind in ("cpu", "gpu"):
            want = getattr(res, kind) * getattr(res, "workers", 1)  # data-parallel: per worker
            if want > have[kind]:
                raise SpecError(f"resources.{what}.{kind}: asks for {want:g} but the local Ray has "
                                f"{have[kind]:g}; lower it or run on a cluster (RAY_ADDRESS)")


def resource_needs(sweep: Sweep) -> list[tuple[str, dict[str, float]]]:
    """What one trial and one evaluation task ask of a single node, in Ray's resource names."""
    needs = []
    for what, res in (("trial", sweep.resources.trial), ("eval", sweep.resources.eval)):
        need = {"CPU": float(res.cpu), "GPU": float(res.gpu), **{k: float(v) for k, v in getattr(res, "custom", {}).items()}}
        needs.append((f"resources.{what}", {k: v for k, v in need.items() if v > 0}))
    return needs


def check_cluster_resources(sweep: Sweep, shapes: list[dict[str, float]], *, groups_known: bool,
                            wait_for_nodes: bool = False) -> list[str]:
    """Refuse a trial or evaluation that no node of the cluster can hold: it would wait forever.

    ``shapes``: the resources of each live node, plus each node group an autoscaler reports
    (``groups_known``; :func:`lossyvision.runners.cluster.node_shapes`). When the autoscaler does not
    report its groups, ``wait_for_nodes`` (``sweep run --wait-for-nodes``) turns the refusal into a
    warning line, returned: the nodes may come. Raises :class:`SpecError` otherwise.
    """
    warnings = []
    for field, need in resource_needs(sweep):
        if any(all(shape.get(k, 0.0) >= v for k, v in need.items()) for shape in shapes):
            continue
        asked = ", ".join(f"{v:g} {k}" for k, v in need.items())
        line = f"{field}: no node of the cluster offers {asked} (its nodes: {_describe_shapes(shapes)})"
        if wait_for_nodes and not groups_known:
            warnings.append(f"warning: {line}; waiting for an autoscaler to add one (--wait-for-nodes)")
            continue
        hint = "lower it or add such nodes" if groups_known else \
            "lower it, add such nodes (`ray start --resources`, KubeRay: a worker group), or pass " \
            "--wait-for-nodes when an autoscaler adds them"
        raise SpecError(f"{line}; {hint}")
    return warnings


#: Ray's bookkeeping resources, left out when a node is described.
_BOOKKEEPING = ("node:", "memory", "object_store_memory", "accelerator_type:")


def _describe_shapes(shapes: list[dict[str, float]]) -> str:
    """``2 CPU, 1 GPU; 4 CPU, 1 trainer``: each distinct node shape once (at most six)."""
    kinds = sorted({", ".join(f"{v:g} {k}" for k, v in sorted(shape.items()) if not k.startswith(_BOOKKEEPING))
                    or "no resources" for shape in shapes})
    return "; ".join(kinds[:6]) + ("; ..." if len(kinds) > 6 else "") if kinds else "none"


def check_cache_disk(sweep: Sweep, manifest: pd.DataFrame | None = None) -> None:
    """Refuse a model's ``cache:`` whose decoded images exceed ``resources.trial.cache_bytes``
    (:mod:`lossyvision.cache`); without ``manifest``, the store's when it exists (else checked after
    compression, still before any trial)."""

    if not any(getattr(m, "cache", None) for m in sweep.models):
        return
    if manifest is None:
    
        try:
            manifest = read_manifest(sweep)
        except Exception:  # noqa: BLE001 - no store yet
            return
    problems = cache_problems(sweep, manifest)
    if problems:
        raise SpecError.of("sweep", problems)


def compress_for(sweep: Sweep, echo: Echo, ray_address: str | None = None,
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


def run_sweep(sweep_file: str | os.PathLike[str] | Sweep, *, echo: Echo = print,
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


def _run_sweep(sweep: Sweep, *, echo: Echo, ray_address: str | None, num_cpus: int | None,
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
            verdicts = _maybe_report(output, echo, outcome)
    if verdicts is None and register:
        verdicts = _analyse_quietly(output, echo)
    if verdicts is not None:
        log_verdicts(tracker, verdicts)
    if register:
        outcome.registered = register_recommended(tracker, grid, verdicts or [], register)
    outcome.tracking_ok, outcome.tracking_error = tracker.available, tracker.error
    outcome.experiment_id = tracker._guard(tracker.experiment_id) if tracker.available else None
    outcome.seconds = time.time() - started
    return outcome


def _search(sweep: Sweep, grid: Grid, manifest: pd.DataFrame, state: SweepState, tracker: Any,
            outcome: SweepOutcome, echo: Echo) -> tuple[Grid, list[TrialSpec]]:
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


def log_verdicts(tracker: Any, verdicts: list[Any]) -> None:
    """The report's verdicts onto the sweep's parent run (metrics, tags, its description)."""
    tracker.log_verdicts(verdicts, verdict_lines(headline(verdicts)), headline(verdicts))


def _analyse_quietly(output: str, echo: Echo) -> list[Any] | None:
    try:
        return list(analyse(output).verdicts)
    except Exception as e:  # noqa: BLE001 - the sweep's results are safe; say why there is no verdict
        echo(f"warning: no verdict ({type(e).__name__}: {e})")
        return None


def register_recommended(tracker: Any, grid: Grid, verdicts: list[Any], name: str) -> list[str]:
    """Register, under ``name``, the model of the level the verdict advises; one line per model says what happened.

    The level is the verdict's answer to "store everything at" (trained and tested at the same
    level) for the model's headline metric; its trial (repeat 0, no budget) has the logged model.
    No advised level (the data keep the originals, or cannot tell) registers nothing. With several
    models, each gets its own registered model, ``<name>-<model>``.
    """
    matched = [v for v in headline(verdicts) if v.question == "matched"]
    models = sorted({t.model for t in grid.trials})
    lines = []
    if not tracker.available:
        return [f"register {name}: nothing registered: MLflow is unreachable (run `lossyvision sweep run` again "
                "with --register once it is back)"]
    for model in models:
        target = name if len(models) == 1 else f"{name}-{model}"
        v = next((x for x in matched if x.model == model), None)
        if v is None or v.level is None:
            why = (f"the verdict for {v.metric} says '{v.outcome}'" if v is not None
                   else "the sweep has no verdict for it (too few results)")
            lines.append(f"register {target}: nothing registered: no advised level for {model} ({why})")
            continue
        trial = next((t for t in grid.trials if t.model == model and t.train_level == v.level and t.repeat == 0
                      and t.budget == NO_BUDGET), None)
        if trial is None:
            lines.append(f"register {target}: nothing registered: no trial of {model} at level {format_level(v.level)}")
            continue
        version = tracker.register_model(trial.key, target, tags={
            "lossyvision.sweep": tracker.sweep_name, "lossyvision.trial": trial.key, "level": format_level(v.level),
            "metric": v.metric, "rel": f"{v.rel:.2f}", "rel_low": f"{v.rel_low:.2f}"})
        if version is None:
            lines.append(f"register {target}: nothing registered: trial {trial.key} has no model in MLflow"
                         + (f" ({tracker.error})" if tracker.error else ""))
        else:
            lines.append(f"registered {target} version {version} (alias 'recommended'): {model} at distance "
                         f"{format_level(v.level)}, {v.metric} {v.rel:.1f}% of the baseline (lower bound "
                         f"{v.rel_low:.1f}%)")
    return lines


def evaluate_grid(sweep: Sweep, cells_todo: list[CellSpec], manifest: pd.DataFrame, state: SweepState,
                  tracker: Any, outcome: SweepOutcome, echo: Echo, evaluate_cells: Callable[..., dict[str, str]],
                  progress: SweepProgress | None = None) -> None:
    """Score ``cells_todo``; each finished cell leaves its predictions, results rows and MLflow metrics."""
    from lossyvision.sweep.evaluate import cell_rows  # lazy: loads torch

    output = sweep.output
    echo(f"evaluating {len(cells_todo)} cell(s) on {len({(c.test_codec, c.test_level) for c in cells_todo})} "
         "test level(s)")
    metas = {k: read_meta(output, k) for k in {c.trial.key for c in cells_todo}}
    done_count = [0]

    def on_cell(cell: CellSpec, outcomes: Any, error: str | None) -> None:
        if outcomes is None:
            state.set_cell(cell.key, FAILED, error)
            echo(f"cell {cell.key}: FAILED: {error}")
            return
        outdir.write_predictions(output, cell.key, outcomes)
        rows = cell_rows(sweep, cell, outcomes, metas[cell.trial.key], manifest)
        append_results(output, rows)
        if state.cell(cell.key):
            state.set_cell(cell.key, DONE)
        tracker.log_trial(cell.trial.key, {}, test_metrics={
            eval_metric_name(r["metric"], cell.test_level, cell.test_codec): r["value"] for r in rows},
            series=eval_series_of(pd.DataFrame(rows), sweep.arm(cell.trial.codec).test_levels, cell.trial.codec),
            test_levels=ladder_text(sweep.arm(cell.trial.codec).test_levels))
        done_count[0] += 1
        shown = " ".join(f"{r['metric']}={r['value']:.4g} [{r['ci_low']:.3g}, {r['ci_high']:.3g}]" for r in rows)
        echo(f"cell {cell.key}: {shown} ({done_count[0]}/{len(cells_todo)})")
        if progress is not None:
            echo(progress.cell_done())

    outcome.cell_failures = evaluate_cells(sweep, cells_todo, output, manifest, on_cell)
    outcome.cells_run = len(cells_todo)


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


def _maybe_report(output: str, echo: Echo, outcome: SweepOutcome) -> list[Any] | None:
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


def sync_output(output: str, echo: Echo = print) -> int:
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
        verdicts = _analyse_quietly(sweep.output, echo)
        if verdicts is not None:
            log_verdicts(tracker, verdicts)
        _sync_report_files(sweep.output)
        tracker.finish_sweep("FINISHED")
    echo(f"synced {n} trial run(s) of {sweep.name} to {tracker.uri}")
    return n


def _sync_report_files(output: str) -> None:
    """The report's files in OUTPUT/report, if a report was built, onto the parent run."""
    folder = join(output, REPORT_DIR)
    if not exists(folder):
        return
    fs, path = filesystem(folder)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    log_report_artifacts(output, [join(folder, n) for n in names])


def summary_lines(outcome: SweepOutcome) -> list[str]:
    """What to tell the user at the end: the answer first, then where the results are."""
    lines = list(outcome.verdict) + list(outcome.registered)
    if lines:
        lines.append("")
    lines += [f"sweep done in {outcome.seconds:.0f}s: {outcome.trials_run} trial(s) and {outcome.cells_run} "
              f"cell(s) run now, grid {outcome.trials} trials x {outcome.cells} evaluations",
              f"results: {join(outcome.output, 'results.parquet')} (and results.csv)"]
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
