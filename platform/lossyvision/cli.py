"""The ``lossyvision`` command line: each command's signature (its options, help and examples); its body is in
:mod:`lossyvision.commands`.

Every refusal is one line on stderr (``error: ...``) and a non-zero exit, never a traceback:
2 for a problem with the command line, a sweep file or an input (a cloud URL without credentials,
unreachable, denied or without its bucket: :mod:`lossyvision.cloud`), 1 for one met while running
(a damaged file lossyvision wrote, whichever it is; a busy output; an OS error, which names its path).
A command's body says so through :mod:`lossyvision.commands.errors`; :func:`main` does for usage errors.
Each command imports its body inside itself, so that ``lossyvision --help`` loads no pandas nor pydantic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from lossyvision import __version__
from lossyvision.cloud import cloud_error
from lossyvision.codecs import CODECS, DEFAULT_CODEC
from lossyvision.datasets import DATASETS

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


# --- demo data ----------------------------------------------------------------------------------
@app.command("demo-data", epilog="Example: lossyvision demo-data data/demo")
def demo_data(
    out: Path = typer.Argument(..., help="Folder to write the demo dataset into."),
    png: bool = typer.Option(False, "--png", help="Store originals as PNG (as Cityscapes) instead of JPEG."),
) -> None:
    """Build the small labelled demo dataset of real photos, offline and deterministically."""
    from lossyvision.commands import demo as command  # lazy: loads pandas, pydantic; --help stays fast

    command.demo_data(out, png)


# --- compress -----------------------------------------------------------------------------------
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
    codec: str = typer.Option(DEFAULT_CODEC, "--codec", help=f"Codec: {CODEC_NAMES}."),
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
    from lossyvision.commands import compress as command  # lazy: loads pandas, pydantic; --help stays fast

    command.compress(
        ctx, sweep_file=sweep_file, source=source, out=out, dataset=dataset, option=option, codec=codec,
        levels=levels, effort=effort, on_error=on_error, max_pixels=max_pixels, quality_metric=quality_metric,
        quality_sample=quality_sample, animated=animated, allow_outside_symlinks=allow_outside_symlinks,
        layout=layout, shard_size=shard_size, png_sample=png_sample, num_cpus=num_cpus, yes=yes)


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
    from lossyvision.commands import sweep as command  # lazy: loads pandas, pydantic; --help stays fast

    command.run(sweep_file, address=address, num_cpus=num_cpus, no_report=no_report, yes=yes,
                wait_for_nodes=wait_for_nodes, register=register)


@sweep_app.command("plan", epilog="Example: lossyvision sweep plan sweeps/demo.yaml")
def sweep_plan(
    sweep_file: Path = typer.Argument(..., help="Sweep YAML file."),
    sample: int = typer.Option(16, "--sample", min=1, help="Images encoded to estimate bytes and time, e.g. 32."),
) -> None:
    """Check a sweep file and say what `sweep run` would do: the grid (done, stale, to run), the
    images to compress, the bytes and files it would write, and the compression time. Writes nothing."""
    from lossyvision.commands import sweep as command  # lazy: loads pandas, pydantic; --help stays fast

    command.plan(sweep_file, sample=sample)


@sweep_app.command("status", epilog="Example: lossyvision sweep status runs/demo")
def sweep_status(output: str = typer.Argument(..., help="The sweep's output folder.")) -> None:
    """Show the grid with done, running, failed and missing cells."""
    from lossyvision.commands import sweep as command  # lazy: loads pandas, pydantic; --help stays fast

    command.status(output)


@sweep_app.command("sync", epilog="Example: lossyvision sweep sync runs/demo")
def sweep_sync(output: str = typer.Argument(..., help="The sweep's output folder.")) -> None:
    """Push results missing from MLflow (after an outage) to the tracking server."""
    from lossyvision.commands import sweep as command  # lazy: loads pandas, pydantic; --help stays fast

    command.sync(output)


# --- inspect ------------------------------------------------------------------------------------
@app.command("inspect", epilog="Example: lossyvision inspect data/demo --sample 4")
def inspect_command(
    dataset: Optional[str] = typer.Argument(None, help="Dataset root (folder, list file or s3:// URI)."),
    kind: str = typer.Option("imagefolder", "--kind", "-k", help=f"Dataset kind: {DATASET_NAMES}."),
    option: list[str] = typer.Option([], "--option", "-o", metavar="KEY=VALUE",
                                     help="A dataset option (repeatable; the value is YAML), e.g. -o masks=true."),
    sweep_file: Optional[Path] = typer.Option(
        None, "--sweep", help="Take the codec, its options and the ladder (train + test levels) from a sweep file; "
                              "also the dataset when DATASET is not given."),
    codec: str = typer.Option(DEFAULT_CODEC, "--codec", help=f"Codec of the estimate: {CODEC_NAMES}."),
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
    from lossyvision.commands import inspect as command  # lazy: loads pandas, pydantic; --help stays fast

    command.inspect(dataset, kind=kind, option=option, sweep_file=sweep_file, codec=codec, levels=levels,
                    effort=effort, sample=sample, limit=limit, max_pixels=max_pixels, as_json=as_json)


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
    from lossyvision.commands import report as command  # lazy: loads pandas, pydantic; --help stays fast

    command.report(output, keep=keep, mlflow=mlflow)


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
    from lossyvision.commands import sensitivity as command  # lazy: loads torch; --help stays fast

    command.sensitivity(output, model=model, train_level=train_level, repeat=repeat, images=images, mode=mode,
                        eps=eps, blocks=blocks, seed=seed, device=device, mlflow=mlflow)


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
    from lossyvision.commands import report as command  # lazy: loads pandas, pydantic; --help stays fast

    command.advise(output, budget=budget, images_available=images_available, metric=metric, model=model,
                   test_level=test_level, store_uri=store_uri, bootstrap=bootstrap, seed=seed, as_json=as_json)


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
    from lossyvision.commands import submit as command  # lazy: loads pandas, pydantic; --help stays fast

    command.submit(sweep_file, address=address, no_wait=no_wait, status=status, stop=stop, env=env,
                   ship_code=ship_code, manifest=manifest, yes=yes, wait_for_nodes=wait_for_nodes)


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
