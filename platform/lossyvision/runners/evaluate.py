"""The evaluation fan-out on Ray tasks: each test level is decoded once, every model scores it.

One task per test level decodes it and returns the arrays, which stay in the object store; one
task per (trained model, test level) scores that model from the shared ref, with the sweep's
eval resources, and returns its per-image outcomes. At most ``levels_in_flight`` decoded levels
are alive at a time (memory), and each finished cell goes to ``on_cell`` on the driver at once
(predictions file, results rows, MLflow).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from lossyvision.sweep.evaluate import decode_test_level, evaluate_trial
from lossyvision.sweep.plan import CellSpec

#: ``on_cell(cell, outcomes, error)``: the per-image outcomes on success, else an error message.
CellCallback = Callable[[CellSpec, Any, "str | None"], None]


def _decode(sweep: Any, manifest: Any, point: tuple[str, float]) -> Any:
    _limit_threads(sweep.resources.eval.cpu)
    codec, level = point
    return decode_test_level(sweep, manifest, level, codec)


def _score(sweep: Any, cell: CellSpec, output: str, test: Any) -> Any:
    import ray

    from lossyvision.sweep.trials import device_for

    _limit_threads(sweep.resources.eval.cpu)
    outcomes = evaluate_trial(sweep, cell, output, test, device=device_for(sweep.resources.eval.gpu))
    outcomes.node = ray.get_runtime_context().get_node_id()  # the cell's results rows record it
    return outcomes


def _limit_threads(cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def evaluate_cells(sweep: Any, cells: list[CellSpec], output: str, manifest: Any,
                   on_cell: CellCallback, levels_in_flight: int = 2) -> dict[str, str]:
    """Score every cell; returns ``{cell key: error}`` for the cells that failed."""
    import ray

    if not cells:
        return {}
    res = sweep.resources.eval
    decode = ray.remote(num_cpus=max(res.cpu, 0.5))(_decode)
    score = ray.remote(num_cpus=res.cpu, num_gpus=res.gpu, max_retries=1)(_score)
    sweep_ref, manifest_ref = ray.put(sweep), ray.put(manifest)

    by_level: dict[tuple[str, float], list[CellSpec]] = defaultdict(list)
    for cell in cells:
        by_level[(cell.test_codec, cell.test_level)].append(cell)
    waiting_levels = sorted(by_level)
    running: dict[Any, CellSpec] = {}
    left: dict[tuple[str, float], int] = {}
    decoded: dict[tuple[str, float], Any] = {}
    failures: dict[str, str] = {}

    def launch_levels() -> None:
        while waiting_levels and len(decoded) < max(1, levels_in_flight):
            level = waiting_levels.pop(0)
            decoded[level] = decode.remote(sweep_ref, manifest_ref, level)
            left[level] = len(by_level[level])
            for cell in by_level[level]:
                running[score.remote(sweep_ref, cell, str(output), decoded[level])] = cell

    launch_levels()
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        cell = running.pop(ready[0])
        try:
            outcomes, error = ray.get(ready[0]), None
        except Exception as e:  # a RayTaskError wraps the task's own exception
            outcomes, error = None, _short_error(e)
            failures[cell.key] = error
        on_cell(cell, outcomes, error)
        point = (cell.test_codec, cell.test_level)
        left[point] -= 1
        if left[point] == 0:
            del decoded[point]  # drop the ref: the decoded level can leave the object store
            launch_levels()
    return failures


def _short_error(e: Exception) -> str:
    cause = getattr(e, "cause", None) or e
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1][:500] if text else ''}"
