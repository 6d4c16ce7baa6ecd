"""The sweep file: one YAML describes a whole experiment, validated by pydantic.

Errors name the field and the problem (``repeats: Input should be less than or equal to 100``), never
a traceback: :func:`load_sweep` raises :class:`SpecError` with one line per problem. Parsing reads
nothing but the sweep file: what the file says about the world (the dataset root, each model's task and
architecture, the output and store folders) is checked by :func:`lossyvision.preflight.preflight`,
which ``sweep run``, ``sweep plan``, ``compress`` and ``submit`` call before anything is written and
before Ray starts. Here:

* the file: UTF-8 text (not binary), at most 1 MiB, valid YAML without repeated keys;
* ``${VAR}`` / ``${VAR:-default}`` are substituted inside string values after parsing, never in
  the text, so a variable's value cannot add or change fields; an unset one names its field;
* numbers are numbers (never ``true``/``false``), finite, and within the bounds below; levels are
  within the codec's own range (:meth:`lossyvision.codecs.base.Codec.check_level`);
* the dataset kind and the codecs are registered ones; the tracking URI has a scheme MLflow 3 serves.

Bounds (:data:`BOUNDS`): ``repeats`` 1..100, ``epochs`` 1..10000, ``batch_size`` 1..4096,
``image_size`` 8..8192, ``lr`` in (0, 10], ``weight_decay`` 0..10, ``shuffle_buffer`` 1..10000000,
``cache: {max_side}`` 8..8192, ``resources.trial.workers`` 1..256,
at most 64 levels per list and
32 models, ``resources`` at most 1024 CPUs and 64 GPUs. A grid of more than :data:`GRID_CAP`
trials or evaluations is refused unless the user says ``--yes`` (:func:`check_grid`).

Relative paths are taken relative to the current working folder; ``s3://``/``gs://`` URIs are
left as they are.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from lossyvision.codecs import CODECS, create_codec
from lossyvision.compress_options import BOUNDS as COMPRESS_BOUNDS, check_option
from lossyvision.datasets import DATASETS
from lossyvision.store import is_remote, join, read_bytes
from lossyvision.streaming import DEFAULT_BLOCK_BYTES, DEFAULT_CACHE_BYTES, DEFAULT_SHUFFLE_BUFFER
from lossyvision.units import format_bytes, parse_bytes

#: Sane bounds of the numbers in a sweep file (documented in the module docstring and README).
BOUNDS = {
    "repeats": (1, 100), "epochs": (1, 10_000), "batch_size": (1, 4096), "image_size": (8, 8192),
    "lr": (0.0, 10.0), "weight_decay": (0.0, 10.0), "levels": 64, "models": 32, "budgets": 64,
    "cpu": (0.0, 1024.0), "gpu": (0.0, 64.0), "max_failures": (0, 100), "seed": (0, 2**32 - 1),
    "limit_per_split": (1, 10**9), "name": 100, "codecs": 16,
    **COMPRESS_BOUNDS,  # max_pixels, quality_sample, png_sample, shard_size: the compress options, checked there
    "shard_images": (1, 1_000_000), "shard_bytes": (1000, 1 << 40), "model_cache_bytes": (0, 1 << 40),
    "stage_bytes": (0, 1 << 44), "shuffle_buffer": (1, 10_000_000), "read_block_bytes": (1 << 16, 1 << 30),
    "read_cache_bytes": (1 << 17, 1 << 40), "cache_bytes": (0, 1 << 44), "max_side": (8, 8192), "workers": (1, 256),
}
#: A sweep with more trials or evaluations than this needs ``--yes`` (``sweep run``, ``compress``).
GRID_CAP = {"trials": 200, "evaluations": 5000}
#: The largest sweep file read: a sweep file is a page of YAML.
MAX_FILE_BYTES = 1 << 20
#: MLflow 3's tracking stores (``mlflow.tracking._tracking_service.utils``), less its file store.
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks",
                    "databricks-uc", "uc")


class SpecError(ValueError):
    """A malformed sweep file or option; the message names each field and its problem.

    One problem is one line (``FILE: field: problem``); several are a ``FILE:`` line and one
    indented line each. ``problems`` holds the ``field: problem`` lines.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])

    @classmethod
    def of(cls, source: str, problems: list[str]) -> "SpecError":
        problems = [p.strip() for p in problems]
        if len(problems) == 1:
            return cls(f"{source}: {problems[0]}", problems)
        return cls(f"{source}:\n" + "\n".join(f"  {p}" for p in problems), problems)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_bool(value: Any) -> Any:
    """YAML reads ``true``/``yes``/``on`` as booleans; a number field must not take them as 1."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got a boolean ({str(value).lower()})")
    return value


def _whole(value: Any) -> Any:
    value = _no_bool(value)
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer() or abs(value) > 2**62):
        raise ValueError(f"must be a whole number of sane size, got {value!r}")
    return value


#: Numbers that refuse booleans; floats also refuse NaN and infinities (``allow_inf_nan=False``).
Int = Annotated[int, BeforeValidator(_whole)]
Float = Annotated[float, BeforeValidator(_no_bool)]


def byte_size(value: Any, field: str) -> int:
    """A byte size (``256MB``, ``2GiB``, a number) within :data:`BOUNDS` ``[field]``; never a boolean or NaN."""
    if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"not a byte size: {value!r}")
    size = parse_bytes(value)
    low, high = BOUNDS[field]
    if not low <= size <= high:
        raise ValueError(f"must be between {format_bytes(low)} and {format_bytes(high)}, got {value!r}")
    return size


def _num(default: Any, bounds: tuple[float, float], *, low_open: bool = False, **kw: Any) -> Any:
    """A Field with the bounds of :data:`BOUNDS` (``low_open``: the low bound itself is refused)."""
    low, high = bounds
    lower = {"gt": low} if low_open else {"ge": low}
    extra = {} if isinstance(low, int) and isinstance(high, int) else {"allow_inf_nan": False}
    return Field(default, le=high, **lower, **extra, **kw)


def _check_registered(registry: Any, name: str) -> str:
    """``name`` if the registry knows it, else the registry's own "unknown ..., known: ..." error."""
    if name not in registry:
        raise ValueError(f"unknown {registry.kind} {name!r}; known: {', '.join(registry.names())}")
    return name


