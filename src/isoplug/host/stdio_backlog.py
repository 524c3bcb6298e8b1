"""The bounded backlog between a runner's stdio reader thread and its replay thread.

The reader never waits on a logging handler: it puts records here and goes back to reading, so
the pipes are always drained. When the host's handlers cannot keep up and the backlog is full,
records are dropped, never pushed back onto the plugin: below WARNING first (a WARNING or a
traceback evicts the newest such record), counted in the metrics as
:attr:`~isoplug.logs.DropReason.HOST_BACKLOG` and reported in one WARNING per report interval on
the plugin's logger (by the replay thread, :mod:`isoplug.host.stdio_replay`).

The console of ``isoplug run`` queues its lines in one too, between the threads that log and
its writer thread (:mod:`isoplug.cli.console_writer`), for the same reason: whoever logs never
waits on stdout.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from isoplug.logs.textlines import TextRecord

__all__ = [
    "BACKLOG_BYTES",
    "BACKLOG_RECORDS",
    "Backlog",
    "Drops",
    "Entry",
    "record_entry",
    "report_entry",
]

#: Records read but not yet replayed, at most, per runner process; past this (or
#: :data:`BACKLOG_BYTES`) the host drops rather than make the plugin wait. A burst of this many
#: lines is delivered whole however slow the handlers are.
BACKLOG_RECORDS = 50_000
#: Memory the records read but not yet replayed may take, at most, per runner process (their
#: text, and about :data:`_RECORD_OVERHEAD` bytes of objects each).
BACKLOG_BYTES = 16 * 1024 * 1024
_RECORD_OVERHEAD = 300

#: One entry of the backlog: ``(stream, level, message, extra, truncated, created, urgent,
#: traceback)`` for a record read from ``stream`` (``traceback``: the message is a printed
#: traceback); ``stream`` "" marks a report to make (``message``).
#: ``extra`` is None when the line has none: a tuple of plain values only, not an object, so
#: the garbage collector stops tracking it (a dict in it, even an empty one, keeps it and the
#: backlog's wrapper tuple tracked: a full backlog's 100,000 tracked tuples made every full
#: collection of a flood hold the GIL, and pause the host's event loop, 5-10 ms).
Entry = tuple[str, int, str, "dict[str, Any] | None", bool, float, bool, bool]
#: Drops not yet accounted: (stream, level) -> count.
Drops = dict[tuple[str, int], int]


def record_entry(stream: str, record: TextRecord, created: float) -> Entry:
    """The entry of ``record``, read from ``stream`` at ``created`` (``time.time()``)."""
    urgent = record.level >= logging.WARNING or record.traceback
    extra = record.extra or None
    return (
        stream,
        record.level,
        record.message,
        extra,
        record.truncated,
        created,
        urgent,
        record.traceback,
    )


def report_entry(text: str) -> Entry:
    """The entry of a report: ``text`` said as a WARNING on the plugin's logger."""
    return ("", logging.WARNING, text, None, False, time.time(), True, False)


class Backlog:
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
        self._low: collections.deque[tuple[int, Entry]] = collections.deque()
        self._high: collections.deque[tuple[int, Entry]] = collections.deque()
        self._count = 0
        self._bytes = 0
        self._order = 0
        self._dropped: Drops = {}
        # The reader and the owner (who may still add reports) must both have ended it.
        self._open_ends = 2
        self._ended = False

    def put(self, entries: list[Entry]) -> int:
        """Queue ``entries``; returns how many records this dropped (refused or evicted): a
        caller that says when dropping starts needs to know at once, not at the next take."""
        dropped = 0
        with self._ready:
            for entry in entries:
                dropped += self._put_one(entry)
            self._ready.notify()
        return dropped

    def _put_one(self, entry: Entry) -> int:
        cost = _RECORD_OVERHEAD + len(entry[2])
        urgent = entry[6]
        dropped = 0
        if entry[0]:  # a record, not a report: reports are never dropped
            while self._count and (
                self._count >= self._max_records or self._bytes + cost > self._max_bytes
            ):
                if not (urgent and self._low):
                    self._drop(entry)
                    return dropped + 1
                _, evicted = self._low.pop()
                self._count -= 1
                self._bytes -= _RECORD_OVERHEAD + len(evicted[2])
                self._drop(evicted)
                dropped += 1
        self._order += 1
        (self._high if urgent else self._low).append((self._order, entry))
        self._count += 1
        self._bytes += cost
        return dropped

    def _drop(self, entry: Entry) -> None:
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

    def take(self, limit: int, timeout: float | None) -> tuple[list[Entry], Drops, bool]:
        """Up to ``limit`` entries in reading order, the drops since the last call, and whether
        everything has been taken for good. Waits up to ``timeout`` for something to take."""
        with self._ready:
            if not (self._count or self._dropped or self._ended):
                self._ready.wait(timeout)
            low, high = self._low, self._high
            entries: list[Entry] = []
            while len(entries) < limit and (low or high):
                source = high if not low or (high and high[0][0] < low[0][0]) else low
                _, entry = source.popleft()
                self._count -= 1
                self._bytes -= _RECORD_OVERHEAD + len(entry[2])
                entries.append(entry)
            dropped, self._dropped = self._dropped, {}
            return entries, dropped, self._ended and not self._count
