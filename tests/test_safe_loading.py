"""Nothing read back from an output is unpickled: a planted resume state cannot run code."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch


class Payload:
    """Unpickling this writes a file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_state_pt_is_refused_and_runs_nothing(tmp_path):
    from lossyvision.sweep.trials import load_progress, save_progress

    # What a trial writes loads back with weights_only: tensors, numbers, containers.
    good = tmp_path / "good"
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)
    from lossyvision.tasks.training import training_state

    save_progress(str(good), 2, training_state(model, opt, sched, 2), [{"epoch": 1, "loss": 1.0}])
    state, history = load_progress(str(good))
    assert state["epoch"] == 2 and history == [{"epoch": 1, "loss": 1.0}]
    assert torch.equal(state["model"]["weight"], model.state_dict()["weight"])

    # A state.pt planted in OUTPUT/tune with a pickle that runs a command.
    planted = tmp_path / "tune" / "run-x" / "m__jpegxl-0__r0__abc" / "checkpoint_000000"
    planted.mkdir(parents=True)
    marker = tmp_path / "pwned"
    with open(planted / "state.pt", "wb") as f:
        pickle.dump({"epoch": 1, "model": Payload(str(marker))}, f)
    (planted / "progress.json").write_text(json.dumps({"epoch": 1, "history": []}))
    with pytest.raises(pickle.UnpicklingError):
        load_progress(str(planted))
    assert not marker.exists()  # nothing ran