def _check_slug(name: str) -> str:
    """Names end up in paths, run names and metric keys: keep them to a safe alphabet."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"{name!r} must be letters, digits, '.', '_' or '-'")
    if len(name) > BOUNDS["name"]:
        raise ValueError(f"must be at most {BOUNDS['name']} characters, got {len(name)}")
    return name


class DatasetSpec(_Strict):
    kind: str = "imagefolder"
    root: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        return _check_registered(DATASETS, v)


class CodecSpec(BaseModel):
    """``name`` plus the codec's own options (``effort`` for jpegxl), checked by the codec."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = "jpegxl"

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _codec_accepts_options(self) -> "CodecSpec":
        try:
            create_codec(self.name, **self.options)
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(str(e).strip("'\"")) from None
        return self


class CodecArmSpec(CodecSpec):
    """One codec of a multi-codec sweep (``codecs:``): its name, its own options and levels.

    ``levels`` is both the train and the test ladder; ``train_levels``/``test_levels`` set them
    apart. Anything else is a codec option (``effort``, ``speed``), checked by the codec.
    """

    levels: list[Float] | None = Field(None, max_length=BOUNDS["levels"])
    train_levels: list[Float] | None = Field(None, max_length=BOUNDS["levels"])
    test_levels: list[Float] | None = Field(None, max_length=BOUNDS["levels"])

    @field_validator("levels", "train_levels", "test_levels")
    @classmethod
    def _ladder(cls, v: list[float] | None) -> list[float] | None:
        return None if v is None else check_ladder(v)

    @model_validator(mode="after")
    def _has_levels(self) -> "CodecArmSpec":
        if self.levels is None and (self.train_levels is None or self.test_levels is None):
            raise ValueError(f"codec {self.name!r}: give levels (train and test), or train_levels and test_levels")
        return self


@dataclass(frozen=True)
class Arm:
    """A codec of the sweep with its ladders: the single ``codec:`` form is one arm."""

    name: str
    options: dict[str, Any]
    train_levels: list[float]
    test_levels: list[float]

    @property
    def levels(self) -> list[float]:
        """Every level the store must hold for this codec."""
        return sorted(set(self.train_levels) | set(self.test_levels))

    @property
    def codec(self) -> Any:
        """The codec class (registry entry): level meaning, fidelity order, lossless level."""
        return CODECS.get(self.name)

    def create(self) -> Any:
        return create_codec(self.name, **self.options)


