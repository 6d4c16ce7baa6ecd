"""The task interface: build a model, fit it on decoded samples, evaluate it.

A task is plain PyTorch; Ray Tune only schedules it (``lossyvision.runners``). Samples are
``(rgb, target)`` pairs from :class:`lossyvision.data.ImageSamples`: ``rgb`` is uint8 HxWx3 as
decoded from the compressed store, so what the model sees is what was stored; ``target`` is what
the dataset reader's ``load_target`` returns (a class index, a dict of boxes, a label mask).
Each task applies its own transforms.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from lossyvision.metrics import OUTCOMES
from lossyvision.registry import Registry
from lossyvision.tasks.entrypoint import check_entry_point, is_entry_point
from lossyvision.tasks.training import load_model_state

#: ``on_epoch(epoch, metrics, state)``: called after each epoch (1-based) with training metrics
#: (``loss``, ...) and a resumable ``state`` dict (model, optimizer, scheduler, epoch).
EpochCallback = Callable[[int, dict[str, float], dict[str, Any]], None]


@dataclass(frozen=True)
class Serving:
    """A trained model as MLflow logs it: one ``torch.nn.Module`` from a uint8 NCHW RGB batch to one tensor.

    ``size`` is the square input side the example uses; ``output`` says what the tensor holds (it
    goes into the logged model's metadata). ``serialization`` is MLflow's: ``pt2`` (``torch.export``,
    loads without lossyvision or pickle) where the model exports, else ``pickle``.
    """

    module: Any
    size: int
    output: str
    serialization: str = "pt2"


class Task(ABC):
    """One kind of vision task. Subclasses register with ``@TASKS.register(name)``.

    A task is one file: besides its code, its class declares what the rest of lossyvision needs to know
    about it, and the registry checks the declarations at import. The sweep records the metric order in
    the results it writes (``metric_rank``), so the verdict leads with the task's headline without loading
    the task (:func:`lossyvision.metrics.headline_first`); a logged model's pip requirements add the
    task's own (:func:`lossyvision.sweep.models.requirements`); what it supports of the sweep file
    (a shrunk cache, data-parallel workers) is checked before anything runs (:mod:`lossyvision.preflight`).
    """

    name: str = ""
    #: Metrics ``evaluate`` returns, e.g. ("top1", "top5"); the first is the headline metric, the one
    #: the verdict leads with.
    metric_names: tuple[str, ...] = ()
    #: The kind of per-image outcomes :meth:`outcomes` returns (a name in :data:`lossyvision.metrics.OUTCOMES`);
    #: ``metric_names`` are among that kind's metrics.
    outcome_kind: str = ""
    #: pip packages a logged model needs besides torch, torchvision and numpy (e.g. ``("timm",)``).
    requirements: tuple[str, ...] = ()
    #: Its targets survive shrinking the images (``cache: {max_side: N}``): a class label does; boxes and
    #: masks, which sit on the pixels, do not.
    supports_shrunk_cache: bool = False
    #: Its ``fit`` trains data-parallel across a trial's Ray Train workers (``resources.trial.workers > 1``).
    supports_workers: bool = False

    def __init__(self, spec: Any, classes: list[str], device: str = "cpu", seed: int = 0) -> None:
        """``spec`` is a :class:`lossyvision.spec.ModelSpec`; ``classes`` the dataset's class names.

        ``seed`` fixes the data order and augmentation of :meth:`fit` (the sweep engine passes the
        trial's seed, :func:`lossyvision.seeding.trial_seed`).
        """
        self.spec = spec
        self.classes = list(classes)
        self.device = device
        self.seed = int(seed)

    @abstractmethod
    def build_model(self) -> Any:
        """A fresh ``torch.nn.Module`` (pretrained weights per ``spec.pretrained``/``spec.checkpoint``)."""

    def check_arch(self) -> None:
        """Raise ``ValueError`` unless ``spec.arch`` can be built for this task, without the network.

        An entry point (``package.module:factory``) is built with ``pretrained: false`` and run once
        on a tiny batch (:meth:`dry_run`); tasks extend this with their own registries.
        """
        if is_entry_point(self.spec.arch):
            check_entry_point(self)

    def dry_run(self, model: Any) -> None:  # noqa: B027  (an optional hook)
        """One forward pass of ``model`` (eval mode, no gradients) on a tiny batch; a ``ValueError``
        says how its output breaks the task's interface."""

    @abstractmethod
    def fit(self, model: Any, train: Any, *, on_epoch: EpochCallback | None = None,
            state: dict[str, Any] | None = None) -> None:
        """Train ``model`` on the ``train`` samples for ``spec.epochs`` epochs.

        ``state`` is one given earlier to ``on_epoch``: training resumes after its epoch.
        """

    @abstractmethod
    def outcomes(self, model: Any, test: Any) -> Any:
        """Per-image :class:`~lossyvision.metrics.base.Outcomes` on the ``test`` samples.

        They recompute :meth:`evaluate`'s metrics exactly, and on any resample of the images
        (intervals, paired comparisons). Images are named by ``test.ids`` when the samples have
        them (the sweep's test levels do), else by their index.
        """

    def evaluate(self, model: Any, test: Any) -> dict[str, float]:
        """Metric name -> value on the ``test`` samples (names as in ``metric_names``)."""
        return self.outcomes(model, test).metrics()

    def serving(self, model: Any) -> Serving | None:
        """``model`` wrapped for serving (transforms inside, a tensor out), or None when the task has none.

        The sweep logs it to MLflow with a signature and an input example; None logs no model.
        """
        return None

    def load_state(self, model: Any, state: dict[str, Any]) -> Any:
        """Put the weights of a ``state`` given to ``on_epoch`` into ``model`` (e.g. to evaluate it)."""
        return load_model_state(model, state)


def check_declarations(name: str, task: type[Task]) -> None:
    """Raise ``ValueError`` unless ``task``'s class declarations hold together (run when it registers)."""
    if not task.metric_names:
        raise ValueError(f"task {name!r}: metric_names is empty; list the metrics evaluate returns, headline first")
    if task.outcome_kind not in OUTCOMES:
        raise ValueError(f"task {name!r}: unknown outcome kind {task.outcome_kind!r}; known: "
                         f"{', '.join(OUTCOMES.names())}")
    own = OUTCOMES.get(task.outcome_kind).metric_names
    if foreign := [m for m in task.metric_names if m not in own]:
        raise ValueError(f"task {name!r}: {', '.join(foreign)} not among the {task.outcome_kind} outcomes' "
                         f"metrics ({', '.join(own)})")
    flags = [f for f in ("supports_shrunk_cache", "supports_workers") if not isinstance(getattr(task, f), bool)]
    if flags:
        raise ValueError(f"task {name!r}: {', '.join(flags)} must be True or False")
    if isinstance(task.requirements, str) or not all(isinstance(r, str) and r for r in task.requirements):
        raise ValueError(f"task {name!r}: requirements must be a tuple of pip package names, "
                         f"got {task.requirements!r}")


TASKS: Registry[type[Task]] = Registry("task", check=check_declarations)


def create_task(name: str, spec: Any, classes: list[str], device: str = "cpu", seed: int = 0) -> Task:
    return TASKS.get(name)(spec, classes, device=device, seed=seed)


#: Specs already checked in this process (a sweep file is read several times per command).
_CHECKED: set[str] = set()


def check_arch(spec: Any, classes: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``spec.arch`` can be built for ``spec.task``; offline, once per process."""
    key = json.dumps([spec.model_dump(mode="json"), list(classes)], sort_keys=True, default=str)
    if key in _CHECKED:
        return
    create_task(spec.task, spec, list(classes)).check_arch()
    _CHECKED.add(key)


def sample_ids(samples: Any) -> list[str]:
    """The samples' image ids (``samples.ids``), or their positions when they have none."""
    ids = getattr(samples, "ids", None)
    return [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(samples))]
