"""The reader thread of a runner's stdio: drain both pipes, split and classify their lines.

The reader only reads both pipes (one ``selectors`` loop), splits lines
(:class:`~isoplug.host.stdio_lines.LineSplitter`: invalid UTF-8 replaced, over-long lines cut
and marked) and classifies them (:class:`~isoplug.logs.textlines.LineClassifier`: JSON lines,
``LEVEL:`` prefixes, tracebacks and crash dumps grouped into one record). It never waits on a
logging handler: it puts records in the bounded backlog (:mod:`isoplug.host.stdio_backlog`) and
goes back to reading, so the pipes are always drained. Reading comes first: it classifies in
slices of :data:`CLASSIFY_SLICE` and reads again in between, lines waiting for it up to
:data:`PENDING_BYTES` per stream. (When the host cannot even classify as fast as a plugin
writes, lines past :data:`PENDING_BYTES` are dropped before they are classified, at their
stream's level, counted and reported like the backlog's drops.)
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import selectors
import threading
import time
from collections.abc import Mapping
from typing import Any

from isoplug.host.pipe_size import GROWN_PIPE_BYTES, enlarge_pipes
from isoplug.host.stdio_backlog import Backlog, Entry, record_entry
from isoplug.host.stdio_lines import CutLine, LineSplitter, cut_line
from isoplug.log_guard import guarded_logger
from isoplug.logs.gil import GilShare
from isoplug.logs.textlines import (
    NOT_PLAIN_START_WITH_DUMPS,
    TRACEBACK_START,
    LineClassifier,
    is_terminal_drawing,
    leads_a_traceback,
    redrawn,
)

__all__ = ["CLASSIFY_SLICE", "IDLE_FLUSH_DELAY", "PENDING_BYTES", "StdioReader"]

_log = guarded_logger("isoplug.host")

#: A stream that goes quiet this long (seconds) while the classifier holds an unfinished block
#: (a traceback that may still be chained, a crash dump) has the block flushed: a traceback a
#: process prints last is not held until the process exits.
IDLE_FLUSH_DELAY = 0.1
#: Bytes of lines read but not yet classified, at most, per stream: when the host cannot even
#: classify lines as fast as a plugin writes them, the newest are dropped past this (counted).
PENDING_BYTES = 4 * 1024 * 1024
#: The reader classifies in slices of this many seconds, then reads again: draining the pipes
#: comes first, so a plugin is not made to wait while the host classifies.
CLASSIFY_SLICE = 0.002
#: Lines classified between two looks at the clock.
_CLASSIFY_STEP = 128
#: Bytes read from a pipe at once (its default size), and read per pipe per turn of the reader
#: at most. A read that fills ``_READ_SIZE`` found the pipe full, its writer likely waiting: the
#: pipe grows then (:mod:`isoplug.host.pipe_size`), and is read whole from then on.
_READ_SIZE = 64 * 1024
_TURN_BYTES = GROWN_PIPE_BYTES
#: The output streams, and the level of their lines that say nothing of their own.
_STREAMS = {"stdout": logging.INFO, "stderr": logging.WARNING}


class StdioReader:
    """Reads the pipes of the runner ``pid`` into ``backlog``, in the thread that calls
    :meth:`run` (see the module docstring).

    ``pipes`` maps ``"stdout"`` / ``"stderr"`` to the read end of each pipe; the reader owns
    them from now on: :meth:`run` closes them when it ends, or :meth:`close` if it never runs.
    """

    def __init__(
        self, pid: int, pipes: Mapping[str, int], backlog: Backlog, gil: GilShare | None = None
    ) -> None:
        self.pid = pid
        #: Shared with the replay thread, and the stdio threads of the other runners (see
        #: isoplug.host.stdio): they pause together, so the event loop's thread gets the GIL.
        self._gil = gil or GilShare()
        self._pipes = dict(pipes)
        self._backlog = backlog
        # stop() wakes the reader through this pipe; the lock keeps it from writing to the
        # pipe once the reader has closed it (its number could be reused by then).
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        # Made here, at the runner's start, not in the reader's thread: a host out of
        # descriptors then fails the start (said as such, retried), rather than leaving a
        # running runner whose output nobody reads.
        try:
            self._selector = selectors.DefaultSelector()
        except BaseException:
            os.close(self._wake_read)
            os.close(self._wake_write)
            raise
        self._wake_lock = threading.Lock()
        self._stopping = False
        self._wake_closed = False

    def run(self) -> None:
        """Read until both pipes are at end of stream, or :meth:`stop`; then close the pipes
        and end the reader's side of the backlog. A failure is logged, not raised."""
        backlog = self._backlog
        gil = self._gil
        streams = [_Stream(name, fd) for name, fd in self._pipes.items()]
        try:
            with self._selector as selector:
                for stream in streams:
                    os.set_blocking(stream.fd, False)
                    selector.register(stream.fd, selectors.EVENT_READ, stream)
                os.set_blocking(self._wake_read, False)
                selector.register(self._wake_read, selectors.EVENT_READ, None)
                while not self._stopping and not all(s.finished for s in streams):
                    events = selector.select(_select_timeout(streams))
                    gil.wait_turn()
                    for key, _ in events:
                        stream = key.data
                        if stream is None:
                            with contextlib.suppress(BlockingIOError):
                                os.read(self._wake_read, 64)
                        elif not stream.read(backlog):
                            selector.unregister(key.fd)
                    items = _classify(streams, time.monotonic() + CLASSIFY_SLICE)
                    if items:
                        backlog.put(items)
                        # Let the host's event loop have the GIL now rather than at the next
                        # forced switch: measured, it halves the loop's lag under a flood.
                        gil.pause()
                # Ended or stopped: what was read still counts (bounded by PENDING_BYTES).
                for stream in streams:
                    stream.end_now()
                items = _classify(streams, None)
                if items:
                    backlog.put(items)
        except Exception:
            _log.exception("reading the stdout/stderr of runner %d failed", self.pid)
        finally:
            self.close()
            backlog.end()

    def stop(self) -> None:
        """Stop reading now (from any thread): what was read still counts, what is unread is
        left."""
        with self._wake_lock:
            self._stopping = True
            if not self._wake_closed:
                with contextlib.suppress(BlockingIOError, BrokenPipeError):
                    os.write(self._wake_write, b"x")

    def drop_inherited(self) -> None:
        """In a forked child of the host: close the child's copies of the pipes (no lock: see
        :class:`isoplug.host.binding.Inherited`)."""
        if not self._wake_closed:
            self._wake_closed = True
            for fd in (*self._pipes.values(), self._wake_read, self._wake_write):
                with contextlib.suppress(OSError):  # closed either way
                    os.close(fd)
            # The child has no reader thread: nothing else uses its copy.
            self._selector.close()

    def close(self) -> None:
        """Close the pipes and the wake pipe. Idempotent."""
        with self._wake_lock:
            if self._wake_closed:
                return
            self._wake_closed = True
            for fd in (*self._pipes.values(), self._wake_read, self._wake_write):
                with contextlib.suppress(OSError):
                    os.close(fd)
            # After run()'s own close, a no-op; the only one where run() never ran.
            self._selector.close()


