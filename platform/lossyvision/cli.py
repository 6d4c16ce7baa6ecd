"""The ``lossyvision`` command line. Each command is a thin shell over a module function."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    help="How far can you lossily compress your image data before your vision models notice?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sweep_app = typer.Typer(help="Run, inspect and sync sweeps (train x test grids).", no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print a clear error (no traceback) and exit."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


# --- demo data ----------------------------------------------------------------------------------
@app.command("demo-data")
def demo_data(
    out: Path = typer.Argument(..., help="Folder to write the demo dataset into."),
    png: bool = typer.Option(False, "--png", help="Store originals as PNG (as Cityscapes) instead of JPEG."),
) -> None:
    """Build the small labelled demo dataset of real photos, offline and deterministically."""
    from lossyvision.demo import build_demo_dataset

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
@app.command()
def compress(
    sweep_file: Optional[Path] = typer.Argument(
        None, help="Sweep YAML: take dataset, codec, levels (train + test), store and options from it."),
    source: Optional[str] = typer.Option(None, "--source", help="Dataset root (folder or s3:// URI)."),
    out: Optional[str] = typer.Option(None, "--out", help="Store to write: OUT/<codec>-<level>/..., manifest."),
    dataset: str = typer.Option("imagefolder", "--dataset", help="Dataset layout: imagefolder, food101, ..."),
    codec: str = typer.Option("jpegxl", "--codec", help="Codec name."),
    levels: str = typer.Option("0,0.5,1,2,5,10", "--levels", help="Comma-separated levels (jpegxl: distances)."),
    effort: Optional[int] = typer.Option(None, "--effort", help="Encoder effort (jpegxl: 1..10, default 7)."),
    on_error: str = typer.Option("skip", "--on-error", help="skip: record bad images and go on; fail: stop."),
    max_pixels: int = typer.Option(100_000_000, "--max-pixels", help="Reject images with more pixels."),
    quality_metric: Optional[str] = typer.Option(
        None, "--quality-metric", help="Measure achieved quality on a sample: ssimulacra2 or butteraugli."),
    quality_sample: int = typer.Option(16, "--quality-sample", help="Images per level whose quality is measured."),
    png_sample: str = typer.Option("256", "--png-sample",
                                   help="Images per split with a lossless PNG baseline (the report's PNG line), or 'all'."),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", help="CPUs of the local Ray (default: all)."),
) -> None:
    """Compress a dataset at every level on Ray and write the manifest (resumable)."""
    from rich.console import Console

    from lossyvision import compress as job
    from lossyvision.spec import SpecError, load_sweep

    try:
        if sweep_file is not None:
            given = [n for n, v in (("--source", source), ("--out", out), ("--effort", effort)) if v is not None]
            if given:
                fail(f"{', '.join(given)} cannot be combined with a sweep file (set them in the file)")
            args = job.sweep_job_args(load_sweep(sweep_file))
        else:
            if not source or not out:
                fail("give --source DIR and --out DIR, or a sweep file")
            args = {"source": source, "store_uri": out, "dataset": dataset, "codec": codec,
                    "codec_options": {} if effort is None else {"effort": effort},
                    "levels": job.parse_levels(levels), "on_error": on_error, "max_pixels": max_pixels,
                    "quality_metric": quality_metric, "quality_sample": quality_sample,
                    "png_sample": job.parse_png_sample(png_sample)}
        from lossyvision.runners.compress import compress_job

        result = compress_job(**args, num_cpus=num_cpus, log=lambda msg: typer.echo(msg, err=True))
    except (SpecError, job.CompressError) as exc:
        fail(str(exc), code=1 if isinstance(exc, job.CompressError) else 2)
    except OSError as exc:  # an unwritable store, a vanished folder: say so, no traceback
        fail(f"{type(exc).__name__}: {exc}", code=1)
    console = Console()
    if not console.is_terminal:  # logs and CI: don't squeeze the table into 80 columns
        console = Console(width=max(console.width, 110))
    console.print(job.render_summary(result.summary))
    typer.echo(f"manifest: {args['store_uri']}/manifest.parquet ({len(result.manifest)} rows; "
               f"{result.done} compressed now, {result.skipped} already done); summary.csv beside it")


# --- sweeps -------------------------------------------------------------------------------------
@sweep_app.command("run")
def sweep_run(
    sweep_file: Path = typer.Argument(..., help="Sweep YAML file."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: RAY_ADDRESS, else local)."),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", help="CPUs of the local Ray (default: all)."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not build the report at the end."),
) -> None:
    """Compress, train every (model, train level, repeat) on Ray Tune, evaluate the grid, report.

    Rerunning on an existing output does only what is missing (trials, cells, MLflow runs)."""
    from lossyvision.output import OutputError
    from lossyvision.spec import SpecError
    from lossyvision.sweep.plan import PlanError
    from lossyvision.sweep.results import ResultsError
    from lossyvision.sweep.run import run_sweep, summary_lines

    try:
        outcome = run_sweep(sweep_file, echo=typer.echo, ray_address=address, num_cpus=num_cpus,
                            build_report=not no_report)
    except (SpecError, PlanError, OutputError, ResultsError) as e:
        fail(str(e))
    for line in summary_lines(outcome):
        typer.echo(line)
    if not outcome.ok:
        raise typer.Exit(1)


@sweep_app.command("status")
def sweep_status(output: str = typer.Argument(..., help="The sweep's output folder.")) -> None:
    """Show the grid with done, running, failed and missing cells."""
    from rich.console import Console

    from lossyvision.output import OutputError, load_output_sweep, load_plan
    from lossyvision.spec import SpecError
    from lossyvision.sweep.results import ResultsError
    from lossyvision.sweep.status import grid_status, render_status, stale_entries

    try:
        sweep = load_output_sweep(output)
        grid = load_plan(output)
        table = grid_status(sweep, output, grid)
        stale = stale_entries(output, grid)
    except (SpecError, OutputError, ResultsError) as e:
        fail(str(e))
    Console().print(render_status(sweep, table, stale))


@sweep_app.command("sync")
def sweep_sync(output: str = typer.Argument(..., help="The sweep's output folder.")) -> None:
    """Push results missing from MLflow (after an outage) to the tracking server."""
    from lossyvision.output import OutputError
    from lossyvision.spec import SpecError
    from lossyvision.sweep.results import ResultsError
    from lossyvision.sweep.run import sync_output

    try:
        sync_output(output, echo=typer.echo)
    except (SpecError, OutputError, ResultsError) as e:
        fail(str(e))
    except Exception as e:  # the server is still down: say so, no traceback
        fail(f"cannot reach MLflow: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", code=1)


# --- report and analysis -----------------------------------------------------------------------
@app.command()
def report(
    output: str = typer.Argument(..., help="The sweep's output folder."),
    keep: Optional[float] = typer.Option(
        None, "--keep", help="Verdict threshold: % of the baseline a level must keep (default: the sweep's "
                             "report.keep, 99)."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Also log the files to the sweep's MLflow run."),
) -> None:
    """Draw the study's figures and write OUTPUT/report/index.html; print the verdict."""
    from lossyvision.report.build import build_report
    from lossyvision.report.cells import ReportError

    try:
        result = build_report(output, keep_fraction=None if keep is None else keep / 100.0)
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
    from lossyvision.spec import SpecError
    from lossyvision.sweep.tracking import log_report_artifacts

    try:
        ok = log_report_artifacts(output, paths, artifact_path=artifact_path)
    except SpecError as e:
        typer.secho(f"warning: not logged to MLflow: {str(e).splitlines()[0]}", fg=typer.colors.YELLOW, err=True)
        return
    if ok:
        typer.echo(f"logged {len(paths)} file(s) to MLflow under {artifact_path}/")
    else:
        typer.secho("warning: MLflow is unreachable; the files are only in OUTPUT", fg=typer.colors.YELLOW, err=True)


