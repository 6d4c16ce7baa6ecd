"""On CUDA (skipped without it): streaming evaluation on fractional GPUs through Ray, and deterministic training."""

from __future__ import annotations

import numpy as np
import pytest

from test_evaluate_shards import trained  # noqa: F401  (two trials trained on the CPU from a demo store)

pytestmark = pytest.mark.gpu


@pytest.mark.ray
def test_streaming_evaluation_on_quarter_gpus_matches_the_cpu(trained):  # noqa: F811
    from lossyvision.runners.cluster import init_ray, shutdown_ray
    from lossyvision.runners.evaluate import evaluate_cells
    from lossyvision.sweep.evaluate import decode_test_level, evaluate_trial

    sweep, manifest, grid = trained
    on_gpu = sweep.model_copy(update={"resources": sweep.resources.model_copy(
        update={"eval": sweep.resources.eval.model_copy(update={"cpu": 0.5, "gpu": 0.25})})})
    seen = {}
    init_ray(num_cpus=2, num_gpus=1)
    try:
        failures = evaluate_cells(on_gpu, grid.cells, sweep.output, manifest,
                                  lambda cell, outcomes, error: seen.__setitem__(cell.key, (outcomes, error)))
    finally:
        shutdown_ray()
    assert failures == {} and set(seen) == {c.key for c in grid.cells}
    whole = decode_test_level(sweep, manifest, 2.0)
    for cell in grid.cells:
        outcomes, _ = seen[cell.key]
        cpu = evaluate_trial(sweep, cell, sweep.output, whole)
        assert list(outcomes.ids) == whole.ids
        assert np.mean(outcomes.predicted == cpu.predicted) >= 0.9  # float32 CPU vs GPU: near-ties may flip


def test_deterministic_training_on_cuda_is_bit_identical():
    import timm
    import torch

    from lossyvision.seeding import seed_everything, set_deterministic

    def train() -> torch.Tensor:
        set_deterministic(True)
        seed_everything(0)
        model = timm.create_model("resnet10t", pretrained=False, num_classes=4).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        x, y = torch.rand(8, 3, 64, 64, generator=g).cuda(), torch.randint(0, 4, (8,), generator=g).cuda()
        for _ in range(5):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        set_deterministic(False)
        return torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])

    assert torch.equal(train(), train())
