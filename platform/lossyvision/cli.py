"""The ``lossyvision`` command line. Each command is a thin shell over a module function.

Every refusal is one line on stderr (``error: ...``) and a non-zero exit, never a traceback:
2 for a problem with the command line, a sweep file or an input (a cloud URL without credentials,
unreachable, denied or without its bucket: :mod:`lossyvision.cloud`), 1 for one met while running
(a damaged file lossyvision wrote, whichever it is; a busy output; an OS error, which names its path).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Literal, Optional

import typer

from lossyvision import __version__
from lossyvision.cloud import cloud_error
from lossyvision.codecs import CODECS
from lossyvision.datasets import DATASETS
from lossyvision.datasets._files import require_dir, require_file
from lossyvision.inspect import inspect_dataset, render
from lossyvision.lock import LockHeld, writer_lock
from lossyvision.places import check_output_files, check_place
from lossyvision.runners.cluster import stop_after_interrupt
from lossyvision.store import DamagedFileError
from lossyvision.units import parse_bytes

app = typer.Typer(
    help="How far can you lossily compress your image data before your vision models notice?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sweep_app = typer.Typer(help="Run, inspect and sync sweeps (train x test grids).", no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")

CODEC_NAMES = ", ".join(CODECS.names())
DATASET_NAMES = ", ".join(DATASETS.names())


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print a clear error (no traceback) and exit."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def os_error_line(exc: OSError) -> str:
    """An OS error as ``PATH: what happened`` (a full disk names the file it was writing)."""
    what = exc.strerror or str(exc) or type(exc).__name__
    where = exc.filename if exc.filename is not None else None
    return f"{where}: {what}" if where else f"{type(exc).__name__}: {what}"


def error_line(exc: BaseException) -> tuple[str, int] | None:
    """The one line and exit code for an error a user can meet, or None for a bug (keeps its traceback).

    2: a bad command line, sweep file or input (a cloud URL that cannot be reached or read included);
    1: met while running: a busy place, a damaged file lossyvision wrote (any of them: sweep copy,
    state, manifest, results), an OS error naming its path.
    """
    from lossyvision.compress import CompressError  # lazy: loads pandas; --help stays fast
    from lossyvision.output import OutputError  # lazy: loads pandas; --help stays fast
    from lossyvision.report.cells import ReportError  # lazy: loads pandas; --help stays fast
    from lossyvision.spec import SpecError  # lazy: loads pydantic; --help stays fast
    from lossyvision.sweep.results import ResultsError  # lazy: loads pyarrow; --help stays fast

    cloud = cloud_error(exc)
    if cloud is not None:
        return str(cloud), 2
    if isinstance(exc, (CompressError, LockHeld, DamagedFileError)):
        return str(exc), 1
    if isinstance(exc, (SpecError, OutputError, ResultsError, ReportError)):
        return str(exc), 2
    if isinstance(exc, OSError):
        return os_error_line(exc), 1
    return None


@contextlib.contextmanager
def clean_errors() -> Iterator[None]:
    """Turn the errors a user can meet into one line (:func:`error_line`). Anything else is a bug
    and keeps its traceback."""
    try:
        yield
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise
    except Exception as exc:
        found = error_line(exc)
        if found is None:
            raise
        fail(*found)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lossyvision {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """How far can you lossily compress your image data before your vision models notice?"""


def check_output(output: str) -> None:
    """Commands that read an output first check its small files read back (one line if not)."""
    with clean_errors():
        check_output_files(output)


def refuse_sweep_file(output: str, command: str) -> None:
    """A sweep file given where an output folder belongs: say so, and name the file's output."""
    import os

    if "://" in str(output) or not os.path.isfile(output) or not str(output).endswith((".yaml", ".yml")):
        return
    import yaml

    try:
        named = yaml.safe_load(Path(output).read_text(encoding="utf-8")).get("output")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        named = None
    where = f", here {named}" if isinstance(named, str) else ""
    fail(f"{output} is a sweep file; `{command}` takes its output folder{where}")


@contextlib.contextmanager
def resumable_interrupt() -> Iterator[None]:
    """Ctrl-C: stop the local Ray this command started (all its processes) and say how to resume."""
    try:
        yield
    except KeyboardInterrupt:
        stop_after_interrupt()
        typer.echo("\ninterrupted; rerun the same command to resume (images already compressed are kept)", err=True)
        raise typer.Exit(130) from None


