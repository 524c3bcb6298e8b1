"""A runner's fd-level stdout and stderr, read by host threads and replayed as log records.

What a plugin prints from Python travels its log connection as records. What still arrives on
the runner's fd 1 and fd 2 pipes is fd-level output: C extensions, child processes,
faulthandler's crash dump, a runner that cannot log. :class:`StdioCapture` handles it with two
threads per runner process, so that the host's event loop never touches it and a plugin never
waits on the host:

- the **reader** thread only reads both pipes (one ``selectors`` loop), splits lines
  (:class:`LineSplitter`: invalid UTF-8 replaced, over-long lines cut and marked) and classifies
  them (:class:`~isoplug.logs.textlines.LineClassifier`: JSON lines, ``LEVEL:`` prefixes,
  tracebacks and crash dumps grouped into one record). It never waits on a logging handler: it
  puts records in a bounded backlog and goes back to reading, so the pipes are always drained.
  Reading comes first: it classifies in slices of :data:`CLASSIFY_SLICE` and reads again in
  between, lines waiting for it up to :data:`PENDING_BYTES` per stream;
- the **replay** thread takes records from the backlog and replays them with the runner's
  :class:`~isoplug.logs.LogReplayer` (see :class:`StdioDestination`): the same logger mapping,
  sanitizing, caps, rate limit, metrics and identity as the runner's log records, on
  ``plugin.<runner id>.stdout`` / ``.stderr``, with ``record.process`` the runner's pid.

When the host's handlers cannot keep up and the backlog is full, records are dropped, never
pushed back onto the plugin: below WARNING first (a WARNING or a traceback evicts the newest
such record), counted in the metrics as :attr:`~isoplug.logs.DropReason.HOST_BACKLOG` and
reported in one WARNING per report interval on the plugin's logger. (When the host cannot
even classify as fast as a plugin writes, lines past :data:`PENDING_BYTES` are dropped before
they are classified, at their stream's level, counted and reported the same way.)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import selectors
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from isoplug.logs import DropReason, LogReplayer
from isoplug.logs.textlines import LineClassifier, TextRecord
from isoplug.wire import LogRecordData

__all__ = [
    "BACKLOG_BYTES",
    "BACKLOG_RECORDS",
    "CLASSIFY_SLICE",
    "IDLE_FLUSH_DELAY",
    "MAX_LINE_BYTES",
    "PENDING_BYTES",
    "CapturedLine",
    "LineSplitter",
    "StdioCapture",
    "StdioDestination",
]

_log = logging.getLogger("isoplug.host")

#: Longest line kept whole. A plugin that prints a huge blob without a newline must not make
#: the host buffer it all: past this, the line is cut, marked, and the rest of it skipped.
MAX_LINE_BYTES = 16 * 1024
_TRUNCATED_MARK = " [... line truncated by isoplug]"
#: A stream that goes quiet this long (seconds) while the classifier holds an unfinished block
#: (a traceback that may still be chained, a crash dump) has the block flushed: a traceback a
#: process prints last is not held until the process exits.
IDLE_FLUSH_DELAY = 0.1
#: Records read but not yet replayed, at most, per runner process; past this (or
#: :data:`BACKLOG_BYTES`) the host drops rather than make the plugin wait. A burst of this many
#: lines is delivered whole however slow the handlers are.
BACKLOG_RECORDS = 50_000
#: Memory the records read but not yet replayed may take, at most, per runner process (their
#: text, and about :data:`_RECORD_OVERHEAD` bytes of objects each).
BACKLOG_BYTES = 16 * 1024 * 1024
_RECORD_OVERHEAD = 300
#: Bytes of lines read but not yet classified, at most, per stream: when the host cannot even
#: classify lines as fast as a plugin writes them, the newest are dropped past this (counted).
PENDING_BYTES = 4 * 1024 * 1024
#: The reader classifies in slices of this many seconds, then reads again: draining the pipes
#: comes first, so a plugin is not made to wait while the host classifies.
CLASSIFY_SLICE = 0.002
#: Lines classified between two looks at the clock.
_CLASSIFY_STEP = 128
#: Bytes read from a pipe at once, and reads per pipe per turn of the reader.
_READ_SIZE = 64 * 1024
_READS_PER_TURN = 4
#: Records the replay thread takes from the backlog at once.
_REPLAY_BATCH = 256
#: The output streams, and the level of their lines that say nothing of their own.
_STREAMS = {"stdout": logging.INFO, "stderr": logging.WARNING}
_PROCESS_NAME = "isoplug-runner"


@dataclasses.dataclass(frozen=True)
class CapturedLine:
    text: str
    truncated: bool = False


class LineSplitter:
    """Bytes in, complete lines out (without the newline).

    A line longer than ``max_line_bytes`` is cut there and marked ``truncated``; when its end
    has not arrived yet, the rest of it is skipped up to its newline, so a huge blob never
    makes the splitter hold more than ``max_line_bytes``.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._buffer = bytearray()
        self._skipping = False  # inside the tail of a line that was already cut

    def feed(self, data: bytes) -> list[CapturedLine]:
        return [self.decode(raw, cut) for raw, cut in self.split(data)]

    def flush(self) -> list[CapturedLine]:
        """The partial last line, if any (call at end of stream)."""
        return [self.decode(raw, cut) for raw, cut in self.split_end()]

    def split(self, data: bytes) -> list[tuple[bytes, bool]]:
        """Like :meth:`feed`, but the lines stay bytes: ``(raw line, truncated)``. The work
        is done in C (one ``split`` per chunk), so reading stays cheap; decode later."""
        limit = self._max
        buffer = self._buffer
        if b"\n" not in data:
            if not self._skipping:
                buffer += data
                if len(buffer) > limit:
                    line = bytes(buffer[:limit])
                    buffer.clear()
                    self._skipping = True
                    return [(line, True)]
            return []
        parts = data.split(b"\n")
        tail = parts.pop()
        if self._skipping:
            # The first part is the end of a line already cut and emitted.
            self._skipping = False
            del parts[0]
        elif buffer:
            buffer += parts[0]
            parts[0] = bytes(buffer)
        buffer.clear()
        if parts and max(map(len, parts)) > limit:
            lines = [(part[:limit], True) if len(part) > limit else (part, False) for part in parts]
        else:
            lines = [(part, False) for part in parts]
        if tail:
            buffer += tail
            if len(buffer) > limit:
                lines.append((bytes(buffer[:limit]), True))
                buffer.clear()
                self._skipping = True
        return lines

    def split_end(self) -> list[tuple[bytes, bool]]:
        """Like :meth:`flush`, as bytes."""
        if not self._buffer or self._skipping:
            self._buffer.clear()
            self._skipping = False
            return []
        line = bytes(self._buffer)
        self._buffer.clear()
        return [(line, False)]

    @staticmethod
    def decode(raw: bytes, truncated: bool = False) -> CapturedLine:
        """A raw line as text: invalid UTF-8 replaced, a trailing CR dropped, a cut marked."""
        text = raw.removesuffix(b"\r").decode("utf-8", errors="replace")
        return CapturedLine(text + _TRUNCATED_MARK if truncated else text, truncated)


