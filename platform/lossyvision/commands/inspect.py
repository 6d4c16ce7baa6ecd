"""The body of ``lossyvision inspect``: what a dataset holds and what compressing it costs, as text or JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from lossyvision.commands.errors import error_line, fail
from lossyvision.commands.options import parse_options
from lossyvision.compress import CompressError, parse_levels
from lossyvision.inspect import inspect_dataset, render
from lossyvision.preflight import check_dataset
from lossyvision.spec import SpecError, load_sweep


def inspect(dataset: Optional[str], *, kind: str, option: list[str], sweep_file: Optional[Path], codec: str,
            levels: str, effort: Optional[int], sample: int, limit: Optional[int], max_pixels: int,
            as_json: bool) -> None:
    try:
        options = parse_options(option)
        codec_options = {} if effort is None else {"effort": effort}
        ladder = parse_levels(levels)
        if sweep_file is not None:
            sweep = check_dataset(load_sweep(sweep_file), str(sweep_file))
            arm = sweep.arms[0]  # the first codec of the sweep (inspect estimates one codec's ladder)
            codec, codec_options, ladder = arm.name, arm.options, tuple(arm.levels)
            if dataset is None:
                dataset, kind, options = sweep.dataset.root, sweep.dataset.kind, {**sweep.dataset.options, **options}
        if dataset is None:
            fail("give a DATASET root (and --kind), or --sweep FILE")
        result = inspect_dataset(kind, dataset, options, codec=codec, codec_options=codec_options, levels=ladder,
                                 sample=sample, limit=limit, max_pixels=max_pixels)
    except (typer.Exit, typer.Abort):
        raise
    except (SpecError, CompressError, ValueError, ImportError) as e:
        fail(str(e))
    except KeyError as e:  # an unknown kind or codec: the registry lists the known names
        fail(str(e).strip("'\""))
    except Exception as e:  # noqa: BLE001 - a cloud client's error is one line; anything else a bug
        found = error_line(e)
        if found is None:
            raise
        fail(*found)
    if as_json:
        typer.echo(json.dumps(finite(result.to_dict()), indent=1))
    else:
        typer.echo(render(result))


def finite(value):
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
