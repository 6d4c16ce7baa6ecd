"""One trial as a plain function: train a model on the store at one level, save its checkpoint.

Ray Tune only schedules :func:`run_trial` (``lossyvision.runners.tune``). A trial's final
checkpoint, ``OUTPUT/checkpoints/<trial key>/`` with ``model.pt`` and ``trial.json``, is its
"done" marker: ``trial.json`` is written last, atomically, so a trial whose ``trial.json``
exists never runs again. It records the Ray node the trial finished on (``node``) and every node
it trained on (``nodes``: a trial retried after its node was lost lists both), carried from epoch
to epoch in its resumable checkpoints.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import math
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import pandas as pd

from lossyvision.budget import select_subset
from lossyvision.cache import cache_mode, cached_samples
from lossyvision.codecs import DEFAULT_CODEC
from lossyvision.manifest import CorruptRowError, output_uri
from lossyvision.output import CHECKPOINTS_DIR
from lossyvision.seeding import seed_everything, set_deterministic, trial_seed
from lossyvision.spec import Sweep
from lossyvision.staging import stage_shards
from lossyvision.store import MANIFEST_NAME, atomic_write_bytes, exists, filesystem, is_remote, join, read_bytes
from lossyvision.streaming import BlockReader, blocks_spanned, late_fraction
from lossyvision.sweep.plan import TrialSpec, level_dcr, reader_of, split_rows
from lossyvision.sweep.layout import NO_BUDGET
from lossyvision.units import format_bytes

MODEL_FILE = "model.pt"
META_FILE = "trial.json"
RESUME_STATE_FILE = "state.pt"
RESUME_META_FILE = "progress.json"
TUNE_DIR = "tune"

#: ``report(epoch, metrics, checkpoint_dir, epochs)``: called after each epoch with the training metrics,
#: a folder holding the resumable state (for ``tune.report(..., checkpoint=...)``) and the number of
#: epochs the trial trains (progress lines: ``epoch k/N``).
Reporter = Callable[[int, dict[str, float], str, int], None]


class TrialError(RuntimeError):
    """A trial cannot run (no images at its level, an empty budget subset, ...)."""


# --- where things are ----------------------------------------------------------------------------
def checkpoint_dir(output: str, key: str) -> str:
    return join(str(output), CHECKPOINTS_DIR, key)


def is_finished(output: str, key: str) -> bool:
    return exists(join(checkpoint_dir(output, key), META_FILE))


def finished_keys(output: str, keys: list[str]) -> set[str]:
    return {k for k in keys if is_finished(output, k)}


def read_meta(output: str, key: str) -> dict[str, Any]:
    return json.loads(read_bytes(join(checkpoint_dir(output, key), META_FILE)))


def device_for(gpu: float) -> str:
    import torch

    return "cuda" if gpu > 0 and torch.cuda.is_available() else "cpu"


def manifest_path(sweep: Sweep) -> str:
    return join(sweep.store_uri, MANIFEST_NAME)


def read_manifest(sweep: Sweep) -> pd.DataFrame:
    path = manifest_path(sweep)
    if not exists(path):
        raise TrialError(f"{path} does not exist: compress the dataset first")
    return pd.read_parquet(io.BytesIO(read_bytes(path)))


# --- the images a trial or an evaluation sees ---------------------------------------------------
@dataclass
class SplitImages:
    """The compressed files of one split at one level, with their targets."""

    uris: list[str]
    targets: list[Any]
    relpaths: list[str]
    compressed_bytes: int
    exhausted: bool = False  # budget sweeps: every candidate fit in the budget
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.uris)


def split_images(sweep: Sweep, manifest: pd.DataFrame, split: str, level: float,
                 reader: Any | None = None, codec: str = DEFAULT_CODEC) -> tuple[pd.DataFrame, Any]:
    """Ok manifest rows of ``split`` at ``codec``'s ``level`` (limited like the sweep) and the dataset reader."""
    reader = reader or reader_of(sweep)
    return split_rows(sweep, manifest, split, level, reader, codec), reader


