"""The last lines a runner process wrote on its stderr, for the account of an early death.

A runner that exits before it reports ready has often said why on its stderr only (a
``ModuleNotFoundError`` from its interpreter, a syntax error of an old Python, a wrapper
script's complaint, a plugin's ``print(..., file=sys.stderr)`` before ``os._exit``): those
lines go to the ``plugin.<id>.stderr`` log records, but the plugin's error
(``PluginInfo.error``, ``PluginFailed``) would only say "exited before reporting ready". So
the runner's life keeps the last lines here, and quotes them in that account: sanitized,
capped.

They come two ways, and the tail takes both:

- **Its stderr pipe** (fd-level writes: the interpreter's own, C code's, ``os.write(2, ...)``):
  fed by the replay thread of its stdio (:mod:`isoplug.host.stdio_replay`), each line stamped
  with the time the host read it. The runner's life quotes the tail after its stdio was read
  and replayed (:meth:`~isoplug.host.process.RunnerProcess.close`).
- **Its log connections**: in a runner, ``sys.stderr`` is a stream whose lines become records
  (:mod:`isoplug.logs.streams`), which travel with its logging, not through the pipe. The log
  bridge feeds their stderr records here (:mod:`isoplug.host.logbridge`), each stamped with
  the time the runner wrote it (never later than it arrived). They may still be on their way
  when the exit is seen: the runner's life waits, a moment at most (:meth:`wait_fed`), for the
  runner's own log connections to end, each of which ends once what it carried was replayed.

Lines are kept in the order of those times: the order they were written, as far as the host
can know (a pipe line is read a moment after it was written).

A SIGABRT tells nobody who sent it: the kernel's report of a child's death (``waitid``, the
zygote's ``wait4``) gives the signal, never its sender, which only the dying process's own
handler sees (``si_code`` ``SI_TKILL`` and its own pid for an ``abort()``). What a process
that aborts itself writes first does tell: a failed C assertion (glibc's ``prog: file:line:
function: Assertion `...' failed.``, libuv's when its event loop's descriptor was closed under
it), ``Fatal glibc error: ...``, C++'s ``terminate called ...``, or a fatal error of Python's
own (``Fatal Python error: <function>: <why>``, where faulthandler's dump of an outside
SIGABRT says ``Fatal Python error: Aborted``). The tail keeps those words
(:attr:`StderrTail.abort_words`), for an account that may then say the runner aborted itself,
as its stderr says, rather than "sender unknown".

Such words count right before faulthandler's dump, or as the last line of the stderr at all:
a runner whose faulthandler is off writes no dump (the runner turns it off as it exits for
descriptors a plugin closed, and uvloop may then abort on libuv's assertion; a plugin may turn
it off too). A later line of any other kind (by the time it was written) takes them back, for
a process that went on after them did not abort with them (they were a child process's, or
the plugin's own text): an outside SIGABRT then stays "sender unknown".
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import signal
import threading
import time
from collections.abc import Iterable

from isoplug.wire.sanitize import clean_text

__all__ = [
    "MAX_TAIL_CHARS",
    "MAX_TAIL_LINES",
    "StderrTail",
    "outside_words",
    "quote_lines",
    "self_abort",
]

#: Lines quoted, at most, and characters of the quote, at most.
MAX_TAIL_LINES = 12
MAX_TAIL_CHARS = 1500
#: A longer line is kept cut to this (the quote is capped anyway).
_MAX_LINE_CHARS = 2 * MAX_TAIL_CHARS
#: How a fatal error's dump starts: faulthandler's, at a fatal signal, and Py_FatalError's.
_FATAL = "Fatal Python error: "
#: faulthandler's dump of a SIGABRT, whoever sent it: only the line before it may tell.
_ABORTED = f"{_FATAL}Aborted"
#: What a process that aborts itself writes right before (see the module docstring).
_SELF_ABORT = re.compile(
    r": Assertion [`'].*[`'] failed\.$|^Assertion failed: |^Fatal glibc error: |^terminate called "
)


class StderrTail:
    """The last :data:`MAX_TAIL_LINES` lines one runner process wrote on its stderr, by the
    time they were written; fed by host threads (its stdio's replay thread, its log
    connections' threads), read by the event loop once the process has exited. Thread-safe."""

    def __init__(self) -> None:
        #: (when, arrival order, line), sorted: the newest last.
        self._lines: list[tuple[float, int, str]] = []
        self._order = itertools.count()
        self._changed = threading.Condition(threading.Lock())
        #: Log connections of the runner itself that may still bring lines.
        self._feeds = 0
        #: Whether any log connection of the runner itself authenticated: it had read its
        #: bootstrap (the log token is in it), whatever its stderr says later.
        self.connected = False
        #: The words of the runner's last fatal error that say it aborted itself (see the
        #: module docstring), as written (quote with :func:`quote_lines`); None: none did.
        self.abort_words: str | None = None
        #: Whether ``abort_words`` are the last line alone, no dump after them: a newer line
        #: takes them back (see the module docstring).
        self._words_last = False

    def add(self, message: str, when: float | None = None) -> None:
        """Keep the lines of ``message`` (one record: a line, or a whole traceback), written
        at ``when`` (``time.time()``; None, or a time still to come: now)."""
        now = time.time()
        at = when if when is not None and math.isfinite(when) and when < now else now
        lines = [line[:_MAX_LINE_CHARS] for line in message.splitlines() if line.strip()]
        if not lines:
            return
        with self._changed:
            kept = self._lines
            if lines[0].startswith(_FATAL):
                self._note_fatal(lines[0], kept[-1][2] if kept else "")
            elif not kept or at >= kept[-1][0]:
                # Only the newest line can be a self-abort's last words: a record written
                # earlier that arrives late (its log connection is slower) changes nothing.
                self._note_last(lines[-1])
            if len(kept) >= MAX_TAIL_LINES and at < kept[0][0]:
                return  # older than every line kept: it would not be quoted
            for line in lines[-MAX_TAIL_LINES:]:
                bisect.insort(kept, (at, next(self._order), line))
            del kept[:-MAX_TAIL_LINES]

    def _note_last(self, line: str) -> None:
        if _SELF_ABORT.search(line.strip()):
            self.abort_words, self._words_last = line, True
        elif self._words_last:
            self.abort_words, self._words_last = None, False

    def _note_fatal(self, line: str, before: str) -> None:
        self._words_last = False
        if line.rstrip() != _ABORTED:
            self.abort_words = line  # Python's own fatal error: it aborts itself after it
        elif _SELF_ABORT.search(before.strip()):
            self.abort_words = before
        else:
            self.abort_words = None  # an abort nothing explains: maybe an outside SIGABRT

    def quote(self) -> str:
        """The lines kept, sanitized, on one line (``" | "`` between them); "" for none."""
        with self._changed:
            lines = [line for _, _, line in self._lines]
        return quote_lines(lines)

    def feed_opened(self) -> None:
        """A log connection of the runner itself began: its lines may come until it ends."""
        with self._changed:
            self._feeds += 1
            self.connected = True

    def feed_ended(self) -> None:
        """A log connection counted by :meth:`feed_opened` ended; all it brought is here."""
        with self._changed:
            self._feeds -= 1
            self._changed.notify_all()

    @property
    def fed(self) -> bool:
        """True when no log connection of the runner itself is open (lines may come yet)."""
        return self._feeds <= 0

    def wait_fed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until :attr:`fed`; True if it is. Blocks."""
        with self._changed:
            return self._changed.wait_for(lambda: self._feeds <= 0, timeout)


def self_abort(tail: StderrTail, returncode: int, sender: str | None) -> str | None:
    """The words, sanitized, by which a runner that died of a SIGABRT the host did not send
    (``sender`` None) said it aborted itself (:attr:`StderrTail.abort_words`); else None."""
    if returncode != -signal.SIGABRT or sender is not None or tail.abort_words is None:
        return None
    return quote_lines([tail.abort_words])


def quote_lines(lines: Iterable[str]) -> str:
    """The last of ``lines`` (those not blank) on one line, sanitized and capped at
    :data:`MAX_TAIL_CHARS` from the end (the last line is the one that says why)."""
    kept = [line.strip() for line in lines if line.strip()][-MAX_TAIL_LINES:]
    text = " | ".join(kept)
    if len(text) > MAX_TAIL_CHARS:
        text = "..." + text[-MAX_TAIL_CHARS:]
    return clean_text(text, MAX_TAIL_CHARS + 3)


def outside_words(text: str) -> str:
    """``text`` (already sanitized, as :func:`quote_lines` makes it) between double quotes,
    its own double quotes and backslashes escaped: the runner's words, set apart from the
    host's account around them. A plugin that writes host-like phrases on its stderr (say,
    "; the host sent SIGKILL") can then never make them read as the host's: they stay inside
    one quote it cannot close."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
