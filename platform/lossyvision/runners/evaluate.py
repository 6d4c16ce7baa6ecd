"""The evaluation on Ray tasks: test levels stream through in shards, each decoded once and scored by every model.

One task per shard (:func:`lossyvision.sweep.evaluate.plan_shards`) decodes it and scores it with
every model tested at its level, with the sweep's eval resources, and returns only the per-image
outcomes. Decoded pixels never leave the task, so memory holds one shard per running task, whatever
the size of the test set. At most ``2 x slots`` tasks are submitted at a time; a worker keeps the
models it loaded for its next shards (``max_calls=0``: Ray would start a fresh process for every
GPU task otherwise). When every shard of a cell is scored, its parts are concatenated in the
level's image order and the cell goes to ``on_cell`` on the driver at once (predictions file,
results rows, MLflow). A test point is a (codec, level); each result records the Ray node that
scored most of the cell's images.

Tasks, not an actor pool: on 2 CPUs an actor pool holding the CPUs starves other work, and tasks
balance themselves (any free worker takes the next shard).
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict, deque
from typing import Any, Callable

from lossyvision.sweep.evaluate import TestShard, TrainedModels, describe_error, plan_shards, score_shard
from lossyvision.sweep.plan import CellSpec, reader_of
from lossyvision.sweep.trials import device_for

#: ``on_cell(cell, outcomes, error)``: the per-image outcomes on success, else an error message.
CellCallback = Callable[[CellSpec, Any, "str | None"], None]

_MODELS: TrainedModels | None = None  # per worker process: the models kept between shards


def _score(sweep: Any, cells: list[CellSpec], shard: TestShard, output: str, scope: str) -> tuple[str, dict[str, Any]]:
    """``(node id, {cell key: outcomes or an error line})`` of one shard."""
    import ray

    global _MODELS
    _limit_threads(sweep.resources.eval.cpu)
    if _MODELS is None:
        _MODELS = TrainedModels(sweep.evaluation.model_cache_bytes)
    _MODELS.scope(scope, sweep.evaluation.model_cache_bytes)
    parts = score_shard(sweep, cells, shard, output, models=_MODELS, device=device_for(sweep.resources.eval.gpu))
    return ray.get_runtime_context().get_node_id(), parts


def _limit_threads(cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def eval_slots(resources: dict[str, float], cpu: float, gpu: float) -> int:
    """How many evaluation tasks the cluster runs at once with ``cpu``/``gpu`` each (at least 1)."""
    slots = []
    if cpu > 0:
        slots.append(int(resources.get("CPU", 0) // cpu))
    if gpu > 0:
        slots.append(int(resources.get("GPU", 0) // gpu))
    return max(1, min(slots) if slots else int(resources.get("CPU", 1)))


#: Shards per evaluation slot at least, when the test set allows: the last wave leaves at most one
#: shard's time idle per worker (3 equal shards on 2 workers took 2 shards' time; 9 left one idle 6.6 s).
SHARDS_PER_SLOT = 8
#: Smallest shard that small test sets are cut into for that.
MIN_SHARD_IMAGES = 16


Point = tuple[str, float]  # a test point: (codec, level)


def shard_levels(sweep: Any, manifest: Any, levels: list[Point], slots: int) -> dict[Point, "list[TestShard] | str"]:
    """Each test point's shards, or the error that fails its cells; small sets are cut finer to keep ``slots`` busy."""
    reader = reader_of(sweep)
    records = {r.relpath: r for r in reader.select(sweep.test_split)}

    def plan(min_shards: int) -> dict[Point, "list[TestShard] | str"]:
        out: dict[Point, list[TestShard] | str] = {}
        for codec, level in levels:
            try:
                out[(codec, level)] = plan_shards(sweep, manifest, level, codec, reader=reader, records=records,
                                                  min_shards=min_shards, min_images=MIN_SHARD_IMAGES)
            except Exception as e:  # TrialError (no images), a dataset mismatch: those cells fail
                out[(codec, level)] = describe_error(e)
        return out

    shards = plan(1)
    total = sum(len(s) for s in shards.values() if not isinstance(s, str))
    if 0 < total < SHARDS_PER_SLOT * slots:
        shards = plan(-(-SHARDS_PER_SLOT * slots // len(levels)))
    return shards


def evaluate_cells(sweep: Any, cells: list[CellSpec], output: str, manifest: Any,
                   on_cell: CellCallback) -> dict[str, str]:
    """Score every cell; returns ``{cell key: error}`` for the cells that failed."""
    import ray

    if not cells:
        return {}
    res = sweep.resources.eval
    score = ray.remote(num_cpus=res.cpu, num_gpus=res.gpu, max_retries=1, max_calls=0)(_score)
    slots = eval_slots(ray.cluster_resources(), res.cpu, res.gpu)

    by_level: dict[Point, list[CellSpec]] = defaultdict(list)
    for cell in cells:
        by_level[(cell.test_codec, cell.test_level)].append(cell)
    shards = shard_levels(sweep, manifest, sorted(by_level), slots)
    failures: dict[str, str] = {}

    queue: deque[TestShard] = deque()
    parts: dict[str, list[Any]] = {}
    scored_on: dict[str, Counter] = defaultdict(Counter)  # cell key -> images scored per node

    def fail(cell: CellSpec, error: str) -> None:
        if cell.key not in failures:
            failures[cell.key] = error
            parts.pop(cell.key, None)
            scored_on.pop(cell.key, None)
            on_cell(cell, None, error)

    for level, cells_here in sorted(by_level.items()):
        planned = shards[level]
        if isinstance(planned, str):
            for cell in cells_here:
                fail(cell, planned)
            continue
        queue.extend(planned)
        for cell in cells_here:
            parts[cell.key] = [None] * len(planned)

    sweep_ref, scope = ray.put(sweep), uuid.uuid4().hex
    running: dict[Any, tuple[TestShard, list[CellSpec]]] = {}

    def submit() -> None:
        while queue and len(running) < 2 * slots:
            shard = queue.popleft()
            live = [c for c in by_level[(shard.codec, shard.level)] if c.key not in failures]
            if live:
                running[score.remote(sweep_ref, live, shard, str(output), scope)] = (shard, live)

    submit()
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        shard, live = running.pop(ready[0])
        try:
            node, results = ray.get(ready[0])
        except Exception as e:  # a RayTaskError wraps the task's own exception (a shard that cannot be decoded)
            node, results = None, {c.key: _short_error(e) for c in live}
        for cell in live:
            result = results.get(cell.key, "no result")
            if cell.key in failures:
                continue
            if isinstance(result, str):
                fail(cell, result)
                continue
            held = parts[cell.key]
            held[shard.index] = result
            scored_on[cell.key][node] += len(shard)
            if all(p is not None for p in held):
                del parts[cell.key]
                outcomes = type(held[0]).concat(held)
                outcomes.node = scored_on.pop(cell.key).most_common(1)[0][0]  # the cell's results rows record it
                on_cell(cell, outcomes, None)
        submit()
    return failures


def _short_error(e: Exception) -> str:
    return describe_error(getattr(e, "cause", None) or e)
