"""The console of ``isoplug run`` and ``isoplug demo``: one line per record on stdout (its
format: :mod:`isoplug.cli.console_format`), written by a thread of its own
(:mod:`isoplug.cli.console_writer`), and what the command does when stdout's reader goes away
or stdout cannot be written."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import stat
import threading
from collections.abc import Callable
from typing import TextIO

from isoplug.cli.console_format import ConsoleFormatter, use_colour
from isoplug.cli.console_writer import ConsoleWriter
from isoplug.cli.say import silence
from isoplug.cli.signals import (
    EXIT_BROKEN_PIPE,
    EXIT_CONSOLE_FAILED,
    EXIT_INTERRUPTED,
    StopSignals,
    wait_unless_signalled,
)

__all__ = [
    "ConsoleFormatter",
    "ConsoleHandler",
    "configure_console_logging",
    "finish_console",
    "silence",
    "use_colour",
]

#: Errors that mean the console's reader is gone: a closed pipe (``| head``), a terminal
#: that hung up (EIO).
_GONE_ERRNOS = frozenset({errno.EPIPE, errno.EIO})
#: How often the reader's watch looks whether it has been stopped.
_WATCH_INTERVAL_MS = 250


class ConsoleHandler(logging.Handler):
    """The console's handler. It formats each record in the thread that logs it and queues
    the line for the console's writer thread (:mod:`isoplug.cli.console_writer`): whoever
    logs, the host's event loop among them, never waits on stdout, and a stdout that takes
    nothing costs dropped lines, counted and said, never a frozen host.

    Once its reader is gone (a closed pipe, a closed terminal) it writes nothing more, says
    nothing of it (no ``--- Logging error ---`` per record), points the stream's descriptor
    at ``/dev/null`` (so that the interpreter's last flush does not fail either) and calls
    :attr:`on_gone` once, from the thread that found it.

    A write finds that out; :meth:`watch_reader` finds it out while nothing is written too (a
    quiet run piped into ``head``, which has had its lines). A write that fails otherwise (a
    full disk, ``> /dev/full``, an I/O error) ends the console the same way, said once on
    stderr, the error kept in :attr:`unwritable`."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.gone = threading.Event()
        self.on_gone: Callable[[], object] | None = None
        #: Why the console could not be written, when that ended it (not its reader gone).
        self.unwritable: OSError | None = None
        self._watching: threading.Event | None = None
        self.writer = ConsoleWriter(stream, self._write_failed, self._own_line)

    def emit(self, record: logging.LogRecord) -> None:
        if self.gone.is_set():
            return
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.writer.put(record.levelno, line)

    def say(self, text: str) -> None:
        """Show ``text`` as it is (the command's own words: the demo's header), after the
        lines queued before it; never dropped."""
        if not self.gone.is_set():
            self.writer.say(text)

    def close(self) -> None:
        # The interpreter's exit (logging.shutdown) must not wait on a stuck stdout: what was
        # to be written was drained (or given up on) before.
        self.writer.stop()
        super().close()

    def _own_line(self, message: str) -> str:
        """``message`` as a WARNING line of isoplug's own, in the console's format."""
        said = logging.LogRecord("isoplug.cli", logging.WARNING, __file__, 0, message, None, None)
        return self.format(said)

    def _write_failed(self, error: OSError) -> None:
        """From the writer's thread: a write failed; nothing more will be written."""
        with self.lock or contextlib.nullcontext():
            if error.errno not in _GONE_ERRNOS and not self.gone.is_set():
                self.unwritable = error
                stopping = "; stopping every plugin" if self.on_gone is not None else ""
                # Once: each line would fail alike.
                self.writer.notices.say(
                    f"isoplug: the console on stdout cannot be written ({error}): nothing "
                    f"more is shown there{stopping}"
                )
            self._reader_gone()

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
    # as an escape (\u2603): with the default "strict", the whole line would be lost. (The
    # writer encodes the console's lines so too; this is for what is printed.)
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")
    # The writer writes to the descriptor: what was printed before goes first.
    stream.flush()
    handler = ConsoleHandler(stream)
    handler.setFormatter(ConsoleFormatter(colour=use_colour(stream)))
    root = logging.getLogger()
    for replaced in root.handlers:
        if isinstance(replaced, ConsoleHandler):
            replaced.close()  # a command run before in this process (a test's): its thread ends
    root.handlers[:] = [handler]
    root.setLevel(level or _DEFAULT_LEVEL)
    # The host drops a replayed record its logger is not enabled for: the plugins' loggers
    # let through what their runners send, unless the user asked for a threshold.
    logging.getLogger("plugin").setLevel(level or logging.DEBUG)
    # watchfiles says "1 change detected" for every batch; `--reload` says what it does.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    return handler


def finish_console(console: ConsoleHandler, signals: StopSignals, code: int) -> int:
    """Before the command exits with ``code``: write what the console still holds while
    stdout takes it, giving up on a stdout that takes nothing (said on stderr: see
    :meth:`~isoplug.cli.console_writer.ConsoleWriter.drain`), or at once on a stop signal.
    Returns the exit code, which says a console that failed on the way (its reader gone, 141;
    unwritable, 74) and a stop signal that cut a wait short (130)."""
    for _ in range(2):
        wait_unless_signalled(
            console.writer.drain,
            signals,
            "writing the console's last lines",
            console.writer.abandon,
        )
        # A repeat of the first signal during the wait is said after it: written too.
        if signals.cut_short or not signals.say_unsaid():
            break
    if signals.cut_short or signals.killed:
        return EXIT_INTERRUPTED
    if console.gone.is_set():
        return EXIT_CONSOLE_FAILED if console.unwritable is not None else EXIT_BROKEN_PIPE
    return code
