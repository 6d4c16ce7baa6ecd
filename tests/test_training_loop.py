"""The training loop's throughput metrics: images per second and how much of an epoch waited for data."""

from __future__ import annotations

import time

import torch

from lossyvision.tasks.training import train_epochs


def _epoch_metrics(loader_delay: float, step_delay: float) -> dict[str, float]:
    model = torch.nn.Linear(4, 2)
    x, y = torch.zeros(8, 4), torch.zeros(8, dtype=torch.int64)

    def loader(epoch):
        for _ in range(4):
            time.sleep(loader_delay)
            yield x, y

    def step(batch):
        time.sleep(step_delay)
        return torch.nn.functional.cross_entropy(model(batch[0]), batch[1]), len(batch[1]), {}

    seen = []
    started = time.perf_counter()
    train_epochs(model, loader, step, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), scheduler=None,
                 epochs=1, on_epoch=lambda epoch, metrics, state: seen.append(metrics))
    return {**seen[0], "outer_seconds": time.perf_counter() - started}


def test_a_slow_loader_shows_as_waiting_and_a_slow_step_does_not():
    """Sleeps of 0.1 s per batch against steps of a few ms: the bounds hold on a loaded machine too
    (a loaded CPU lengthens the steps and the epoch, never the sleeps)."""
    starved = _epoch_metrics(loader_delay=0.1, step_delay=0.0)
    busy = _epoch_metrics(loader_delay=0.0, step_delay=0.1)
    assert starved["loader_wait"] > 0.5 > busy["loader_wait"]
    assert starved["loader_wait"] - busy["loader_wait"] > 0.4
    for m in (starved, busy):  # 32 images in at least the 0.4 s of sleeps, at most the call's own time
        assert 32 / m["outer_seconds"] <= m["images_per_s"] <= 32 / 0.4 and 0.0 <= m["loader_wait"] <= 1.0
