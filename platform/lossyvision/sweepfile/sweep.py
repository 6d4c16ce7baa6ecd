"""The whole sweep file as one validated model, :class:`Sweep`: its sections, the checks across them, and what
follows from them (the codecs' ladders, the test points of a trial, the derived locations)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lossyvision.codecs import CODECS
from lossyvision.places import DEFAULT_STORE
from lossyvision.store import is_remote, join
from lossyvision.sweepfile.arms import Arm, CodecArmSpec, CodecSpec, arms_from, check_ladder, originals_of
from lossyvision.sweepfile.fields import BOUNDS, Float, Int, Strict, bounded, check_slug
from lossyvision.sweepfile.sections import (CompressSpec, DatasetSpec, EvaluationSpec, ModelSpec, ReportSpec,
                                            ResourcesSpec, SearchSpec, SeedSpreadSpec, TrackingSpec)
from lossyvision.units import parse_bytes


class Sweep(Strict):
    name: str
    dataset: DatasetSpec
    codec: CodecSpec | None = Field(None, description="one codec (default jpegxl) with train_levels/test_levels")
    codecs: list[CodecArmSpec] | None = Field(None, max_length=BOUNDS["codecs"],
                                              description="several codecs, each with its own levels and options")
    cross_codec: bool = Field(False, description="test every trial on every codec's levels, not only its own")
    train_levels: list[Float] | None = Field(None, max_length=BOUNDS["levels"])
    test_levels: list[Float] | None = Field(None, max_length=BOUNDS["levels"])
    models: list[ModelSpec] = Field(max_length=BOUNDS["models"])
    repeats: Int = bounded(1, BOUNDS["repeats"])
    seed_spread: SeedSpreadSpec | None = Field(
        None, description="more repeats at a few trained levels, to measure the spread between training runs")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    output: str
    store: str | None = Field(None, description="compressed store; default <output>/store")
    compress: CompressSpec = Field(default_factory=CompressSpec)
    train_split: str = "train"
    test_split: str = "test"
    limit_per_split: Int | None = bounded(None, BOUNDS["limit_per_split"],
                                       description="use only the first N images of each split")
    budgets: list[int] | None = Field(None, description="storage budgets per trial, e.g. [50MB, 100MB]")
    resample: bool = False
    eval_levels: Literal["all", "same", "baseline"] = Field(
        "all", description="with budgets: test on every test level, the train level, or the first test level")
    seed: Int = bounded(0, BOUNDS["seed"], description="with the repeat index, fixes every random choice of a trial")
    deterministic: bool = Field(False, description="deterministic kernels (cuDNN, cuBLAS); see docs/reproducibility.md")
    report: ReportSpec = Field(default_factory=ReportSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    max_failures: Int = bounded(2, BOUNDS["max_failures"], description="retries of a failed trial")
    search: SearchSpec | None = Field(None, description="adaptive search instead of the whole grid")

    @field_validator("name")
    @classmethod
    def _name_slug(cls, v: str) -> str:
        return check_slug(v)

    @field_validator("train_levels", "test_levels")
    @classmethod
    def _levels(cls, v: list[float] | None) -> list[float] | None:
        return None if v is None else check_ladder(v)

    @model_validator(mode="after")
    def _one_codec_form(self) -> "Sweep":
        """Either ``codec`` + ``train_levels``/``test_levels``, or ``codecs`` with their own levels."""
        if self.codecs is not None:
            extra = [f for f in ("codec", "train_levels", "test_levels") if getattr(self, f) is not None]
            if extra:
                raise ValueError(f"codecs: give each codec its own levels; {', '.join(extra)} cannot be combined "
                                 "with codecs")
            if not self.codecs:
                raise ValueError("codecs: must list at least one codec")
            names = [c.name for c in self.codecs]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"codecs: each codec once; repeated: {dupes}")
            if self.budgets and len(self.codecs) > 1:
                raise ValueError("budgets: a budget sweep compares levels of one codec; give one codec")
            return self
        missing = [f for f in ("train_levels", "test_levels") if getattr(self, f) is None]
        if missing:
            raise ValueError("; ".join(f"{f}: is required" for f in missing))
        if self.codec is None:
            object.__setattr__(self, "codec", CodecSpec())
        return self

    @field_validator("budgets", mode="before")
    @classmethod
    def _budgets(cls, v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, list) or not v:
            raise ValueError("must be a non-empty list of sizes such as [50MB, 100MB]")
        if len(v) > BOUNDS["budgets"]:
            raise ValueError(f"at most {BOUNDS['budgets']} budgets, got {len(v)}")
        sizes = []
        for x in v:
            if isinstance(x, bool) or (isinstance(x, float) and not math.isfinite(x)):
                raise ValueError(f"not a byte size: {x!r}")
            size = parse_bytes(x)
            if size <= 0:
                raise ValueError(f"budgets must be > 0 bytes, got {x!r}")
            sizes.append(size)
        return sorted(sizes)

    @field_validator("models")
    @classmethod
    def _unique_models(cls, v: list[ModelSpec]) -> list[ModelSpec]:
        if not v:
            raise ValueError("must list at least one model")
        names = [m.name for m in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {dupes}")
        return v

    @model_validator(mode="after")
    def _seed_spread_levels_are_trained(self) -> "Sweep":
        if self.seed_spread is None:
            return self
        trained = {float(lv) for arm in self.arms for lv in arm.train_levels}
        unknown = [f"{lv:g}" for lv in self.seed_spread.levels if float(lv) not in trained]
        if unknown:
            raise ValueError(f"seed_spread.levels: {', '.join(unknown)} not among the train levels "
                             f"({', '.join(f'{x:g}' for x in sorted(trained))})")
        return self

    def repeats_at(self, train_level: float) -> int:
        """Training runs at a train level: ``repeats``, or ``seed_spread.repeats`` at its levels."""
        spread = self.seed_spread
        if spread is not None and float(train_level) in {float(x) for x in spread.levels}:
            return max(self.repeats, spread.repeats)
        return self.repeats

    @model_validator(mode="after")
    def _shard_order_needs_shards(self) -> "Sweep":
        """Shard order reads a sharded store; the files layout has no shards to read in order."""
        problems = [f"models.{i}.data_order: shards reads the store shard by shard; it needs compress.layout: "
                    f"shards (this sweep's is {self.compress.layout})"
                    for i, m in enumerate(self.models) if m.data_order == "shards" and self.compress.layout != "shards"]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @model_validator(mode="after")
    def _workers_split_the_batch(self) -> "Sweep":
        """Data-parallel trials (docs/scale.md): each worker takes batch_size / workers of a global batch."""
        workers = self.resources.trial.workers
        problems = [f"models.{i}.batch_size: {m.batch_size} does not split over resources.trial.workers: {workers}"
                    for i, m in enumerate(self.models) if workers > 1 and m.batch_size % workers]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @model_validator(mode="after")
    def _levels_in_codec_range(self) -> "Sweep":
        """Levels a codec cannot encode fail now, not after compression started."""
        ladders = ([(c.name, f"codecs.{i}.{f}", getattr(c, f)) for i, c in enumerate(self.codecs)
                    for f in ("levels", "train_levels", "test_levels") if getattr(c, f) is not None]
                   if self.codecs is not None else
                   [((self.codec or CodecSpec()).name, f, getattr(self, f)) for f in ("train_levels", "test_levels")])
        problems = []
        for name, field, levels in ladders:
            if name not in CODECS:
                continue
            for level in levels or []:
                try:
                    CODECS.get(name).check_level(level)
                except ValueError as e:
                    problems.append(f"{field}: {e}")
                    break
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @model_validator(mode="after")
    def _search_fits(self) -> "Sweep":
        """A search walks one ladder per codec and confirms on fresh seeds (``lossyvision.sweep.search``)."""
        s, problems = self.search, []
        if s is None:
            return self
        if self.budgets or self.seed_spread is not None:
            problems.append("search: it walks the ladder and measures the spread on its own fresh seeds; it cannot "
                            "be combined with " + ("budgets" if self.budgets else "seed_spread"))
        if s.question != "test" and self.repeats < 2:
            problems.append(f"search: question {s.question} confirms a level on fresh seeds at it and at the "
                            "baseline: set repeats >= 2 (the fresh seeds; 3 is typical)")
        for arm in self.arms if s.question == "matched" else []:
            if missing := sorted(set(arm.train_levels) - set(arm.test_levels)):
                problems.append(f"search: question matched tests each level at itself, but {arm.name}'s test "
                                f"levels lack {', '.join(f'{x:g}' for x in missing)}")
        least = 1 + 2 * self.repeats if s.question != "test" else 1
        if s.max_trainings is not None and s.max_trainings < least:
            problems.append(f"search.max_trainings: {s.max_trainings} cannot confirm a level: it needs at least "
                            f"{least} (the baseline, then {self.repeats} fresh seeds at a level and at the baseline)")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # The codecs and the grid they make -----------------------------------------------------
    @property
    def arms(self) -> list[Arm]:
        """Every codec with its ladders, in the order the sweep file gives them."""
        return arms_from(self.model_dump(mode="json", include={"codec", "codecs", "train_levels", "test_levels"}))

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(f"unknown codec {name!r}; sweep has: {[a.name for a in self.arms]}")

    @property
    def originals_arm(self) -> Arm | None:
        """The first codec whose train levels include its lossless level: its models are the ones
        "trained on the originals", tested on every codec's levels when the sweep has several."""
        return originals_of(self.arms)

    def test_points(self, codec: str, train_level: float, budget: int) -> list[tuple[str, float]]:
        """The (codec, level) pairs a trial is tested on.

        Its own codec's test levels (for a budget trial, per ``eval_levels``); every other codec's
        too with ``cross_codec``, and for the trials trained on the originals (:attr:`originals_arm`
        at its lossless level): so a model trained on originals is served each codec's files.
        """
        own = self.arm(codec)
        if budget >= 0 and self.eval_levels != "all":
            levels = [train_level] if self.eval_levels == "same" else own.codec.by_fidelity(own.test_levels)[:1]
            return [(codec, float(lv)) for lv in levels]
        points = [(codec, float(lv)) for lv in own.test_levels]
        originals = self.originals_arm
        on_originals = originals is not None and originals.name == codec and train_level == originals.codec.lossless_level
        if budget < 0 and (self.cross_codec or on_originals):
            points += [(a.name, float(lv)) for a in self.arms if a.name != codec for lv in a.test_levels]
        return points

    # Derived locations -------------------------------------------------------------------
    @property
    def store_uri(self) -> str:
        return self.store or join(self.output, DEFAULT_STORE)

    @property
    def tracking_uri(self) -> str:
        if self.tracking.uri:
            return self.tracking.uri
        if is_remote(self.output):
            return join(self.output, "mlflow.db")  # invalid on purpose: remote outputs need a server
        return "sqlite:///" + str(Path(self.output).resolve() / "mlflow.db")

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"unknown model {name!r}; sweep has: {[m.name for m in self.models]}")
