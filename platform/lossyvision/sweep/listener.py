"""The driver's ear on Ray Tune: each trial's start, epochs, end or failure goes to the state file, to MLflow
(live per-epoch metrics) and to the progress lines."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from lossyvision.progress import Log, SweepProgress, epoch_line
from lossyvision.spec import Sweep
from lossyvision.sweep.plan import Grid, level_dcr
from lossyvision.sweep.status import DONE, FAILED, RUNNING, SweepState
from lossyvision.sweep.trackdata import trial_params


#: Epoch metrics about the data pipeline rather than the model (P5 in docs/benchmarks.md).
_PIPELINE = ("images_per_s", "loader_wait")


class DriverListener:
    """Tune's trial events -> state file, MLflow (live per-epoch metrics), progress lines."""

    def __init__(self, sweep: Sweep, grid: Grid, state: SweepState, tracker: Any, manifest: pd.DataFrame,
                 echo: Log, total: int, progress: SweepProgress | None = None) -> None:
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
