"""A parsed sweep with every local path made absolute: its output, dataset root, store and tracking URI."""

from __future__ import annotations

from typing import Any

from lossyvision.spec import Sweep
from lossyvision.store import absolute
from lossyvision.sweep.mlstore import absolute_tracking_uri


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
