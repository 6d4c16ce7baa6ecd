"""The command line under stress: damaged output files, a busy output or store, conflicting and
malformed options, --version, --help, ``sweep status`` with repeats. Refusals go through the real
``lossyvision`` command as a subprocess where it matters: one line, no traceback, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from badimages import jpeg_bytes, photo  # noqa: E402
from lossyvision.cli import app  # noqa: E402

PLATFORM = str(Path(__file__).resolve().parents[1] / "platform")
#: The installed console script (what a user types), else the module.
COMMAND = ([str(Path(sys.executable).parent / "lossyvision")] if (Path(sys.executable).parent / "lossyvision").exists()
           else [sys.executable, "-m", "lossyvision.cli"])
MODEL = {"name": "m", "task": "classification", "arch": "resnet10t", "epochs": 1, "batch_size": 4,
         "image_size": 32}


def lossyvision(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": PLATFORM}
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def make_output(tmp: Path, repeats: int = 1) -> tuple[Path, Path]:
    """A sweep file and the output a run left (sweep copy, state, a store with a manifest), no Ray."""
    from lossyvision import manifest

    data = tmp / "data" / "train" / "cat"
    data.mkdir(parents=True)
    (data / "a.jpg").write_bytes(jpeg_bytes(photo("chelsea", (32, 32))))
    out = tmp / "out"
    sweep = {"name": "s", "dataset": {"kind": "imagefolder", "root": str(tmp / "data")},
             "codec": {"name": "jpegxl", "effort": 1}, "train_levels": [0, 1], "test_levels": [0, 1],
             "models": [MODEL], "repeats": repeats, "output": str(out)}
    sweep_file = tmp / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep))
    out.mkdir()
    (out / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    (out / "state.json").write_text(json.dumps({"driver": None, "trials": {}, "cells": {}}))
    from lossyvision import output as outdir
    from lossyvision.sweep.plan import CellSpec, Grid, TrialSpec

    trials = [TrialSpec("m", level, r, config=f"c0ffee{r}{int(level)}00") for level in (0.0, 1.0) for r in range(repeats)]
    outdir.mark(str(out))
    outdir.write_plan(str(out), Grid(trials, [CellSpec(t, level, "5eed000000") for t in trials for level in (0.0, 1.0)]))
    manifest.write_manifest(str(out / "store"), pd.DataFrame([{
        "relpath": "train/cat/a.jpg", "split": "train", "codec": "jpegxl", "level": 1.0, "status": "ok",
        "output_path": "jpegxl-1/train/cat/a.jxl", "compressed_bytes": 10}]))
    return sweep_file, out


def truncate(path: Path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path.read_bytes()


# --- damaged output files ------------------------------------------------------------------------
DAMAGED = [("sweep.yaml", "sweep.yaml is damaged"), ("state.json", "state.json is damaged (not valid JSON"),
           ("store/manifest.parquet", "manifest.parquet is damaged")]


@pytest.mark.parametrize("name, says", DAMAGED, ids=[d[0] for d in DAMAGED])
def test_damaged_output_file_gives_one_line_in_status_report_run_compress(tmp_path, name, says):
    sweep_file, out = make_output(tmp_path)
    damaged = truncate(out / name)
    before = snapshot(tmp_path)
    runner = CliRunner()
    runs = {
        "status": runner.invoke(app, ["sweep", "status", str(out)]),
        "report": runner.invoke(app, ["report", str(out), "--no-mlflow"]),
        "run": runner.invoke(app, ["sweep", "run", str(sweep_file)]),
        "compress": runner.invoke(app, ["compress", str(sweep_file)]),
    }
    for command, r in runs.items():
        lines = r.output.strip().splitlines()
        assert r.exit_code in (1, 2), (command, r.output)
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], (command, r.output)
        assert r.exception is None or isinstance(r.exception, SystemExit), (command, r.exception)
        assert "delete it" in lines[0] or "move it away" in lines[0], (command, lines[0])  # the way back
    assert (out / name).read_bytes() == damaged  # nothing overwritten
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", [["sweep", "status", "OUT"], ["sweep", "run", "FILE"]], ids=["status", "run"])
def test_damaged_state_through_the_real_command(tmp_path, command):
    sweep_file, out = make_output(tmp_path)
    damaged = truncate(out / "state.json")
    before = snapshot(tmp_path)
    args = [str(out) if a == "OUT" else str(sweep_file) if a == "FILE" else a for a in command]
    r = lossyvision(*args, cwd=tmp_path)
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr + r.stdout
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and "state.json is damaged" in line and "delete it" in line
    assert (out / "state.json").read_bytes() == damaged and snapshot(tmp_path) == before


def test_damaged_state_file_is_never_overwritten_by_the_driver(tmp_path):
    from lossyvision.store import DamagedFileError
    from lossyvision.sweep.status import SweepState

    _, out = make_output(tmp_path)
    (out / "state.json").write_text('{"driver": ')
    with pytest.raises(DamagedFileError, match=r"state.json is damaged .* delete it and rerun"):
        SweepState(str(out))
    assert (out / "state.json").read_text() == '{"driver": '


def test_compress_into_a_store_with_a_damaged_manifest(tmp_path):
    _, out = make_output(tmp_path)
    damaged = truncate(out / "store" / "manifest.parquet")
    r = lossyvision("compress", "--source", str(tmp_path / "data"), "--out", str(out / "store"), cwd=tmp_path)
    assert r.returncode == 1 and "manifest.parquet is damaged" in r.stderr and "Traceback" not in r.stderr
    assert (out / "store" / "manifest.parquet").read_bytes() == damaged


# --- one writer ----------------------------------------------------------------------------------
def test_second_sweep_run_and_compress_are_refused_at_once_naming_the_holder(tmp_path):
    from lossyvision.lock import writer_lock

    sweep_file, out = make_output(tmp_path)
    with writer_lock(str(out), "lossyvision sweep run"), writer_lock(str(out / "store"), "lossyvision compress"):
        start = time.monotonic()
        run = lossyvision("sweep", "run", str(sweep_file), cwd=tmp_path)
        comp = lossyvision("compress", "--source", str(tmp_path / "data"), "--out", str(out / "store"),
                           cwd=tmp_path)
        assert time.monotonic() - start < 60
    for r, command in ((run, "sweep run"), (comp, "compress")):
        assert r.returncode == 1, r.stderr
        assert f"is in use by `lossyvision {command}` (pid {os.getpid()} on host " in r.stderr
        assert " since " in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


# --- options -------------------------------------------------------------------------------------
@pytest.mark.parametrize("option", [["--levels", "1"], ["--codec", "png"], ["--on-error", "fail"],
                                    ["--dataset", "voc"], ["--animated", "first"], ["--max-pixels", "5"],
                                    ["--allow-outside-symlinks"]])
def test_compress_refuses_options_a_sweep_file_sets(tmp_path, option):
    sweep_file, _ = make_output(tmp_path)
    r = CliRunner().invoke(app, ["compress", str(sweep_file), *option])
    assert r.exit_code == 2, r.output
    assert f"{option[0]} cannot be combined with a sweep file" in r.output


@pytest.mark.parametrize("levels, says", [("0,,1", "empty item"), ("0,1,", "empty item"), (",", "empty item"),
                                          ("", "no level given"), ("1;2", "expected numbers"),
                                          ("nan", "finite"), ("inf,1", "finite"), ("1,1.0", "given twice"),
                                          ("0,30", "must be in 0..25")])
def test_compress_refuses_malformed_levels(tmp_path, levels, says):
    (tmp_path / "d").mkdir()
    r = CliRunner().invoke(app, ["compress", "--source", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                                 "--levels", levels])
    assert r.exit_code != 0 and says in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_compress_refuses_a_system_folder_as_out(tmp_path):
    r = CliRunner().invoke(app, ["compress", "--source", str(tmp_path), "--out", "/etc"])
    assert r.exit_code == 2 and "--out: /etc is a system folder" in r.output


def test_bad_choice_is_one_line_through_the_real_command(tmp_path):
    r = lossyvision("compress", "--source", str(tmp_path), "--out", str(tmp_path / "o"), "--on-error", "explode",
                    cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: Invalid value for '--on-error': 'explode' is not one of 'skip', 'fail'. "
                                "(see lossyvision compress --help)")


def test_version():
    from lossyvision import __version__

    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"lossyvision {__version__}"


def _commands() -> list[list[str]]:
    """Every command of the CLI, sub-commands included: a new command is covered without editing this test."""
    import typer

    def walk(group, prefix: list[str]) -> list[list[str]]:
        found = []
        for name, cmd in sorted(group.commands.items()):  # a group has commands (Typer vendors its own click)
            found += walk(cmd, [*prefix, name]) if hasattr(cmd, "commands") else [[*prefix, name]]
        return found

    return walk(typer.main.get_command(app), [])


COMMANDS = _commands()


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_help_shows_an_example_and_the_allowed_values(command):
    r = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "Example" in text and f"lossyvision {' '.join(command)}" in text.split("Example", 1)[1]
    from lossyvision.codecs import CODECS
    from lossyvision.datasets import DATASETS

    allowed = {"compress": ["skip", "fail", "ssimulacra2", "butteraugli", "refuse", "first", *CODECS.names(),
                            *DATASETS.names()],
               "inspect": [*CODECS.names(), *DATASETS.names()],
               "sensitivity": ["gradient", "finite-difference", "cpu", "cuda"]}.get(command[0], [])
    for value in allowed:
        assert value in text, (command, value)


# --- sweep status with repeats -------------------------------------------------------------------
def test_status_with_repeats_labels_each_repeat(tmp_path):
    _, out = make_output(tmp_path, repeats=2)
    r = CliRunner().invoke(app, ["sweep", "status", str(out)], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "bound method" not in r.output
    assert "d0 / r0" in r.output and "d0 / r1" in r.output and "d1 / r1" in r.output


def test_submit_checks_the_grid_and_forwards_yes(tmp_path):
    from lossyvision import submit as submission

    sweep_file, _ = make_output(tmp_path)
    data = yaml.safe_load(sweep_file.read_text())
    data.update(repeats=100, train_levels=[0, 1, 2])
    sweep_file.write_text(yaml.safe_dump(data))
    with pytest.raises(submission.SubmitError, match="over the cap .* pass --yes"):
        submission.check_sweep_file(sweep_file)
    assert submission.check_sweep_file(sweep_file, yes=True) == "s"
    assert submission.entrypoint("s.yaml", yes=True) == "lossyvision sweep run --yes s.yaml"
    assert submission.entrypoint("s.yaml", wait_for_nodes=True) == "lossyvision sweep run --wait-for-nodes s.yaml"
