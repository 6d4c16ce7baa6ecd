"""A finished trial's model as MLflow logs it: its task's serving module, an input example, requirements.

Read from the trial's final checkpoint (``OUTPUT/checkpoints/<key>/model.pt``) in the driver, after
the trial finished: trials never depend on MLflow. The input example is two real test images of
the store (the least compressed test level), resized to the model's input size: two, so that the
exported model keeps a dynamic batch dimension (``torch.export`` fixes a dimension of size 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

import lossyvision
from lossyvision.store import read_bytes
from lossyvision.sweep.plan import TrialSpec, ok_rows
from lossyvision.sweep.trials import load_trained, read_manifest, store_uri

log = logging.getLogger(__name__)

EXAMPLE_IMAGES = 2


@dataclass
class LoggableModel:
    """Everything ``Tracker.log_model`` needs; no MLflow types."""

    module: Any                   # torch.nn.Module, eval mode, on the CPU
    example: np.ndarray           # uint8 (2, 3, S, S)
    serialization: str            # "pt2" | "pickle"
    metadata: dict[str, Any] = field(default_factory=dict)
    requirements: list[str] = field(default_factory=list)
    code_paths: list[str] = field(default_factory=list)


def loggable_model(sweep: Any, trial: TrialSpec, output: str, manifest: pd.DataFrame | None = None) -> LoggableModel | None:
    """The trial's model ready for ``mlflow.pytorch.log_model``, or None when its task serves none."""
    task, model = load_trained(sweep, trial, output, device="cpu")
    serving = task.serving(model)
    if serving is None:
        return None
    spec = sweep.model(trial.model)
    example = example_images(sweep, manifest, serving.size)
    metadata = {"lossyvision_trial": trial.key, "task": spec.task, "arch": spec.arch, "classes": list(task.classes),
                "input": f"uint8 RGB images, NCHW, {serving.size}x{serving.size} in the example",
                "output": serving.output, "train_level": trial.train_level, "codec": trial.codec}
    code_paths = []
    if serving.serialization == "pickle":  # the pickled wrapper's class is lossyvision's: ship its code
        code_paths = [lossyvision.__path__[0]]
    return LoggableModel(serving.module, example, serving.serialization, metadata, requirements(task),
                         code_paths)


def requirements(task: Any) -> list[str]:
    """Pinned pip requirements of a logged model (MLflow's own inference loads the model in a subprocess):
    torch, torchvision, numpy and what the ``task`` (a :class:`lossyvision.tasks.Task` or its class) declares."""
    from importlib.metadata import PackageNotFoundError, version

    names = list(dict.fromkeys(["torch", "torchvision", "numpy", *task.requirements]))
    out = []
    for name in names:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def example_images(sweep: Any, manifest: pd.DataFrame | None, size: int) -> np.ndarray:
    """Two test images of the store, uint8 (2, 3, size, size); zeros when the store cannot give them."""
    import torch
    from torchvision.transforms.v2 import functional as TF

    images = []
    try:
        images = _store_images(sweep, manifest)
    except Exception as e:  # noqa: BLE001 - an example is a convenience: never fail logging for it
        log.debug("no store images for the input example: %s", e)
    out = np.zeros((EXAMPLE_IMAGES, 3, size, size), dtype=np.uint8)
    for i, rgb in enumerate(images[:EXAMPLE_IMAGES]):
        chw = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
        out[i] = TF.resize(chw, [size, size], antialias=True).numpy()
    return out


def _store_images(sweep: Any, manifest: pd.DataFrame | None) -> list[np.ndarray]:
    manifest = read_manifest(sweep) if manifest is None else manifest
    arm = sweep.arms[0]
    rows = ok_rows(manifest, sweep.test_split, arm.codec.by_fidelity(arm.test_levels)[0], arm.name).head(EXAMPLE_IMAGES)
    codec = arm.create()
    return [np.asarray(codec.decode(read_bytes(store_uri(sweep, p)))) for p in rows["output_path"]]
