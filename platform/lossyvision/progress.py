"""Progress of long work: a live bar on a terminal, a log line every ~30 s without one, ETAs.

:func:`job_progress` picks the form: on a terminal a rich bar (done/total, rate, ETA, failures so
far), redrawn by rich's own thread; otherwise (a pod's log, CI, a pipe) one plain line every
``LOSSYVISION_PROGRESS_SECONDS`` (30 s) from a timer thread, so a job that takes hours is never
silent for longer, even while no piece of work completes. :class:`SweepProgress` and
:func:`epoch_line` make the sweep's lines: trials and cells done out of all, with ETAs.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from typing import Any, Callable, Protocol, TextIO

DEFAULT_INTERVAL_S = 30.0
INTERVAL_ENV = "LOSSYVISION_PROGRESS_SECONDS"

Log = Callable[[str], None]


def progress_interval(default: float = DEFAULT_INTERVAL_S) -> float:
    """Seconds between progress lines without a terminal (``LOSSYVISION_PROGRESS_SECONDS``)."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, default))
    except ValueError:
        return default
    return value if value > 0 else default


def format_duration(seconds: float | None) -> str:
    """``0:05``, ``1:02:03``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def eta(done: float, total: float, elapsed: float) -> float | None:
    """Seconds left at the rate so far (None before anything is done)."""
    if done <= 0 or elapsed <= 0:
        return None
    return max(0.0, (total - done) * elapsed / done)


class JobProgress(Protocol):
    """What a job reports: its size once, then pieces as they finish."""

    def start(self, total: int) -> None: ...
    def advance(self, done: int, failed: int = 0) -> None: ...
    def close(self) -> None: ...


class _Counts:
    """Done, failed and total, with a rate measured from the end of the first finished batch on (so a
    slow start, such as a cluster starting, does not drag the ETA for the whole job)."""

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.lock = threading.Lock()
        self.start(0)

    def start(self, total: int) -> None:
        with self.lock:
            self.total, self.done, self.failed, self.t0 = int(total), 0, 0, time.monotonic()
            self.first: tuple[float, int] | None = None  # (time, done) once the first batch finished

    def advance(self, done: int, failed: int = 0) -> None:
        with self.lock:
            self.done += int(done)
            self.failed += int(failed)
            if self.first is None:
                self.first = (time.monotonic(), self.done)

    def rate(self) -> float:
        """Pieces per second since the first finished batch (overall until another one arrives)."""
        now = time.monotonic()
        with self.lock:
            done, first = self.done, self.first
        if first is not None and done > first[1] and now > first[0]:
            return (done - first[1]) / (now - first[0])
        elapsed = now - self.t0
        return done / elapsed if elapsed > 0 else 0.0

    def line(self, final: bool = False) -> str:
        with self.lock:
            done, total, failed = self.done, self.total, self.failed
        elapsed = time.monotonic() - self.t0
        if final:
            rate = done / elapsed if elapsed > 0 else 0.0
            return (f"{done:,}/{total:,} {self.unit} in {format_duration(elapsed)} ({rate:.1f} {self.unit}/s), "
                    f"{failed:,} failed")
        if done == 0:
            return f"0/{total:,} {self.unit}: starting ({format_duration(elapsed)} so far)"
        rate = self.rate()
        left = (total - done) / rate if rate > 0 else None
        pct = 100.0 * done / total if total else 100.0
        return (f"{done:,}/{total:,} {self.unit} ({pct:.0f}%), {rate:.1f} {self.unit}/s, "
                f"ETA {format_duration(left)}, {failed:,} failed")


class LogProgress:
    """One line every ``interval`` seconds (and a last one at the end) through ``log``."""

    def __init__(self, log: Log, label: str = "", unit: str = "images", interval: float | None = None) -> None:
        self.log, self.label = log, label
        self.counts = _Counts(unit)
        self.interval = progress_interval() if interval is None else float(interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _prefix(self) -> str:
        return f"{self.label}: " if self.label else ""

    def start(self, total: int) -> None:
        self.counts.start(total)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lossyvision-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.log(self._prefix() + self.counts.line())

    def advance(self, done: int, failed: int = 0) -> None:
        self.counts.advance(done, failed)

    def close(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        self.log(self._prefix() + self.counts.line(final=True))


class TerminalProgress:
    """A live rich bar on a terminal: done/total, rate, ETA and failures so far."""

    def __init__(self, label: str = "", unit: str = "images", stream: TextIO | None = None) -> None:
        from rich.console import Console

        self.label, self.unit = label, unit
        self.counts = _Counts(unit)
        self.console = Console(file=stream or sys.stderr)
        self._progress: Any = None
        self._task: Any = None

    def _fields(self) -> dict[str, str]:
        c = self.counts
        rate = c.rate()
        left = (c.total - c.done) / rate if rate > 0 and c.done else None
        return {"rate": f"{rate:.1f} {self.unit}/s", "eta": format_duration(left), "failed": f"{c.failed:,}"}

    def start(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self.counts.start(total)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
            MofNCompleteColumn(), TextColumn(self.unit + ","), TextColumn("{task.fields[rate]},"),
            TextColumn("ETA {task.fields[eta]},"), TextColumn("{task.fields[failed]} failed,"),
            TimeElapsedColumn(), console=self.console, transient=False, refresh_per_second=4)
        self._progress.start()
        self._task = self._progress.add_task(self.label or "working", total=int(total), **self._fields())

    def advance(self, done: int, failed: int = 0) -> None:
        self.counts.advance(done, failed)
        if self._progress is not None:
            self._progress.update(self._task, completed=self.counts.done, **self._fields())

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def job_progress(label: str, log: Log, *, unit: str = "images", stream: TextIO | None = None,
                 interval: float | None = None) -> JobProgress:
    """A bar titled ``label`` on a terminal (``stream``, default stderr), else periodic lines through ``log``
    (which adds its own prefix)."""
    if is_terminal(stream):
        return TerminalProgress(label, unit, stream)
    return LogProgress(log, "", unit, interval)


# --- the sweep ----------------------------------------------------------------------------------
def epoch_line(epoch: int, epochs: int | None, seconds: float | None, mean_seconds: float | None) -> str:
    """``epoch 3/6 (4.1 s/epoch, ETA 0:12)``: the time of this epoch and the trial's time left."""
    text = f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}"
    parts = []
    if seconds is not None and math.isfinite(seconds):
        parts.append(f"{seconds:.1f} s/epoch")
    if epochs and mean_seconds is not None:
        parts.append(f"ETA {format_duration(max(0, epochs - epoch) * mean_seconds)}")
    return text + (f" ({', '.join(parts)})" if parts else "")


class SweepProgress:
    """Trials and cells done out of the whole grid, and the ETA of the phase that runs."""

    def __init__(self, trials: int, cells: int, trials_done: int = 0, cells_done: int = 0) -> None:
        self.trials, self.cells = trials, cells
        self.trials_done, self.cells_done = trials_done, cells_done
        self._phase: str | None = None
        self._phase_t0 = time.monotonic()
        self._phase_done = 0
        self._phase_total = 0

    def phase(self, name: str, todo: int) -> None:
        """A phase (training, evaluation) starts with ``todo`` pieces; its ETA runs from now."""
        self._phase, self._phase_t0, self._phase_done, self._phase_total = name, time.monotonic(), 0, todo

    def trial_done(self) -> str:
        self.trials_done += 1
        self._phase_done += 1
        return self.line()

    def cell_done(self) -> str:
        self.cells_done += 1
        self._phase_done += 1
        return self.line()

    def line(self) -> str:
        text = f"sweep: {self.trials_done}/{self.trials} trials, {self.cells_done}/{self.cells} cells done"
        if self._phase:
            left = eta(self._phase_done, self._phase_total, time.monotonic() - self._phase_t0)
            text += f"; {self._phase} ETA {format_duration(left)}"
        return text
