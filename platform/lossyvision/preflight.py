"""What a sweep file says about the world, checked before anything is written or Ray starts.

Parsing a sweep file (:mod:`lossyvision.spec`) reads nothing but the file, so the commands that only
read an output (``sweep status``, ``sweep sync``, ``report``, ``advise``) work where the dataset or the
model code is not. The commands that act on the world (``sweep run``, ``sweep plan``, ``compress`` and
``submit``) call :func:`preflight` first. It checks, with the messages parsing gave before it moved here:

* the dataset root: a folder, or a file for the kinds whose root may be one (``dataset.root: ...``);
* each model: its task is registered, supports what the file asks of it (a shrunk cache, data-parallel
  workers: the task class declares both), accepts the options, and can build the architecture offline
  (an entry point is imported and run once on a tiny batch) (``models.N.task: ...``, ``models.N: ...``);
* ``output`` and ``store``: never a system folder or someone else's non-empty folder, and their files from
  earlier runs read back (:mod:`lossyvision.places`) (``output: ...``, ``store: ...``).

Like a pydantic validation, it reports every dataset and model problem at once, and looks at the output
and store folders only when those pass. The resources a sweep asks for are checked by the driver
against the cluster it joins (:func:`lossyvision.sweep.resources.check_cluster_resources`).
"""

from __future__ import annotations

import os
from typing import Any

from lossyvision.datasets import DATASETS
from lossyvision.places import check_output_files, check_place, check_store_files
from lossyvision.spec import CacheSize, SpecError, Sweep, load_sweep
from lossyvision.store import DamagedFileError, is_remote, relative_hint

#: The class names a model is built with to check its options and architecture.
PROBE_CLASSES = ["class-0", "class-1"]


def preflight(sweep: Sweep, source: str = "sweep") -> Sweep:
    """``sweep`` unchanged when the world agrees with it; else :class:`SpecError`, one line per problem."""
    problems = dataset_problems(sweep) + model_problems(sweep)
    if not problems:
        problems = place_problems(sweep)
    if problems:
        raise SpecError.of(source, problems)
    return sweep


def check_dataset(sweep: Sweep, source: str = "sweep") -> Sweep:
    """Only the dataset part of :func:`preflight`: for ``inspect --sweep``, which reads the dataset alone."""
    problems = dataset_problems(sweep)
    if problems:
        raise SpecError.of(source, problems)
    return sweep


def load_checked(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> Sweep:
    """:func:`lossyvision.spec.load_sweep`, then :func:`preflight`: a sweep file about to be acted on."""
    return preflight(load_sweep(path, env), source=str(path))


def dataset_problems(sweep: Sweep) -> list[str]:
    """A local root is a folder, or a file for the kinds whose root may be one (a CSV list, a tar shard)."""
    root, kind = sweep.dataset.root, sweep.dataset.kind
    if is_remote(root):
        return []
    if not os.path.exists(root):
        return [f"dataset.root: {root} does not exist{relative_hint(root)}"]
    if not os.path.isdir(root):
        if not DATASETS.get(kind).root_may_be_file:
            return [f"dataset.root: {root} is not a folder (a {kind} root is the folder holding the images)"]
        if not os.path.isfile(root):
            return [f"dataset.root: {root} is neither a folder nor a regular file"]
    return []


def model_problems(sweep: Sweep) -> list[str]:
    """Typos in a model's task, ``options`` or ``arch`` fail now, not hours later inside a trial."""
    from lossyvision.tasks import TASKS  # lazy: loads torch

    problems = []
    for i, model in enumerate(sweep.models):
        if model.task not in TASKS:
            problems.append(f"models.{i}.task: unknown task {model.task!r}; known: {', '.join(TASKS.names())}")
            continue
        unsupported = task_support_problems(sweep, i, model, TASKS)
        if unsupported:
            problems += unsupported
            continue
        try:
            check_model(model)
        except ValueError as e:
            problems += [f"models.{i}: {line}" for line in str(e).splitlines()]
    return problems


def task_support_problems(sweep: Sweep, i: int, model: Any, tasks: Any) -> list[str]:
    """What the sweep file asks of model ``i``'s task that the task class does not declare it supports."""
    task = tasks.get(model.task)

    def tasks_that(flag: str) -> str:
        return ", ".join(n for n in tasks.names() if getattr(tasks.get(n), flag)) or "none"

    problems = []
    if isinstance(model.cache, CacheSize) and not task.supports_shrunk_cache:
        problems.append(f"models.{i}.cache: max_side shrinks the images but not a {model.task} task's targets; use "
                        f"cache: exact (tasks whose targets survive it: {tasks_that('supports_shrunk_cache')})")
    workers = sweep.resources.trial.workers
    if workers > 1 and not task.supports_workers:
        problems.append(f"models.{i}.task: resources.trial.workers: {workers} trains data-parallel, which the "
                        f"{model.task} task does not (tasks that do: {tasks_that('supports_workers')}); set workers: 1")
    return problems


def check_model(model: Any) -> Any:
    """``model`` (a :class:`lossyvision.spec.ModelSpec` of a registered task) when its task accepts its
    options and can build its architecture offline (an entry point is built and run once per process);
    else ``ValueError``."""
    from lossyvision.tasks import TASKS  # lazy: loads torch
    from lossyvision.tasks.base import check_arch  # lazy: loads torch

    TASKS.get(model.task)(model, PROBE_CLASSES)
    check_arch(model, PROBE_CLASSES)
    return model


def place_problems(sweep: Sweep) -> list[str]:
    """``output`` and ``store``: no system folder, no foreign folder, no damaged file."""
    problems = []
    places: list[tuple[str, Any, str]] = [("output", sweep.output, "output")]
    if sweep.store:
        places.append(("store", sweep.store, "store"))
    for field, uri, kind in places:
        try:
            check_place(uri, kind)
        except ValueError as e:
            problems.append(f"{field}: {e}")
    if not problems and not is_remote(sweep.output):
        try:
            check_output_files(sweep.output)
            if sweep.store and not is_remote(sweep.store):
                check_store_files(sweep.store)
        except DamagedFileError as e:
            problems.append(f"{'store' if sweep.store and str(sweep.store) in str(e) else 'output'}: {e}")
        except OSError as e:
            problems.append(f"output: cannot read {e.filename or sweep.output}: {e.strerror or e}")
    return problems
