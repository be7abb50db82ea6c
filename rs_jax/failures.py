"""Failures the user sees as one line: the full report goes to a log file.

``quiet_failures(log_path)`` runs a block with the loggers that third-party libraries
print their tracebacks through (orbax logs every failed background save through absl,
each with its traceback, and tensorstore errors embed a JSON spec dump) routed into
memory; if the block raises, the captured records and the full traceback go to
``log_path`` and a ``ReportedError`` with one short line and the log's path replaces the
exception. ``check_writable(path)`` turns an output path that cannot be written (under a
file, on a read-only file system, under /proc, no space left) into one ``ValueError``
line before any work starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import traceback
from collections.abc import Iterator

THIRD_PARTY_LOGGERS = ("absl", "asyncio", "orbax", "tensorstore")
SUMMARY_HEAD_CHARS = 160
SUMMARY_TAIL_CHARS = 240
_TENSORSTORE_PAYLOADS = re.compile(r"\s*\[(?:tensorstore_spec|os_error_code|source_location)='.*?'\]")


class ReportedError(ValueError):
    """A failure summarized in one line; its full traceback is in the file ``log_path`` (if not None)."""

    def __init__(self, summary: str, log_path: str | None) -> None:
        where = f"full report: {log_path}" if log_path else "no report could be written"
        super().__init__(f"{summary} ({where})")
        self.log_path = log_path


def summarize(error: BaseException) -> str:
    """One line saying what went wrong: the error's first line without tensorstore payloads (spec
    dumps, error codes); a
    long one keeps its start and its end (where tensorstore puts the OS error), joined by " … "."""
    text = str(error).strip()
    line = _TENSORSTORE_PAYLOADS.sub("", text.splitlines()[0] if text else type(error).__name__)
    if len(line) > SUMMARY_HEAD_CHARS + SUMMARY_TAIL_CHARS + 3:
        line = line[:SUMMARY_HEAD_CHARS] + " … " + line[-SUMMARY_TAIL_CHARS:]
    return line


class _Buffer(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _write_report(log_path: str, text: str) -> str | None:
    """Appends ``text`` to ``log_path``, or to a file in the temporary directory if that path
    cannot be written (e.g. the failure was that the output folder is read-only); returns the
    path written, None if neither could be (a full disk)."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        with open(log_path, "a") as handle:
            handle.write(text)
        return log_path
    except OSError:
        pass
    try:
        handle, fallback = tempfile.mkstemp(prefix="rs_jax-error-", suffix=".log")
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        return fallback
    except OSError:
        return None


@contextlib.contextmanager
def quiet_failures(log_path: str | os.PathLike) -> Iterator[None]:
    """Runs the block with third-party log records kept off the terminal; on failure, reports it.

    While the block runs, WARNING and higher records of the loggers in ``THIRD_PARTY_LOGGERS``
    are captured instead of printed. If the block raises an ``Exception``, those records and the
    exception's full traceback (with its causes) are appended to ``log_path`` (its folder is
    created; if it cannot be written, a file in the system's temporary directory is used) and
    ``ReportedError(summarize(error), path)`` is raised from the exception. If the block
    succeeds, captured records are appended to ``log_path`` only when there were some.
    ``KeyboardInterrupt`` and ``SystemExit`` pass through unchanged.
    """
    log_path = os.fspath(log_path)
    buffer = _Buffer()
    saved = []
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate))
        logger.addHandler(buffer)
        logger.propagate = False
    try:
        yield
    except ReportedError:
        raise
    except Exception as error:
        records = "".join(line + "\n" for line in buffer.lines)
        written = _write_report(log_path, records + "".join(traceback.format_exception(error)))
        raise ReportedError(summarize(error), written) from error
    else:
        if buffer.lines:
            _write_report(log_path, "".join(line + "\n" for line in buffer.lines))
    finally:
        for logger, propagate in saved:
            logger.removeHandler(buffer)
            logger.propagate = propagate


def _nearest_existing(path: str) -> str:
    current = os.path.abspath(path)
    while not os.path.lexists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def check_writable(path: str | os.PathLike, what: str = "--out") -> None:
    """Refuses (one-line ValueError) an output directory that cannot be created and written.

    Creates nothing at ``path``: it finds the nearest existing folder on the way to ``path``
    (``path`` itself if it exists), refuses it if it is not a directory, and writes and
    fsyncs a 4 kB probe file there (removed again), which fails on a read-only file system,
    under /proc, without permission, or with no space left.
    """
    where = os.fspath(path)
    existing = _nearest_existing(where)
    if not os.path.isdir(existing):
        raise ValueError(f"{what} {where}: {existing} is a file, not a directory.")
    try:
        with tempfile.TemporaryFile(dir=existing) as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise ValueError(
            f"{what} {where} cannot be written ({error.strerror or error} in {existing})."
        ) from error
