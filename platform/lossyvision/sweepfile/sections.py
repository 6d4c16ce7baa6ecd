"""The sections of a sweep file besides its codecs: dataset, compress, models, resources, report, search, evaluation
and tracking."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from lossyvision.compress_options import ON_ERROR, CompressOptions, check_option
from lossyvision.datasets import DATASETS
from lossyvision.imageio import ANIMATED_POLICIES
from lossyvision.quality import QUALITY_METRICS
from lossyvision.shards import LAYOUTS
from lossyvision.streaming import DEFAULT_BLOCK_BYTES, DEFAULT_CACHE_BYTES, DEFAULT_SHUFFLE_BUFFER
from lossyvision.sweepfile.fields import (BOUNDS, TRACKING_SCHEMES, Float, Int, Strict, bounded, byte_size,
                                          check_registered, check_slug)


class DatasetSpec(Strict):
    kind: str = "imagefolder"
    root: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        return check_registered(DATASETS, v)


#: The compress job's defaults: the sweep file's ``compress:`` section starts from them, as the command line does.
_JOB = CompressOptions()


class CompressSpec(Strict):
    on_error: Literal[ON_ERROR] = _JOB.on_error
    max_pixels: Int = _JOB.max_pixels
    quality_metric: str | None = Field(None, description="achieved quality to measure: a registered quality metric "
                                                         "(lossyvision.quality: ssimulacra2, butteraugli)")
    quality_sample: int = Field(
        _JOB.quality_sample, description="images per level whose achieved quality is measured, or all of them (all: -1)")
    animated: Literal[ANIMATED_POLICIES] = Field(
        _JOB.animated, description="an animated image (GIF, APNG, WebP): refuse it, or compress its first frame")
    layout: Literal[LAYOUTS] = Field(
        _JOB.layout, description="the store's layout: one file per image and level, or tar shards per level "
                                 "(object stores; docs/kubernetes.md)")
    shard_size: Int = Field(_JOB.shard_size, description="layout shards: source bytes per shard, e.g. 256MB")

    @field_validator("quality_metric")
    @classmethod
    def _known_quality_metric(cls, v: str | None) -> str | None:
        return None if v is None else check_registered(QUALITY_METRICS, v)

    @field_validator("shard_size", mode="before")
    @classmethod
    def _shard_size(cls, v: Any, info: ValidationInfo) -> int:
        return check_option(info.field_name, v)  # the compress options' one validator (lossyvision.compress_options)

    @field_validator("max_pixels")
    @classmethod
    def _max_pixels(cls, v: int, info: ValidationInfo) -> int:
        return check_option(info.field_name, v)
    png_sample: int | Literal["all"] = Field(
        _JOB.png_sample, description="images per split with a lossless PNG baseline (the report's PNG line), or all of them")

    @field_validator("quality_sample", "png_sample", mode="before")
    @classmethod
    def _count_or_all(cls, v: Any, info: ValidationInfo) -> int | str:
        """A count within bounds, or ``all`` (quality_sample: -1, :data:`lossyvision.compress.EVERY_IMAGE`)."""
        n = check_option(info.field_name, v)
        return "all" if n is None else n


class CacheSize(Strict):
    """``cache: {max_side: N}``: the cache stores each image shrunk so that its longer side is at most N."""

    max_side: Int = bounded(..., BOUNDS["max_side"], description="longest side of a cached image, in pixels")


class ModelSpec(Strict):
    """One model set-up. Task-specific knobs go in ``options``."""

    name: str
    task: str
    arch: str
    pretrained: bool | str = False
    mode: Literal["finetune", "linear_probe"] = "finetune"
    checkpoint: str | None = Field(None, description="backbone weights: local path or URL")
    epochs: Int = bounded(1, BOUNDS["epochs"])
    lr: Float = bounded(1e-3, BOUNDS["lr"], low_open=True)
    batch_size: Int = bounded(32, BOUNDS["batch_size"])
    weight_decay: Float = bounded(0.0, BOUNDS["weight_decay"])
    image_size: Int = bounded(224, BOUNDS["image_size"])
    data_order: Literal["random", "shards"] = Field(
        "random", description="training order: a seeded permutation per epoch, or shard by shard through a "
                              "shuffle buffer (a sharded store too large to stage; lossyvision.streaming)")
    shuffle_buffer: Int = bounded(DEFAULT_SHUFFLE_BUFFER, BOUNDS["shuffle_buffer"],
                               description="data_order shards: images mixed at once")
    cache: Literal["exact"] | CacheSize | None = Field(
        None, description="decoded training images on the trial's local disk: exact (same pixels, same key) or "
                          "{max_side: N} (shrunk; enters the key); docs/scale.md")
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("shuffle_buffer")
    @classmethod
    def _buffer_needs_shards(cls, v: int, info: ValidationInfo) -> int:
        """A buffer given with the random order would be silently ignored: say so instead (the default
        itself passes: a dumped spec, such as OUTPUT/sweep.yaml, reads back)."""
        if info.data.get("data_order", "random") != "shards" and v != DEFAULT_SHUFFLE_BUFFER:
            raise ValueError("applies to data_order: shards only (set data_order: shards, or drop shuffle_buffer)")
        return v

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        return check_slug(v)


class Resource(Strict):
    cpu: Float = bounded(1.0, BOUNDS["cpu"])
    gpu: Float = bounded(0.0, BOUNDS["gpu"])


class TrialResource(Resource):
    """A trial's resources; ``custom`` asks for Ray custom resources too (``{trainer: 1}``), so that
    trials run only on the nodes started with them (``ray start --resources '{"trainer": 1}'``)."""

    custom: dict[str, Float] = Field(default_factory=dict, description="Ray custom resources per trial")
    stage_bytes: Int = Field(8_000_000_000, description="local disk a trial may fill with copies of its "
                                                        "training shards (a sharded store on an object store), e.g. 8GB")
    read_block_bytes: Int = Field(
        DEFAULT_BLOCK_BYTES, description="data_order shards: bytes of a shard one ranged GET fetches, e.g. 32MiB")
    read_cache_bytes: Int = Field(
        DEFAULT_CACHE_BYTES, description="data_order shards: memory of fetched blocks per data loader process, "
                                         "e.g. 256MiB (at least two blocks)")
    cache_bytes: Int = Field(64_000_000_000, description="local disk one training process's decoded cache may "
                                                         "fill (a model's cache:), e.g. 64GB")
    workers: Int = bounded(1, BOUNDS["workers"], description="data-parallel training processes per trial (Ray Train, "
                                                          "DDP); cpu and gpu are then per worker")

    @field_validator("stage_bytes", "read_block_bytes", "read_cache_bytes", "cache_bytes", mode="before")
    @classmethod
    def _sizes(cls, v: Any, info: ValidationInfo) -> int:
        return byte_size(v, info.field_name)

    @field_validator("custom")
    @classmethod
    def _custom(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if name.lower() in ("cpu", "gpu", "memory", "object_store_memory") or not re.fullmatch(r"[A-Za-z][\w.-]*", name):
                raise ValueError(f"{name!r} is not a custom resource name (cpu and gpu have their own fields)")
            if not math.isfinite(amount) or not 0 < amount <= 10**6:
                raise ValueError(f"{name}: an amount in (0, 1000000], got {amount!r}")
        return v


class ResourcesSpec(Strict):
    trial: TrialResource = Field(default_factory=TrialResource)
    eval: Resource = Field(default_factory=Resource)


KEEP_RANGE = (0.0, 1.5)


def parse_keep(value: Any, name: str = "keep") -> float:
    """The keep threshold as a fraction of the baseline: ``0.99`` or ``"99%"``; a bare number outside
    (0, 1.5] (``99``, ``150``) is refused, naming the unit, so 99 is never read as 0.99 %."""
    text = str(value).strip()
    try:
        fraction = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a number; give a fraction of the baseline (0.99) or a "
                         "percentage (99%)") from None
    low, high = KEEP_RANGE
    if not math.isfinite(fraction) or not low < fraction <= high:
        hint = (f"; for {fraction:g} % write {fraction / 100:g} or {fraction:g}%"
                if not text.endswith("%") and 1.5 < fraction <= 100 else "")
        raise ValueError(f"{name}: {text} is not a fraction of the baseline in ({low:g}, {high:g}]{hint}")
    return fraction


class ReportSpec(Strict):
    """How the report judges and states its numbers (analysis only: never part of a trial's hash)."""

    keep: Float = Field(0.99, description="fraction of the baseline a level must keep (0.99), or a percentage ('99%')")
    confidence: Float = Field(0.95, gt=0.5, lt=1, allow_inf_nan=False, description="two-sided interval level")
    resamples: Int = Field(2000, ge=100, le=100_000, description="bootstrap resamples per interval")

    @field_validator("keep", mode="before")
    @classmethod
    def _keep_fraction(cls, v: Any) -> float:
        if isinstance(v, bool):
            raise ValueError(f"must be a number, got a boolean ({str(v).lower()})")
        try:
            return parse_keep(v, "keep")
        except ValueError as e:
            raise ValueError(str(e).removeprefix("keep: ")) from None
    axis: Literal["dcr", "quality"] = Field(
        "dcr", description="heatmap axes: mean DCR, or mean achieved quality (needs compress.quality_metric)")


class SeedSpreadSpec(Strict):
    """Extra repeats at a few trained levels, whose spread between training runs is pooled for every
    level (:mod:`lossyvision.seedspread`): the cheap way to make claims about models trained at a
    level hold across seeds. Usually the baseline and the most compressed level."""

    levels: list[Float] = Field(min_length=1, max_length=BOUNDS["levels"],
                                description="trained levels that get the extra repeats")
    repeats: Int = bounded(3, (2, BOUNDS["repeats"][1]), description="training runs at each of those levels")


class SearchSpec(Strict):
    """Adaptive search (``lossyvision.sweep.search``): train only the levels one question's answer needs."""

    question: Literal["matched", "train", "test"]
    max_trainings: Int | None = Field(None, ge=1, le=10_000, description="budget of trainings per model and codec")
    margin: Float = Field(1.0, ge=0, le=50, allow_inf_nan=False, description="points above keep to pass exploration")
    fallbacks: Int = Field(0, ge=0, le=10, description="less compressed levels confirmed after a failed candidate")
    parallel: Int | None = Field(None, ge=1, le=64, description="levels explored at once; default: the cluster's slots")


class EvaluationSpec(Strict):
    """How test levels stream through evaluation (memory and speed only: never part of a key).

    A level is cut into shards of at most ``shard_images`` images and ``shard_bytes`` of decoded
    pixels; one task decodes a shard once and every model tested at that level scores it, so memory
    holds a few shards per worker, never a level. Each evaluation worker keeps the trained models it
    loads while their weights fit ``model_cache_bytes``; a model beyond that is reloaded per shard.
    """

    shard_images: Int = bounded(256, BOUNDS["shard_images"], description="images per evaluation shard, at most")
    shard_bytes: Int = Field(256_000_000, description="decoded bytes per evaluation shard, at most (256MB)")
    model_cache_bytes: Int = Field(4_000_000_000, description="model weights each evaluation worker keeps")

    @field_validator("shard_bytes", "model_cache_bytes", mode="before")
    @classmethod
    def _sizes(cls, v: Any, info: ValidationInfo) -> int:
        return byte_size(v, info.field_name)


class TrackingSpec(Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///<output>/mlflow.db")
    experiment: str | None = Field(None, description="MLflow experiment; default: the sweep's name")

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, v: str | None) -> str | None:
        return check_tracking_uri(v) if v else v


def check_tracking_uri(uri: str) -> str:
    """``uri`` if MLflow 3 serves its scheme; the file store (a path, ``file:``) is gone in MLflow 3."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme in TRACKING_SCHEMES:
        return uri
    if scheme in ("", "file"):
        raise ValueError(f"{uri!r}: MLflow 3 has no file store; use sqlite:///PATH/mlflow.db or a server "
                         f"(http://HOST:5000)")
    raise ValueError(f"{uri!r}: unknown scheme {scheme!r}; known: {', '.join(TRACKING_SCHEMES)}")