# --- demo data ----------------------------------------------------------------------------------
@app.command("demo-data", epilog="Example: lossyvision demo-data data/demo")
def demo_data(
    out: Path = typer.Argument(..., help="Folder to write the demo dataset into."),
    png: bool = typer.Option(False, "--png", help="Store originals as PNG (as Cityscapes) instead of JPEG."),
) -> None:
    """Build the small labelled demo dataset of real photos, offline and deterministically."""
    from lossyvision.demo import build_demo_dataset  # lazy: loads PIL; --help stays fast

    try:
        summary = build_demo_dataset(str(out), png=png)
    except (ValueError, RuntimeError, OSError) as e:
        fail(str(e))
    kind = "PNG" if png else "JPEG q90"
    typer.echo(f"demo dataset in {summary.root}: {len(summary.classes)} classes, "
               f"{summary.image_size}x{summary.image_size} px {kind}")
    for split in summary.counts:
        typer.echo(f"  {split:<5} {summary.images(split):>4} images  {summary.bytes[split]:>9,} bytes")
    typer.echo(f"  classes: {', '.join(summary.classes)}")
    typer.echo(f"  sources and licences: {Path(summary.root) / 'LICENSES.md'}")


# --- compress -----------------------------------------------------------------------------------
#: Options of ``compress`` that a sweep file sets instead (giving both is refused, not ignored).
_SWEEP_FILE_SETS = {"source": "--source", "out": "--out", "dataset": "--dataset", "codec": "--codec",
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


@app.command(epilog="Examples: lossyvision compress --source data/demo --out runs/store --levels 0,1,3 ; "
                    "lossyvision compress sweeps/demo.yaml")
def compress(
    ctx: typer.Context,
    sweep_file: Optional[Path] = typer.Argument(
        None, help="Sweep YAML: take dataset, codec, levels (train + test), store and options from it "
                   "(then no other option but --num-cpus and --yes)."),
    source: Optional[str] = typer.Option(None, "--source", help="Dataset root (folder or s3:// URI)."),
    out: Optional[str] = typer.Option(None, "--out", help="Store to write: OUT/<codec>-<level>/..., manifest."),
    dataset: str = typer.Option("imagefolder", "--dataset", "--kind", help=f"Dataset kind: {DATASET_NAMES}."),
    option: list[str] = typer.Option([], "--option", "-o", metavar="KEY=VALUE",
                                     help="A dataset option (repeatable; the value is YAML), e.g. -o masks=true."),
    codec: str = typer.Option("jpegxl", "--codec", help=f"Codec: {CODEC_NAMES}."),
    levels: str = typer.Option("0,0.5,1,2,5,10", "--levels",
                               help="Comma-separated levels, e.g. 0,0.5,1 (jpegxl: Butteraugli distances "
                                    "0..25; jpeg 1..100, webp and avif 0..100: qualities; png: 0)."),
    effort: Optional[int] = typer.Option(None, "--effort", help="Encoder effort (jpegxl: 1..10, default 7)."),
    on_error: Literal["skip", "fail"] = typer.Option(
        "skip", "--on-error", help="skip: record bad images and go on; fail: stop at the first."),
    max_pixels: int = typer.Option(100_000_000, "--max-pixels", min=1, help="Reject images with more pixels."),
    quality_metric: Optional[Literal["ssimulacra2", "butteraugli"]] = typer.Option(
        None, "--quality-metric", help="Measure achieved quality on a sample: ssimulacra2 or butteraugli."),
    quality_sample: str = typer.Option(
        "16", "--quality-sample", help="Images per level whose achieved quality is measured, or 'all', e.g. 64."),
    animated: Literal["refuse", "first"] = typer.Option(
        "refuse", "--animated", help="An animated image (GIF, APNG, WebP): refuse it (a failed row says so) "
                                     "or compress its first frame."),
    allow_outside_symlinks: bool = typer.Option(
        False, "--allow-outside-symlinks", help="Read symlinks whose target lies outside --source "
                                                "(refused and listed in OUT/skipped.csv by default)."),
    layout: Literal["files", "shards"] = typer.Option(
        "files", "--layout", help="files: one file per image and level; shards: tar shards per level, for "
                                  "object stores (docs/kubernetes.md)."),
    shard_size: str = typer.Option("256MB", "--shard-size", help="With --layout shards: source bytes per shard, "
                                                                  "e.g. 64MB."),
    png_sample: str = typer.Option(
        "256", "--png-sample", help="Images per split with a lossless PNG baseline (the report's PNG line), or 'all'."),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1, help="CPUs of the local Ray (default: all)."),
    yes: bool = typer.Option(False, "--yes", help="Run a sweep file whose grid is over the cap (see README)."),
) -> None:
    """Compress a dataset at every level on Ray and write the manifest (resumable)."""
    from rich.console import Console

    from lossyvision import compress as job  # lazy: loads pandas; --help stays fast
    from lossyvision.preflight import load_checked  # lazy: loads pydantic; --help stays fast
    from lossyvision.spec import check_grid  # lazy: loads pydantic; --help stays fast

    with clean_errors(), resumable_interrupt():
        if sweep_file is not None:
            given = given_options(ctx, _SWEEP_FILE_SETS)
            if given:
                fail(f"{', '.join(given)} cannot be combined with a sweep file (set them in the file)")
            sweep = load_checked(sweep_file)
            check_grid(sweep, yes, source=str(sweep_file))
            store_uri = sweep.store_uri
        else:
            if not source or not out:
                fail("give --source DIR and --out DIR, or a sweep file")
            try:
                parsed_levels = job.parse_levels(levels)
                quality_sample = job.parse_quality_sample(quality_sample)
                shard_bytes = job.parse_shard_size(shard_size)
                png_count = job.parse_png_sample(png_sample)
                job.validate(job.CompressOptions(  # codec, levels in its range, options: before anything is written
                    codec=codec, codec_options={} if effort is None else {"effort": effort}, levels=parsed_levels,
                    on_error=on_error, max_pixels=max_pixels, quality_metric=quality_metric,
                    quality_sample=quality_sample, animated=animated, layout=layout, shard_size=shard_bytes,
                    png_sample=png_count))
                dataset_options = parse_options(option)
                DATASETS.get(dataset)  # an unknown kind lists the known ones, before the store is locked
            except (job.CompressError, ValueError, KeyError) as exc:
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
        job.check_store_place(store_uri)
        with writer_lock(store_uri, "lossyvision compress", log=lambda msg: typer.echo(msg, err=True)):
            if sweep_file is not None:
                jobs = job.sweep_job_args(sweep)  # one job per codec of the sweep
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
    import pandas as pd

    console.print(job.render_summary(pd.concat([r.summary for r in results], ignore_index=True)))
    for line in job.describe_not_read(results[0].not_read, store_uri):
        typer.echo(line)
    rows = pd.concat([r.manifest for r in results], ignore_index=True)
    for line in job.describe_failures(rows, store_uri):
        typer.echo(line)
    typer.echo(manifest_line(store_uri, results, len(rows)))
    from lossyvision.manifest import STATUS_OK  # lazy: loads pandas; --help stays fast

    if len(rows) and not (rows["status"] == STATUS_OK).any():
        fail("no image could be compressed (every row failed; reasons above)", code=1)


