"""The console's writer: a thread of its own writes every console line to stdout, from a
bounded queue, so that no thread that logs (the host's event loop among them) ever waits on
stdout.

A reader that stops reading (a stuck log shipper, ``| less`` not scrolled, a terminal paused
with Ctrl-S) holds up this thread alone: the host goes on supervising, restarting and stopping
its plugins, and hears its stop signals. Meanwhile the lines wait in a
:class:`~isoplug.host.stdio_backlog.Backlog`, the queue between a runner's stdio and the host's
handlers, bounded in lines and bytes. Once it is full, lines are dropped: below WARNING first
(a WARNING or above evicts the newest lower line), else the newest. Dropping is said on stderr
at once (unless stderr is stdout's file, stuck as well), and the console says how many lines
it dropped, by level, once stdout takes lines again (then at most once per
:data:`NOTICE_INTERVAL`).

A stdout that another program left non-blocking (``O_NONBLOCK`` belongs to the open file,
which every process holding it shares) refuses a write with ``EAGAIN`` while its pipe is full,
or takes part of it: the writer waits until it is writable (``poll``) and writes the rest, so
that such a stdout loses no more than a blocking one.

Before the command exits, :meth:`ConsoleWriter.drain` waits for what is queued to be written
while stdout takes it: once stdout has taken nothing for :data:`DRAIN_STALL` seconds (or after
:data:`DRAIN_MOST` in all), it gives up and says on stderr how many lines were not written.
:meth:`ConsoleWriter.caught_up` waits as long, without giving up on the queue, before a message
on stderr that must follow the console's lines (``isoplug run``'s "every plugin failed").
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from typing import TextIO

from isoplug.cli.stderr_notices import StderrNotices
from isoplug.host.stdio_backlog import Backlog, Drops, Entry
from isoplug.logs.report_throttle import by_level

__all__ = ["DRAIN_MOST", "DRAIN_STALL", "NOTICE_INTERVAL", "ConsoleWriter"]

#: Lines the console holds for a stdout that does not take them, at most ...
CONSOLE_LINES = 10_000
#: ... and bytes of text (with some 300 bytes of bookkeeping per line).
CONSOLE_BYTES = 4 * 1024 * 1024
#: At exit, the queue is given up on once stdout has taken nothing for this many seconds ...
DRAIN_STALL = 3.0
#: ... or once this many have passed, however slowly it takes lines.
DRAIN_MOST = 30.0
#: Seconds between two counts of dropped lines on the console, at least.
NOTICE_INTERVAL = 5.0
#: Seconds the exit waits, at most, for the notices on stderr (which may be stuck too).
NOTICE_WAIT = 1.0

#: Lines taken from the queue for one write, at most.
_BATCH_LINES = 256
#: Bytes given to one ``write()``: the wait of one is what the notices tell.
_CHUNK_BYTES = 64 * 1024
#: How often a wait for a non-blocking stdout to be writable looks whether it was given up on.
_POLL_MS = 250
#: The queue's name for the lines of records, dropped when it is full ...
_LINES = "console"
#: ... and for the command's own, which the queue never drops (its "reports").
_OWN = ""


class _GivenUp(Exception):
    """The writer was stopped while it waited for stdout."""


class ConsoleWriter:
    """Writes the lines :meth:`put` queues to ``stream`` (to its descriptor, bypassing its
    buffer, when it has one), from a daemon thread; see the module docstring. ``failed`` is
    called, from that thread, with the error of a write that failed (a closed pipe, a full
    disk): nothing more is written after it. ``notice_line`` formats what the console says
    about itself (the count of lines dropped) as one of its lines."""

    def __init__(
        self,
        stream: TextIO,
        failed: Callable[[OSError], None],
        notice_line: Callable[[str], str],
        *,
        max_lines: int = CONSOLE_LINES,
        max_bytes: int = CONSOLE_BYTES,
    ) -> None:
        self._stream = stream
        self._descriptor = _descriptor_of(stream)
        self._encoding = getattr(stream, "encoding", None) or "utf-8"
        self._failed = failed
        self._notice_line = notice_line
        self.notices = StderrNotices()
        # stderr on stdout's own file is stuck with it: what it would say there, the console
        # says once it moves.
        self._stderr_is_stdout = self._descriptor is not None and _same_file(self._descriptor, 2)
        self._queue = Backlog(max_lines, max_bytes)
        #: Guards what follows; notified whenever stdout took bytes.
        self._state = threading.Condition(threading.Lock())
        #: Lines queued or being written, not written whole yet.
        self._pending = 0
        #: When stdout last took bytes.
        self._progress_at = time.monotonic()
        #: When the write under way began (None: none is).
        self._writing_since: float | None = None
        #: The longest one write waited since the drops were last counted on the console.
        self._longest_wait = 0.0
        #: Lines dropped, by level, not counted on the console yet.
        self._dropped: dict[int, int] = {}
        #: Dropping was said on stderr: until the console counts the drops, not again.
        self._dropping_said = False
        self._last_notice = -NOTICE_INTERVAL
        self._stopped = False
        #: A write failed: lines are taken and thrown away.
        self._discarding = False
        threading.Thread(target=self._run, name="isoplug-console", daemon=True).start()

    def put(self, level: int, line: str) -> None:
        """Queue ``line`` (without its newline); never waits."""
        with self._state:
            self._pending += 1
        dropped = self._queue.put([_entry(level, line)])
        if not dropped:
            return
        with self._state:
            self._pending -= dropped
            if self._dropping_said or self._stderr_is_stdout:
                return
            self._dropping_said = True
            waited = self._waited(time.monotonic())
        self.notices.say(
            f"isoplug: stdout has taken no console line for {waited:.1f} s (is its reader "
            "stuck?): its queue is full, so lines are dropped, below WARNING first, until it "
            "takes them again; the console then says how many"
        )

    def say(self, line: str) -> None:
        """Queue ``line``, the command's own words, never dropped (each costs a place in the
        queue, and they are few: a count of dropped lines, the demo's header)."""
        with self._state:
            self._say_locked(line)

    def _say_locked(self, line: str) -> None:
        self._pending += 1
        self._queue.put([(_OWN, logging.WARNING, line, None, False, 0.0, True, False)])

    def drain(self) -> None:
        """Wait until every line queued is written, while stdout takes them (see the module
        docstring); else :meth:`abandon` what is left. Then wait (briefly) for the notices."""
        with self._state:
            written = self._wait_written(time.monotonic())
            self._count_drops(self._queue.take(0, 0)[1])
            if written and not self._discarding and self._dropped:
                # Dropped lines not counted yet (the last count was recent): said last.
                self._put_drop_count()
        if not written:
            self.abandon()
            return
        if self._pending > 0 and not self._discarding and not self._stopped:
            self.drain()  # the count of dropped lines, just queued
            return
        self.notices.wait(NOTICE_WAIT)

    def caught_up(self) -> bool:
        """Wait until every line queued is written, while stdout takes them, as :meth:`drain`
        waits, but go on writing after: what the command says next on stderr (often the
        same file) comes after the lines it sums up. True if they were written."""
        with self._state:
            return self._wait_written(time.monotonic())

    def _wait_written(self, started: float) -> bool:
        """Wait (lock held) until no line is pending, or stdout has taken nothing for
        :data:`DRAIN_STALL` seconds, or :data:`DRAIN_MOST` have passed since ``started``;
        whether every line was written (or thrown away: stdout failed)."""
        while self._pending > 0 and not self._discarding and not self._stopped:
            now = time.monotonic()
            until = min(started + DRAIN_MOST, max(self._progress_at, started) + DRAIN_STALL)
            if now >= until:
                break
            self._state.wait(until - now)
        return self._pending <= 0 or self._discarding

    def abandon(self) -> None:
        """Stop writing: say on stderr how many lines were not written (and dropped lines
        not counted yet), then wait (briefly) for stderr. Never waits on stdout."""
        with self._state:
            if self._stopped:
                return
            self._stopped = True
            left = max(self._pending, 0) if not self._discarding else 0
            stalled = time.monotonic() - self._progress_at
            # The writer, held by stdout, has not taken the latest drops from the queue.
            self._count_drops(self._queue.take(0, 0)[1])
            dropped, self._dropped = self._dropped, {}
        self._queue.wake()
        said = []
        if left:
            said.append(
                f"{left:,} console line(s) not written: stdout took nothing for "
                f"{stalled:.1f} s; exiting without them"
            )
        if dropped:
            said.append(
                f"{sum(dropped.values()):,} console line(s) dropped before "
                f"({by_level(dropped)}): stdout did not take them"
            )
        if said:
            self.notices.say("isoplug: " + "; ".join(said))
        self.notices.wait(NOTICE_WAIT)

    def stop(self) -> None:
        """Stop the thread without writing what is left (the interpreter is exiting)."""
        with self._state:
            self._stopped = True
        self._queue.wake()

    def written(self, timeout: float) -> bool:
        """Wait until every line queued so far is written, ``timeout`` seconds at most (a
        full-screen view that takes the terminal over next); True if it was."""
        with self._state:
            return self._state.wait_for(
                lambda: self._pending <= 0 or self._discarding or self._stopped, timeout
            )

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            entries, drops, _ = self._queue.take(_BATCH_LINES, None)
            with self._state:
                if self._stopped:
                    return
                self._count_drops(drops)
                discarding = self._discarding
            if discarding:
                self._credit(len(entries))
                continue
            try:
                self._write([entry[2] for entry in entries])
            except _GivenUp:
                return
            except OSError as error:
                with self._state:
                    self._discarding = True
                self._failed(error)
                continue
            with self._state:
                # stdout took lines: the count of those it did not, unless said lately.
                if self._dropped and time.monotonic() - self._last_notice >= NOTICE_INTERVAL:
                    self._put_drop_count()

    def _count_drops(self, drops: Drops) -> None:
        """Add the queue's ``drops`` to those not counted on the console yet (lock held)."""
        for (_, level), count in drops.items():
            self._dropped[level] = self._dropped.get(level, 0) + count

    def _put_drop_count(self) -> None:
        """Queue the count of the lines dropped since it was last said (lock held)."""
        dropped, self._dropped = self._dropped, {}
        waited, self._longest_wait = self._longest_wait, 0.0
        self._dropping_said = False
        self._last_notice = time.monotonic()
        line = self._notice_line(
            f"{sum(dropped.values()):,} console line(s) dropped ({by_level(dropped)}): "
            f"stdout did not take them for {waited:.1f} s"
        )
        # Never dropped: the counts it carries would be lost with it.
        self._say_locked(line)

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        if self._descriptor is None:  # not a file (a test's StringIO): its own methods
            try:
                self._stream.write("".join(line + "\n" for line in lines))
                self._stream.flush()
            finally:
                self._credit(len(lines))
            return
        encoded = [(line + "\n").encode(self._encoding, "backslashreplace") for line in lines]
        ends = list(itertools.accumulate(len(line) for line in encoded))
        data = memoryview(b"".join(encoded))
        sent = credited = 0
        try:
            while sent < len(data):
                started = time.monotonic()
                with self._state:
                    self._writing_since = started
                sent += self._write_some(data[sent : sent + _CHUNK_BYTES])
                now = time.monotonic()
                whole = bisect.bisect_right(ends, sent)
                with self._state:
                    self._writing_since = None
                    self._progress_at = now
                    self._longest_wait = max(self._longest_wait, now - started)
                    self._pending -= whole - credited
                    self._state.notify_all()
                credited = whole
        except OSError:
            # Nothing more will be written: the lines not written whole leave the count.
            self._credit(len(lines) - credited)
            raise

    def _write_some(self, chunk: memoryview) -> int:
        """Write some of ``chunk``, waiting while a non-blocking stdout is full; how much."""
        assert self._descriptor is not None
        while True:
            try:
                return os.write(self._descriptor, chunk)
            except BlockingIOError:
                self._wait_writable()

    def _wait_writable(self) -> None:
        assert self._descriptor is not None
        poller = select.poll()
        poller.register(self._descriptor, select.POLLOUT)
        # An error or hang-up ends the wait too: the next write says which.
        while not poller.poll(_POLL_MS):
            if self._stopped:
                raise _GivenUp

    def _credit(self, lines: int) -> None:
        with self._state:
            self._pending -= lines
            self._state.notify_all()

    def _waited(self, now: float) -> float:
        """How long the write under way has waited (lock held)."""
        return now - self._writing_since if self._writing_since is not None else 0.0


def _entry(level: int, line: str) -> Entry:
    return (_LINES, level, line, None, False, 0.0, level >= logging.WARNING, False)


def _descriptor_of(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return None  # not a file (a test's StringIO, pytest's capture)


def _same_file(first: int, second: int) -> bool:
    try:
        return os.path.samestat(os.fstat(first), os.fstat(second))
    except OSError:
        return False  # one of them is closed: not the same file