def images_of(sweep: Sweep, rows: pd.DataFrame, reader: Any, split: str) -> SplitImages:
    records = {r.relpath: r for r in reader.select(split)}
    missing = [p for p in rows["relpath"] if p not in records]
    if missing:
        raise TrialError(f"{len(missing)} manifest image(s) of split {split!r} are not in the dataset "
                         f"(first: {missing[0]}); is the store from another dataset?")
    return SplitImages(
        uris=[store_uri(sweep, p) for p in rows["output_path"]],
        targets=[reader.load_target(records[p]) for p in rows["relpath"]],
        relpaths=list(rows["relpath"]),
        compressed_bytes=int(rows["compressed_bytes"].sum()),
        extra={k: list(rows[k]) for k in ("height", "width") if k in rows.columns},  # the cache's slots
    )


def store_uri(sweep: Sweep, output_path: str) -> str:
    """Manifest paths are relative to the store; one that leaves it (absolute, a URI, ``..``) is a
    corrupt row, never followed."""
    try:
        return output_uri(sweep.store_uri, output_path)
    except CorruptRowError as e:
        raise TrialError(str(e)) from None


def train_images(sweep: Sweep, trial: TrialSpec, manifest: pd.DataFrame, reader: Any | None = None) -> SplitImages:
    """What a trial trains on: the train split at its level, or a budget's subset of it."""
    rows, reader = split_images(sweep, manifest, sweep.train_split, trial.train_level, reader, trial.codec)
    if rows.empty:
        raise TrialError(f"trial {trial.key}: no ok images in split {sweep.train_split!r} "
                         f"at level {trial.train_level:g}")
    exhausted = False
    if trial.budget != NO_BUDGET:
        seed = sweep.seed + (trial.repeat if sweep.resample else 0)
        subset = select_subset(rows[["relpath", "label", "compressed_bytes"]].reset_index(drop=True),
                               int(trial.budget), seed)
        chosen = list(subset.relpaths)
        if not chosen:
            raise TrialError(f"trial {trial.key}: no image fits the budget of {trial.budget} bytes")
        rows = rows.set_index("relpath", drop=False).loc[chosen].reset_index(drop=True)
        exhausted = bool(subset.exhausted)
    images = images_of(sweep, rows, reader, sweep.train_split)
    images.exhausted = exhausted
    return images


# --- resumable state -----------------------------------------------------------------------------
def save_progress(directory: str, epoch: int, state: dict[str, Any], history: list[dict[str, Any]],
                  nodes: list[str] | None = None) -> None:
    """Write a resumable checkpoint (``state.pt`` + ``progress.json``) into a local folder.

    ``state`` holds tensors, numbers, strings and containers of them only (model, optimizer and
    scheduler state dicts), so :func:`load_progress` reads it with ``weights_only=True``. ``nodes``:
    the Ray nodes the trial has trained on so far, in order.
    """
    import torch

    os.makedirs(directory, exist_ok=True)
    torch.save(state, os.path.join(directory, RESUME_STATE_FILE))
    with open(os.path.join(directory, RESUME_META_FILE), "w") as f:
        json.dump({"epoch": epoch, "history": history, "nodes": list(nodes or [])}, f)


def progress_nodes(directory: str) -> list[str]:
    """The nodes a resumable checkpoint says its trial trained on (empty for older checkpoints)."""
    try:
        with open(os.path.join(directory, RESUME_META_FILE)) as f:
            nodes = json.load(f).get("nodes") or []
    except (OSError, ValueError, AttributeError):
        return []
    return [str(n) for n in nodes if isinstance(n, str)]


