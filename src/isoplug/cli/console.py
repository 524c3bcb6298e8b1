"""The console of ``isoplug run`` and ``isoplug demo``: one coloured line per record, attributed
to its plugin."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import stat
import sys
import threading
import time
import zlib
from collections.abc import Callable
from typing import TextIO

from isoplug.logs.attribution import attribute

_RESET = "\033[0m"


_DIM = "\033[2m"


_BOLD = "\033[1m"


_PLUGIN_COLOURS = ("\033[36m", "\033[35m", "\033[34m", "\033[32m", "\033[96m", "\033[95m")


_LEVEL_COLOURS = {
    logging.DEBUG: _DIM,
    logging.WARNING: "\033[33m",
    logging.ERROR: "\033[31m",
    logging.CRITICAL: "\033[1;31m",
}


#: Width of the source column (plugin id, "isoplug" or "isoplug:<id>"): most fit, longer ones
#: push.
_SOURCE_WIDTH = 13


#: Width of the level column ("warning", "stdout", "stderr"; "stdout:error" and the like push).
_LABEL_WIDTH = 8


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class ConsoleFormatter(logging.Formatter):
    """One line per record: time, source (who speaks), level, message.

    The source column says who speaks, as :mod:`isoplug.logs.attribution` tells it: ``<id>``
    for a plugin's records, ``isoplug:<id>`` for the host's reports about it (records lost,
    dropped...), ``isoplug`` for the host's own records. The next column says the record's
    level; on a plugin's output streams it names the stream too: ``stdout`` (or ``stderr``)
    alone at that stream's own level (INFO, WARNING), ``stdout:error`` at any other, so that
    the stream never hides the level. Continuation lines (tracebacks) are indented under the
    message.
    """

    def __init__(self, *, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        # Who says it, in the one form only the host can fill in (isoplug.logs.attribution).
        said = attribute(record)
        source = said.source
        label = said.label
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        stamp += f".{int(record.msecs):03d}"
        head_plain = f"{stamp} {source:<{_SOURCE_WIDTH}} {label:<{_LABEL_WIDTH}} "
        lines = message.splitlines() or [""]
        indent = " " * len(head_plain)
        if not self.colour:
            return head_plain + f"\n{indent}".join(lines)
        source_colour = _BOLD if said.host else _colour_of(source)
        level_colour = _LEVEL_COLOURS.get(record.levelno, "")
        head = (
            f"{_DIM}{stamp}{_RESET} {source_colour}{source:<{_SOURCE_WIDTH}}{_RESET} "
            f"{_DIM}{label:<{_LABEL_WIDTH}}{_RESET} "
        )
        body = f"\n{indent}".join(lines)
        return head + (f"{level_colour}{body}{_RESET}" if level_colour else body)


def _colour_of(source: str) -> str:
    # crc32, not hash(): the same plugin keeps its colour from one run to the next.
    return _PLUGIN_COLOURS[zlib.crc32(source.encode()) % len(_PLUGIN_COLOURS)]


#: Errors that mean the console's reader is gone: a closed pipe (``| head``), a terminal
#: that hung up (EIO).
_GONE_ERRNOS = frozenset({errno.EPIPE, errno.EIO})
#: How often the reader's watch looks whether it has been stopped.
_WATCH_INTERVAL_MS = 250


class ConsoleHandler(logging.StreamHandler[TextIO]):
    """The console's handler: once its reader is gone (a closed pipe, a closed terminal) it
    writes nothing more, says nothing of it (no ``--- Logging error ---`` per record), points
    the stream's descriptor at ``/dev/null`` (so that the interpreter's last flush does not
    fail either) and calls :attr:`on_gone` once, from the thread that found it.

    A write finds that out; :meth:`watch_reader` finds it out while nothing is written too (a
    quiet run piped into ``head``, which has had its lines). A write that fails otherwise (a
    full disk, ``> /dev/full``, an I/O error) ends the console the same way, said once on
    stderr, the error kept in :attr:`unwritable`."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.gone = threading.Event()
        self.on_gone: Callable[[], object] | None = None
        #: Why the console could not be written, when that ended it (not its reader gone).
        self.unwritable: OSError | None = None
        self._watching: threading.Event | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if not self.gone.is_set():
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        # EAGAIN: a stdout that another process sharing it made non-blocking, full for now;
        # this line is lost, not the console.
        if not isinstance(error, OSError) or isinstance(error, BlockingIOError):
            super().handleError(record)
            return
        # Under the handler's lock (handle() holds it around emit()).
        if error.errno not in _GONE_ERRNOS and not self.gone.is_set():
            self.unwritable = error
            self._say_unwritable(error)
        self._reader_gone()

    def _say_unwritable(self, error: OSError) -> None:
        """Once, on stderr: the console cannot be written (each line would fail alike)."""
        stopping = "; stopping every plugin" if self.on_gone is not None else ""
        stderr = sys.stderr
        if stderr is None:
            return  # no stderr: the exit code is all that can still tell
        try:
            stderr.write(
                f"isoplug: the console on stdout cannot be written ({error}): nothing more "
                f"is shown there{stopping}\n"
            )
            stderr.flush()
        except (OSError, ValueError):
            # stderr unwritable (or closed) too: the exit code is all that can still tell.
            return

    def _reader_gone(self) -> None:
        """Once, under the handler's lock: the reader is gone."""
        if self.gone.is_set():
            return
        self.gone.set()
        silence(self.stream)
        if self.on_gone is not None:
            self.on_gone()

    def watch_reader(self) -> None:
        """Until :meth:`stop_watching`, let a thread notice the reader of a pipe going away
        (the kernel reports an error on the pipe's writing end then). A terminal's hang-up
        comes as SIGHUP instead, and a file has no reader to lose."""
        try:
            descriptor = self.stream.fileno()
            is_pipe = stat.S_ISFIFO(os.fstat(descriptor).st_mode)
        except (OSError, ValueError):
            return  # not a file (a test's StringIO)
        if not is_pipe or self._watching is not None:
            return
        stop = self._watching = threading.Event()
        threading.Thread(
            target=self._watch, args=(descriptor, stop), name="isoplug-console-reader", daemon=True
        ).start()

    def stop_watching(self) -> None:
        """The watch ends; once this returns, it calls :attr:`on_gone` no more."""
        with self.lock or contextlib.nullcontext():
            if self._watching is not None:
                self._watching.set()
                self._watching = None

    def _watch(self, descriptor: int, stop: threading.Event) -> None:
        poller = select.poll()
        # No events asked for: poll() still says POLLERR (no reader left) and POLLHUP.
        poller.register(descriptor, 0)
        while not stop.is_set() and not self.gone.is_set():
            if poller.poll(_WATCH_INTERVAL_MS):
                with self.lock or contextlib.nullcontext():
                    if not stop.is_set():
                        self._reader_gone()
                return


