"""What a running command shows: short lines on the console, everything in its log file.

A workflow job runs ``python -m mapper <command> ... --log logs/<stage>/<job>.log``. Inside
:func:`job_output`, everything the command writes (log records, progress bars, Python warnings,
a traceback, its result line; GDAL and PyTorch messages written to file descriptors 1 and 2)
goes to that file, as the shell redirection ``> log 2>&1`` would send it. The console (the
terminal Snakemake runs in, or a SLURM job's output file) gets only lines that start with the
job's label, the command and its short arguments::

    predict demo nsp R0187C0556: 120/400 crops, 1m30s, eta 3m
    finetune demo nsp: 2000/6000 steps, 4m00s, eta 8m; loss=0.412, lr=9.6e-05
    mosaic alaska soilorder: 1200/3900 blocks, 40m00s, eta 1h30m
    mosaic alaska soilorder: running, 2h05m; writing COG maps/soilorder_alaska.tif (...)
    predict demo nsp R0187C0556: error: results/demo/stack/R0187C0556.tif: ...; re-run stack

- a summary every :data:`EVERY_SECONDS` seconds while the job runs (``MAPPER_PROGRESS_SECONDS``
  sets another period): the open progress bar's count, the time since the job started and the
  bar's estimate of the time left; without a bar, the job's last log message;
- ``done`` with the total time, when at least one summary was shown;
- every warning, and the error line, which the log file holds too.

Library code reports progress through :func:`bar`: a tqdm bar written to ``sys.stderr`` (the log
file inside :func:`job_output`; the terminal otherwise, where it is the usual live bar) and
read by the console's summaries. A job shorter than the period prints nothing but its warnings
and errors: Snakemake already says when a job starts and finishes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from mapper.errors import ConfigError

EVERY_SECONDS = 60.0
"""Period of the console summaries: a job longer than a minute shows one at least every minute."""

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_MESSAGE_CHARS = 120
"""A log message quoted in a console summary is cut to this many characters."""

_open_bars: list[tqdm] = []
_open_bars_lock = threading.Lock()


class _Bar(tqdm):
    """A tqdm bar listed among the open bars until closed (what the console summarises)."""

    def close(self) -> None:
        with _open_bars_lock:
            if self in _open_bars:
                _open_bars.remove(self)
        super().close()


def bar(total: int | None, desc: str, unit: str, *, initial: int = 0, unit_scale: bool = False,
        disable: bool = False) -> tqdm:
    """A progress bar on ``sys.stderr``: live on a terminal (redrawn every 0.5 s), a line every
    30 s in a log file. ``unit`` is singular ("crop", "step"); ``unit_scale`` for bytes ("B")."""
    tty = sys.stderr.isatty()
    b = _Bar(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale,
             file=sys.stderr, mininterval=0.5 if tty else 30.0, dynamic_ncols=tty,
             disable=disable)
    if not disable:
        with _open_bars_lock:
            _open_bars.append(b)
    return b


def _newest_bar() -> tqdm | None:
    with _open_bars_lock:
        return _open_bars[-1] if _open_bars else None


def duration(seconds: float) -> str:
    """``45s``, ``1m30s``, ``2h05m``: a duration as a person reads it."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _eta(seconds: float) -> str:
    """The time left, rounded to what an estimate can claim (``40s``, ``3m``, ``1h20m``)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{round(s / 60)}m"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def bar_summary(state: dict[str, Any], job_seconds: float) -> str:
    """``120/400 crops, 1m30s, eta 3m; loss=0.41``: a bar's ``format_dict`` as one summary.

    The time is the job's (``job_seconds``); the estimate extrapolates the bar's own rate since
    it opened (a resumed bar counts from its ``initial``), and is left out until it has one.
    """
    n, total, unit = int(state["n"]), state["total"], state["unit"]
    if state.get("unit_scale"):
        size = tqdm.format_sizeof
        count = f"{size(n)}{unit}" + (f"/{size(total)}{unit}" if total else "")
    else:
        count = f"{n}" + (f"/{int(total)}" if total else "") + f" {unit}{'' if n == 1 else 's'}"
    parts = [count, duration(job_seconds)]
    done = n - int(state.get("initial") or 0)
    elapsed = float(state.get("elapsed") or 0.0)
    if total and done > 0 and elapsed > 0 and n < total:
        parts.append(f"eta {_eta((total - n) * elapsed / done)}")
    line = ", ".join(parts)
    postfix = state.get("postfix")
    return f"{line}; {postfix}" if postfix else line


class JobConsole(logging.Handler):
    """The console side of one job: labelled lines, a summary every ``every`` seconds.

    As a logging handler it echoes warnings and errors to the console and keeps the last
    message of level INFO or above for the summaries of a job without a progress bar.
    """

    def __init__(self, label: str, stream: IO[str], every: float = EVERY_SECONDS) -> None:
        super().__init__(level=logging.INFO)
        self.label = label
        self.stream = stream
        self.every = every
        self.started = time.monotonic()
        self.summaries = 0
        self.failed = False
        self.last_message = ""
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mapper-console", daemon=True)

    def say(self, text: str) -> None:
        with self._write_lock:
            self.stream.write(f"{self.label}: {text}\n")
            self.stream.flush()

    def error(self, text: str) -> None:
        """Say the job's error line (``error: <file>: <problem>; <fix>``); no ``done`` follows."""
        self.failed = True
        self._halt()  # no summary may follow the error line
        self.say(text)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record must not stop the job
            return
        if record.levelno >= logging.WARNING:
            self.say(f"{record.levelname.lower()}: {message}")
        self.last_message = message.splitlines()[0] if message else ""

    def status(self) -> str:
        """The summary line's text (without the label)."""
        seconds = time.monotonic() - self.started
        current = _newest_bar()
        if current is not None:
            return bar_summary(current.format_dict, seconds)
        text = f"running, {duration(seconds)}"
        if self.last_message:
            quoted = self.last_message
            if len(quoted) > _MESSAGE_CHARS:
                quoted = quoted[: _MESSAGE_CHARS - 3] + "..."
            text += f"; {quoted}"
        return text

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.say(self.status())
            self.summaries += 1

    def start(self) -> None:
        self._thread.start()

    def _halt(self) -> None:
        """Stop the summary thread and wait for a line it may be writing."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def stop(self, ok: bool) -> None:
        """Stop the summaries; ``done`` after a job that showed any (``ok``: it succeeded)."""
        self._halt()
        if ok and not self.failed and self.summaries:
            self.say(f"done, {duration(time.monotonic() - self.started)}")


def progress_seconds() -> float:
    """The summary period: ``MAPPER_PROGRESS_SECONDS`` if set, else :data:`EVERY_SECONDS`."""
    raw = os.environ.get("MAPPER_PROGRESS_SECONDS", "").strip()
    if not raw:
        return EVERY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ConfigError(f"MAPPER_PROGRESS_SECONDS={raw!r}: not a positive number of seconds; "
                          "set it to e.g. 60 or unset it")
    return value


@contextlib.contextmanager
def job_output(log: str | Path, label: str, verbose: bool = False) -> Iterator[JobConsole]:
    """Send everything the block writes to the file ``log`` (replaced), and short lines to the
    console (the stream standard error was on entry); restore both streams on exit."""
    every = progress_seconds()
    log = Path(log)
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"{log}: cannot write the log ({exc.strerror}); check the folder and "
                          "its permissions") from None
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = {fd: os.dup(fd) for fd in (1, 2)}
    console_stream = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    saved_streams = (sys.stdout, sys.stderr)
    with out:
        for fd in (1, 2):  # C libraries (GDAL, PyTorch) write to the descriptors directly
            os.dup2(out.fileno(), fd)
        sys.stdout = sys.stderr = out  # one stream: the log keeps the order things happened
        root = logging.getLogger()
        to_log = logging.StreamHandler(out)
        to_log.setFormatter(logging.Formatter(LOG_FORMAT))
        console = JobConsole(label, console_stream, every)
        saved_level = root.level
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
        root.addHandler(to_log)
        root.addHandler(console)
        console.start()
        ok = False
        try:
            yield console
            ok = True
        finally:
            console.stop(ok)
            root.removeHandler(console)
            root.removeHandler(to_log)
            root.setLevel(saved_level)
            out.flush()
            sys.stdout, sys.stderr = saved_streams
            for fd, saved in saved_fds.items():
                os.dup2(saved, fd)
                os.close(saved)
            console_stream.close()
