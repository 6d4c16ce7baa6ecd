"""The pieces every task shares: options, data loaders, LR schedules, weight files, the epoch loop.

Plain PyTorch: a task builds its optimizer and schedule, then hands a per-batch ``step`` to
:func:`train_epochs`, which also owns resuming (``state``) and the per-epoch callback.
"""

from __future__ import annotations

import copy
import io
import itertools
import math
import time
from contextlib import nullcontext
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch.utils.data import DataLoader

from lossyvision.seeding import seed_worker, worker_seed
from lossyvision.store import is_remote, read_bytes

# --------------------------------------------------------------------------- options
def option(spec: Any, key: str, default: Any = None) -> Any:
    """``spec.options[key]`` or ``default``."""
    return (getattr(spec, "options", None) or {}).get(key, default)


def recipe(spec: Any, field: str, default: Any) -> Any:
    """A ModelSpec field if the sweep file set it, else the task's recipe default.

    ModelSpec's own defaults (lr 1e-3, batch 32, ...) suit a small classifier; a detector's recipe
    (SGD lr 0.02 per 16 images, ...) applies unless the user overrides it explicitly.
    """
    fields_set = getattr(spec, "model_fields_set", None)
    if fields_set is None or field in fields_set:
        return getattr(spec, field)
    return default


def check_options(spec: Any, known: Iterable[str], task: str) -> None:
    """Reject typos in ``options``: an unknown key names the known ones."""
    unknown = sorted(set(getattr(spec, "options", None) or {}) - set(known))
    if unknown:
        raise ValueError(f"{task} model {getattr(spec, 'name', '?')!r}: unknown option(s) {unknown}; "
                         f"known: {', '.join(sorted(known))}")


COMMON_OPTIONS = ("num_workers", "amp", "schedule", "warmup_iters", "warmup_ratio", "lr_steps",
                  "lr_gamma", "grad_clip", "eval_batch_size", "min_lr_ratio", "poly_power")


