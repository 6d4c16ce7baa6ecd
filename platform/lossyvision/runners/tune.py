"""Trials on Ray Tune: one Tune trial per planned trial, a thin shell over ``sweep.trials.run_trial``.

Each Tune trial reports every epoch with ``tune.report(metrics, checkpoint=...)`` and resumes
from ``tune.get_checkpoint()`` when Tune retries it (``FailureConfig``); after a driver kill, a
new run resumes from the newest epoch checkpoint an earlier run left under ``OUTPUT/tune``.
Driver-side events go to a listener (trial state file, MLflow, progress lines).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Protocol

from lossyvision.store import absolute, join
from lossyvision.sweep.plan import TrialSpec
from lossyvision.runners.train_ddp import run_ddp_trial
from lossyvision.sweep.trials import TUNE_DIR, device_for, latest_progress_dir, read_meta, run_trial


#: What the Tune trial of a data-parallel trial holds itself: nothing to speak of (its Ray Train workers ask for
#: cpu/gpu each, runners.train_ddp). Tune refuses an all-zero request, hence one byte of memory.
DRIVER_RESOURCES = {"cpu": 0, "memory": 1}


class TrialListener(Protocol):
    def started(self, key: str) -> None: ...
    def epoch(self, key: str, epoch: int, metrics: dict[str, float], seconds: float | None = None,
              epochs: int | None = None) -> None: ...
    def finished(self, key: str) -> None: ...
    def failed(self, key: str, error: str) -> None: ...


def _trainable(config: dict[str, Any], sweep: Any = None, manifest: Any = None) -> None:
    """The Tune function trial (runs on a worker; paths in ``config`` are absolute)."""
    import shutil
    import tempfile

    import ray
    from ray import tune

    trial = TrialSpec.from_dict(config["trial"])
    output = config["output"]
    if sweep.resources.trial.workers > 1:  # data-parallel: a Ray Train TorchTrainer inside this trial
        run_ddp_trial(sweep, trial, output, manifest)
        tune.report({"epoch": len(read_meta(output, trial.key)["history"]), "trial_done": 1})
        return
    _limit_threads(sweep.resources.trial.cpu)

    def report(epoch: int, metrics: dict[str, float], directory: str, epochs: int) -> None:
        tune.report({**metrics, "epoch": epoch, "epochs_total": epochs},
                    checkpoint=tune.Checkpoint.from_directory(directory))

    device = device_for(sweep.resources.trial.gpu)
    node = ray.get_runtime_context().get_node_id()  # trial.json records where it trained
    checkpoint = tune.get_checkpoint()  # a retry (its node was lost, or it failed): Tune's last checkpoint
    if checkpoint is not None:
        with checkpoint.as_directory() as resume_dir:
            meta = run_trial(sweep, trial, output, report=report, resume_dir=resume_dir,
                             device=device, manifest=manifest, node=node)
    else:
        scratch = tempfile.mkdtemp(prefix="lv-resume-")  # where a checkpoint on an object store lands
        try:
            meta = run_trial(sweep, trial, output, report=report,
                             resume_dir=latest_progress_dir(output, trial.key, scratch),
                             device=device, manifest=manifest, node=node)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    tune.report({"epoch": len(meta["history"]), "trial_done": 1})


def _limit_threads(cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def trial_trainable(sweep: Any, manifest: Any) -> Any:
    """The Tune trainable with a trial's resources (a data-parallel trial's driver takes none of its own)."""
    from ray import tune

    res = sweep.resources.trial
    return tune.with_resources(tune.with_parameters(_trainable, sweep=sweep, manifest=manifest),
                               {**res.custom, "cpu": res.cpu, "gpu": res.gpu} if res.workers <= 1 else
                               DRIVER_RESOURCES)


def run_config(sweep: Any, output: str, listener: Any, prefix: str) -> Any:
    """Tune's run config for a sweep's trials: under OUTPUT, retried, one checkpoint kept, quiet."""
    from ray import tune

    return tune.RunConfig(
        name=time.strftime(f"{prefix}-%Y%m%d-%H%M%S"),
        storage_path=join(output, TUNE_DIR),
        failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[_ListenerCallback(listener)] if listener else [],
        verbose=0,
    )


def quiet_tune() -> None:
    """Our listener prints one line per event; Tune's tables, snapshot warnings and its end-of-run "no metrics"
    list (it looks for the result.json/progress.csv loggers we switch off) are noise."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter prints nothing at verbose=0
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no result.json/progress.csv/TB
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def train_trials(sweep: Any, trials: list[TrialSpec], output: str, manifest: Any,
                 listener: TrialListener | None = None) -> dict[str, str]:
    """Run ``trials`` on Tune with the sweep's trial resources; returns ``{key: error}`` of failures."""
    from ray import tune

    if not trials:
        return {}
    output = absolute(output)  # trials run elsewhere
    quiet_tune()
    trainable = trial_trainable(sweep, manifest)
    space = {"output": output,
             "trial": tune.grid_search([{**t.as_dict(), "key": t.key} for t in trials])}
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            trial_name_creator=lambda t: t.config["trial"]["key"],
            trial_dirname_creator=lambda t: t.config["trial"]["key"],
        ),
        run_config=run_config(sweep, output, listener, "run"),
    )
    grid = tuner.fit()
    failures: dict[str, str] = {}
    for result in grid:
        if result.error is not None:
            key = result.config["trial"]["key"]
            failures[key] = f"{type(result.error).__name__}: {str(result.error).strip().splitlines()[-1][:500]}"
    return failures