def load_progress(directory: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import torch

    # weights_only: a state.pt planted in OUTPUT/tune cannot run code; it fails to load and the
    # trial starts over (run_trial's warning).
    state = torch.load(os.path.join(directory, RESUME_STATE_FILE), map_location="cpu", weights_only=True)
    with open(os.path.join(directory, RESUME_META_FILE)) as f:
        history = json.load(f)["history"]
    return state, history


def latest_progress_dir(output: str, key: str, local_dir: str | None = None) -> str | None:
    """The newest resumable checkpoint of a trial among earlier Tune runs of this sweep.

    Tune's own ``get_checkpoint()`` covers retries within a run; this covers a rerun after the
    driver was killed (a new Tune run, whose trials start without a checkpoint). On an object
    store (``s3://`` output) the checkpoint is downloaded into ``local_dir`` (a fresh temporary
    folder the caller removes), so the returned folder is always local.
    """
    if is_remote(str(output)):
        return _latest_remote_progress(str(output), key, local_dir)
    best, best_epoch = None, -1
    for meta in glob.glob(os.path.join(str(output), TUNE_DIR, "*", key, "checkpoint_*", RESUME_META_FILE)):
        try:
            with open(meta) as f:
                epoch = int(json.load(f)["epoch"])
        except (OSError, ValueError, KeyError):
            continue
        if epoch > best_epoch and os.path.exists(os.path.join(os.path.dirname(meta), RESUME_STATE_FILE)):
            best, best_epoch = os.path.dirname(meta), epoch
    return best


def _latest_remote_progress(output: str, key: str, local_dir: str | None) -> str | None:
    fs, base = filesystem(join(output, TUNE_DIR))
    best, best_epoch = None, -1
    for meta in fs.glob(f"{base}/*/{key}/checkpoint_*/{RESUME_META_FILE}"):
        try:
            epoch = int(json.loads(fs.cat_file(meta))["epoch"])
        except (OSError, ValueError, KeyError):
            continue
        folder = meta.rsplit("/", 1)[0]
        if epoch > best_epoch and fs.exists(f"{folder}/{RESUME_STATE_FILE}"):
            best, best_epoch = folder, epoch
    if best is None:
        return None
    import tempfile

    target = local_dir or tempfile.mkdtemp(prefix="lv-resume-")
    for name in (RESUME_STATE_FILE, RESUME_META_FILE):
        fs.get_file(f"{best}/{name}", os.path.join(target, name))
    return target


def drop_progress(output: str, key: str) -> None:
    """Delete a finished trial's epoch checkpoints under ``OUTPUT/tune`` (its final one is kept)."""
    import shutil

    if is_remote(str(output)):
        fs, base = filesystem(join(str(output), TUNE_DIR))
        for d in fs.glob(f"{base}/*/{key}/checkpoint_*"):
            fs.rm(d, recursive=True)
        return
    for d in glob.glob(os.path.join(str(output), TUNE_DIR, "*", key, "checkpoint_*")):
        shutil.rmtree(d, ignore_errors=True)


# --- the trial ----------------------------------------------------------------------------------
def model_spec_for_loading(spec: Any) -> Any:
    """The model spec without pretrained weights: a checkpoint's state dict replaces them."""
    return spec.model_copy(update={"pretrained": False, "checkpoint": None})


def run_trial(sweep: Sweep, trial: TrialSpec, output: str, *, report: Reporter | None = None,
              resume_dir: str | None = None, device: str | None = None,
              manifest: pd.DataFrame | None = None, node: str | None = None, write: bool = True,
              extra_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``trial`` and save its final checkpoint; returns the trial's metadata (``trial.json``).

    ``resume_dir`` is a folder written by :func:`save_progress` (a Tune checkpoint): training
    continues after its epoch. ``report`` gets every epoch's metrics and a progress folder.
    ``node``: the Ray node this runs on (the runner knows it), recorded with the nodes of earlier
    attempts. ``write``: save the final checkpoint (the one writer of a data-parallel trial is its rank 0,
    :mod:`lossyvision.runners.train_ddp`); ``extra_meta`` goes into ``trial.json``.
    """
    import tempfile

    import torch

    from lossyvision.tasks import create_task  # lazy: loads torch

    started = time.time()
    spec = sweep.model(trial.model)
    manifest = read_manifest(sweep) if manifest is None else manifest
    images = train_images(sweep, trial, manifest)
    reader_classes = _classes(sweep)
    device = device or device_for(sweep.resources.trial.gpu)
    seed = trial_seed(sweep.seed, trial.repeat)
    set_deterministic(sweep.deterministic)
    task = create_task(spec.task, spec, reader_classes, device=device, seed=seed)
    codec = sweep.arm(trial.codec).create()
    stage_dir = tempfile.mkdtemp(prefix="lv-shards-")  # copies of remote training shards, this trial's only
    try:
        staged = stage_shards(images.uris, stage_dir, sweep.resources.trial.stage_bytes)
        if staged.reason:
            logging.getLogger(__name__).info("trial %s: %s", trial.key, staged.reason)
        train, read_blocks = training_samples(spec, sweep.resources.trial, staged.uris, images.targets, codec.decode)
        train = with_cache(spec, train, images, os.path.join(stage_dir, "cache"))
        if read_blocks:
            res = sweep.resources.trial
            late = late_fraction(staged.uris, spec.shuffle_buffer, res.read_block_bytes, res.read_cache_bytes)
            logging.getLogger(__name__).info(
                "trial %s: data_order shards: about %d ranged GETs of %s per epoch and data loader process, "
                "and one GET each for about %.1f%% of the images (late in the shuffle buffer%s)",
                trial.key, read_blocks, format_bytes(res.read_block_bytes), 100 * late,
                "; raise resources.trial.read_cache_bytes" if late > 0.05 else "")

        state, history, nodes = None, [], []
        if resume_dir:
            try:
                state, history = load_progress(resume_dir)
                nodes = progress_nodes(resume_dir)
            except Exception as e:  # a checkpoint cut short by a kill: start over rather than fail
                logging.getLogger(__name__).warning("trial %s: cannot resume from %s (%s); starting over",
                                                    trial.key, resume_dir, e)
                state, history, nodes = None, [], []
        if node and (not nodes or nodes[-1] != node):
            nodes.append(node)
        resumed_from = int(state["epoch"]) if state else 0
        epochs = int(getattr(task, "epochs", spec.epochs))  # a task's recipe may set its own (detection)
        seed_everything(seed)  # the initial weights (a random head, or a whole model from scratch)
        model = task.build_model()

        def on_epoch(epoch: int, metrics: dict[str, float], st: dict[str, Any]) -> None:
            row = {"epoch": int(epoch), **{k: float(v) for k, v in metrics.items() if _is_number(v)}}
            history[:] = [h for h in history if h["epoch"] < epoch] + [row]
            if report is not None:
                with tempfile.TemporaryDirectory(prefix="lv-progress-") as tmp:
                    save_progress(tmp, epoch, st, history, nodes)
                    report(epoch, row, tmp, epochs)

        task.fit(model, train, on_epoch=on_epoch, state=state)
        scale = scale_meta(spec, sweep, train)  # before the scratch folder (and its cache) goes
    finally:
        shutil.rmtree(stage_dir, ignore_errors=True)

    train_dcr = level_dcr(manifest, sweep.train_split, trial.train_level, trial.codec)
    meta = {
        "trial": trial.as_dict(), "key": trial.key, "config": trial.config, "seed": seed, "sweep": sweep.name,
        "task": spec.task, "deterministic": bool(sweep.deterministic),
        "metric_names": list(task.metric_names),
        "n_train_images": len(images), "train_bytes": images.compressed_bytes,
        "budget_exhausted": images.exhausted,
        "train_dcr": _nan_to_none(train_dcr.vs_source), "train_dcr_raw": _nan_to_none(train_dcr.vs_raw),
        "history": history, "resumed_from": resumed_from, "seconds": round(time.time() - started, 3),
        "finished_at": utc_now(), "node": node, "nodes": nodes, "host": socket.gethostname(),
        "train_shards": staged.shards, "train_shards_staged": staged.staged,
        "data_order": spec.data_order, **scale,
    }
    if spec.data_order == "shards":
        meta.update(shuffle_buffer=int(spec.shuffle_buffer), train_read_blocks=read_blocks)
    meta.update(extra_meta or {})
    if not write:
        return meta
    directory = checkpoint_dir(output, trial.key)
    buf = io.BytesIO()
    torch.save(_cpu_state_dict(model), buf)
    atomic_write_bytes(join(directory, MODEL_FILE), buf.getvalue())
    atomic_write_bytes(join(directory, META_FILE), json.dumps(meta, indent=1).encode())  # done marker
    return meta


def training_samples(spec: Any, resources: Any, uris: list[str], targets: list[Any],
                     decode: Any) -> tuple[Any, int]:
    """The trial's training samples in the model's ``data_order``, and the aligned blocks of remote
    shards they span (the GETs of an epoch per loader process in shard order; 0 otherwise).

    Shard order reads remote shards through a :class:`lossyvision.streaming.BlockReader`; staged
    (local) copies are read as they are, in the same order.
    """
    from lossyvision.data import ImageSamples  # lazy: loads torch

    if spec.data_order != "shards":
        return ImageSamples(uris, targets, decode=decode), 0
    try:
        reader = BlockReader(resources.read_block_bytes, resources.read_cache_bytes)
        samples = ImageSamples(uris, targets, decode=decode, order="shards", shuffle_buffer=spec.shuffle_buffer,
                               read=reader)
    except ValueError as e:
        raise TrialError(f"model {spec.name!r}: {e}") from None
    return samples, blocks_spanned(uris, reader.block_bytes)


def with_cache(spec: Any, samples: Any, images: SplitImages, directory: str) -> Any:
    """``samples`` behind the model's decoded cache (``cache:``) in ``directory``, or as they are."""
    mode = cache_mode(getattr(spec, "cache", None))
    if mode is None:
        return samples
    n = len(images)
    return cached_samples(samples, mode, images.extra.get("height") or [None] * n,
                          images.extra.get("width") or [None] * n, directory)


def scale_meta(spec: Any, sweep: Sweep, train: Any) -> dict[str, Any]:
    """trial.json's record of the cache (mode, images it held at the end) and the data-parallel workers."""
    meta: dict[str, Any] = {"cache": cache_mode(getattr(spec, "cache", None)),
                            "workers": int(getattr(sweep.resources.trial, "workers", 1))}
    cache = getattr(train, "cache", None)
    if cache is not None:
        meta["cache_images"] = cache.filled()
    return meta


def load_trained(sweep: Sweep, trial: TrialSpec, output: str, device: str = "cpu") -> tuple[Any, Any]:
    """``(task, model)`` of a finished trial, weights from its final checkpoint, in eval mode."""
    import torch

    from lossyvision.tasks import create_task  # lazy: loads torch

    spec = sweep.model(trial.model)
    task = create_task(spec.task, model_spec_for_loading(spec), _classes(sweep), device=device)
    model = task.build_model()
    data = read_bytes(join(checkpoint_dir(output, trial.key), MODEL_FILE))
    model.load_state_dict(torch.load(io.BytesIO(data), map_location=device, weights_only=True))
    model.to(device)
    model.eval()
    return task, model


def _classes(sweep: Sweep) -> list[str]:
    return list(reader_of(sweep).classes)


def _cpu_state_dict(model: Any) -> dict[str, Any]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _is_number(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _nan_to_none(x: float) -> float | None:
    return None if x != x else x


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
