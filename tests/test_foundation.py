"""The package layout and the registry type."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lossyvision.registry import Registry, UnknownNameError


def test_stdlib_platform_not_shadowed(repo_root):
    # From the repo root, `platform` must still be Python's standard module.
    out = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system()); print(platform.__file__)"],
        cwd=repo_root, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert out[0] in {"Linux", "Darwin", "Windows"}
    assert "platform/lossyvision" not in out[1]
    assert not (repo_root / "platform" / "__init__.py").exists()


def test_registry_duplicate_raises_and_unknown_lists_known():
    reg: Registry[int] = Registry("widget")

    @reg.register("a")
    def make_a():
        return 1

    reg.add("b", 2)
    assert reg.get("a") is make_a and reg.names() == ["a", "b"] and "b" in reg
    with pytest.raises(ValueError, match="duplicate widget name 'a'"):
        reg.add("a", 3)
    with pytest.raises(UnknownNameError, match=r"unknown widget 'zzz'; known: a, b"):
        reg.get("zzz")


def test_import_has_no_side_effects():
    # Importing the package and its registries must not start Ray or touch MLflow.
    code = (
        "import sys, lossyvision, lossyvision.cli, lossyvision.spec;"
        "print('ray' in sys.modules and __import__('ray').is_initialized())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_help_on_every_command():
    from typer.testing import CliRunner

    from lossyvision.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    commands = ["demo-data", "compress", "sweep", "report", "sensitivity", "advise", "submit"]
    for cmd in commands:
        assert cmd in result.output
        sub = runner.invoke(app, [cmd, "--help"])
        assert sub.exit_code == 0, (cmd, sub.output)
    for cmd in ["run", "status", "sync"]:
        sub = runner.invoke(app, ["sweep", cmd, "--help"])
        assert sub.exit_code == 0, (cmd, sub.output)


def test_atomic_write_is_whole_and_readable_by_others(tmp_path):
    import os
    import stat

    from lossyvision.store import atomic_write_bytes, format_level, level_dir, output_relpath, read_bytes

    target = tmp_path / "a" / "b.bin"
    atomic_write_bytes(str(target), b"one")
    atomic_write_bytes(str(target), b"two")
    assert read_bytes(str(target)) == b"two"
    assert os.listdir(target.parent) == ["b.bin"]  # no temp files left behind
    assert stat.S_IMODE(os.stat(target).st_mode) & 0o044  # not owner-only
    assert [format_level(x) for x in (0, 0.5, 1.0, 10)] == ["0", "0.5", "1", "10"]
    assert level_dir("jpegxl", 2.0) == "jpegxl-2"
    assert output_relpath("cls/a b.JPG", ".jxl") == "cls/a b.jxl"
    assert output_relpath("noext", ".jxl") == "noext.jxl"
