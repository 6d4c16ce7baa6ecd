"""The body of ``lossyvision demo-data``: build the demo dataset and say what it holds."""

from __future__ import annotations

from pathlib import Path

import typer

from lossyvision.commands.errors import fail
from lossyvision.demo import build_demo_dataset


def demo_data(out: Path, png: bool) -> None:
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