class _Stream:
    """The reader thread's state for one pipe: lines read but not yet classified, and the
    splitter and classifier of the stream."""

    __slots__ = (
        "at_end",
        "classifier",
        "fd",
        "grown",
        "last_data",
        "level",
        "name",
        "pending",
        "pending_bytes",
        "read_size",
        "splitter",
    )

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self.fd = fd
        self.level = _STREAMS[name]
        self.splitter = LineSplitter()
        self.classifier = LineClassifier(self.level, message_lines=True)
        #: Batches of lines read at one time: [time.time() of the read, lines, next index].
        self.pending: collections.deque[list[Any]] = collections.deque()
        self.pending_bytes = 0
        self.last_data = 0.0
        self.at_end = False
        self.read_size = _READ_SIZE
        self.grown = False

    @property
    def finished(self) -> bool:
        """At end of stream, and everything read was classified and flushed."""
        return self.at_end and not self.pending and not self.classifier.holding

    def read(self, backlog: Backlog) -> bool:
        """Drain what the pipe holds (a bounded amount per turn); False at end of stream.

        Lines past :data:`PENDING_BYTES` of unclassified text are dropped here, counted at
        the stream's level: the host cannot even classify as fast as the plugin writes, and
        the plugin must not wait for it.
        """
        lines: list[bytes] = []
        taken = 0
        while taken < _TURN_BYTES:
            try:
                data = os.read(self.fd, self.read_size)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                lines += self.splitter.split_end()
                self.at_end = True
                break
            lines += self.splitter.split(data)
            taken += len(data)
            if len(data) < self.read_size:
                break
            if not self.grown:
                # Full: the writer waits for us. Read it a megabyte at a time from now on.
                self.grown = True
                self.read_size = max(_READ_SIZE, enlarge_pipes((self.fd,)) or _READ_SIZE)
        self._keep(lines, backlog)
        return not self.at_end

    def end_now(self) -> None:
        """Reading stops here: the partial last line counts as a line."""
        if not self.at_end:
            self.at_end = True
            self._keep(self.splitter.split_end(), None)

    def _keep(self, lines: list[bytes], backlog: Backlog | None) -> None:
        if not lines:
            return
        self.last_data = time.monotonic()
        size = sum(map(len, lines))
        if self.pending_bytes + size > PENDING_BYTES and backlog is not None:
            kept: list[bytes] = []
            for line in lines:
                if self.pending_bytes + len(line) <= PENDING_BYTES:
                    kept.append(line)
                    self.pending_bytes += len(line)
            backlog.count_dropped(self.name, self.level, len(lines) - len(kept))
            lines = kept
        else:
            self.pending_bytes += size
        if lines:
            self.pending.append([time.time(), lines, 0])

    def classify(self, deadline: float | None) -> list[Entry]:
        """Classify pending lines until ``deadline`` (``time.monotonic()``; None: all), and
        flush a held block once the stream has ended or gone quiet."""
        items: list[Entry] = []
        name, classifier, level = self.name, self.classifier, self.level
        urgent = level >= logging.WARNING
        pending = self.pending
        while pending:
            batch = pending[0]
            created, lines, index = batch
            stop = min(len(lines), index + _CLASSIFY_STEP)
            for position in range(index, stop):
                raw = lines[position]
                self.pending_bytes -= len(raw)
                cut = raw.cut if type(raw) is CutLine else 0
                # LineSplitter.decode(), inlined: this runs for every line.
                text = raw.decode("utf-8", errors="replace")
                if text[:1] == "\r" or text[-1:] == "\r":
                    # A progress bar's update (stdio_lines.REDRAWN), or a status frame the next
                    # line draws over (stdio_lines.FRAME_END): at INFO on stderr too, as
                    # in-process. Those CRs are the only ones a line keeps.
                    text = text.strip("\r")
                    holding = classifier.holding
                    if not (holding or cut) and is_terminal_drawing(text):
                        # Blanks clearing the line, a cursor movement: no text to record.
                        continue
                    records = classifier.feed(cut_line(text, cut) if cut else text, cut > 0)
                    if not (holding or classifier.holding):
                        records = redrawn(records, level)
                    items += [record_entry(name, record, created) for record in records]
                    continue
                if not (cut or classifier.phase) and (
                    text[:1] not in NOT_PLAIN_START_WITH_DUMPS
                    and ":" not in text[:10]
                    and "=" not in text[:10]
                ):
                    # is_plain_line(), inlined: most lines are plain, and their entry is what
                    # record_entry() makes of the classifier's record, without either call.
                    items.append((name, level, text, None, False, created, urgent, False))
                    continue
                if (
                    text[:10] == "Traceback "
                    and position
                    and items
                    and not classifier.phase
                    and text.rstrip() == TRACEBACK_START
                    and _entry_of(items[-1], name, created, lines[position - 1])
                    and leads_a_traceback(items[-1][2])
                ):
                    # The log line just before, read with it, is this traceback's message
                    # (a log.exception() in a child's basicConfig() format): one record.
                    classifier.lead(items.pop()[2])
                for record in classifier.feed(cut_line(text, cut) if cut else text, cut > 0):
                    items.append(record_entry(name, record, created))
            if stop == len(lines):
                pending.popleft()
            else:
                batch[2] = stop
            if deadline is not None and time.monotonic() >= deadline:
                return items
        if classifier.holding and (
            self.at_end or time.monotonic() - self.last_data >= IDLE_FLUSH_DELAY
        ):
            created = time.time()
            items += [record_entry(name, record, created) for record in classifier.flush()]
        return items


def _entry_of(entry: Entry, stream: str, created: float, raw: bytes) -> bool:
    """True when ``entry`` is the record of the whole line ``raw`` alone, as read from
    ``stream`` at ``created``: a plain or prefixed line, not cut, not a block's, not a redraw."""
    return (
        entry[0] == stream
        and entry[5] == created
        and not entry[7]
        and not entry[4]
        and entry[3] is None
        and type(raw) is not CutLine
        and entry[2] == raw.decode("utf-8", errors="replace")
    )


def _classify(streams: list[_Stream], deadline: float | None) -> list[Entry]:
    items: list[Entry] = []
    for stream in streams:
        items += stream.classify(deadline)
    return items


def _select_timeout(streams: list[_Stream]) -> float | None:
    """How long the reader may sleep: not at all with lines to classify; until a held block is
    due to be flushed; else until something happens."""
    timeout: float | None = None
    now = time.monotonic()
    for stream in streams:
        if stream.pending:
            return 0.0
        if stream.classifier.holding:
            due = max(0.0, stream.last_data + IDLE_FLUSH_DELAY - now)
            timeout = due if timeout is None else min(timeout, due)
    return timeout