@app.command()
def sensitivity(
    output: str = typer.Argument(..., help="The sweep's output folder (checkpoints, store, sweep.yaml)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model name in the sweep (default: first classifier)."),
    train_level: Optional[float] = typer.Option(None, "--train-level", help="Trial's train level (default: smallest)."),
    repeat: int = typer.Option(0, "--repeat", help="Trial's repeat."),
    images: int = typer.Option(32, "--images", "-n", min=1, help="Test-split images to average over."),
    mode: str = typer.Option("gradient", "--mode", help="gradient (exact, every block) or finite-difference."),
    eps: float = typer.Option(1.0, "--eps", help="finite-difference step in JPEG DCT units (YCbCr 0..255)."),
    blocks: Optional[int] = typer.Option(None, "--blocks", min=1, help="Sample this many blocks per image."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Also log the files to the sweep's MLflow run."),
) -> None:
    """DCT-frequency sensitivity maps of a trained classifier."""
    from lossyvision.sensitivity import SensitivityError, run_sweep_sensitivity
    from lossyvision.spec import SpecError
    from lossyvision.sweep.trials import TrialError

    try:
        done = run_sweep_sensitivity(output, model=model, train_level=train_level, repeat=repeat, n_images=images,
                                     mode=mode, eps=eps, blocks_per_image=blocks, seed=seed, device=device)
    except (SensitivityError, SpecError, TrialError, KeyError) as e:
        fail(str(e).strip("'\""))
    typer.echo(done.result.describe())
    for p in done.paths:
        typer.echo(f"wrote {p}")
    if mlflow:
        _log_artifacts(output, done.paths, "sensitivity")


@app.command()
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
) -> None:
    """Recommend a compression level: the report's verdict, or for a budget sweep its fitted scaling law.

    A sweep without budgets gets the report's verdict (per model: the distance to store at, with its
    95% bound, or why the data cannot tell). A budget sweep: exits with code 3, saying why, when the
    fit is too poor or the budget asks it to extrapolate.
    """
    from lossyvision.advisor import advise_output, format_report, parse_count
    from lossyvision.output import OutputError, load_output_sweep
    from lossyvision.spec import SpecError
    from lossyvision.units import parse_bytes

    try:
        sweep = load_output_sweep(output)
    except (SpecError, OutputError) as e:
        fail(str(e))
    if not sweep.budgets:
        given = [n for n, v in (("--budget", budget), ("--images-available", images_available),
                                ("--test-level", test_level), ("--store", store_uri)) if v is not None]
        if given:
            fail(f"{', '.join(given)} only apply to a budget sweep; {output} has no budgets")
        from lossyvision.report.build import analyse
        from lossyvision.report.cells import ReportError

        try:
            result = analyse(output)
        except ReportError as e:
            fail(str(e))
        found = [v for v in result.verdicts if (model is None or v.model == model) and
                 (metric is None or v.metric == metric)]
        if not found:
            fail("no verdict: " + ("; ".join(result.notes) or "no results of the current configuration"))
        for line in result.lines if (model is None and metric is None) else [v.text for v in found]:
            typer.echo(line)
        return
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
        report = advise_output(output, budget=budget_bytes, images_available=available, metric=metric,
                               model=model, test_level=level, store_uri=store_uri, n_bootstrap=bootstrap,
                               seed=seed)
    except (SpecError, ValueError) as e:
        fail(str(e))
    typer.echo(format_report(report))
    typer.echo(f"\nwrote {output.rstrip('/')}/scaling_fit.json")
    if report.any_refused:
        typer.secho("advice refused: the fit cannot support extrapolating to what was asked (see above)",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(3)


@app.command()
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
) -> None:
    """Submit a sweep to a Ray cluster through the Job Submission API, or print it as a new RayJob.

    Streams the job's logs and exits 1 if it fails. RAY_AUTH_TOKEN, if set, is sent as the
    bearer token of clusters with token authentication. Each submission is named
    <sweep name>-<short id>.
    """
    from lossyvision import submit as submission

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
        job = docs[-1]["metadata"]
        typer.echo(f"RayJob {job['name']} (namespace {job.get('namespace', 'default')}) and its ConfigMap: "
                   "pipe into `kubectl create -f -`", err=True)
        return
    try:
        from lossyvision.runners import submit as runner

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
                                     echo=lambda text: typer.echo(text, nl=False))
    except submission.SubmitError as e:
        fail(str(e))
    except KeyboardInterrupt:
        typer.echo("\ndetached: the job keeps running (lossyvision submit --status JOB / --stop JOB)", err=True)
        raise typer.Exit(130)
    if no_wait:
        typer.echo(f"job {result.job_id}: {result.status}")
        return
    typer.echo(f"job {result.job_id}: {result.status}" + (f" ({result.message})" if result.message else ""))
    raise typer.Exit(submission.exit_code(result.status))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
