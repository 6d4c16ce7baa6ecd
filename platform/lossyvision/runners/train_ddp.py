"""Data-parallel trials: a Tune trial that trains on ``resources.trial.workers`` processes through a Ray Train ``TorchTrainer``.

Ray's own way of nesting the two: the Tune function trial (``runners.tune``) holds no resources of its
own and starts a ``TorchTrainer`` whose workers each ask for the trial's ``cpu``/``gpu`` (and custom
resources); Ray Train's controller takes no CPU (``num_cpus=0``), so two 1-CPU workers fit a 2-CPU Ray.
Every worker runs the ordinary trial (:func:`lossyvision.sweep.trials.run_trial`) inside the process
group Ray Train sets up (NCCL with a whole GPU per worker, else gloo); the tasks see it through
:func:`lossyvision.tasks.training.world`: the model goes into ``DistributedDataParallel``, each rank
takes its share of every global batch of ``batch_size`` images (order from the trial seed), and each
rank draws its own augmentation (:func:`lossyvision.seeding.worker_seed`).

Checkpoints: every epoch rank 0 reports the same resumable folder a single-worker trial gives Tune
(``state.pt`` + ``progress.json``) to Ray Train, kept under ``OUTPUT/tune/train/<trial key>/``. A worker
that dies restarts the worker group from it (``FailureConfig``); a rerun after a driver kill finds it
as it finds Tune's (:func:`lossyvision.sweep.trials.latest_progress_dir`). Rank 0 alone writes the final
``model.pt`` and ``trial.json`` (with ``workers`` and each rank's node, ``worker_nodes``).
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from lossyvision.store import filesystem, join
from lossyvision.sweep.plan import TrialSpec
from lossyvision.sweep.trials import TUNE_DIR, latest_progress_dir, run_trial

#: ``OUTPUT/tune/<this>/<trial key>/checkpoint_*``: where Ray Train keeps a data-parallel trial's epochs.
TRAIN_DIR = "train"


def trial_rows(sweep: Any, trial: TrialSpec, manifest: Any) -> Any:
    """The manifest rows a trial reads (its train split at its codec and level): what goes to each worker."""
    m = manifest
    mask = (m["split"] == sweep.train_split) & (m["level"].astype(float) == float(trial.train_level))
    if "codec" in m.columns:
        mask &= m["codec"] == trial.codec
    return m[mask]


def run_ddp_trial(sweep: Any, trial: TrialSpec, output: str, manifest: Any) -> None:
    """Train ``trial`` on ``sweep.resources.trial.workers`` Ray Train workers; raises when training fails."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    res = sweep.resources.trial
    use_gpu = res.gpu > 0
    per_worker = {"CPU": float(res.cpu), **({"GPU": float(res.gpu)} if use_gpu else {}),
                  **{k: float(v) for k, v in res.custom.items()}}
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"sweep": sweep, "trial": trial.as_dict(), "output": output,
                           "rows": trial_rows(sweep, trial, manifest)},
        # NCCL needs a whole GPU per rank; ranks sharing one (gpu: 0.5) or on CPUs use gloo.
        torch_config=TorchConfig(backend="nccl" if res.gpu >= 1 else "gloo"),
        scaling_config=ScalingConfig(num_workers=int(res.workers), use_gpu=use_gpu, resources_per_worker=per_worker),
        run_config=RunConfig(name=trial.key, storage_path=join(output, TUNE_DIR, TRAIN_DIR),
                             failure_config=FailureConfig(max_failures=int(sweep.max_failures)),
                             checkpoint_config=CheckpointConfig(num_to_keep=1),
                             callbacks=[TuneReportCallback()]),
    )
    trainer.fit()
    _drop_run(join(output, TUNE_DIR, TRAIN_DIR, trial.key))  # trial.json is written: its epochs are done with


def _drop_run(uri: str) -> None:
    """Remove Ray Train's folder of a finished trial (its epoch checkpoints and Train's own snapshot)."""
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _worker_loop(config: dict[str, Any]) -> None:
    """One rank of a data-parallel trial (runs in a Ray Train worker, the process group set up)."""
    import ray
    import ray.train
    import torch
    import torch.distributed as dist

    sweep, output, rows = config["sweep"], config["output"], config["rows"]
    trial = TrialSpec.from_dict(config["trial"])
    ctx = ray.train.get_context()
    rank, size = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(sweep.resources.trial.cpu)))
    node = ray.get_runtime_context().get_node_id()
    nodes: list[Any] = [None] * size
    dist.all_gather_object(nodes, node)  # where each rank trains: trial.json's worker_nodes

    def report(epoch: int, metrics: dict[str, float], directory: str, epochs: int) -> None:
        payload = {**metrics, "epoch": epoch, "epochs_total": epochs}
        checkpoint = ray.train.Checkpoint.from_directory(directory) if rank == 0 else None
        ray.train.report(payload, checkpoint=checkpoint)  # every rank reports; rank 0's folder is kept

    device = "cuda" if sweep.resources.trial.gpu > 0 and torch.cuda.is_available() else "cpu"
    kwargs = dict(report=report, device=device, manifest=rows, node=node, write=rank == 0,
                  extra_meta={"worker_nodes": nodes})
    checkpoint = ray.train.get_checkpoint()  # a restarted worker group: the last epoch rank 0 reported
    if checkpoint is not None:
        with checkpoint.as_directory() as resume_dir:
            run_trial(sweep, trial, output, resume_dir=resume_dir, **kwargs)
        return
    scratch = tempfile.mkdtemp(prefix="lv-resume-")
    try:
        run_trial(sweep, trial, output, resume_dir=latest_progress_dir(output, trial.key, scratch), **kwargs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
