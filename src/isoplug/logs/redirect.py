"""Installing :class:`~isoplug.logs.streams.LogStream` as this process's ``sys.stdout`` and
``sys.stderr``, and emitting what they still hold at exit.

:func:`redirect_stdio` installs the two streams, once the root logger's handlers are in place.
At exit, every partial line and held block is emitted while those handlers still forward:
from ``atexit`` (registered after the handlers' own hooks, so run before them) and from
``logging.shutdown()`` (see :class:`_FlushBeforeHandlers`). In a forked child the streams' line
states get fresh locks, since a lock another thread held at the fork stays held in the child.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading

from isoplug.logs.output_records import report_failure
from isoplug.logs.streams import LogStream

__all__ = ["flush_all", "redirect_stdio"]

_streams: list[LogStream] = []


def flush_all() -> None:
    """Emit every partial line and held block of every :class:`LogStream` (at exit, before the
    log handlers close; :func:`redirect_stdio` arranges for that)."""
    for stream in list(_streams):
        try:
            stream.flush_all()
        except Exception as exc:
            report_failure(f"isoplug: flushing {stream.stream} at exit failed: {exc!r}")


class _FlushBeforeHandlers(logging.Handler):
    """Not attached to any logger: ``logging.shutdown()`` flushes handlers newest first, so one
    created after the forwarding handler flushes the streams while that one still forwards."""

    def emit(self, record: logging.LogRecord) -> None:
        pass

    def flush(self) -> None:
        flush_all()


_flushers: list[_FlushBeforeHandlers] = []


def _after_fork_in_child() -> None:
    for stream in _streams:
        for state in stream._states:
            # A lock another thread held at the fork stays held in the child: start afresh.
            state.lock = threading.Lock()
            state.watched = False
            state.site_code = None  # its attributes name the parent's pid


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def redirect_stdio(
    *, stdout_level: int = logging.INFO, stderr_level: int = logging.WARNING
) -> tuple[LogStream, LogStream]:
    """Replace ``sys.stdout`` and ``sys.stderr`` with :class:`LogStream` objects (lines at
    ``stdout_level`` / ``stderr_level`` unless they say otherwise); return them.

    Call it once the root logger's handlers are in place: what is still unwritten at exit is
    emitted before they close (``atexit`` and ``logging.shutdown()``). fd-level output (C code,
    child processes, faulthandler) still goes to file descriptors 1 and 2.
    """
    out = LogStream("stdout", sys.__stdout__ or sys.stdout, stdout_level)
    err = LogStream("stderr", sys.__stderr__ or sys.stderr, stderr_level)
    _streams.extend((out, err))
    # Registered now, so it runs before the atexit hooks of the handlers created earlier.
    atexit.register(flush_all)
    _flushers.append(_FlushBeforeHandlers())
    sys.stdout, sys.stderr = out, err
    return out, err