@dataclasses.dataclass(frozen=True)
class StdioDestination:
    """Where one runner process's output goes: ``replayer`` (in a Host, one with the runner's
    identity, shared rate limit and metrics of its own, see
    :meth:`~isoplug.host.logbridge.LogBridge.stdio_destination`) and ``finished``, called once
    by the replay thread after the last record and report (the metrics are final then)."""

    replayer: LogReplayer
    finished: Callable[[], None] = lambda: None


#: One entry of the backlog: ``(stream, level, message, extra, truncated, created, urgent)``
#: for a record read from ``stream``; ``extra`` None marks a report to make (``message``). A
#: tuple of plain values, not an object: the garbage collector stops tracking it, so a full
#: backlog does not lengthen the host's collections (and their pauses of its event loop).
_Entry = tuple[str, int, str, "dict[str, Any] | None", bool, float, bool]
#: Drops not yet accounted: (stream, level) -> count.
_Drops = dict[tuple[str, int], int]


def _entry(stream: str, record: TextRecord, created: float) -> _Entry:
    urgent = record.level >= logging.WARNING or record.traceback
    return (stream, record.level, record.message, record.extra, record.truncated, created, urgent)


class _Backlog:
    """Records between the reader and the replay thread; bounded, never blocks the reader.

    Records below WARNING (``low``) and the others (``high``: warnings, errors, tracebacks,
    reports) wait in two queues, taken in the order they were read. When the backlog is full,
    an incoming high record evicts the newest low one; otherwise the incoming record is dropped.
    Drops are counted here and handed to the replay thread, which alone updates the metrics.
    """

    def __init__(self, max_records: int, max_bytes: int) -> None:
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._ready = threading.Condition(threading.Lock())
        # (order of arrival, entry)
        self._low: collections.deque[tuple[int, _Entry]] = collections.deque()
        self._high: collections.deque[tuple[int, _Entry]] = collections.deque()
        self._count = 0
        self._bytes = 0
        self._order = 0
        self._dropped: _Drops = {}
        # The reader and the owner (who may still add reports) must both have ended it.
        self._open_ends = 2
        self._ended = False

    def put(self, entries: list[_Entry]) -> None:
        with self._ready:
            for entry in entries:
                self._put_one(entry)
            self._ready.notify()

    def _put_one(self, entry: _Entry) -> None:
        cost = _RECORD_OVERHEAD + len(entry[2])
        urgent = entry[6]
        if entry[3] is not None:  # a record, not a report: reports are never dropped
            while self._count and (
                self._count >= self._max_records or self._bytes + cost > self._max_bytes
            ):
                if not (urgent and self._low):
                    self._drop(entry)
                    return
                _, evicted = self._low.pop()
                self._count -= 1
                self._bytes -= _RECORD_OVERHEAD + len(evicted[2])
                self._drop(evicted)
        self._order += 1
        (self._high if urgent else self._low).append((self._order, entry))
        self._count += 1
        self._bytes += cost

    def _drop(self, entry: _Entry) -> None:
        key = (entry[0], entry[1])
        self._dropped[key] = self._dropped.get(key, 0) + 1

    def end(self) -> None:
        """No more entries will come from one of the two ends (the reader, the owner)."""
        with self._ready:
            self._open_ends -= 1
            self._ended = self._open_ends <= 0
            self._ready.notify()

    def wake(self) -> None:
        with self._ready:
            self._ready.notify()

    def count_dropped(self, stream: str, level: int, count: int) -> None:
        """Count ``count`` records of ``stream`` at ``level`` dropped before the backlog."""
        if count:
            with self._ready:
                key = (stream, level)
                self._dropped[key] = self._dropped.get(key, 0) + count
                self._ready.notify()

    def take(self, limit: int, timeout: float | None) -> tuple[list[_Entry], _Drops, bool]:
        """Up to ``limit`` entries in reading order, the drops since the last call, and whether
        everything has been taken for good. Waits up to ``timeout`` for something to take."""
        with self._ready:
            if not (self._count or self._dropped or self._ended):
                self._ready.wait(timeout)
            low, high = self._low, self._high
            entries: list[_Entry] = []
            while len(entries) < limit and (low or high):
                source = high if not low or (high and high[0][0] < low[0][0]) else low
                _, entry = source.popleft()
                self._count -= 1
                self._bytes -= _RECORD_OVERHEAD + len(entry[2])
                entries.append(entry)
            dropped, self._dropped = self._dropped, {}
            return entries, dropped, self._ended and not self._count