def arms_from(data: dict[str, Any]) -> list[Arm]:
    """The codecs and ladders of sweep-file data (validated, or raw as read back from an output)."""
    def levels(x: Any) -> list[float]:
        return sorted(float(v) for v in x or [])

    if data.get("codecs"):
        arms = []
        for c in data["codecs"]:
            options = {k: v for k, v in c.items() if k not in ("name", "levels", "train_levels", "test_levels")}
            arms.append(Arm(str(c.get("name", "jpegxl")), options, levels(c.get("train_levels") or c.get("levels")),
                            levels(c.get("test_levels") or c.get("levels"))))
        return arms
    codec = dict(data.get("codec") or {})
    name = str(codec.pop("name", "jpegxl"))
    return [Arm(name, codec, levels(data.get("train_levels")), levels(data.get("test_levels")))]


def originals_of(arms: list[Arm]) -> Arm | None:
    """The first arm whose train levels include its codec's lossless level (JPEG XL distance 0)."""
    names = _codec_names()
    for a in arms:
        if a.name in names and a.codec.lossless_level in a.train_levels:
            return a
    return None


def check_ladder(v: list[float]) -> list[float]:
    """A level list: non-empty, finite, non-negative, unique; sorted ascending."""
    if not v:
        raise ValueError("must list at least one level")
    if any(not math.isfinite(x) for x in v):
        raise ValueError(f"levels must be finite numbers, got {v}")
    if any(x < 0 for x in v):
        raise ValueError(f"levels must be >= 0, got {v}")
    if len(set(v)) != len(v):
        raise ValueError(f"levels must be unique, got {v}")
    return sorted(float(x) for x in v)


class CompressSpec(_Strict):
    on_error: Literal["skip", "fail"] = "skip"
    max_pixels: Int = 100_000_000
    quality_metric: Literal["ssimulacra2", "butteraugli"] | None = None
    quality_sample: int = Field(
        16, description="images per level whose achieved quality is measured, or all of them (all: -1)")
    animated: Literal["refuse", "first"] = Field(
        "refuse", description="an animated image (GIF, APNG, WebP): refuse it, or compress its first frame")
    layout: Literal["files", "shards"] = Field(
        "files", description="the store's layout: one file per image and level, or tar shards per level "
                             "(object stores; docs/kubernetes.md)")
    shard_size: Int = Field(256 * 10**6, description="layout shards: source bytes per shard, e.g. 256MB")

    @field_validator("shard_size", mode="before")
    @classmethod
    def _shard_size(cls, v: Any, info: ValidationInfo) -> int:
        return check_option(info.field_name, v)  # the compress options' one validator (lossyvision.compress_options)

    @field_validator("max_pixels")
    @classmethod
    def _max_pixels(cls, v: int, info: ValidationInfo) -> int:
        return check_option(info.field_name, v)
    png_sample: int | Literal["all"] = Field(
        256, description="images per split with a lossless PNG baseline (the report's PNG line), or all of them")

    @field_validator("quality_sample", "png_sample", mode="before")
    @classmethod
    def _count_or_all(cls, v: Any, info: ValidationInfo) -> int | str:
        """A count within bounds, or ``all`` (quality_sample: -1, :data:`lossyvision.compress.EVERY_IMAGE`)."""
        n = check_option(info.field_name, v)
        return "all" if n is None else n


class CacheSize(_Strict):
    """``cache: {max_side: N}``: the cache stores each image shrunk so that its longer side is at most N."""

    max_side: Int = _num(..., BOUNDS["max_side"], description="longest side of a cached image, in pixels")