def manifest_line(store_uri: str, results: list, rows: int) -> str:
    """Where the manifest is and what it holds: this run's rows, and the store's when it holds more
    (another codec or other levels compressed into the same store)."""
    total = max([r.store_rows or 0 for r in results] + [rows])
    held = f"{rows} rows" if total == rows else f"{total} rows, {rows} of them this command's codec and levels"
    return (f"manifest: {store_uri}/manifest.parquet ({held}; {sum(r.done for r in results)} run now, "
            f"{sum(r.skipped for r in results)} already done); summary.csv beside it")


# --- sweeps -------------------------------------------------------------------------------------
@sweep_app.command("run", epilog="Example: lossyvision sweep run sweeps/demo.yaml --num-cpus 2")
def sweep_run(
    sweep_file: Path = typer.Argument(..., help="Sweep YAML file."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: RAY_ADDRESS, else local)."),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1, help="CPUs of the local Ray (default: all)."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not build the report at the end."),
    yes: bool = typer.Option(False, "--yes", help="Run a grid over the cap (200 trials or 5000 evaluations)."),
    wait_for_nodes: bool = typer.Option(
        False, "--wait-for-nodes", help="On a cluster whose autoscaler does not report its node groups: start "
                                        "even when no node has the trial's or evaluation's resources yet."),
    register: Optional[str] = typer.Option(
        None, "--register", metavar="NAME",
        help="Register the model of the level the verdict advises in MLflow's model registry as NAME "
             "(alias 'recommended'); nothing is registered when no level is advised."),
) -> None:
    """Compress, train every (model, train level, repeat) on Ray Tune, evaluate the grid, report.

    Rerunning on an existing output does only what is missing (trials, cells, MLflow runs).
    A second run on the same output is refused while the first holds it."""
    from lossyvision.preflight import load_checked  # lazy: loads pydantic; --help stays fast
    from lossyvision.spec import check_grid  # lazy: loads pydantic; --help stays fast
    from lossyvision.sweep.plan import PlanError  # lazy: loads pandas; --help stays fast
    from lossyvision.sweep.run import run_sweep, summary_lines  # lazy: loads pandas; --help stays fast

    with clean_errors():
        sweep = load_checked(sweep_file)
        check_grid(sweep, yes, source=str(sweep_file))
        try:
            outcome = run_sweep(sweep, echo=typer.echo, ray_address=address, num_cpus=num_cpus,
                                build_report=not no_report, register=register,
                                wait_for_nodes=wait_for_nodes)
        except PlanError as e:
            fail(str(e))
    for line in summary_lines(outcome):
        typer.echo(line)
    if not outcome.ok:
        raise typer.Exit(1)