class StdioCapture:
    """Reads the stdout and stderr pipes of the runner ``pid`` in a thread, and replays what
    they carry in another (see the module docstring).

    ``pipes`` maps ``"stdout"`` / ``"stderr"`` to the read end of each pipe; the capture owns
    them from now on (the reader thread closes them when it ends). ``loop`` is the event loop
    on which :meth:`wait_read` and :meth:`wait_replayed` are awaited. The owner calls
    :meth:`seal` once it has no more reports to make: the replay thread ends after that and the
    reader's end, and then tells the destination.
    """

    def __init__(
        self,
        pid: int,
        pipes: Mapping[str, int],
        destination: StdioDestination,
        *,
        loop: asyncio.AbstractEventLoop,
        max_records: int = BACKLOG_RECORDS,
        max_bytes: int = BACKLOG_BYTES,
    ) -> None:
        self.pid = pid
        self._pipes = dict(pipes)
        self._destination = destination
        self._loop = loop
        self._backlog = _Backlog(max_records, max_bytes)
        self._read_done: asyncio.Future[None] = loop.create_future()
        self._replay_done: asyncio.Future[None] = loop.create_future()
        # stop_reading() wakes the reader through this pipe; the lock keeps it from writing
        # to the pipe once the reader has closed it (its number could be reused by then).
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._wake_lock = threading.Lock()
        self._stopping = False
        self._wake_closed = False
        self._abandoned = False
        self._sealed = False

    def start(self) -> None:
        """Start the reader and replay threads. If a thread cannot be started (the process is
        out of threads), the pipes are closed and the destination told before this raises."""
        try:
            threading.Thread(
                target=self._replay, name=f"isoplug-stdio-replay-{self.pid}", daemon=True
            ).start()
        except BaseException:
            self._close_fds()
            self._destination.finished()
            _resolve(self._loop, self._read_done)
            _resolve(self._loop, self._replay_done)
            raise
        try:
            threading.Thread(
                target=self._read, name=f"isoplug-stdio-read-{self.pid}", daemon=True
            ).start()
        except BaseException:
            self._close_fds()
            self._backlog.end()
            _resolve(self._loop, self._read_done)
            raise

    # -- control, from the event loop ---------------------------------------------------------

    async def wait_read(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds for the reader to finish (both pipes at end of stream,
        or :meth:`stop_reading`); True if it has. Never blocks the loop."""
        return await _wait(self._read_done, timeout)

    async def wait_replayed(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds until every record read was replayed (or counted
        dropped) and the destination told; True if so. Never blocks the loop."""
        return await _wait(self._replay_done, timeout)

    @property
    def replayed(self) -> bool:
        """True once everything read was replayed (or counted dropped)."""
        return self._replay_done.done()

    def stop_reading(self) -> None:
        """Stop reading now: what was read is still replayed, what is unread is left."""
        with self._wake_lock:
            self._stopping = True
            if not self._wake_closed:
                with contextlib.suppress(BlockingIOError, BrokenPipeError):
                    os.write(self._wake_write, b"x")

    def report(self, text: str) -> None:
        """Have ``text`` reported (WARNING on the plugin's logger) after the records read so
        far, by the replay thread. Only before :meth:`seal`."""
        self._backlog.put([("", logging.WARNING, text, None, False, time.time(), True)])

    def seal(self) -> None:
        """No more reports will come: the replay thread ends once the reader has ended and
        everything is replayed. Idempotent."""
        if not self._sealed:
            self._sealed = True
            self._backlog.end()

    def abandon(self) -> None:
        """Stop replaying: the records still in the backlog, and any read from now on, are
        counted dropped and reported instead (the host is closing the runner and its handlers
        are too slow to wait for)."""
        self._abandoned = True
        self._backlog.wake()

    # -- the reader thread --------------------------------------------------------------------

    def _read(self) -> None:
        backlog = self._backlog
        streams = [_Stream(name, fd) for name, fd in self._pipes.items()]
        try:
            with selectors.DefaultSelector() as selector:
                for stream in streams:
                    os.set_blocking(stream.fd, False)
                    selector.register(stream.fd, selectors.EVENT_READ, stream)
                os.set_blocking(self._wake_read, False)
                selector.register(self._wake_read, selectors.EVENT_READ, None)
                while not self._stopping and not all(s.finished for s in streams):
                    events = selector.select(_select_timeout(streams))
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
                        _yield()
                # Ended or stopped: what was read still counts (bounded by PENDING_BYTES).
                for stream in streams:
                    stream.end_now()
                items = _classify(streams, None)
                if items:
                    backlog.put(items)
        except Exception:
            _log.exception("reading the stdout/stderr of runner %d failed", self.pid)
        finally:
            self._close_fds()
            backlog.end()
            _resolve(self._loop, self._read_done)

    def _close_fds(self) -> None:
        with self._wake_lock:
            if self._wake_closed:
                return
            self._wake_closed = True
            for fd in (*self._pipes.values(), self._wake_read, self._wake_write):
                with contextlib.suppress(OSError):
                    os.close(fd)

    # -- the replay thread --------------------------------------------------------------------

    def _replay(self) -> None:
        replayer = self._destination.replayer
        interval = replayer.limits.report_interval
        unreported: _Drops = {}
        last_report = 0.0
        try:
            while True:
                wait = (
                    None if not unreported else max(0.0, last_report + interval - time.monotonic())
                )
                items, dropped, ended = self._backlog.take(_REPLAY_BATCH, wait)
                if self._abandoned:
                    for entry in items:
                        if entry[3] is not None:
                            key = (entry[0], entry[1])
                            dropped[key] = dropped.get(key, 0) + 1
                    items = [entry for entry in items if entry[3] is None]
                if dropped:
                    self._count_drops(dropped)
                    for key, count in dropped.items():
                        unreported[key] = unreported.get(key, 0) + count
                try:
                    if items:
                        self._replay_items(items)
                        _yield()
                    now = time.monotonic()
                    if unreported and (ended or now - last_report >= interval):
                        last_report = now
                        drops, unreported = unreported, {}
                        self._report_drops(drops)
                except Exception:
                    # A handler (or its filter) that raises: the next records still get their
                    # chance, and the pipes are still drained.
                    _log.exception("replaying the stdout/stderr of runner %d failed", self.pid)
                if ended:
                    break
        finally:
            try:
                replayer.finish()
                self._destination.finished()
            finally:
                _resolve(self._loop, self._replay_done)

    def _replay_items(self, items: list[_Entry]) -> None:
        replayer = self._destination.replayer
        records: list[LogRecordData] = []
        for entry in items:
            if entry[3] is not None:
                records.append(self._record_data(entry))
                continue
            if records:
                self._replay_records(records)
                records = []
            replayer.report(entry[2])
        if records:
            self._replay_records(records)

    def _replay_records(self, records: list[LogRecordData]) -> None:
        try:
            self._destination.replayer.replay_records(records)
        except Exception:
            # A handler's filter that raises: the next batch still gets its chance.
            _log.exception("replaying the stdout/stderr of runner %d failed", self.pid)

    def _record_data(self, entry: _Entry) -> LogRecordData:
        stream, level, message, extra, truncated, created, _ = entry
        site = f"<{stream}>"
        return LogRecordData(
            name=stream,
            levelno=level,
            levelname=logging.getLevelName(level),
            created=created,
            pathname=site,
            filename=site,
            module=stream,
            lineno=0,
            func_name="",
            process=self.pid,
            process_name=_PROCESS_NAME,
            message=message,
            extra={**(extra or {}), "stream": stream, "truncated": truncated},
        )

    def _count_drops(self, dropped: _Drops) -> None:
        """Dropped records were received, from their stream, and dropped: say so in the
        metrics (this thread is the only one that updates them)."""
        metrics = self._destination.replayer.metrics
        total = sum(dropped.values())
        metrics.received += total
        for (stream, _), count in dropped.items():
            metrics.streams[stream] = metrics.streams.get(stream, 0) + count
        metrics.count_drop(DropReason.HOST_BACKLOG, total)

    def _report_drops(self, dropped: _Drops) -> None:
        replayer = self._destination.replayer
        parts = ", ".join(
            f"{stream} {logging.getLevelName(level)}: {count:,}"
            for (stream, level), count in sorted(dropped.items())
        )
        why = (
            "the runner was closed before the host's log handlers could replay them"
            if self._abandoned
            else "the host's log handlers did not keep up, and a plugin is never made to wait "
            "for them"
        )
        replayer.report(
            f"dropped {sum(dropped.values()):,} records of the stdout/stderr output of "
            f"{replayer.description} (runner pid {self.pid}; {parts}): {why}"
        )


class _Stream:
    """The reader thread's state for one pipe: lines read but not yet classified, and the
    splitter and classifier of the stream."""

    __slots__ = (
        "at_end",
        "classifier",
        "fd",
        "last_data",
        "level",
        "name",
        "pending",
        "pending_bytes",
        "splitter",
    )

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self.fd = fd
        self.level = _STREAMS[name]
        self.splitter = LineSplitter()
        self.classifier = LineClassifier(self.level)
        #: Batches of lines read at one time: [time.time() of the read, lines, next index].
        self.pending: collections.deque[list[Any]] = collections.deque()
        self.pending_bytes = 0
        self.last_data = 0.0
        self.at_end = False

    @property
    def finished(self) -> bool:
        """At end of stream, and everything read was classified and flushed."""
        return self.at_end and not self.pending and not self.classifier.holding

    def read(self, backlog: _Backlog) -> bool:
        """Drain what the pipe holds (a bounded amount per turn); False at end of stream.

        Lines past :data:`PENDING_BYTES` of unclassified text are dropped here, counted at
        the stream's level: the host cannot even classify as fast as the plugin writes, and
        the plugin must not wait for it.
        """
        lines: list[tuple[bytes, bool]] = []
        for _ in range(_READS_PER_TURN):
            try:
                data = os.read(self.fd, _READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                lines += self.splitter.split_end()
                self.at_end = True
                break
            lines += self.splitter.split(data)
            if len(data) < _READ_SIZE:
                break
        self._keep(lines, backlog)
        return not self.at_end

    def end_now(self) -> None:
        """Reading stops here: the partial last line counts as a line."""
        if not self.at_end:
            self.at_end = True
            self._keep(self.splitter.split_end(), None)

    def _keep(self, lines: list[tuple[bytes, bool]], backlog: _Backlog | None) -> None:
        if not lines:
            return
        self.last_data = time.monotonic()
        size = sum(len(raw) for raw, _ in lines)
        if self.pending_bytes + size > PENDING_BYTES and backlog is not None:
            kept: list[tuple[bytes, bool]] = []
            for line in lines:
                if self.pending_bytes + len(line[0]) <= PENDING_BYTES:
                    kept.append(line)
                    self.pending_bytes += len(line[0])
            backlog.count_dropped(self.name, self.level, len(lines) - len(kept))
            lines = kept
        else:
            self.pending_bytes += size
        if lines:
            self.pending.append([time.time(), lines, 0])

    def classify(self, deadline: float | None) -> list[_Entry]:
        """Classify pending lines until ``deadline`` (``time.monotonic()``; None: all), and
        flush a held block once the stream has ended or gone quiet."""
        items: list[_Entry] = []
        name, classifier = self.name, self.classifier
        pending = self.pending
        while pending:
            batch = pending[0]
            created, lines, index = batch
            stop = min(len(lines), index + _CLASSIFY_STEP)
            for raw, cut in lines[index:stop]:
                self.pending_bytes -= len(raw)
                # LineSplitter.decode(), inlined: this runs for every line.
                text = raw.removesuffix(b"\r").decode("utf-8", errors="replace")
                for record in classifier.feed(text + _TRUNCATED_MARK if cut else text, cut):
                    items.append(_entry(name, record, created))
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
            items += [_entry(name, record, created) for record in classifier.flush()]
        return items


def _classify(streams: list[_Stream], deadline: float | None) -> list[_Entry]:
    items: list[_Entry] = []
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


#: Gives up the GIL and the CPU for a moment (``sched_yield`` releases the GIL).
_yield: Callable[[], None] = getattr(os, "sched_yield", lambda: time.sleep(0))


async def _wait(future: asyncio.Future[None], timeout: float | None) -> bool:
    if future.done():
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await asyncio.shield(future)
    return future.done()


def _resolve(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    """Resolve ``future`` from a thread, if its loop still runs."""

    def done() -> None:
        if not future.done():
            future.set_result(None)

    with contextlib.suppress(RuntimeError):  # the loop is already closed
        loop.call_soon_threadsafe(done)
