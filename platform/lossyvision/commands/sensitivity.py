"""The body of ``lossyvision sensitivity``: a trained classifier's DCT-frequency sensitivity maps, written and
logged to the sweep's MLflow run."""

from __future__ import annotations

from typing import Optional

import typer

from lossyvision.commands.errors import check_output, clean_errors, fail
from lossyvision.commands.report import log_artifacts
from lossyvision.output import OutputError
from lossyvision.sensitivity import SensitivityError, run_sweep_sensitivity
from lossyvision.spec import SpecError
from lossyvision.sweep.trials import TrialError


def sensitivity(output: str, *, model: Optional[str], train_level: Optional[float], repeat: int, images: int,
                mode: str, eps: float, blocks: Optional[int], seed: int, device: str, mlflow: bool) -> None:
    check_output(output)
    try:
        with clean_errors():
            done = run_sweep_sensitivity(output, model=model, train_level=train_level, repeat=repeat,
                                         n_images=images, mode=mode, eps=eps, blocks_per_image=blocks, seed=seed,
                                         device=device)
    except (SensitivityError, SpecError, OutputError, TrialError, KeyError) as e:
        fail(str(e).strip("'\""))
    typer.echo(done.result.describe())
    for p in done.paths:
        typer.echo(f"wrote {p}")
    if mlflow:
        log_artifacts(output, done.paths, "sensitivity")
