"""``lossyvision sweep plan FILE``: what a run would do, before it does anything. Writes nothing, starts no Ray.

- the grid: trials and cells, and of those what OUTPUT already has done, what is stale (an earlier
  configuration's) and what is left to run;
- the store: per codec and level, how many images are not compressed yet;
- what it will write: compressed files (bytes estimated by encoding a small sample of the images,
  as :mod:`lossyvision.inspect` does; in the sharded layout, shards: the sample's mean source size
  times the images, over ``shard_size``, per level), checkpoints (the model's parameter count), predictions;
- the compression time on this machine, from the same timed sample.

Keys hash the exact images a trial trains on (:mod:`lossyvision.sweep.plan`): where a level is not
compressed yet, its trials' and cells' keys are not known before compression, and they are counted
as to run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lossyvision import store
from lossyvision.cache import cache_mode, cache_needs, describe
from lossyvision.compress import limit_per_split
from lossyvision.inspect import estimate_store, read_facts
from lossyvision.output import check_format
from lossyvision.spec import grid_counts
from lossyvision.sweep.plan import Grid, done_cell_keys, plan, reader_of
from lossyvision.sweep.results import read_results
from lossyvision.sweep.status import stale_entries
from lossyvision.sweep.trials import finished_keys, read_manifest
from lossyvision.units import format_bytes


@dataclass
class CodecWork:
    codec: str
    images: int
    levels: list[float]
    to_compress: int                   # (image, level) pairs the store does not hold yet
    est_bytes: int                     # of those, estimated from the sample
    est_seconds: float                 # wall time on this machine's CPUs, from the sample
    sample: int                        # images encoded for the estimate
    objects: int | None = None         # objects written: one per image and level, or shards (layout shards)


@dataclass
class Preview:
    sweep: str
    trials: int
    cells: int
    trials_done: int
    cells_done: int
    trials_unknown: int                # at levels not compressed yet: their keys come after compression
    cells_unknown: int
    stale_trials: int
    stale_cells: int
    codecs: list[CodecWork] = field(default_factory=list)
    checkpoint_bytes: int = 0          # per trial: the model's weights (float32)
    notes: list[str] = field(default_factory=list)
    scale: list[str] = field(default_factory=list)  # the decoded cache and data-parallel workers (docs/scale.md)
    search: bool = False               # an adaptive search trains a part of this grid (its counts: searchgrid)

    @property
    def trials_todo(self) -> int:
        return self.trials - self.trials_done

    @property
    def cells_todo(self) -> int:
        return self.cells - self.cells_done

    def files_to_write(self) -> int:
        compressed = sum(c.to_compress if c.objects is None else c.objects for c in self.codecs)
        return compressed + 2 * self.trials_todo + self.cells_todo

    def bytes_to_write(self) -> int:
        return sum(c.est_bytes for c in self.codecs) + self.trials_todo * self.checkpoint_bytes


def _missing(manifest: pd.DataFrame, records: list[Any], codec: str, level: float) -> int:
    """Images of ``records`` without a row (ok or failed) for ``codec`` at ``level``."""
    if manifest.empty:
        return len(records)
    rows = manifest[(manifest["codec"] == codec) & (manifest["level"].astype(float) == float(level))]
    have = set(rows["relpath"].astype(str))
    return sum(1 for r in records if r.relpath not in have)


def _sample(records: list[Any], n: int) -> list[Any]:
    ranked = sorted(records, key=lambda r: hashlib.sha1(r.relpath.encode()).hexdigest())
    return ranked[:n]


def estimate_codec(reader: Any, records: list[Any], arm: Any, pending: dict[float, int], sample: int,
                   max_pixels: int, shard_size: int | None = None) -> tuple[int, float, int, int | None]:
    """(estimated bytes, wall seconds, images sampled, objects) to compress ``pending[level]`` images per level.

    ``objects`` is None in the per-file layout (one per image and level); with ``shard_size`` it is
    the shards: per level, the pending images' estimated source bytes over ``shard_size``.
    """
    chosen = _sample(records, sample)
    facts = [read_facts(reader, r, max_pixels) for r in chosen]
    good = [f for f in facts if f.error is None]
    levels = [lv for lv, n in pending.items() if n]
    objects = None
    if shard_size and good:
        mean_source = sum(f.bytes for f in good) / len(good)
        objects = sum(max(1, -(-int(mean_source * pending[lv]) // int(shard_size))) for lv in levels)
    if not good or not levels:
        return 0, 0.0, len(good), objects
    est = estimate_store(reader, {r.relpath: r for r in chosen}, good, arm.name, arm.options, levels, len(good),
                         max_pixels)
    per_image = {e.level: e.store_bytes / len(good) for e in est.levels}
    seconds_per_image_level = est.cpu_seconds / (len(good) * len(levels)) / max(est.cpus, 1)
    total = sum(per_image[lv] * pending[lv] for lv in levels)
    return int(round(total)), seconds_per_image_level * sum(pending[lv] for lv in levels), len(good), objects


def checkpoint_bytes(sweep: Any) -> int:
    """The largest model's float32 weights: what one trial's ``model.pt`` holds."""
    import torch

    from lossyvision.tasks import create_task  # lazy: loads torch

    sizes = []
    for m in sweep.models:
        spec = m.model_copy(update={"pretrained": False, "checkpoint": None})
        try:
            with torch.device("meta"):
                model = create_task(m.task, spec, ["class-0", "class-1"]).build_model()
            sizes.append(sum(p.numel() for p in model.parameters()) * 4)
        except Exception:  # noqa: BLE001 - an estimate only: a model that cannot be built on "meta" is skipped
            continue
    return max(sizes, default=0)


def preview(sweep: Any, *, sample: int = 16) -> Preview:
    """Everything ``sweep run`` would do for ``sweep`` (resolved paths), read-only."""
    check_format(sweep.output)
    reader = reader_of(sweep)
    records = limit_per_split(reader.records(), sweep.limit_per_split)
    try:
        manifest = read_manifest(sweep)
    except Exception:  # noqa: BLE001 - no store yet: everything is to compress
        manifest = pd.DataFrame(columns=["relpath", "codec", "level", "split", "status"])
    trials, cells = grid_counts(sweep)
    out = Preview(sweep.name, trials, cells, 0, 0, 0, 0, 0, 0, search=sweep.search is not None)
    compressed_everywhere = True
    for arm in sweep.arms:
        pending = {float(lv): _missing(manifest, records, arm.name, lv) for lv in arm.levels}
        compressed_everywhere &= not any(pending.values())
        shard_size = sweep.compress.shard_size if sweep.compress.layout == "shards" else None
        est_bytes, est_s, sampled, objects = (
            estimate_codec(reader, records, arm, pending, sample, sweep.compress.max_pixels, shard_size)
            if any(pending.values()) else (0, 0.0, 0, 0 if shard_size else None))
        out.codecs.append(CodecWork(arm.name, len(records), list(arm.levels), sum(pending.values()), est_bytes,
                                    est_s, sampled, objects))
    results = read_results(sweep.output)
    if compressed_everywhere:
        grid: Grid = plan(sweep, manifest, reader)
        done = finished_keys(sweep.output, [t.key for t in grid.trials]) if store.exists(sweep.output) else set()
        out.trials_done = sum(1 for t in grid.trials if t.key in done)
        out.cells_done = len({c.key for c in grid.cells} & done_cell_keys(results))
        stale = stale_entries(sweep.output, grid, results)
        out.stale_trials, out.stale_cells = len(stale.trials), len(stale.cells)
    else:
        out.trials_unknown, out.cells_unknown = trials, cells
        out.notes.append("some levels are not compressed yet: a trial's key hashes the images it trains on, so "
                         "which earlier results can be reused is known only after compression")
    out.checkpoint_bytes = checkpoint_bytes(sweep)
    out.scale = scale_lines(sweep, manifest if compressed_everywhere else None)
    return out


def scale_lines(sweep: Any, manifest: pd.DataFrame | None) -> list[str]:
    """What each cached model's trials put on local disk, and the trials' data-parallel workers."""

    res = sweep.resources.trial
    lines = []
    needs: dict[str, int] = {}
    if manifest is not None:
        for model, _, _, need in cache_needs(sweep, manifest):
            needs[model] = max(need, needs.get(model, 0))
    for m in sweep.models:
        mode = cache_mode(getattr(m, "cache", None))
        if mode is None:
            continue
        size = f"up to {_size(needs[m.name])}" if m.name in needs else "size known after compression"
        lines.append(f"cache: {m.name}: {describe(mode)}, {size} of local disk per training process "
                     f"(resources.trial.cache_bytes: {_size(res.cache_bytes)})")
    if getattr(res, "workers", 1) > 1:
        lines.append(f"workers: each trial trains on {res.workers} data-parallel workers (Ray Train, DDP), "
                     f"{res.cpu:g} CPU and {res.gpu:g} GPU each; the global batch stays batch_size")
    return lines


def _size(n: float) -> str:
    return format_bytes(n, grouped=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render_preview(p: Preview) -> list[str]:
    """The preview as lines a person reads top to bottom."""
    lines = [f"sweep {p.sweep}: valid; nothing was written",
             f"{'full grid' if p.search else 'grid'}: {p.trials} trials, {p.cells} evaluations"
             + (" (the adaptive search trains a part of it: its counts are below)" if p.search else "")]
    if p.trials_unknown:
        lines.append(f"  to run: all {p.trials} trials and {p.cells} evaluations (see the note below)")
    else:
        lines.append(f"  done: {p.trials_done} trials, {p.cells_done} evaluations; "
                     f"to run: {p.trials_todo} trials, {p.cells_todo} evaluations")
        if p.stale_trials or p.stale_cells:
            lines.append(f"  stale in the output (an earlier configuration; kept, not used): {p.stale_trials} trials, "
                         f"{p.stale_cells} evaluations")
    lines.append("store:")
    for c in p.codecs:
        todo = (f"{c.to_compress:,} to compress, about {_size(c.est_bytes)} and {_duration(c.est_seconds)} on this "
                f"machine (estimated from {c.sample} images)") if c.to_compress else "all compressed"
        if c.objects is not None and c.to_compress:
            todo += f", in about {c.objects:,} shards"
        lines.append(f"  {c.codec}: {c.images:,} images x {len(c.levels)} levels: {todo}")
    if p.files_to_write() == 0:
        lines.append("writes: nothing new: every image is compressed and every trial and evaluation is done "
                     "(`sweep run` would only rebuild the report)")
    else:
        lines.append(f"writes: {'at most ' if p.search else ''}about {_size(p.bytes_to_write())} in "
                     f"{p.files_to_write():,} files (compressed images, {p.trials_todo} checkpoints of "
                     f"{_size(p.checkpoint_bytes)}, {p.cells_todo} predictions files, the results and the report"
                     + ("; the search writes the checkpoints and predictions of the part it trains)" if p.search
                        else ")"))
    lines += p.scale
    lines += [f"note: {n}" for n in p.notes]
    return lines