def silence(stream: TextIO) -> None:
    """Point ``stream``'s descriptor at ``/dev/null``: its reader is gone, and what is still
    buffered in it must not fail the next flush (at exit: ``Exception ignored ...``)."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError):
        return  # not a file (a test's StringIO): nothing buffered below Python
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, descriptor)
    finally:
        os.close(null)


#: The levels a console shows by default: a plugin's records as its manifest's ``log_level``
#: lets them through (its runner filters them); isoplug's own and other libraries' from INFO.
_DEFAULT_LEVEL = logging.INFO


def configure_console_logging(level: str | None, stream: TextIO) -> ConsoleHandler:
    """Send every record to ``stream`` through one :class:`ConsoleHandler`, returned.

    ``level``: the lowest level shown, for every record; None shows each plugin's records
    at the level its runner logs at (its manifest's ``log_level``, or
    ``--plugin-log-level``) and the rest from INFO.
    """
    # A character the console's encoding lacks (LC_ALL=C, PYTHONIOENCODING=latin-1) is shown
    # as an escape (\u2603): with the default "strict", the whole line would be lost.
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")
    handler = ConsoleHandler(stream)
    handler.setFormatter(ConsoleFormatter(colour=use_colour(stream)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or _DEFAULT_LEVEL)
    # The host drops a replayed record its logger is not enabled for: the plugins' loggers
    # let through what their runners send, unless the user asked for a threshold.
    logging.getLogger("plugin").setLevel(level or logging.DEBUG)
    # watchfiles says "1 change detected" for every batch; `--reload` says what it does.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    return handler
