"""The grid as data: which trials to train and which (trial, test level) cells to evaluate.

Everything here is a pure function of the sweep file and the store's manifest. A trial is keyed by
what it is (model, codec and train level, repeat, budget) *and* by a short hash of everything that determines
its result (:func:`trial_identity`): the model entry, the codec and level, budget, repeat and seed,
the dataset's kind, options, split and limit, and a digest of the manifest rows it trains on. A
cell adds the test level and a digest of its test rows. The model's ``data_order`` (with its
``shuffle_buffer``) enters only when it is not the default ``random``: trials that do not use it keep
the keys they had before the field existed; likewise a decoded cache that shrinks images (``cache: {max_side:
N}``; ``cache: exact`` changes no pixel and never enters) and data-parallel workers above one
(``resources.trial.workers``, :func:`scale_identity`). So an edited sweep gets new keys for
exactly the trials and cells whose configuration changed, and resuming is still "drop the keys
already done", nothing more. Results of keys no longer planned are *stale*: kept, never mixed in.

Not in the hash: where things run or are written (output, store, tracking, resources, retries),
and the dataset's root path: its content is in the rows' digest (source file hashes), so a moved
dataset does not retrain and a changed one does.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import pandas as pd

from lossyvision.codecs import DEFAULT_CODEC
from lossyvision.datasets import create_dataset
from lossyvision.store import format_level
from lossyvision.sweep.layout import NO_BUDGET, trial_points

OK = "ok"
#: Bump when a change of the code changes what a trial or an evaluation computes: every key moves.
IDENTITY_VERSION = 1
HASH_CHARS = 10
#: Model fields that enter a trial's identity only when not the default (:func:`trial_identity`): fields
#: added after keys were first handed out, so that the trials that do not use them keep their keys.
DATA_ORDER_FIELDS = ("data_order", "shuffle_buffer")
#: Likewise for the decoded cache (``cache: exact`` changes no pixel: never in the key; ``max_side`` does)
#: and data-parallel workers (in the key when more than one: DDP changes the batches' composition).
SCALE_FIELDS = ("cache",)
#: Manifest columns that determine what a model sees: the image (its source's hash, codec, level
#: and compressed size) and its label or annotation file.
ROW_COLUMNS = ("relpath", "split", "label", "target", "codec", "codec_options", "level", "source_sha256",
               "compressed_bytes")


class PlanError(ValueError):
    """The sweep cannot be planned (e.g. a level is missing from the compressed store)."""


def short_hash(obj: Any) -> str:
    """A short, stable content hash of a JSON-able object (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()[:HASH_CHARS]



@dataclass(frozen=True, order=True)
class TrialSpec:
    """One training run: a model trained at one level of one codec (one repeat, one budget).

    ``config`` is the hash of the trial's identity (empty only in hand-made specs).
    """

    model: str
    train_level: float
    repeat: int = 0
    budget: int = NO_BUDGET
    config: str = ""
    codec: str = DEFAULT_CODEC

    @property
    def key(self) -> str:
        """``vit__jpegxl-2__r0__3f9a2c1b07`` (``__b50000000`` before the hash with a budget): path- and
        tag-safe; the codec and level read as the store's level folder does."""
        key = f"{self.model}__{self.codec}-{format_level(self.train_level)}__r{self.repeat}"
        if self.budget != NO_BUDGET:
            key += f"__b{self.budget}"
        return f"{key}__{self.config}" if self.config else key

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrialSpec":
        return cls(model=str(d["model"]), train_level=float(d["train_level"]),
                   repeat=int(d.get("repeat", 0)), budget=int(d.get("budget", NO_BUDGET)),
                   config=str(d.get("config", "") or ""), codec=str(d.get("codec") or DEFAULT_CODEC))


@dataclass(frozen=True, order=True)
class CellSpec:
    """One evaluation: a trained trial tested at one level of one codec; ``config`` hashes its identity.

    ``codec`` is the test codec: the trial's own, or another one's (a cross-codec cell).
    """

    trial: TrialSpec
    test_level: float
    config: str = ""
    codec: str = ""

    def __post_init__(self) -> None:
        if not self.codec:  # tested on its own codec
            object.__setattr__(self, "codec", self.trial.codec)

    @property
    def test_codec(self) -> str:
        return self.codec

    @property
    def key(self) -> str:
        key = f"{self.trial.key}__t-{self.test_codec}-{format_level(self.test_level)}"
        return f"{key}__{self.config}" if self.config else key

    def as_dict(self) -> dict[str, Any]:
        return {"trial": self.trial.as_dict(), "test_level": self.test_level, "config": self.config,
                "codec": self.test_codec}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CellSpec":
        trial = TrialSpec.from_dict(d["trial"])
        return cls(trial, float(d["test_level"]), str(d.get("config", "") or ""), str(d.get("codec") or trial.codec))


@dataclass
class Grid:
    """A planned sweep: its trials and cells (keys with hashes) and what each hash was made of."""

    trials: list[TrialSpec]
    cells: list[CellSpec]
    identities: dict[str, dict[str, Any]] = field(default_factory=dict)   # key -> identity

    @property
    def digest(self) -> str:
        """One hash of the whole configuration (every trial and cell key)."""
        return short_hash(sorted([t.key for t in self.trials] + [c.key for c in self.cells]))

    def cells_of(self, trial: TrialSpec) -> list[CellSpec]:
        return [c for c in self.cells if c.trial == trial]

    def trial(self, key: str) -> TrialSpec:
        for t in self.trials:
            if t.key == key:
                return t
        raise KeyError(f"no trial {key!r} in the plan")

    def to_dict(self) -> dict[str, Any]:
        return {"trials": [t.as_dict() for t in self.trials], "cells": [c.as_dict() for c in self.cells],
                "identities": self.identities}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Grid":
        return cls([TrialSpec.from_dict(t) for t in d["trials"]], [CellSpec.from_dict(c) for c in d["cells"]],
                   dict(d.get("identities") or {}))


@dataclass(frozen=True)
class GridSize:
    trials: int
    evaluations: int
    trials_todo: int
    evaluations_todo: int
    stale_trials: int = 0
    stale_cells: int = 0

    def describe(self) -> str:
        text = (f"grid: {self.trials} trials, {self.evaluations} evaluations "
                f"({self.trials_todo} trials and {self.evaluations_todo} evaluations to run)")
        if self.stale_trials or self.stale_cells:
            text += (f"; {self.stale_trials} trial(s) and {self.stale_cells} cell(s) in the output are stale "
                     "(another configuration): kept, not used")
        return text


def compress_levels(sweep: Any) -> dict[str, list[float]]:
    """Every level the store must hold, per codec: the union of its train and test levels."""
    return {arm.name: arm.levels for arm in sweep.arms}


# --- the manifest side ---------------------------------------------------------------------------
def ok_rows(manifest: pd.DataFrame, split: str, level: float, codec: str | None = None) -> pd.DataFrame:
    """Manifest rows of one split and level that compressed fine, sorted by relpath."""
    return level_rows(manifest, split, level, codec, ok_only=True)


def level_rows(manifest: pd.DataFrame, split: str, level: float, codec: str | None = None, *,
               ok_only: bool = False) -> pd.DataFrame:
    """Manifest rows of one split and level (of ``codec``, when given), failed ones too unless ``ok_only``."""
    m = manifest
    mask = (m["split"] == split) & (m["level"].astype(float) == float(level))
    if ok_only:
        mask &= m["status"] == OK
    if codec is not None and "codec" in m.columns:
        mask &= m["codec"] == codec
    return m[mask].sort_values("relpath", kind="stable")


def reader_of(sweep: Any) -> Any:
    return create_dataset(sweep.dataset.kind, sweep.dataset.root, **sweep.dataset.options)


def split_rows(sweep: Any, manifest: pd.DataFrame, split: str, level: float,
               reader: Any | None = None, codec: str = DEFAULT_CODEC) -> pd.DataFrame:
    """Ok manifest rows of ``split`` at ``codec``'s ``level``, limited like the sweep (``limit_per_split``)."""
    rows = ok_rows(manifest, split, level, codec)
    if sweep.limit_per_split:
        allowed = {r.relpath for r in (reader or reader_of(sweep)).select(split)[: sweep.limit_per_split]}
        rows = rows[rows["relpath"].isin(allowed)]
    return rows


def rows_digest(rows: pd.DataFrame) -> str:
    """A digest of the manifest rows a trial trains on (or a cell tests on), in relpath order."""
    cols = [c for c in ROW_COLUMNS if c in rows.columns]
    text = rows[cols].sort_values("relpath", kind="stable").to_csv(index=False, lineterminator="\n")
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class LevelDcr:
    """Mean DCR of one (split, codec, level) of the store, against the source files and raw pixels,
    and its mean bits per pixel (the rate axis that compares codecs)."""

    vs_source: float
    vs_raw: float
    n_images: int
    bpp: float = math.nan
    quality: float = math.nan         # mean achieved quality of the images measured (compress.quality_metric)
    quality_metric: str | None = None


def bits_per_pixel(rows: pd.DataFrame) -> pd.Series:
    """Each row's compressed bits per pixel: ``8 · bytes / (width · height)`` (NaN without a size)."""
    if not {"compressed_bytes", "width", "height"} <= set(rows.columns):
        return pd.Series(math.nan, index=rows.index)
    pixels = rows["width"].astype(float) * rows["height"].astype(float)
    return 8.0 * rows["compressed_bytes"].astype(float) / pixels.where(pixels > 0)


def level_dcr(manifest: pd.DataFrame, split: str, level: float, codec: str | None = None) -> LevelDcr:
    """Mean ``dcr_vs_source``/``dcr_vs_raw`` and bits per pixel over ok rows (NaN when the level has none)."""
    rows = ok_rows(manifest, split, level, codec)
    if rows.empty:
        return LevelDcr(math.nan, math.nan, 0)
    quality, metric = math.nan, None
    if "quality" in rows.columns and rows["quality"].notna().any():
        quality = float(rows["quality"].astype(float).mean())
        metric = str(rows["quality_metric"].dropna().iloc[0]) if "quality_metric" in rows.columns else None
    return LevelDcr(float(rows["dcr_vs_source"].mean()), float(rows["dcr_vs_raw"].mean()), len(rows),
                    float(bits_per_pixel(rows).mean()), quality, metric)


# --- identities ------------------------------------------------------------------------------------
def trial_identity(sweep: Any, model: Any, arm: Any, train_level: float, repeat: int, budget: int, train_rows: str,
                   classes: list[str]) -> dict[str, Any]:
    """Everything that determines a trial's result (its hash is the trial's ``config``)."""
    identity: dict[str, Any] = {
        "version": IDENTITY_VERSION,
        "model": model.model_dump(mode="json", exclude=set(DATA_ORDER_FIELDS) | set(SCALE_FIELDS)),
        "codec": {"name": arm.name, "options": arm.options},
        "train_level": float(train_level),
        "repeat": int(repeat),
        "seed": int(sweep.seed),
        "deterministic": bool(sweep.deterministic),
        "dataset": {"kind": sweep.dataset.kind, "options": sweep.dataset.options, "split": sweep.train_split,
                    "limit_per_split": sweep.limit_per_split, "classes": short_hash(list(classes))},
        "train_rows": train_rows,
    }
    if budget != NO_BUDGET:
        identity["budget"] = {"bytes": int(budget), "resample": bool(sweep.resample)}
    if getattr(model, "data_order", "random") != "random":
        identity["data_order"] = {"order": model.data_order, "shuffle_buffer": int(model.shuffle_buffer)}
    identity.update(scale_identity(sweep, model))
    return identity


def scale_identity(sweep: Any, model: Any) -> dict[str, Any]:
    """What the cache and data-parallel workers add to a trial's identity: ``cache: {max_side: N}`` (the
    model sees shrunk images) and ``workers`` above 1; nothing otherwise, so existing keys stay."""
    out: dict[str, Any] = {}
    max_side = getattr(getattr(model, "cache", None), "max_side", None)
    if max_side:
        out["cache"] = {"max_side": int(max_side)}
    workers = int(getattr(getattr(getattr(sweep, "resources", None), "trial", None), "workers", 1) or 1)
    if workers > 1:
        out["workers"] = workers
    return out


def cell_identity(sweep: Any, trial: TrialSpec, arm: Any, test_level: float, test_rows: str) -> dict[str, Any]:
    """Everything that determines a cell's result beyond its trial (``arm``: the test codec)."""
    return {"version": IDENTITY_VERSION, "trial": trial.config, "test_level": float(test_level),
            "codec": {"name": arm.name, "options": arm.options},
            "dataset": {"split": sweep.test_split, "limit_per_split": sweep.limit_per_split},
            "test_rows": test_rows}


# --- the plan ------------------------------------------------------------------------------------
def plan(sweep: Any, manifest: pd.DataFrame, reader: Any | None = None) -> Grid:
    """The sweep's grid: per codec, models x train levels x repeats (x budgets), then their test points.

    Every train level must have ok images in the train split, every test level in the test split:
    a level without any is a :class:`PlanError` naming it (rather than a trial failing later).
    """
    for arm in sweep.arms:
        _check_levels(manifest, sweep.train_split, arm.train_levels, arm.name)
        _check_levels(manifest, sweep.test_split, arm.test_levels, arm.name)
    reader = reader or reader_of(sweep)
    classes = list(reader.classes)
    digests: dict[tuple[str, str, float], str] = {}

    def digest(split: str, codec: str, level: float) -> str:
        if (split, codec, level) not in digests:
            digests[(split, codec, level)] = rows_digest(split_rows(sweep, manifest, split, level, reader, codec))
        return digests[(split, codec, level)]

    grid = Grid([], [])
    for arm, m, level, repeat, budget in trial_points(sweep):  # the layout grid_counts counts
        identity = trial_identity(sweep, m, arm, level, repeat, budget,
                                  digest(sweep.train_split, arm.name, float(level)), classes)
        trial = TrialSpec(m.name, float(level), repeat, int(budget), short_hash(identity), arm.name)
        grid.trials.append(trial)
        grid.identities[trial.key] = identity
    for trial in grid.trials:
        for codec, level in sweep.test_points(trial.codec, trial.train_level, trial.budget):
            identity = cell_identity(sweep, trial, sweep.arm(codec), level, digest(sweep.test_split, codec, level))
            cell = CellSpec(trial, float(level), short_hash(identity), codec)
            grid.cells.append(cell)
            grid.identities[cell.key] = identity
    return grid


def pending(specs: Iterable[Any], done_keys: Iterable[str]) -> list[Any]:
    """The specs whose ``.key`` is not in ``done_keys``, order kept: the whole of resuming."""
    done = set(done_keys)
    return [s for s in specs if s.key not in done]


def done_cell_keys(results: pd.DataFrame) -> set[str]:
    """Cells with rows in the results table (a cell's rows are written together)."""
    if results is None or results.empty:
        return set()
    return set(results["cell_id"].astype(str))


def grid_size(grid: Grid, trials_todo: list[TrialSpec], cells_todo: list[CellSpec], stale_trials: int = 0,
              stale_cells: int = 0) -> GridSize:
    return GridSize(len(grid.trials), len(grid.cells), len(trials_todo), len(cells_todo), stale_trials, stale_cells)


def _check_levels(manifest: pd.DataFrame, split: str, levels: Iterable[float], codec: str) -> None:
    missing = [lv for lv in levels if ok_rows(manifest, split, lv, codec).empty]
    if not missing:
        return
    shown = ", ".join(format_level(lv) for lv in missing)
    tried = set().union(*(level_rows(manifest, split, lv, codec)["relpath"] for lv in missing))
    if tried:  # rows there, none ok: the images failed, the levels were not forgotten
        raise PlanError(f"every {split!r} image at level(s) {shown} for codec {codec!r} failed to compress "
                        f"({len(tried)} images; their reasons are in the manifest's 'error' "
                        "column and in the compress lines above)")
    raise PlanError(f"the compressed store has no {split!r} images at level(s) {shown} "
                    f"for codec {codec!r}; was it compressed with these levels?")