class ModelSpec(_Strict):
    """One model set-up. Task-specific knobs go in ``options``."""

    name: str
    task: str
    arch: str
    pretrained: bool | str = False
    mode: Literal["finetune", "linear_probe"] = "finetune"
    checkpoint: str | None = Field(None, description="backbone weights: local path or URL")
    epochs: Int = _num(1, BOUNDS["epochs"])
    lr: Float = _num(1e-3, BOUNDS["lr"], low_open=True)
    batch_size: Int = _num(32, BOUNDS["batch_size"])
    weight_decay: Float = _num(0.0, BOUNDS["weight_decay"])
    image_size: Int = _num(224, BOUNDS["image_size"])
    data_order: Literal["random", "shards"] = Field(
        "random", description="training order: a seeded permutation per epoch, or shard by shard through a "
                              "shuffle buffer (a sharded store too large to stage; lossyvision.streaming)")
    shuffle_buffer: Int = _num(DEFAULT_SHUFFLE_BUFFER, BOUNDS["shuffle_buffer"],
                               description="data_order shards: images mixed at once")
    cache: Literal["exact"] | CacheSize | None = Field(
        None, description="decoded training images on the trial's local disk: exact (same pixels, same key) or "
                          "{max_side: N} (shrunk; enters the key); docs/scale.md")
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cache")
    @classmethod
    def _cache_shrinks_images_only(cls, v: Any, info: ValidationInfo) -> Any:
        """Shrinking moves boxes and masks off their pixels: only a classifier's targets survive it."""
        if isinstance(v, CacheSize) and info.data.get("task", "classification") != "classification":
            raise ValueError(f"max_side shrinks the images but not a {info.data.get('task')} task's targets; "
                             "use cache: exact")
        return v

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
        return _check_slug(v)