class _ListenerCallback:
    """Adapts Tune's driver-side callback hooks to a :class:`TrialListener`."""

    def __new__(cls, listener: TrialListener):
        from ray.tune import Callback

        class ListenerCallback(Callback):
            def __reduce__(self):
                # Tune pickles its callbacks into the experiment state (tuner.pkl), which lossyvision
                # never restores (it resumes from its own files): save a plain Callback there, not the
                # listener with its tracker, manifest and echo. (Pickling ``print`` by reference also
                # fails once Ray's tqdm has replaced builtins.print in this process.)
                return (Callback, ())

            def on_trial_start(self, iteration, trials, trial, **info):
                listener.started(trial.config["trial"]["key"])

            def on_trial_result(self, iteration, trials, trial, result, **info):
                if result.get("trial_done"):
                    return
                metrics = {k: float(v) for k, v in result.items()
                           if k in _user_metrics(result) and isinstance(v, (int, float))}
                seconds = result.get("time_this_iter_s")  # Tune's: since the trial's previous report
                total = result.get("epochs_total")
                listener.epoch(trial.config["trial"]["key"], int(result.get("epoch", 0)), metrics,
                               seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
                               epochs=int(total) if isinstance(total, (int, float)) else None)

            def on_trial_complete(self, iteration, trials, trial, **info):
                listener.finished(trial.config["trial"]["key"])

            def on_trial_recover(self, iteration, trials, trial, **info):
                listener.failed(trial.config["trial"]["key"], "failed; retrying from its last checkpoint")

            def on_trial_error(self, iteration, trials, trial, **info):
                listener.failed(trial.config["trial"]["key"], _trial_error(trial))

        return ListenerCallback()


def _trial_error(trial: Any) -> str:
    try:
        error = trial.get_pickled_error() or trial.get_error()
    except Exception:
        error = None
    if error is None:
        return "trial failed"
    lines = [ln for ln in str(getattr(error, "cause", None) or error).strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else type(error).__name__


#: Keys Tune adds to every result; the rest came from the trial.
_TUNE_KEYS = {"timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date",
              "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "config",
              "time_since_restore", "iterations_since_restore", "should_checkpoint", "epoch", "epochs_total"}


def _user_metrics(result: dict[str, Any]) -> set[str]:
    return {k for k in result if k not in _TUNE_KEYS and not k.startswith("experiment_")}
