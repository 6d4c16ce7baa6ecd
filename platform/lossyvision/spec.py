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

This module is the sweep file's one public face and the grid's cap; its parts live in
:mod:`lossyvision.sweepfile`: the number types and bounds (``fields``), the codecs and their ladders
(``arms``), the other sections (``sections``), the :class:`Sweep` model (``sweep``) and the reader (``reading``).
"""

from __future__ import annotations

from lossyvision.sweepfile.arms import Arm, CodecArmSpec, CodecSpec, arms_from, check_ladder, originals_of
from lossyvision.sweepfile.fields import (BOUNDS, MAX_FILE_BYTES, TRACKING_SCHEMES, Float, Int, SpecError, Strict,
                                          bounded, byte_size, check_registered, check_slug)
from lossyvision.sweepfile.reading import (expand_env, format_validation_error, load_sweep, parse_sweep,
                                           parse_yaml_text, read_sweep_file, substitute_env)
from lossyvision.sweepfile.sections import (KEEP_RANGE, CacheSize, CompressSpec, DatasetSpec, EvaluationSpec, ModelSpec,
                                            ReportSpec, Resource, ResourcesSpec, SearchSpec, SeedSpreadSpec,
                                            TrackingSpec, TrialResource, check_tracking_uri, parse_keep)
from lossyvision.sweepfile.sweep import Sweep
from lossyvision.sweep.layout import grid_counts  # the planner's layout, counted (cli and preview import it here)

__all__ = [
    "Arm", "BOUNDS", "CacheSize", "CodecArmSpec", "CodecSpec", "CompressSpec", "DatasetSpec", "EvaluationSpec",
    "Float", "GRID_CAP", "Int", "KEEP_RANGE", "MAX_FILE_BYTES", "ModelSpec", "ReportSpec", "Resource",
    "ResourcesSpec", "SearchSpec", "SeedSpreadSpec", "SpecError", "Strict", "Sweep", "TRACKING_SCHEMES",
    "TrackingSpec", "TrialResource", "arms_from", "bounded", "byte_size", "check_grid", "check_ladder",
    "check_registered", "check_slug", "check_tracking_uri", "expand_env", "format_validation_error", "grid_counts",
    "load_sweep", "originals_of", "parse_keep", "parse_sweep", "parse_yaml_text", "read_sweep_file",
    "substitute_env",
]

#: A sweep with more trials or evaluations than this needs ``--yes`` (``sweep run``, ``compress``).
GRID_CAP = {"trials": 200, "evaluations": 5000}


def check_grid(sweep: Sweep, yes: bool = False, source: str = "sweep") -> None:
    """Refuse a grid over :data:`GRID_CAP` unless ``yes``: a typo (``repeats: 1000``) must not start
    days of work."""
    trials, evaluations = grid_counts(sweep)
    if yes or (trials <= GRID_CAP["trials"] and evaluations <= GRID_CAP["evaluations"]):
        return
    raise SpecError(f"{source}: grid: {trials:,} trials and {evaluations:,} evaluations is over the cap of "
                    f"{GRID_CAP['trials']} trials or {GRID_CAP['evaluations']} evaluations; "
                    "check models, levels, budgets and repeats, or pass --yes to run it")
