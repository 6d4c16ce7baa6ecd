"""The sweep file: one YAML describes a whole experiment, validated by pydantic.

Errors name the field and the problem (``dataset.root: /x does not exist``), never a traceback:
:func:`load_sweep` raises :class:`SpecError` with one line per problem.

Relative paths are taken relative to the current working folder; ``s3://``/``gs://`` URIs are
left as they are.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lossyvision.store import is_remote, join
from lossyvision.units import parse_bytes


class SpecError(ValueError):
    """A malformed sweep file or option; the message names each field and its problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_local_exists(path: str) -> str:
    if not is_remote(path) and not os.path.exists(path):
        raise ValueError(f"{path} does not exist")
    return path


def _check_registered(registry: Any, name: str) -> str:
    """``name`` if the registry knows it, else the registry's own "unknown ..., known: ..." error."""
    if name not in registry:
        raise ValueError(f"unknown {registry.kind} {name!r}; known: {', '.join(registry.names())}")
    return name


def _check_slug(name: str) -> str:
    """Names end up in paths, run names and metric keys: keep them to a safe alphabet."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"{name!r} must be letters, digits, '.', '_' or '-'")
    return name


class DatasetSpec(_Strict):
    kind: str = "imagefolder"
    root: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        from lossyvision.datasets import DATASETS

        return _check_registered(DATASETS, v)

    @field_validator("root")
    @classmethod
    def _root_exists(cls, v: str) -> str:
        return _check_local_exists(v)


class CodecSpec(BaseModel):
    """``name`` plus the codec's own options (``effort`` for jpegxl), checked by the codec."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = "jpegxl"

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _codec_accepts_options(self) -> "CodecSpec":
        from lossyvision.codecs import create_codec

        try:
            create_codec(self.name, **self.options)
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(str(e).strip("'\"")) from None
        return self


class CompressSpec(_Strict):
    on_error: Literal["skip", "fail"] = "skip"
    max_pixels: int = Field(100_000_000, gt=0)
    quality_metric: Literal["ssimulacra2", "butteraugli"] | None = None
    quality_sample: int = Field(16, ge=0, description="images per level whose quality is measured")
    png_sample: int | Literal["all"] = Field(
        256, description="images per split with a lossless PNG baseline (the report's PNG line), or 'all'")

    @field_validator("png_sample", mode="before")
    @classmethod
    def _png_sample(cls, v: Any) -> Any:
        if v == "all" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            return v
        raise ValueError(f"must be a number of images >= 0 or 'all', got {v!r}")


class ModelSpec(_Strict):
    """One model set-up. Task-specific knobs go in ``options``."""

    name: str
    task: str
    arch: str
    pretrained: bool | str = False
    mode: Literal["finetune", "linear_probe"] = "finetune"
    checkpoint: str | None = Field(None, description="backbone weights: local path or URL")
    epochs: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    image_size: int = Field(224, ge=8)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        return _check_slug(v)

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        from lossyvision.tasks import TASKS

        return _check_registered(TASKS, v)


    @model_validator(mode="after")
    def _task_accepts_options(self) -> "ModelSpec":
        """Typos in ``options`` fail when the file is read, not hours later inside a trial."""
        from lossyvision.tasks import TASKS

        if self.task in TASKS:
            try:
                TASKS.get(self.task)(self, ["class-0", "class-1"])
            except ValueError as e:
                raise ValueError(str(e)) from None
        return self


class Resource(_Strict):
    cpu: float = Field(1.0, ge=0)
    gpu: float = Field(0.0, ge=0)


class ResourcesSpec(_Strict):
    trial: Resource = Field(default_factory=Resource)
    eval: Resource = Field(default_factory=Resource)


class ReportSpec(_Strict):
    """How the report judges and states its numbers (analysis only: never part of a trial's hash)."""

    keep: float = Field(0.99, gt=0, le=1.5, description="fraction of the baseline a level must keep")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="two-sided interval level")
    resamples: int = Field(2000, ge=100, le=100_000, description="bootstrap resamples per interval")