@sweep_app.command("plan", epilog="Example: lossyvision sweep plan sweeps/demo.yaml")
def sweep_plan(
    sweep_file: Path = typer.Argument(..., help="Sweep YAML file."),
    sample: int = typer.Option(16, "--sample", min=1, help="Images encoded to estimate bytes and time, e.g. 32."),
) -> None:
    """Check a sweep file and say what `sweep run` would do: the grid (done, stale, to run), the
    images to compress, the bytes and files it would write, and the compression time. Writes nothing."""
    from lossyvision.preflight import load_checked  # lazy: loads pydantic; --help stays fast
    from lossyvision.spec import grid_counts  # lazy: loads pydantic; --help stays fast
    from lossyvision.sweep.preview import preview, render_preview  # lazy: loads pandas; --help stays fast
    from lossyvision.sweep.run import resolve_paths  # lazy: loads pandas; --help stays fast

    with clean_errors():
        sweep = resolve_paths(load_checked(sweep_file))
        result = preview(sweep, sample=sample)
    for line in render_preview(result):
        typer.echo(line)
    if sweep.search is not None:
        import os

        from lossyvision.sweep.searchgrid import plan_lines  # lazy: loads pandas; --help stays fast

        cpu = sweep.resources.trial.cpu  # the levels explored at once: this machine's trial slots, unless set
        for line in plan_lines(sweep, max(1, int((os.cpu_count() or 1) // cpu) if cpu else 1)):
            typer.echo(line)
    from lossyvision.spec import GRID_CAP  # lazy: loads pydantic; --help stays fast

    trials, evaluations = grid_counts(sweep)
    if trials > GRID_CAP["trials"] or evaluations > GRID_CAP["evaluations"]:
        typer.echo(f"note: the grid is over the cap ({GRID_CAP['trials']} trials or {GRID_CAP['evaluations']} "
                   "evaluations): `sweep run` needs --yes")


@sweep_app.command("status", epilog="Example: lossyvision sweep status runs/demo")
def sweep_status(output: str = typer.Argument(..., help="The sweep's output folder.")) -> None:
    """Show the grid with done, running, failed and missing cells."""
    from rich.console import Console

    from lossyvision.output import load_output_sweep, load_plan  # lazy: loads pandas; --help stays fast
    from lossyvision.sweep.status import grid_status, render_status, stale_entries  # lazy: loads pandas; --help stays fast

    refuse_sweep_file(output, "sweep status")
    check_output(output)
    with clean_errors():
        sweep = load_output_sweep(output)
        grid = load_plan(output)
        table = grid_status(sweep, output, grid)
        stale = stale_entries(output, grid)
    Console().print(render_status(sweep, table, stale))


@sweep_app.command("sync", epilog="Example: lossyvision sweep sync runs/demo")
def sweep_sync(output: str = typer.Argument(..., help="The sweep's output folder.")) -> None:
    """Push results missing from MLflow (after an outage) to the tracking server."""
    from lossyvision.sweep.run import sync_output  # lazy: loads pandas; --help stays fast

    check_output(output)
    try:
        sync_output(output, echo=typer.echo)
    except (typer.Exit, typer.Abort):
        raise
    except Exception as e:  # the server is still down: say so, no traceback
        found = error_line(e)
        if found is not None:
            fail(*found)
        fail(f"cannot reach MLflow: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", code=1)


# --- inspect ------------------------------------------------------------------------------------
def parse_options(pairs: list[str]) -> dict:
    """``["splits=[train]", "masks=true"]`` -> ``{"splits": ["train"], "masks": True}`` (values are YAML)."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option {pair!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as e:
            raise ValueError(f"--option {pair!r}: the value is not valid YAML ({e})") from None
    return out


@app.command("inspect", epilog="Example: lossyvision inspect data/demo --sample 4")
def inspect_command(
    dataset: Optional[str] = typer.Argument(None, help="Dataset root (folder, list file or s3:// URI)."),
    kind: str = typer.Option("imagefolder", "--kind", "-k", help=f"Dataset kind: {DATASET_NAMES}."),
    option: list[str] = typer.Option([], "--option", "-o", metavar="KEY=VALUE",
                                     help="A dataset option (repeatable; the value is YAML), e.g. -o masks=true."),
    sweep_file: Optional[Path] = typer.Option(
        None, "--sweep", help="Take the codec, its options and the ladder (train + test levels) from a sweep file; "
                              "also the dataset when DATASET is not given."),
    codec: str = typer.Option("jpegxl", "--codec", help=f"Codec of the estimate: {CODEC_NAMES}."),
    levels: str = typer.Option("0,0.5,1,2,5,10", "--levels", help="Levels of the estimate (comma-separated)."),
    effort: Optional[int] = typer.Option(None, "--effort", help="Encoder effort of the estimate (jpegxl: 1..10)."),
    sample: int = typer.Option(8, "--sample", min=0, help="Images encoded for the estimate (0: no estimate)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Read at most N images per split."),
    max_pixels: int = typer.Option(100_000_000, "--max-pixels", help="Images with more pixels are bad."),
    as_json: bool = typer.Option(False, "--json", help="Print the same facts as JSON."),
) -> None:
    """What a dataset holds (splits, classes, formats, sizes, bad files) and what compressing it costs.

    Writes nothing.
    """
    import json

    from lossyvision import compress as job  # lazy: loads pandas; --help stays fast
    from lossyvision.preflight import check_dataset  # lazy: loads pydantic; --help stays fast
    from lossyvision.spec import SpecError, load_sweep  # lazy: loads pydantic; --help stays fast

    try:
        options = parse_options(option)
        codec_options = {} if effort is None else {"effort": effort}
        ladder = job.parse_levels(levels)
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
    except (SpecError, job.CompressError, ValueError, ImportError) as e:
        fail(str(e))
    except KeyError as e:  # an unknown kind or codec: the registry lists the known names
        fail(str(e).strip("'\""))
    except Exception as e:  # noqa: BLE001 - a cloud client's error is one line; anything else a bug
        found = error_line(e)
        if found is None:
            raise
        fail(*found)
    if as_json:
        typer.echo(json.dumps(_finite(result.to_dict()), indent=1))
    else:
        typer.echo(render(result))


def _finite(value):
    """JSON has no NaN or infinity: they become null."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# --- report and analysis -----------------------------------------------------------------------
@app.command(epilog="Example: lossyvision report runs/demo --keep 0.98 --no-mlflow")
def report(
    output: str = typer.Argument(..., help="The sweep's output folder."),
    keep: Optional[str] = typer.Option(
        None, "--keep", help="Verdict threshold: the fraction of the baseline a level must keep, 0.98 or 98% "
                             "(default: the sweep's report.keep, 0.99)."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Also log the files to the sweep's MLflow run."),
) -> None:
    """Draw the study's figures and write OUTPUT/report/index.html; print the verdict."""
    from lossyvision.report.build import build_report  # lazy: loads pandas; --help stays fast
    from lossyvision.report.cells import ReportError  # lazy: loads pandas; --help stays fast

    from lossyvision.spec import parse_keep  # lazy: loads pydantic; --help stays fast

    try:
        keep_fraction = None if keep is None else parse_keep(keep, "--keep")
    except ValueError as e:
        fail(str(e))
    check_output(output)
    try:
        with clean_errors():
            result = build_report(output, keep_fraction=keep_fraction)
    except ReportError as e:
        fail(str(e))
    for line in result.verdict:
        typer.echo(line)
    for w in result.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"wrote {result.index_html} ({len(result.figures)} figures)")
    if mlflow:
        _log_artifacts(output, result.paths, "report")


def _log_artifacts(output: str, paths: list[str], artifact_path: str) -> None:
    """Log files to the sweep's MLflow parent run when OUTPUT is a sweep's output; warn otherwise."""
    from lossyvision.output import OutputError  # lazy: loads pandas; --help stays fast
    from lossyvision.spec import SpecError  # lazy: loads pydantic; --help stays fast
    from lossyvision.sweep.tracking import log_report_artifacts  # lazy: loads pandas; --help stays fast

    try:
        ok = log_report_artifacts(output, paths, artifact_path=artifact_path)
    except (SpecError, OutputError) as e:
        typer.secho(f"warning: not logged to MLflow: {str(e).splitlines()[0]}", fg=typer.colors.YELLOW, err=True)
        return
    if ok:
        typer.echo(f"logged {len(paths)} file(s) to MLflow under {artifact_path}/")
    else:
        typer.secho("warning: MLflow is unreachable; the files are only in OUTPUT", fg=typer.colors.YELLOW, err=True)


@app.command(epilog="Example: lossyvision sensitivity runs/demo --images 16 --mode gradient")
def sensitivity(
    output: str = typer.Argument(..., help="The sweep's output folder (checkpoints, store, sweep.yaml)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model name in the sweep (default: first classifier)."),
    train_level: Optional[float] = typer.Option(None, "--train-level", help="Trial's train level (default: smallest)."),
    repeat: int = typer.Option(0, "--repeat", help="Trial's repeat."),
    images: int = typer.Option(32, "--images", "-n", min=1, help="Test-split images to average over."),
    mode: Literal["gradient", "finite-difference"] = typer.Option(
        "gradient", "--mode", help="gradient (exact, every block) or finite-difference."),
    eps: float = typer.Option(1.0, "--eps", help="finite-difference step in JPEG DCT units (YCbCr 0..255)."),
    blocks: Optional[int] = typer.Option(None, "--blocks", min=1, help="Sample this many blocks per image."),
    seed: int = typer.Option(0, "--seed"),
    device: Literal["cpu", "cuda"] = typer.Option("cpu", "--device", help="cpu or cuda."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Also log the files to the sweep's MLflow run."),
) -> None:
    """DCT-frequency sensitivity maps of a trained classifier."""
    from lossyvision.output import OutputError  # lazy: loads pandas; --help stays fast
    from lossyvision.sensitivity import SensitivityError, run_sweep_sensitivity  # lazy: loads torch
    from lossyvision.spec import SpecError  # lazy: loads pydantic; --help stays fast
    from lossyvision.sweep.trials import TrialError  # lazy: loads pandas; --help stays fast

    check_output(output)
    try:
        with clean_errors():
            done = run_sweep_sensitivity(output, model=model, train_level=train_level, repeat=repeat,
                                         n_images=images, mode=mode, eps=eps, blocks_per_image=blocks, seed=seed,
                                         device=device)
    except (SensitivityError, SpecError, OutputError, TrialError, KeyError) as e:
        fail(str(e).strip("'\""))
    typer.echo(done.result.describe())
    for p in done.paths:
        typer.echo(f"wrote {p}")
    if mlflow:
        _log_artifacts(output, done.paths, "sensitivity")


@app.command(epilog="Example: lossyvision advise runs/demo-budget --budget 2TB --images-available 10M")
def advise(
    output: str = typer.Argument(..., help="The budget sweep's output folder (results.parquet, sweep.yaml)."),
    budget: Optional[str] = typer.Option(None, "--budget", help="Your storage budget, e.g. 2TB, 500GiB."),
    images_available: Optional[str] = typer.Option(
        None, "--images-available", help="Images you could store, e.g. 10M, 1.5k (default: the sweep's train set)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Metric to fit, error = 1 - metric (default top1)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model of the sweep (default: the only one)."),
    test_level: Optional[str] = typer.Option(
        None, "--test-level", help="Test level whose error is fitted, or 'same' (default: the smallest)."),
    store_uri: Optional[str] = typer.Option(None, "--store", help="Compressed store (default: the sweep's)."),
    bootstrap: int = typer.Option(300, "--bootstrap", min=0, help="Bootstrap refits for the intervals."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    as_json: bool = typer.Option(False, "--json", help="Print the verdicts as data (what OUTPUT/verdict.json holds)."),
) -> None:
    """Recommend a compression level: the report's verdict, or for a budget sweep its fitted scaling law.

    A sweep without budgets gets the report's verdict (per model: the distance to store at, with its
    95% bound, or why the data cannot tell). A budget sweep: exits with code 3, saying why, when the
    fit is too poor or the budget asks it to extrapolate.
    """
    from lossyvision.advisor import advise_output, format_report, parse_count  # lazy: loads pandas; --help stays fast
    from lossyvision.output import OutputError, raw_sweep  # lazy: loads pandas; --help stays fast
    from lossyvision.spec import SpecError  # lazy: loads pydantic; --help stays fast

    try:
        with clean_errors():
            budgets = raw_sweep(output).get("budgets")
    except (SpecError, OutputError) as e:
        fail(str(e))
    if not budgets:
        given = [n for n, v in (("--budget", budget), ("--images-available", images_available),
                                ("--test-level", test_level), ("--store", store_uri)) if v is not None]
        if given:
            fail(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} to a budget sweep; "
                 f"{output} has no budgets")
        from lossyvision.report.build import analyse  # lazy: loads pandas; --help stays fast
        from lossyvision.report.cells import ReportError  # lazy: loads pandas; --help stays fast

        try:
            result = analyse(output)
        except ReportError as e:
            fail(str(e))
        found = [v for v in result.verdicts if (model is None or v.model == model) and
                 (metric is None or v.metric == metric)]
        if not found:
            fail("no verdict: " + ("; ".join(result.notes) or "no results of the current configuration"))
        if as_json:
            import json

            from lossyvision.report.verdict import verdict_records  # lazy: loads pandas; --help stays fast

            typer.echo(json.dumps(verdict_records(found), indent=1))
            return
        for line in result.lines if (model is None and metric is None) else [v.text for v in found]:
            typer.echo(line)
        return
    if as_json:
        fail(f"--json prints the verdicts of a sweep without budgets; {output} is a budget sweep (its fit is in "
             "scaling_fit.json)")
    try:
        budget_bytes = parse_bytes(budget) if budget is not None else None
        if budget_bytes is not None and budget_bytes <= 0:
            raise ValueError(f"--budget must be > 0, got {budget}")
        available = parse_count(images_available) if images_available is not None else None
        level: float | str | None = test_level
        if test_level is not None and test_level != "same":
            try:
                level = float(test_level)
            except ValueError:
                raise ValueError(f"--test-level must be a number or 'same', got {test_level!r}") from None
        check_output(output)
        report = advise_output(output, budget=budget_bytes, images_available=available, metric=metric,
                               model=model, test_level=level, store_uri=store_uri, n_bootstrap=bootstrap,
                               seed=seed)
    except (SpecError, ValueError) as e:
        fail(*(error_line(e) or (str(e), 2)))
    typer.echo(format_report(report))
    typer.echo(f"\nwrote {output.rstrip('/')}/scaling_fit.json")
    if report.any_refused:
        typer.secho("advice refused: the fit cannot support extrapolating to what was asked (see above)",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(3)


@app.command(epilog="Example: lossyvision submit sweeps/food101-vit.yaml --address http://127.0.0.1:8265")
def submit(
    sweep_file: Optional[Path] = typer.Argument(None, help="Sweep YAML file to run on the cluster."),
    address: Optional[str] = typer.Option(
        None, "--address", envvar="RAY_API_SERVER_ADDRESS",
        help="The cluster's job server (Ray dashboard), e.g. http://127.0.0.1:8265."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Print the job id and return without following the logs."),
    status: Optional[str] = typer.Option(None, "--status", metavar="JOB", help="Show a submitted job's status."),
    stop: Optional[str] = typer.Option(None, "--stop", metavar="JOB", help="Stop a submitted job."),
    env: list[str] = typer.Option([], "--env", metavar="NAME=VALUE", help="Extra env var for the job (repeatable)."),
    ship_code: bool = typer.Option(
        False, "--ship-code", help="Upload this checkout's lossyvision package with the job (no image rebuild)."),
    manifest: Optional[Path] = typer.Option(
        None, "--manifest", metavar="OVERLAY",
        help="Print a new RayJob for SWEEP_FILE from this kustomize overlay (e.g. k8s/overlays/gpu), named "
             "<sweep>-<id>, with its sweep ConfigMap, for `kubectl create -f -`; no Ray job server involved."),
    yes: bool = typer.Option(False, "--yes", help="Run a grid over the cap (200 trials or 5000 evaluations)."),
    wait_for_nodes: bool = typer.Option(
        False, "--wait-for-nodes", help="The job starts even when no node has the trials' resources yet "
                                        "(an autoscaler that does not report its node groups adds them)."),
) -> None:
    """Submit a sweep to a Ray cluster through the Job Submission API, or print it as a new RayJob.

    Streams the job's logs and exits 1 if it fails. RAY_AUTH_TOKEN, if set, is sent as the
    bearer token of clusters with token authentication. Each submission is named
    <sweep name>-<short id>.
    """
    from lossyvision import submit as submission  # lazy: loads pydantic; --help stays fast

    if sum(x is not None for x in (sweep_file, status, stop)) != 1:
        fail("give exactly one of SWEEP_FILE, --status JOB or --stop JOB")
    if manifest is not None:
        if sweep_file is None or env or ship_code or no_wait:
            fail("--manifest takes a SWEEP_FILE and no --env, --ship-code or --no-wait")
        try:
            sweep_name = submission.check_sweep_file(sweep_file)
            docs = submission.rayjob_manifests(submission.render_overlay(manifest),
                                               sweep_file.read_text(encoding="utf-8"), sweep_name)
        except submission.SubmitError as e:
            fail(str(e))
        typer.echo(submission.dump_manifests(docs), nl=False)
        for warning in submission.local_path_warnings(sweep_file.read_text(encoding="utf-8")):
            typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
        job = docs[-1]["metadata"]
        typer.echo(f"RayJob {job['name']} (namespace {job.get('namespace', 'default')}) and its ConfigMap: "
                   "pipe into `kubectl create -f -`", err=True)
        return
    try:
        from lossyvision.runners import submit as runner  # lazy: loads ray

        if status is not None:
            info = runner.job_info(address, status)
            typer.echo(submission.format_status(info))
            raise typer.Exit(submission.exit_code(info["status"]))
        if stop is not None:
            stopped = runner.stop_job(address, stop)
            typer.echo(f"job {stop}: {'stop requested' if stopped else 'had already ended'}")
            return
        result = runner.submit_sweep(str(sweep_file), address, wait=not no_wait,
                                     env_vars=submission.parse_env_pairs(env), ship_code=ship_code,
                                     echo=lambda text: typer.echo(text, nl=False), yes=yes,
                                     wait_for_nodes=wait_for_nodes)
    except submission.SubmitError as e:
        fail(str(e))
    except KeyboardInterrupt:
        typer.echo("\ndetached: the job keeps running (lossyvision submit --status JOB / --stop JOB)", err=True)
        raise typer.Exit(130) from None
    if no_wait:
        typer.echo(f"job {result.job_id}: {result.status}")
        return
    typer.echo(f"job {result.job_id}: {result.status}" + (f" ({result.message})" if result.message else ""))
    raise typer.Exit(submission.exit_code(result.status))


def main() -> None:
    """The console script: a usage error is one line too (``error: ... (see CMD --help)``)."""
    import sys

    try:
        code = app(standalone_mode=False, prog_name="lossyvision")
    except (typer.Exit, typer.Abort):
        raise
    except typer.TyperException as e:  # typer's own click: usage errors, bad parameters
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":  # its help was printed when it was made
            sys.exit(getattr(e, "exit_code", 2))
        message = " ".join(e.format_message().split()) if hasattr(e, "format_message") else str(e)
        message = message.replace("Value error, ", "")
        param = getattr(e, "param", None)
        if param is not None and getattr(param, "opts", None) and param.opts[0] not in message:
            message = f"{param.opts[0]}: {message}"
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        typer.secho(f"error: {message}{hint}", fg=typer.colors.RED, err=True)
        sys.exit(getattr(e, "exit_code", 2))
    except Exception as e:  # a cloud URL's error met outside a command's own handling: one line too
        cloud = cloud_error(e)
        if cloud is None:
            raise
        typer.secho(f"error: {cloud}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