# --------------------------------------------------------------------------- data
def make_loader(dataset: Any, batch_size: int, collate_fn: Callable, *, shuffle: bool, num_workers: int = 0,
                seed: int = 0, device: str = "cpu", drop_last: bool = False) -> DataLoader:
    """A DataLoader whose order and worker seeds depend only on ``seed`` (a resumed epoch sees the same order).

    ``shuffle``: the dataset's own training order when it has one (``train_sampler(seed)``:
    :class:`lossyvision.data.ImageSamples` with ``order: shards``), else a seeded permutation. Every
    task builds its training loader here, so every task gets the sweep file's ``data_order``.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = dataset.train_sampler(seed) if shuffle and hasattr(dataset, "train_sampler") else None
    rank, size = world()
    if shuffle and size > 1:  # a data-parallel trial: this rank's share of every global batch
        order = list(sampler) if sampler is not None else torch.randperm(len(dataset), generator=generator).tolist()
        batch_size = max(1, batch_size // size)
        sampler = RankShare(order, rank, size, batch_size)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      collate_fn=collate_fn, num_workers=num_workers, generator=generator, drop_last=drop_last,
                      worker_init_fn=seed_worker,
                      pin_memory=str(device).startswith("cuda"), persistent_workers=False)


class RankShare:
    """Rank ``rank``'s share of one epoch's global ``order``: positions ``rank, rank + world, ...`` of it,
    the tail cut so that every rank takes the same number of steps. With a per-rank batch of
    ``batch_size / world``, global batch ``k`` holds the images of the single-worker batch ``k``.
    A last per-rank batch of one image is dropped too (BatchNorm cannot train on one)."""

    def __init__(self, order: Sequence[int], rank: int, world: int, batch_size: int = 1) -> None:
        per_rank = len(order) // world
        if batch_size > 1 and per_rank > 1 and per_rank % batch_size == 1:
            per_rank -= 1
        self.indices = list(order)[: per_rank * world][rank::world]

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


def world() -> tuple[int, int]:
    """``(rank, world size)`` of a data-parallel trial (torch.distributed, set up by Ray Train), else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def data_parallel(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` in a data-parallel trial (gradients averaged over the
    workers; the parameters are broadcast from rank 0 on wrapping), else ``model`` itself."""
    if world()[1] <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    dev = torch.device(device)
    return DistributedDataParallel(model, device_ids=[dev.index or 0] if dev.type == "cuda" else None)


def _sum_over_workers(values: list[float]) -> list[float]:
    """Per-epoch sums added over a data-parallel trial's workers (one all-reduce), else as they are."""
    if world()[1] <= 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def autocast(device: str, enabled: bool):
    """bfloat16 autocast when ``enabled`` (option ``amp``), else a no-op context."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


# --------------------------------------------------------------------------- schedules
def lr_lambda(total_iters: int, iters_per_epoch: int, *, schedule: str = "cosine", warmup_iters: int = 0,
              warmup_ratio: float = 1e-3, lr_steps: Sequence[int] = (), lr_gamma: float = 0.1,
              min_lr_ratio: float = 0.0, poly_power: float = 1.0) -> Callable[[int], float]:
    """LR factor per iteration (``LambdaLR``): a linear warmup times one decay.

    - ``cosine``: half a cosine from 1 to ``min_lr_ratio`` over all iterations;
    - ``step``: multiply by ``lr_gamma`` at the start of each epoch in ``lr_steps`` (1-based epochs
      counted as mmdet does: ``[8, 11]`` decays after 8 and after 11 epochs);
    - ``poly``: ``(1 - it/total) ** poly_power``, down to ``min_lr_ratio`` (mmseg's PolyLR);
    - ``constant``.
    Warmup (mmdet/mmseg ``LinearLR``): the factor rises linearly from ``warmup_ratio`` to 1 over
    ``warmup_iters`` iterations.
    """
    schedules = ("cosine", "step", "poly", "constant")
    if schedule not in schedules:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(schedules)}")
    total = max(int(total_iters), 1)
    warmup = max(0, min(int(warmup_iters), total))
    step_iters = sorted(int(s) * iters_per_epoch for s in lr_steps)

    def factor(it: int) -> float:
        if schedule == "cosine":
            f = min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(it, total) / total))
        elif schedule == "step":
            f = lr_gamma ** sum(1 for s in step_iters if it >= s)
        elif schedule == "poly":
            f = min_lr_ratio + (1 - min_lr_ratio) * max(0.0, 1 - it / total) ** poly_power
        else:
            f = 1.0
        if it < warmup:
            f *= warmup_ratio + (1 - warmup_ratio) * it / warmup
        return f

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, spec: Any, epochs: int, iters_per_epoch: int, *,
                   schedule: str, warmup_iters: int = 0, warmup_ratio: float = 1e-3,
                   lr_steps: Sequence[int] = ()) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration ``LambdaLR``; the schedule's knobs can be overridden through ``spec.options``."""
    fn = lr_lambda(
        epochs * iters_per_epoch, iters_per_epoch,
        schedule=option(spec, "schedule", schedule),
        warmup_iters=int(option(spec, "warmup_iters", warmup_iters)),
        warmup_ratio=float(option(spec, "warmup_ratio", warmup_ratio)),
        lr_steps=option(spec, "lr_steps", lr_steps),
        lr_gamma=float(option(spec, "lr_gamma", 0.1)),
        min_lr_ratio=float(option(spec, "min_lr_ratio", 0.0)),
        poly_power=float(option(spec, "poly_power", 1.0)),
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


# --------------------------------------------------------------------------- state
def cpu_copy(obj: Any) -> Any:
    """A deep copy with every tensor detached and moved to the CPU (safe to keep while training goes on)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = obj.__class__()
        for k, v in obj.items():
            out[k] = cpu_copy(v)
        if hasattr(obj, "_metadata"):  # a module state dict's version info, used by load_state_dict
            out._metadata = copy.deepcopy(obj._metadata)
        return out
    if isinstance(obj, list):
        return [cpu_copy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(cpu_copy(v) for v in obj)
    return obj


def training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int,
                   **extra: Any) -> dict[str, Any]:
    """What a trial checkpoints after ``epoch``: enough to resume training or to evaluate."""
    return {"epoch": int(epoch), "model": cpu_copy(model.state_dict()),
            "optimizer": cpu_copy(optimizer.state_dict()),
            "scheduler": scheduler.state_dict() if scheduler is not None else None, **extra}


def check_state(state: Mapping[str, Any]) -> None:
    missing = [k for k in ("epoch", "model") if k not in state]
    if missing:
        raise ValueError(f"training state lacks {missing} (has {sorted(state)}); "
                         "pass a state given earlier to on_epoch")


def load_model_state(model: torch.nn.Module, state: Mapping[str, Any]) -> torch.nn.Module:
    """Put the weights of a training ``state`` (from ``on_epoch``) into ``model``."""
    check_state(state)
    model.load_state_dict(state["model"])
    return model


# --------------------------------------------------------------------------- the loop
_END = object()

#: ``step(batch) -> (loss, n_samples, sums)``: ``sums`` are per-epoch sums (e.g. correct
#: predictions) that :func:`train_epochs` divides by the samples seen.
Step = Callable[[Any], "tuple[torch.Tensor, int, dict[str, float]]"]


def train_epochs(model: torch.nn.Module, loader_for_epoch: Callable[[int], Iterable[Any]], step: Step, *,
                 optimizer: torch.optim.Optimizer, scheduler: Any, epochs: int,
                 on_epoch: Callable[[int, dict[str, float], dict[str, Any]], None] | None = None,
                 state: Mapping[str, Any] | None = None, set_train_mode: Callable[[], None] | None = None,
                 grad_clip: float | None = None, seed: int = 0, extra_state: Mapping[str, Any] | None = None,
                 ) -> int:
    """Run epochs ``start+1 .. epochs``; ``start`` is ``state['epoch']`` when resuming, else 0.

    Each epoch reseeds torch's RNG from ``seed`` and the epoch number, so augmentations and the
    shuffle after a resume are those the uninterrupted run would have had. A non-finite loss stops
    training with ``FloatingPointError`` (the trial fails instead of training on NaNs).
    Besides the step's metrics, each epoch reports ``images_per_s`` (samples over the epoch's wall
    time) and ``loader_wait`` (the fraction of it spent waiting for the next batch: near 0 when
    the data loader keeps up with the steps, near 1 when it starves them).
    Returns the last epoch trained (``start`` when nothing was left).
    """
    start = 0
    if state is not None:
        check_state(state)
        model.load_state_dict(state["model"])
        if state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        start = int(state["epoch"])

    params = [p for g in optimizer.param_groups for p in g["params"]]
    epoch = start
    aug_seed = worker_seed(seed, *world())
    for epoch in range(start + 1, epochs + 1):
        torch.manual_seed(aug_seed * 100_003 + epoch)
        (set_train_mode or model.train)()
        total_loss, seen, sums = 0.0, 0, {}
        began, waited = time.perf_counter(), 0.0
        batches = iter(loader_for_epoch(epoch))
        for i in itertools.count():
            asked = time.perf_counter()
            batch = next(batches, _END)
            waited += time.perf_counter() - asked
            if batch is _END:
                break
            loss, n, batch_sums = step(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss.item()} at epoch {epoch}, batch {i + 1}; "
                                         "lower the learning rate or check the targets")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total_loss += float(loss.detach()) * n
            seen += n
            for k, v in batch_sums.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        names = sorted(sums)
        total_loss, seen, *summed = _sum_over_workers([total_loss, seen, *(sums[k] for k in names)])
        sums = dict(zip(names, summed))
        if seen == 0:
            raise ValueError("no training samples: the train split is empty")
        took = max(time.perf_counter() - began, 1e-9)
        metrics = {"loss": total_loss / seen, **{k: v / seen for k, v in sums.items()},
                   "lr": float(optimizer.param_groups[0]["lr"]),
                   "images_per_s": seen / took, "loader_wait": min(1.0, waited / took)}
        if on_epoch is not None:
            on_epoch(epoch, metrics, training_state(model, optimizer, scheduler, epoch, **(extra_state or {})))
    return epoch


# --------------------------------------------------------------------------- weight files
def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def load_weights_file(source: str) -> dict[str, Any]:
    """A state dict from a local path, an ``s3://``-style URI or an http(s) URL (cached by torch.hub).

    Checkpoints that wrap the weights (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped.
    Loaded with ``weights_only=True``: a checkpoint that pickles arbitrary objects is refused.
    """
    try:
        if is_url(source):
            obj = torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=True)
        else:
            if is_remote(source):
                obj = torch.load(io.BytesIO(read_bytes(source)), map_location="cpu", weights_only=True)
            else:
                obj = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"checkpoint {source} does not exist") from None
    except Exception as e:  # unpickling errors, bad zip files, HTTP errors: name the file
        raise ValueError(f"cannot load checkpoint {source}: {type(e).__name__}: {e}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"checkpoint {source} is not a state dict of tensors")
    return dict(obj)


def strip_prefixes(state_dict: Mapping[str, Any], prefixes: Sequence[str] = ("module.",)) -> dict[str, Any]:
    """Remove wrapper prefixes (DataParallel's ``module.``, ...) from every key that has them."""
    out = {}
    for k, v in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if p and k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def load_backbone_weights(model: torch.nn.Module, source: str | Mapping[str, Any], *,
                          head_prefixes: Sequence[str] = (), drop_prefixes: Sequence[str] = (),
                          strip: Sequence[str] = ("module.",)) -> list[str]:
    """Load a backbone checkpoint into ``model``, leaving its head (``head_prefixes``) as it is.

    Keys are cleaned with ``strip``; keys under ``drop_prefixes`` (a self-supervised checkpoint's
    projection head, ...) or ``head_prefixes`` are dropped. Every non-head weight of ``model`` must
    then be present with the right shape and no key may be left unused: a checkpoint of another
    architecture fails with a message naming the first mismatches. Returns the loaded keys.
    """
    where = source if isinstance(source, str) else "state dict"
    sd = load_weights_file(source) if isinstance(source, str) else dict(source)
    sd = strip_prefixes(sd, strip)
    skip = tuple(drop_prefixes) + tuple(head_prefixes)
    sd = {k: v for k, v in sd.items() if not (skip and k.startswith(skip))}
    own = model.state_dict()
    wanted = {k for k in own if not (head_prefixes and k.startswith(tuple(head_prefixes)))}
    missing = sorted(wanted - set(sd) - {k for k in wanted if k.endswith("num_batches_tracked")})
    unexpected = sorted(k for k in set(sd) - set(own) if not k.endswith("num_batches_tracked"))  # FrozenBN has none
    wrong_shape = sorted(k for k in set(sd) & set(own) if tuple(sd[k].shape) != tuple(own[k].shape))
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights missing (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatches (e.g. {wrong_shape[0]}: "
                        f"{tuple(sd[wrong_shape[0]].shape)} vs {tuple(own[wrong_shape[0]].shape)})")
    if problems:
        raise ValueError(f"checkpoint {where} does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return sorted(k for k in sd if k in own)
