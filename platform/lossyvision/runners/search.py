"""The adaptive search on Ray Tune: a ``Searcher`` that suggests the policy's next (level, repeat) trainings.

Each suggestion is a planned trial of the grid (same key, same trainable as ``runners.tune``), so
checkpoints, retries, MLflow and the report treat it as a grid trial. When a trial completes, the
searcher has the cells its question reads evaluated through the sweep's evaluation path
(``evaluate``: results rows, predictions, MLflow) on one background thread: Tune's controller must go
on (a finished trial's actor holds its CPU until the controller releases it, and the evaluation's
Ray tasks need one), and the trials being evaluated count as running for the policy
(:func:`lossyvision.sweep.search.decide`), replayed on the results table once they are in. The policy is a function of the
results, so a killed driver resumes the search by reading OUTPUT: finished trials are never retrained,
trials finished but not evaluated are evaluated first. ``save``/``restore`` write and read JSON only.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from lossyvision.runners.tune import quiet_tune, run_config, trial_trainable
from lossyvision.store import absolute
from lossyvision.sweep.plan import Grid, TrialSpec
from lossyvision.sweep.results import read_results
from lossyvision.sweep.search import trainings_bounds
from lossyvision.sweep.searchgrid import (Arena, PairedTestImages, arenas, config_for, decide_arena, read_search,
                                          search_payload, write_search)
from lossyvision.sweep.trials import finished_keys, read_meta

log = logging.getLogger(__name__)
Evaluate = Callable[[list[TrialSpec]], None]


def cluster_slots(sweep: Any) -> int:
    """How many trials the cluster runs at once with the sweep's trial resources (at least 1)."""
    import ray

    have = ray.cluster_resources()
    res = sweep.resources.trial
    slots = [int(have.get("CPU", 0) // res.cpu)] if res.cpu > 0 else []
    if res.gpu > 0:
        slots.append(int(have.get("GPU", 0) // res.gpu))
    return max(1, min(slots) if slots else 1)


def _make_searcher(sweep: Any, grid: Grid, output: str, evaluate: Evaluate, parallel: int, echo: Callable[[str], None]):
    from ray.tune.search import Searcher

    class LadderSearcher(Searcher):
        """Suggests the trainings the search needs next; FINISHED once every (model, codec) search has ended."""

        def __init__(self) -> None:
            super().__init__()
            self.sweep, self.grid, self.output, self.evaluate, self.echo = sweep, grid, output, evaluate, echo
            self.config = config_for(sweep, parallel)
            self.parallel = parallel
            self.arenas: list[Arena] = arenas(sweep, grid)
            self.running: dict[str, str] = {}     # Tune trial id -> trial key
            self.failed: set[str] = set()
            self.order: list[str] = []            # trial keys in the order they finished
            self.decisions: dict[str, Any] = {}
            self.results = read_results(output)
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lv-search-eval")
            self.evaluating: dict[str, Future] = {}  # trial key -> its evaluation
            self.paired = PairedTestImages(sweep, grid, output)

        def __reduce__(self):  # Tune pickles its search algorithm into tuner.pkl, never read back here
            return (Searcher, ())

        # --- the state a driver resumes from: OUTPUT's finished trials and results ----------------------
        def catch_up(self) -> None:
            """Evaluate finished trials whose question cells are missing (a driver killed between the two)."""
            keys = [t.key for a in self.arenas for t in a.trials.values()]
            done = finished_keys(self.output, keys)
            stamps = {k: str(read_meta(self.output, k).get("finished_at", "")) for k in done}
            self.order = sorted(done, key=lambda k: (stamps[k], k))
            have = set(self.results["cell_id"].astype(str)) if not self.results.empty else set()
            missing = [t for a in self.arenas for t in a.trials.values()
                       if t.key in done and any(c.key not in have for c in self.grid.cells_of(t))]
            if missing:
                self.echo(f"search: evaluating {len(missing)} finished trial(s) its results lack")
                self.evaluate(missing)
                self.results = read_results(self.output)

        def collect(self) -> None:
            """Take in the evaluations that ended: the results table, the finishing order, search.json."""
            ended = [k for k, f in self.evaluating.items() if f.done()]
            if not ended:
                return
            for key in ended:
                error = self.evaluating.pop(key).exception()
                if error is not None:
                    self.echo(f"search: evaluating trial {key} failed ({type(error).__name__}: {error})")
                self.order.append(key)
            self.results = read_results(self.output)
            self.decide_all()
            self.write()

        def drain(self) -> None:
            """Wait for the evaluations still running (the end of the Tune run), then take them in."""
            for f in list(self.evaluating.values()):
                f.exception()
            self.collect()
            self.pool.shutdown(wait=True)

        def decide_all(self) -> dict[str, Any]:
            running = set(self.running.values()) | set(self.evaluating)
            finished = set(self.order)
            self.decisions = {a.name: decide_arena(self.sweep, self.grid, a, self.results, self.config, running,
                                                   self.failed, finished, self.paired) for a in self.arenas}
            return self.decisions

        def write(self) -> None:
            write_search(self.output, search_payload(self.sweep, self.grid, self.decisions, self.arenas, self.order,
                                                     self.parallel))

        # --- Tune's Searcher API --------------------------------------------------------------------------
        def suggest(self, trial_id: str) -> dict | None:
            self.collect()
            decisions = self.decide_all()
            for a in self.arenas:
                d = decisions[a.name]
                if d.train:
                    spec = a.trials[d.train[0]]
                    self.running[trial_id] = spec.key
                    self.echo(f"search {a.name}: training level {a.levels[d.train[0][0]]:g} repeat {d.train[0][1]} "
                              f"({d.path[-1].phase})")
                    return {"output": self.output, "trial": {**spec.as_dict(), "key": spec.key}}
            if all(d.done for d in decisions.values()):
                self.write()
                return Searcher.FINISHED
            if not self.running and self.evaluating:
                time.sleep(0.2)  # nothing trains: Tune would spin on suggest() until the evaluation is in
            return None  # waiting for running trials or evaluations

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            key = self.running.pop(trial_id, None)
            if key is None:
                return
            if error:
                self.failed.add(key)
                return
            trial = next(t for a in self.arenas for t in a.trials.values() if t.key == key)
            self.evaluating[key] = self.pool.submit(self.evaluate, [trial])

        def save(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "w") as f:
                json.dump({"order": self.order, "failed": sorted(self.failed), "parallel": self.parallel}, f)

        def restore(self, checkpoint_path: str) -> None:
            with open(checkpoint_path) as f:
                state = json.load(f)
            self.order, self.failed = list(state.get("order", [])), set(state.get("failed", []))

        def get_state(self) -> dict:
            return {"order": list(self.order), "failed": sorted(self.failed)}

        def set_state(self, state: dict) -> None:
            self.order, self.failed = list(state.get("order", [])), set(state.get("failed", []))

    return LadderSearcher()


def search_trials(sweep: Any, grid: Grid, output: str, manifest: Any, listener: Any, evaluate: Evaluate,
                  echo: Callable[[str], None] = print) -> tuple[Grid, dict[str, str], int]:
    """Run the search on Tune; returns the grid of what it trained (its needed cells), failures, trainings run now."""
    from ray import tune

    output = absolute(output)
    previous = read_search(output) or {}
    parallel = int(previous.get("parallel") or sweep.search.parallel or cluster_slots(sweep))  # fixed for the replay
    searcher = _make_searcher(sweep, grid, output, evaluate, parallel, echo)
    searcher.catch_up()
    searcher.decide_all()
    searcher.write()  # where the search stands, before anything trains
    failures: dict[str, str] = {}
    ran = 0
    if not all(d.done for d in searcher.decisions.values()):
        quiet_tune()
        trainable = trial_trainable(sweep, manifest)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                num_samples=max(1, sum(len(a.trials) for a in searcher.arenas)),
                trial_name_creator=lambda t: t.config["trial"]["key"],
                trial_dirname_creator=lambda t: t.config["trial"]["key"],
            ),
            run_config=run_config(sweep, output, listener, "search"),
        )
        try:
            grid_results = tuner.fit()
        finally:
            searcher.drain()
        for result in grid_results:
            ran += 1
            if result.error is not None:
                key = result.config["trial"]["key"]
                failures[key] = f"{type(result.error).__name__}: {str(result.error).strip().splitlines()[-1][:500]}"
    searcher.decide_all()
    searcher.write()
    trained = set(searcher.order) | set(failures)
    trials = [t for t in grid.trials if t.key in trained]
    cells = [c for t in trials for c in grid.cells_of(t)]
    keys = {t.key for t in trials} | {c.key for c in cells}
    return Grid(trials, cells, {k: v for k, v in grid.identities.items() if k in keys}), failures, ran


def worst_trainings(sweep: Any) -> int:
    """The most trainings the sweep's searches can take, all (model, codec) together."""
    return int(sum(trainings_bounds(len(a.train_levels), config_for(sweep, 1))[1] for a in sweep.arms)
               * len(sweep.models))


class Locked:
    """An object whose method calls take one shared lock: the state file and MLflow, used from two threads."""

    _lock = threading.RLock()

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        if not callable(attr):
            return attr

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)
        return locked
