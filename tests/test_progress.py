"""Progress output: a live bar on a pseudo-terminal, periodic plain lines without one, the sweep's lines.

The compress job runs with the serial executor slowed down, so a few progress lines fall inside it;
the pseudo-terminal is a real one (``pty.openpty``), read by a thread while the bar draws.
"""

from __future__ import annotations

import io
import os
import pty
import re
import threading
import time

import pytest

from lossyvision import compress, manifest
from lossyvision.datasets import create_dataset
from lossyvision.progress import (LogProgress, SweepProgress, TerminalProgress, epoch_line, eta, format_duration,
                                  job_progress)
from test_compress import FAST, small_dataset

LINE = re.compile(r"^\d+/\d+ images \(\d+%\), [\d.]+ images/s, ETA \d+:\d\d, \d+ failed$")
FINAL = re.compile(r"^(\d+)/(\d+) images in \d+:\d\d \([\d.]+ images/s\), (\d+) failed$")


def slow_job(tmp_path, progress, delay: float = 0.15) -> compress.JobResult:
    """A small job with bad inputs (failures), one batch of 2 items every ``delay`` seconds."""
    root = small_dataset(tmp_path / "src", n=2, bad=True)
    records = create_dataset("imagefolder", str(root)).records()

    def slowly(items, params):
        for rows in compress.execute_serially(items, params, batch_size=2):
            time.sleep(delay)
            yield rows

    options = compress.CompressOptions(codec_options=FAST, levels=(1.0, 4.0))
    return compress.run_job(records, str(root), str(tmp_path / "out"), options, slowly, progress=progress)


def test_without_a_terminal_a_line_every_interval_then_a_final_one(tmp_path):
    lines: list[str] = []
    progress = job_progress("compress", lines.append, stream=io.StringIO(), interval=0.1)
    assert isinstance(progress, LogProgress)
    result = slow_job(tmp_path, progress)
    failed = int((result.manifest["status"] == manifest.STATUS_FAILED).sum())
    assert failed > 0 and result.done == len(result.manifest)
    periodic = [ln for ln in lines[:-1] if not ln.startswith("0/")]
    assert len(periodic) >= 2 and all(LINE.match(ln) for ln in periodic), lines
    done = [int(ln.split("/")[0]) for ln in periodic]
    assert done == sorted(done)  # counts only grow
    final = FINAL.match(lines[-1])
    assert final and int(final[1]) == int(final[2]) == result.done and int(final[3]) == failed, lines[-1]


def test_before_anything_finishes_the_line_says_so():
    lines: list[str] = []
    progress = LogProgress(lines.append, interval=0.05)
    progress.start(10)
    time.sleep(0.2)
    progress.close()
    assert lines[0].startswith("0/10 images: starting (") and lines[-1].startswith("0/10 images in")


def test_on_a_pseudo_terminal_a_live_bar(tmp_path, monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    for name in ("NO_COLOR", "TERM_PROGRAM", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w", buffering=1)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    lines: list[str] = []
    try:
        progress = job_progress("compress", lines.append, stream=stream)
        assert isinstance(progress, TerminalProgress)
        result = slow_job(tmp_path, progress, delay=0.3)
    finally:
        stream.close()
        reader.join(timeout=5)
        os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert not lines  # no plain lines on a terminal
    assert "\x1b[" in text and "\r" in text  # drawn with escape codes, redrawn in place
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    frames = [f for f in re.split(r"[\r\n]+", plain) if f.strip().startswith("compress")]
    assert len(frames) >= 3, plain[-500:]
    last = frames[-1]
    assert f"{result.done}/{result.done}" in last and "images/s" in last and "ETA" in last
    failed = int((result.manifest["status"] == manifest.STATUS_FAILED).sum())
    assert f"{failed} failed" in last and "100%" in last


def test_durations_and_eta():
    assert format_duration(5) == "0:05" and format_duration(3723) == "1:02:03" and format_duration(None) == "?"
    assert eta(0, 10, 5.0) is None and eta(5, 10, 5.0) == pytest.approx(5.0)


def test_epoch_lines_say_k_of_n_time_and_eta():
    assert epoch_line(2, 6, 4.04, 4.0) == "epoch 2/6 (4.0 s/epoch, ETA 0:16)"
    assert epoch_line(6, 6, 3.0, 4.0).endswith("ETA 0:00)")
    assert epoch_line(1, None, None, None) == "epoch 1"


def test_sweep_lines_count_the_whole_grid_and_the_phase_eta():
    p = SweepProgress(trials=4, cells=16, trials_done=1, cells_done=4)  # a rerun: some done before
    assert p.line() == "sweep: 1/4 trials, 4/16 cells done"
    p.phase("training", 3)
    first = p.trial_done()
    assert first.startswith("sweep: 2/4 trials, 4/16 cells done; training ETA ")
    p.phase("evaluation", 12)
    assert p.cell_done().startswith("sweep: 2/4 trials, 5/16 cells done; evaluation ETA ")
