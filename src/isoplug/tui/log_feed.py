"""What the dashboard's log pane shows: every record reaching the host's logging, kept in a
bounded buffer, and the filters a user sets on it.

Plugin records are replayed on the host's log threads, not on the event loop: the handler
only appends to a lock-protected buffer, and the dashboard takes what is new on its own
timer. The text is the record's message as the host received it (already sanitized by the
receiver for plugin records); it is shown as plain text, never as markup.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
import time

from isoplug.logs.attribution import HOST_SOURCE, attribute

__all__ = ["Fresh", "LogEntry", "LogFeed", "LogFilter", "source_of"]

#: How many records the pane keeps to re-show when a filter changes.
DEFAULT_CAPACITY = 5000


@dataclasses.dataclass(frozen=True)
class LogEntry:
    #: Position in the feed (increasing): which entries are new since the last look.
    serial: int
    created: float
    #: The plugin the record is from or about (its id), or None for the host's own records.
    plugin: str | None
    levelno: int
    #: ``stdout``/``stderr`` for a plugin's printed lines, else the level's name, lower case.
    label: str
    message: str
    #: Who says it, as the console's source column (:mod:`isoplug.logs.attribution`): the
    #: plugin's id, ``isoplug:<id>`` for the host's reports about it, ``isoplug``. Empty: as
    #: ``plugin`` says (an entry made without it).
    source: str = ""

    def line(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.created))
        stamp += f".{int(self.created * 1000) % 1000:03d}"
        source = self.source or self.plugin or HOST_SOURCE
        return f"{stamp} {source:<13} {self.label:<8} {self.message}"


@dataclasses.dataclass(frozen=True)
class Fresh:
    """What a feed holds after a serial (see :meth:`LogFeed.since`)."""

    #: The kept entries after the serial, oldest first.
    entries: list[LogEntry]
    #: How many entries after the serial had already left the buffer (of any plugin).
    lost: int
    #: The serial of the newest entry: the next look starts after it.
    last_serial: int


def source_of(record: logging.LogRecord) -> tuple[str | None, str]:
    """``(plugin id or None, label)`` of a record: the plugin it is from or about (its logger
    is ``plugin.<id>...``), see :func:`~isoplug.logs.attribution.attribute`."""
    said = attribute(record)
    return said.plugin, said.label


class LogFeed(logging.Handler):
    """A handler that keeps the last ``capacity`` records as :class:`LogEntry` values."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        super().__init__()
        self.capacity = capacity
        self._entries: collections.deque[LogEntry] = collections.deque(maxlen=capacity)
        self._serial = 0
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            said = attribute(record)
        except Exception:
            self.handleError(record)
            return
        with self._guard:
            self._serial += 1
            self._entries.append(
                LogEntry(
                    self._serial,
                    record.created,
                    said.plugin,
                    record.levelno,
                    said.label,
                    message,
                    said.source,
                )
            )

    def since(self, after: int) -> Fresh:
        """The entries after serial ``after``, and how many of them are no longer kept.

        Serials are consecutive, so the lock is held only to copy the newest entries, never to
        scan the whole buffer: the log threads appending to it are not held up."""
        with self._guard:
            newest = self._serial
            wanted = min(max(newest - after, 0), len(self._entries))
            taken = list(itertools.islice(reversed(self._entries), wanted))
        taken.reverse()
        return Fresh(taken, max(newest - after - len(taken), 0), newest)

    def lost_after(self, serial: int) -> int:
        """How many entries after ``serial`` have already left the buffer."""
        with self._guard:
            oldest_kept = self._serial - len(self._entries) + 1
        return max(oldest_kept - 1 - serial, 0)

    def entries(self, after: int = 0) -> list[LogEntry]:
        """The kept entries with a serial above ``after``, oldest first."""
        with self._guard:
            if not self._entries or self._entries[-1].serial <= after:
                return []
            return [entry for entry in self._entries if entry.serial > after]


@dataclasses.dataclass
class LogFilter:
    """Which entries the pane shows."""

    #: Follow one plugin (its id), or all when None.
    plugin: str | None = None
    #: Lowest level shown.
    level: int = logging.DEBUG
    #: Shown only when the line contains this text (case-insensitive); empty: all.
    text: str = ""
    #: Paused plugins, each with the last serial shown before its pause: its lines after that
    #: are held back until it is resumed.
    paused: dict[str, int] = dataclasses.field(default_factory=dict)

    def accepts(self, entry: LogEntry) -> bool:
        if self.plugin is not None and entry.plugin != self.plugin:
            return False
        held_after = self.paused.get(entry.plugin) if entry.plugin is not None else None
        if held_after is not None and entry.serial > held_after:
            return False
        if entry.levelno < self.level:
            return False
        return not self.text or self.text.casefold() in entry.message.casefold()

    def describe(self) -> str:
        parts = [f"following {self.plugin}" if self.plugin else "following all plugins"]
        parts.append(f"level >= {logging.getLevelName(self.level)}")
        if self.text:
            parts.append(f"containing {self.text!r}")
        if self.paused:
            parts.append(f"paused: {', '.join(sorted(self.paused))}")
        return "; ".join(parts)
