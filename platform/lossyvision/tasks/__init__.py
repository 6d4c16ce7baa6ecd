"""Tasks (classification, detection, segmentation), looked up by name. One file per task."""

from lossyvision.registry import import_submodules
from lossyvision.tasks.base import TASKS, Task, create_task

import_submodules(__name__, __path__)

__all__ = ["TASKS", "Task", "create_task"]
