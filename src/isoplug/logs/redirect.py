"""Installing :class:`~isoplug.logs.streams.LogStream` as this process's ``sys.stdout`` and
``sys.stderr``, and emitting what they still hold at exit; or, for a plugin that chose
``stdio = "pipe"`` (:func:`pipe_stdio`), line-buffered C text streams onto file descriptors 1
and 2, flushed at the same moments.

:func:`redirect_stdio` installs the two streams, once the root logger's handlers are in place.
At exit, every partial line and held block is emitted while those handlers still forward:
from ``atexit`` (registered after the handlers' own hooks, so run before them) and from
``logging.shutdown()`` (see :class:`_FlushBeforeHandlers`). ``os._exit()`` and ``os.abort()``
skip both, and code that dies on purpose calls them right after printing its last words
(``traceback.print_exc(); os._exit(1)``, as ``multiprocessing``'s forked children end too): so
they are wrapped to emit the same first. The records that makes are in the forwarding
handler's shared-memory ring before the process ends, so the receiver recovers them. A process
killed by a signal (SIGKILL, a segfault) runs none of this: a line still without its newline
dies with it. A printed traceback is held for a moment in case a chained one follows (see
:mod:`isoplug.logs.quiet_flush`); ``traceback.print_exception`` (and so ``print_exc``) prints
the whole chain in one call, so it is wrapped to flush its stream when it returns: the
traceback is a record at once, and a crash that follows it cannot take it along. In a forked
child the streams' line states get fresh locks, since a lock another thread held at the fork
stays held in the child.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import sys
import threading
import traceback
from typing import Any, NoReturn

from isoplug.logs.output_records import report_failure, skip_frames_of
from isoplug.logs.streams import LogStream

__all__ = ["flush_all", "pipe_stdio", "pipe_streams", "redirect_stdio"]

_streams: list[LogStream] = []
_pipes: list[io.TextIOWrapper] = []

# Flushing for its caller (print_exception's, os._exit's): never a line's source.
skip_frames_of(sys.modules[__name__])


def flush_all() -> None:
    """Emit every partial line and held block of every :class:`LogStream` (at exit, before the
    log handlers close; :func:`redirect_stdio` arranges for that). First the streams the
    program put in their place, if any: ``sys.stdout = io.TextIOWrapper(sys.stdout.buffer,
    encoding="utf-8")`` holds what it is given until its buffer fills, and the interpreter
    would flush it only after the handlers closed."""
    for name in ("stdout", "stderr"):
        current = getattr(sys, name, None)
        if current is None or current in _streams or current in _pipes:
            continue
        try:
            if not current.closed:
                current.flush()
        except Exception as exc:
            report_failure(f"isoplug: flushing the program's sys.{name} at exit failed: {exc!r}")
    for stream in list(_streams):
        try:
            stream.flush_all()
        except Exception as exc:
            report_failure(f"isoplug: flushing {stream.stream} at exit failed: {exc!r}")
    for pipe in list(_pipes):
        if pipe.closed:  # the plugin closed it: what it held went out then
            continue
        try:
            pipe.flush()
        except (OSError, ValueError) as exc:
            # The host's end is gone (it is not reading any more): nowhere left to put it.
            report_failure(f"isoplug: flushing fd {pipe.fileno()} at exit failed: {exc!r}")


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


_print_exception = traceback.print_exception


def _print_exception_and_flush(*args: Any, **kwargs: Any) -> None:
    """``traceback.print_exception``, then a flush of the stream it printed to when that is a
    :class:`LogStream`: the chain is complete, nothing more of it can follow."""
    _print_exception(*args, **kwargs)
    # (exc, /, value, tb, limit, file, chain): ``file`` is the fifth positional argument.
    target = kwargs.get("file", args[4] if len(args) > 4 else None) or sys.stderr
    if isinstance(target, LogStream):
        target.flush()


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
    _flush_at_exits()
    traceback.print_exception = _print_exception_and_flush
    sys.stdout, sys.stderr = out, err
    return out, err


#: The longest text a ``stdio = "pipe"`` stream keeps for one write: a printed line up to this
#: long is written whole, never split around another thread's line.
WHOLE_LINE_BYTES = 64 * 1024


def pipe_stdio() -> tuple[io.TextIOWrapper, io.TextIOWrapper]:
    """Replace ``sys.stdout`` and ``sys.stderr`` with the standard library's C text streams
    onto file descriptors 1 and 2 (the pipes the host reads), line-buffered; return them.

    A ``print()`` then runs no Python: one ``write()`` system call per line, which the host
    reads, sanitizes, classifies, rate-limits and counts as it does a C extension's output
    (see :mod:`isoplug.host.stdio`). Line buffering, not the write-through a runner's
    ``PYTHONUNBUFFERED`` would give, so that a ``print()`` is one whole line in one write,
    never split around another thread's: up to :data:`WHOLE_LINE_BYTES` (the text stream
    writes a longer text through at once, and its newline after it), past the 16 KiB the
    host keeps of a line. A buffered writer under it, because the text stream alone ignores
    a short write (a signal during a write to a full pipe) and would lose the rest.
    ``backslashreplace``: text the encoder cannot take (a lone surrogate) is written escaped
    rather than raised into the plugin. A partial line is written at a flush, at exit and by
    ``os._exit`` / ``os.abort`` (wrapped as for :func:`redirect_stdio`); a signal's death
    takes it along, as it would in any process.
    """
    out, err = (
        io.TextIOWrapper(
            io.BufferedWriter(io.FileIO(fd, "w", closefd=False), WHOLE_LINE_BYTES),
            encoding="utf-8",
            errors="backslashreplace",
            line_buffering=True,
        )
        for fd in (1, 2)
    )
    for stream in (out, err):
        stream._CHUNK_SIZE = WHOLE_LINE_BYTES  # type: ignore[attr-defined]
    _pipes.extend((out, err))
    _flush_at_exits()
    sys.stdout, sys.stderr = out, err
    return out, err


def pipe_streams() -> tuple[io.TextIOWrapper, ...]:
    """The streams :func:`pipe_stdio` installed (none unless it ran)."""
    return tuple(_pipes)


def _flush_at_exits() -> None:
    # Registered now, so it runs before the atexit hooks of the handlers created earlier.
    atexit.register(flush_all)
    _flushers.append(_FlushBeforeHandlers())
    os._exit = _exit_after_flushing
    os.abort = _abort_after_flushing
