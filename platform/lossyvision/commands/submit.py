"""The body of ``lossyvision submit``: send a sweep to a Ray cluster's job server (or print it as a RayJob),
follow it, and show or stop a submitted job."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lossyvision import submit as submission
from lossyvision.commands.errors import fail


def submit(sweep_file: Optional[Path], *, address: Optional[str], no_wait: bool, status: Optional[str],
           stop: Optional[str], env: list[str], ship_code: bool, manifest: Optional[Path], yes: bool,
           wait_for_nodes: bool) -> None:
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
