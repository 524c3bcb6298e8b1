"""Installing :class:`~isoplug.logs.streams.LogStream` as this process's ``sys.stdout`` and
``sys.stderr``, and emitting what they still hold at exit.

:func:`redirect_stdio` installs the two streams, once the root logger's handlers are in place.
At exit, every partial line and held block is emitted while those handlers still forward:
from ``atexit`` (registered after the handlers' own hooks, so run before them) and from
``logging.shutdown()`` (see :class:`_FlushBeforeHandlers`). ``os._exit()`` and ``os.abort()``
skip both, and code that dies on purpose calls them right after printing its last words
(``traceback.print_exc(); os._exit(1)``, as ``multiprocessing``'s forked children end too): so
they are wrapped to emit the same first. The records that makes are in the forwarding
handler's shared-memory ring before the process ends, so the receiver recovers them. A process
killed by a signal (SIGKILL, a segfault) runs none of this: a line still without its newline,
and a printed traceback held for a chained one (at most 50 ms: see
:mod:`isoplug.logs.quiet_flush`), die with it. In a forked child the streams' line states get
fresh locks, since a lock another thread held at the fork stays held in the child.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from typing import NoReturn

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


_os_exit = os._exit
_os_abort = os.abort


def _exit_after_flushing(status: int) -> NoReturn:
    """``os._exit``, after emitting what the streams hold."""
    flush_all()
    _os_exit(status)


def _abort_after_flushing() -> NoReturn:
    """``os.abort``, after emitting what the streams hold."""
    flush_all()
    _os_abort()


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
    os._exit = _exit_after_flushing
    os.abort = _abort_after_flushing
    sys.stdout, sys.stderr = out, err
    return out, err