class EvaluationSpec(_Strict):
    """How test levels stream through evaluation (memory and speed only: never part of a key).

    A level is cut into shards of at most ``shard_images`` images and ``shard_bytes`` of decoded
    pixels; one task decodes a shard once and every model tested at that level scores it, so memory
    holds a few shards per worker, never a level. Each evaluation worker keeps the trained models it
    loads while their weights fit ``model_cache_bytes``; a model beyond that is reloaded per shard.
    """

    shard_images: int = Field(256, ge=1, description="images per evaluation shard, at most")
    shard_bytes: int = Field(256_000_000, ge=1, description="decoded bytes per evaluation shard, at most (256MB)")
    model_cache_bytes: int = Field(4_000_000_000, ge=0, description="model weights each evaluation worker keeps")

    @field_validator("shard_bytes", "model_cache_bytes", mode="before")
    @classmethod
    def _sizes(cls, v: Any) -> Any:
        return parse_bytes(v) if isinstance(v, str) else v


class TrackingSpec(_Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///<output>/mlflow.db")
    experiment: str | None = Field(None, description="MLflow experiment; default: the sweep's name")


class Sweep(_Strict):
    name: str
    dataset: DatasetSpec
    codec: CodecSpec = Field(default_factory=CodecSpec)
    train_levels: list[float]
    test_levels: list[float]
    models: list[ModelSpec]
    repeats: int = Field(1, ge=1)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    output: str
    store: str | None = Field(None, description="compressed store; default <output>/store")
    compress: CompressSpec = Field(default_factory=CompressSpec)
    train_split: str = "train"
    test_split: str = "test"
    limit_per_split: int | None = Field(None, ge=1, description="use only the first N images of each split")
    budgets: list[int] | None = Field(None, description="storage budgets per trial, e.g. [50MB, 100MB]")
    resample: bool = False
    eval_levels: Literal["all", "same", "baseline"] = Field(
        "all", description="with budgets: test on every test level, the train level, or the first test level")
    seed: int = Field(0, ge=0, description="with the repeat index, fixes every random choice of a trial")
    deterministic: bool = Field(False, description="deterministic kernels (cuDNN, cuBLAS); see docs/benchmarks.md")
    report: ReportSpec = Field(default_factory=ReportSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    max_failures: int = Field(2, ge=0, description="retries of a failed trial")

    @field_validator("name")
    @classmethod
    def _name_slug(cls, v: str) -> str:
        return _check_slug(v)

    @field_validator("train_levels", "test_levels")
    @classmethod
    def _levels(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("must list at least one level")
        if any(x < 0 for x in v):
            raise ValueError(f"levels must be >= 0, got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"levels must be unique, got {v}")
        return sorted(float(x) for x in v)

    @field_validator("budgets", mode="before")
    @classmethod
    def _budgets(cls, v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, list) or not v:
            raise ValueError("must be a non-empty list of sizes such as [50MB, 100MB]")
        return sorted(parse_bytes(x) for x in v)

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


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One ``field.path: problem`` line per pydantic error."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if not str(x).startswith("function-"))
        msg = e["msg"]
        for lead in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(lead)
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "missing":
            msg = "is required"
        lines.append(f"{prefix}{loc}: {msg}" if loc else f"{prefix}{msg}")
    return "\n".join(lines)


def parse_sweep(data: Any, source: str = "sweep") -> Sweep:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping of fields at the top level, got {type(data).__name__}")
    try:
        return Sweep.model_validate(data)
    except ValidationError as e:
        raise SpecError(f"{source}:\n" + format_validation_error(e, prefix="  ")) from None


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, env: dict[str, str] | None = None, source: str = "sweep") -> str:
    """Replace ``${NAME}`` and ``${NAME:-default}`` with environment values.

    Lets one sweep file name its bucket once, in the environment (a Kubernetes ConfigMap), and
    run unchanged on a laptop and a cluster. ``$NAME`` without braces is left alone.
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


def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """Read and validate a sweep YAML file (``yaml.safe_load``); ``${VAR}`` expands from the env."""
    path = str(path)
    if not os.path.exists(path):
        raise SpecError(f"{path}: sweep file does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(expand_env(f.read(), source=path))
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    return parse_sweep(data, source=path)