class Resource(_Strict):
    cpu: Float = _num(1.0, BOUNDS["cpu"])
    gpu: Float = _num(0.0, BOUNDS["gpu"])


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
    workers: Int = _num(1, BOUNDS["workers"], description="data-parallel training processes per trial (Ray Train, "
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


class ResourcesSpec(_Strict):
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


class ReportSpec(_Strict):
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


class SeedSpreadSpec(_Strict):
    """Extra repeats at a few trained levels, whose spread between training runs is pooled for every
    level (:mod:`lossyvision.seedspread`): the cheap way to make claims about models trained at a
    level hold across seeds. Usually the baseline and the most compressed level."""

    levels: list[Float] = Field(min_length=1, max_length=BOUNDS["levels"],
                                description="trained levels that get the extra repeats")
    repeats: Int = _num(3, (2, BOUNDS["repeats"][1]), description="training runs at each of those levels")


class SearchSpec(_Strict):
    """Adaptive search (``lossyvision.sweep.search``): train only the levels one question's answer needs."""

    question: Literal["matched", "train", "test"]
    max_trainings: Int | None = Field(None, ge=1, le=10_000, description="budget of trainings per model and codec")
    margin: Float = Field(1.0, ge=0, le=50, allow_inf_nan=False, description="points above keep to pass exploration")
    fallbacks: Int = Field(0, ge=0, le=10, description="less compressed levels confirmed after a failed candidate")
    parallel: Int | None = Field(None, ge=1, le=64, description="levels explored at once; default: the cluster's slots")


class EvaluationSpec(_Strict):
    """How test levels stream through evaluation (memory and speed only: never part of a key).

    A level is cut into shards of at most ``shard_images`` images and ``shard_bytes`` of decoded
    pixels; one task decodes a shard once and every model tested at that level scores it, so memory
    holds a few shards per worker, never a level. Each evaluation worker keeps the trained models it
    loads while their weights fit ``model_cache_bytes``; a model beyond that is reloaded per shard.
    """

    shard_images: Int = _num(256, BOUNDS["shard_images"], description="images per evaluation shard, at most")
    shard_bytes: Int = Field(256_000_000, description="decoded bytes per evaluation shard, at most (256MB)")
    model_cache_bytes: Int = Field(4_000_000_000, description="model weights each evaluation worker keeps")

    @field_validator("shard_bytes", "model_cache_bytes", mode="before")
    @classmethod
    def _sizes(cls, v: Any, info: ValidationInfo) -> int:
        return byte_size(v, info.field_name)


class TrackingSpec(_Strict):
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


class Sweep(_Strict):
    name: str
    dataset: DatasetSpec
    codec: CodecSpec | None = Field(None, description="one codec (default jpegxl) with train_levels/test_levels")
    codecs: list[CodecArmSpec] | None = Field(None, max_length=BOUNDS["codecs"],
                                              description="several codecs, each with its own levels and options")
    cross_codec: bool = Field(False, description="test every trial on every codec's levels, not only its own")
    train_levels: list[Float] | None = Field(None, max_length=BOUNDS["levels"])
    test_levels: list[Float] | None = Field(None, max_length=BOUNDS["levels"])
    models: list[ModelSpec] = Field(max_length=BOUNDS["models"])
    repeats: Int = _num(1, BOUNDS["repeats"])
    seed_spread: SeedSpreadSpec | None = Field(
        None, description="more repeats at a few trained levels, to measure the spread between training runs")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    output: str
    store: str | None = Field(None, description="compressed store; default <output>/store")
    compress: CompressSpec = Field(default_factory=CompressSpec)
    train_split: str = "train"
    test_split: str = "test"
    limit_per_split: Int | None = _num(None, BOUNDS["limit_per_split"],
                                       description="use only the first N images of each split")
    budgets: list[int] | None = Field(None, description="storage budgets per trial, e.g. [50MB, 100MB]")
    resample: bool = False
    eval_levels: Literal["all", "same", "baseline"] = Field(
        "all", description="with budgets: test on every test level, the train level, or the first test level")
    seed: Int = _num(0, BOUNDS["seed"], description="with the repeat index, fixes every random choice of a trial")
    deterministic: bool = Field(False, description="deterministic kernels (cuDNN, cuBLAS); see docs/reproducibility.md")
    report: ReportSpec = Field(default_factory=ReportSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    max_failures: Int = _num(2, BOUNDS["max_failures"], description="retries of a failed trial")
    search: SearchSpec | None = Field(None, description="adaptive search instead of the whole grid")

    @field_validator("name")
    @classmethod
    def _name_slug(cls, v: str) -> str:
        return _check_slug(v)

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
        problems += [f"models.{i}.task: resources.trial.workers above 1 trains classification models only "
                     f"(this one is {m.task})" for i, m in enumerate(self.models)
                     if workers > 1 and m.task != "classification"]
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
        return self.store or join(self.output, "store")

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


def _did_you_mean(name: str) -> str:
    """``; did you mean train_levels?`` for a near miss of a field of any sweep-file section, else ""."""
    import difflib

    fields = {f for m in _section_models() for f in m.model_fields}
    close = difflib.get_close_matches(name, sorted(fields), n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def _section_models() -> list[type[BaseModel]]:
    return [v for v in globals().values() if isinstance(v, type) and issubclass(v, BaseModel) and v is not BaseModel]


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One ``field.path: problem`` line per pydantic error."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if not str(x).startswith("function-"))
        msg = e["msg"]
        for lead in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(lead)
        if e["type"] == "extra_forbidden":
            msg = "unknown field" + _did_you_mean(str(e["loc"][-1]))
        elif e["type"] == "missing":
            msg = "is required"
        elif e["type"] == "too_long":
            msg = msg.replace("List should have at most", "lists at most").replace("after validation, not", "; got")
        for line in msg.splitlines():  # a model-level check may report several fields, one per line
            lines.append(f"{prefix}{loc}: {line}" if loc else f"{prefix}{line}")
    return "\n".join(lines)


def parse_sweep(data: Any, source: str = "sweep") -> Sweep:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping of fields at the top level, got {type(data).__name__}")
    try:
        return Sweep.model_validate(data)
    except ValidationError as e:
        raise SpecError.of(source, format_validation_error(e).splitlines()) from None


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MAX_VALUES = 100_000


def expand_env(text: str, env: dict[str, str] | None = None, source: str = "sweep") -> str:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in one string with environment values.

    Lets one sweep file name its bucket once, in the environment (a Kubernetes ConfigMap), and
    run unchanged on a laptop and a cluster. ``$NAME`` without braces is left alone. Applied to
    each parsed string value (:func:`substitute_env`), never to a file's text before parsing.
    """
    env = os.environ if env is None else env
    missing: list[str] = []

    def value(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        missing.append(name)
        return m.group(0)

    out = _ENV_REF.sub(value, text)
    if missing:
        raise SpecError(f"{source}: environment variable(s) not set: {', '.join(sorted(set(missing)))}")
    return out


def substitute_env(data: Any, env: dict[str, str] | None = None, source: str = "sweep") -> Any:
    """``data`` with ``${VAR}`` substituted in every string *value* (keys are left alone).

    The result of a substitution is a plain string: it is never parsed as YAML again, so a
    variable cannot add fields or change another one. An unset variable is an error naming the
    field and the variable (``dataset.root: environment variable FOOD101_ROOT is not set``).
    """
    problems: list[str] = []
    seen = [0]

    def walk(node: Any, path: str) -> Any:
        seen[0] += 1
        if seen[0] > _MAX_VALUES:
            raise SpecError(f"{source}: more than {_MAX_VALUES:,} values (YAML aliases that multiply?); "
                            "a sweep file is a page of settings")
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            try:
                return expand_env(node, env)
            except SpecError as e:
                names = str(e).split("not set: ", 1)[-1]
                plural = "s" if "," in names else ""
                problems.append(f"  {path}: environment variable{plural} {names} {'are' if plural else 'is'} not set "
                                f"(write ${{NAME:-default}} for a default)")
                return node
        return node

    out = walk(data, "")
    if problems:
        raise SpecError.of(source, problems)
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, f"unhashable key {key!r}",
                                                    key_node.start_mark) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error as one line: where, then what."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def _quote_hint(text: str, err: yaml.YAMLError) -> str:
    """A hint to quote ``${VAR}`` when the line the YAML error points at has one unquoted: inside a
    ``{...}`` mapping its braces are YAML syntax."""
    mark = getattr(err, "problem_mark", None)
    lines = text.splitlines()
    if mark is None or not 0 <= mark.line < len(lines):
        return ""
    ref = re.search(r"(?<![\"'])\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}", lines[mark.line])
    if ref is None:
        return ""
    return f' (quote values with ${{...}} inside {{...}}, e.g. "{ref.group(0)}")'


def parse_yaml_text(data: bytes, source: str) -> Any:
    """UTF-8 YAML bytes -> Python data, or :class:`SpecError` with one line saying why not."""
    if len(data) > MAX_FILE_BYTES:
        raise SpecError(f"{source}: {len(data):,} bytes is too large for a sweep file "
                        f"(at most {MAX_FILE_BYTES:,}); is it the right file?")
    if b"\x00" in data:
        raise SpecError(f"{source}: a binary file, not a YAML sweep file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(f"{source}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                        "save the sweep file as UTF-8") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise SpecError(f"{source}: not valid YAML: {_yaml_problem(e)}{_quote_hint(text, e)}") from None
    except RecursionError:
        raise SpecError(f"{source}: not valid YAML: nested too deeply") from None


def read_sweep_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a local sweep file: it must exist and be a regular file (a FIFO would block)."""
    path = str(path)
    if not os.path.exists(path):
        raise SpecError(f"{path}: sweep file does not exist")
    try:
        return read_bytes(path)
    except OSError as e:
        raise SpecError(f"{path}: cannot read the sweep file: {e.strerror or e}") from None


def load_sweep(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> Sweep:
    """Read and validate a sweep YAML file; ``${VAR}`` expands from ``env`` (default: the environment)
    inside string values. Raises :class:`SpecError`, one line per problem."""
    path = str(path)
    data = parse_yaml_text(read_sweep_file(path), path)
    return parse_sweep(substitute_env(data, env, source=path), source=path)


def grid_counts(sweep: Sweep) -> tuple[int, int]:
    """(trials, evaluations) of a sweep, as :mod:`lossyvision.sweep.plan` lays the grid out."""
    budgets = sweep.budgets or [-1]
    trials = evaluations = 0
    for arm in sweep.arms:
        for level in arm.train_levels:
            for budget in budgets:
                trials += len(sweep.models) * sweep.repeats_at(level)
                evaluations += (len(sweep.models) * sweep.repeats_at(level)
                                * len(sweep.test_points(arm.name, level, budget)))
    return trials, evaluations


def _codec_names() -> list[str]:
    return CODECS.names()


def check_grid(sweep: Sweep, yes: bool = False, source: str = "sweep") -> None:
    """Refuse a grid over :data:`GRID_CAP` unless ``yes``: a typo (``repeats: 1000``) must not start
    days of work."""
    trials, evaluations = grid_counts(sweep)
    if yes or (trials <= GRID_CAP["trials"] and evaluations <= GRID_CAP["evaluations"]):
        return
    raise SpecError(f"{source}: grid: {trials:,} trials and {evaluations:,} evaluations is over the cap of "
                    f"{GRID_CAP['trials']} trials or {GRID_CAP['evaluations']} evaluations; "
                    "check models, levels, budgets and repeats, or pass --yes to run it")
