"""The body of ``lossyvision compress``: check the options or the sweep file, lock the store, compress on Ray,
print the summary."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional

import pandas as pd
import typer
from rich.console import Console

from lossyvision.commands.errors import clean_errors, fail
from lossyvision.commands.options import parse_options
from lossyvision.compress import (
    CompressError,
    CompressOptions,
    check_store_place,
    describe_failures,
    describe_not_read,
    parse_levels,
    parse_png_sample,
    parse_quality_sample,
    parse_shard_size,
    render_summary,
    sweep_job_args,
    validate,
)
from lossyvision.datasets import DATASETS
from lossyvision.datasets._files import require_dir, require_file
from lossyvision.lock import writer_lock
from lossyvision.manifest import STATUS_OK
from lossyvision.places import check_place
from lossyvision.preflight import load_checked
from lossyvision.runners.cluster import stop_after_interrupt
from lossyvision.spec import check_grid

#: Options of ``compress`` that a sweep file sets instead (giving both is refused, not ignored).
SWEEP_FILE_SETS = {"source": "--source", "out": "--out", "dataset": "--dataset", "codec": "--codec",
                   "levels": "--levels", "effort": "--effort", "on_error": "--on-error",
                   "max_pixels": "--max-pixels", "quality_metric": "--quality-metric",
                   "quality_sample": "--quality-sample", "animated": "--animated",
                   "allow_outside_symlinks": "--allow-outside-symlinks", "option": "--option",
                   "layout": "--layout", "shard_size": "--shard-size", "png_sample": "--png-sample"}


def given_options(ctx: typer.Context, names: dict[str, str]) -> list[str]:
    """The flags of ``names`` that the command line (or the environment) set, not their defaults."""
    sources = {name: ctx.get_parameter_source(name) for name in names}
    return [flag for name, flag in names.items()
            if sources[name] is not None and sources[name].name not in ("DEFAULT", "DEFAULT_MAP")]


@contextlib.contextmanager
def resumable_interrupt() -> Iterator[None]:
    """Ctrl-C: stop the local Ray this command started (all its processes) and say how to resume."""
    try:
        yield
    except KeyboardInterrupt:
        stop_after_interrupt()
        typer.echo("\ninterrupted; rerun the same command to resume (images already compressed are kept)", err=True)
        raise typer.Exit(130) from None


def compress(ctx: typer.Context, *, sweep_file: Optional[Path], source: Optional[str], out: Optional[str],
             dataset: str, option: list[str], codec: str, levels: str, effort: Optional[int], on_error: str,
             max_pixels: int, quality_metric: Optional[str], quality_sample: str, animated: str,
             allow_outside_symlinks: bool, layout: str, shard_size: str, png_sample: str,
             num_cpus: Optional[int], yes: bool) -> None:
    with clean_errors(), resumable_interrupt():
        if sweep_file is not None:
            given = given_options(ctx, SWEEP_FILE_SETS)
            if given:
                fail(f"{', '.join(given)} cannot be combined with a sweep file (set them in the file)")
            sweep = load_checked(sweep_file)
            check_grid(sweep, yes, source=str(sweep_file))
            store_uri = sweep.store_uri
        else:
            if not source or not out:
                fail("give --source DIR and --out DIR, or a sweep file")
            try:
                parsed_levels = parse_levels(levels)
                quality_sample = parse_quality_sample(quality_sample)
                shard_bytes = parse_shard_size(shard_size)
                png_count = parse_png_sample(png_sample)
                validate(CompressOptions(  # codec, levels in its range, options: before anything is written
                    codec=codec, codec_options={} if effort is None else {"effort": effort}, levels=parsed_levels,
                    on_error=on_error, max_pixels=max_pixels, quality_metric=quality_metric,
                    quality_sample=quality_sample, animated=animated, layout=layout, shard_size=shard_bytes,
                    png_sample=png_count))
                dataset_options = parse_options(option)
                DATASETS.get(dataset)  # an unknown kind lists the known ones, before the store is locked
            except (CompressError, ValueError, KeyError) as exc:
                fail(str(exc))
            if allow_outside_symlinks:
                dataset_options["allow_outside_symlinks"] = True
            try:
                check_place(out, "store")
            except ValueError as exc:
                fail(f"--out: {exc}")
            try:
                one_file = dataset == "csv" or source.lower().endswith((".csv", ".jsonl", ".tar", ".parquet"))
                (require_file if one_file else require_dir)("--source", source)  # before the store is locked
            except ValueError as exc:
                fail(str(exc))
            store_uri = out
        check_store_place(store_uri)
        with writer_lock(store_uri, "lossyvision compress", log=lambda msg: typer.echo(msg, err=True)):
            if sweep_file is not None:
                jobs = sweep_job_args(sweep)  # one job per codec of the sweep
            else:
                jobs = [{"source": source, "store_uri": out, "dataset": dataset, "codec": codec,
                         "codec_options": {} if effort is None else {"effort": effort},
                         "levels": parsed_levels, "on_error": on_error, "max_pixels": max_pixels,
                         "quality_metric": quality_metric, "quality_sample": quality_sample,
                         "animated": animated, "dataset_options": dataset_options,
                         "layout": layout, "shard_size": shard_bytes, "png_sample": png_count}]
            from lossyvision.runners.compress import compress_job  # lazy: loads ray

            results = [compress_job(**args, num_cpus=num_cpus, log=lambda msg: typer.echo(msg, err=True))
                       for args in jobs]
    console = Console()
    if not console.is_terminal:  # logs and CI: don't squeeze the table into 80 columns
        console = Console(width=max(console.width, 110))
    console.print(render_summary(pd.concat([r.summary for r in results], ignore_index=True)))
    for line in describe_not_read(results[0].not_read, store_uri):
        typer.echo(line)
    rows = pd.concat([r.manifest for r in results], ignore_index=True)
    for line in describe_failures(rows, store_uri):
        typer.echo(line)
    typer.echo(manifest_line(store_uri, results, len(rows)))
    if len(rows) and not (rows["status"] == STATUS_OK).any():
        fail("no image could be compressed (every row failed; reasons above)", code=1)


def manifest_line(store_uri: str, results: list, rows: int) -> str:
    """Where the manifest is and what it holds: this run's rows, and the store's when it holds more
    (another codec or other levels compressed into the same store)."""
    total = max([r.store_rows or 0 for r in results] + [rows])
    held = f"{rows} rows" if total == rows else f"{total} rows, {rows} of them this command's codec and levels"
    return (f"manifest: {store_uri}/manifest.parquet ({held}; {sum(r.done for r in results)} run now, "
            f"{sum(r.skipped for r in results)} already done); summary.csv beside it")
