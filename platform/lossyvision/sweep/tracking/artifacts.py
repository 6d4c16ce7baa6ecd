"""The report's files (figures, index.html, sensitivity maps) on the sweep's parent run."""

from __future__ import annotations

import os
from typing import Iterable

from lossyvision.output import load_output_sweep, load_plan
from lossyvision.store import is_remote, read_bytes
from lossyvision.sweep.tracking.tracker import tracker_for


def log_report_artifacts(output: str, paths: Iterable[str], *, artifact_path: str = "report") -> bool:
    """Log files (report figures, index.html, sensitivity maps) to the sweep's parent run.

    The sweep comes from ``OUTPUT/sweep.yaml``. Remote files (``s3://...``) are copied to a temp
    folder first (MLflow uploads local files). Returns False, with a warning, when MLflow is
    unreachable: the files stay in OUTPUT either way.
    """
    import shutil
    import tempfile

    tracker = tracker_for(load_output_sweep(output), plan_digest=load_plan(output).digest)
    paths = [str(p) for p in paths]

    def _log() -> None:
        rid = tracker.parent_run()
        tmp = tempfile.mkdtemp(prefix="lossyvision-artifacts-")
        try:
            for p in paths:
                local = p
                if is_remote(p):
                    local = os.path.join(tmp, p.rstrip("/").rsplit("/", 1)[-1])
                    with open(local, "wb") as f:
                        f.write(read_bytes(p))
                tracker.client.log_artifact(rid, local, artifact_path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    tracker._guard(_log)
    return tracker.available
