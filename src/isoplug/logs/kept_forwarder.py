"""The forwarding handler a process's output goes to, and a record handed to it once.

A runner names its :class:`~isoplug.logs.ForwardingHandler` here (:func:`keep_forwarding`).
What the plugin's code emits without a logging call of its own (prints, stderr writes,
warnings, uncaught exceptions, loguru, structlog's printed events) then reaches that handler
whatever the plugin did to its root logger's handlers, as a program of its own shows them
whatever logging says (:func:`~isoplug.logs.output_records.deliver`); and a record a logging
handler of the plugin's renders goes to it as itself (:mod:`isoplug.logs.rendered_records`).

:func:`send_once` is how such a record goes there: not when it is on its way to the handler
anyway, and once, though it is rendered in several writes (a print's text and its newline, a
drawn box) or met on several paths (a handler that renders it, and the delivery that gave it
that handler).

:func:`intercepted_record` finds the record that a logging handler hands to loguru or
structlog (loguru's ``InterceptHandler`` recipe, routing ``logging`` into loguru): what those
write, or log, of it is that record's rendering. Made a record of its own instead, it went
back into ``logging``, to the same handler, and into loguru again, without end.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Hashable
from types import CodeType, FrameType
from typing import Any

from isoplug.logs.handler import ForwardingHandler

__all__ = [
    "INTERCEPT_DEPTH",
    "as_rendering_package",
    "forward_aside",
    "forward_once",
    "forwarded_last",
    "intercepted_record",
    "keep_forwarding",
    "kept_forwarder",
    "let_forwarding_close",
    "reaches",
    "send_once",
]

_kept: ForwardingHandler | None = None
#: What this thread forwarded last (see forward_once).
_last = threading.local()


def keep_forwarding(handler: ForwardingHandler | None) -> None:
    """Name the forwarding handler that output and rendered records go to (None: none)."""
    global _kept  # noqa: PLW0603 # one forwarding handler per process
    _kept = handler


def kept_forwarder() -> ForwardingHandler | None:
    """The handler :func:`keep_forwarding` named, or None."""
    return _kept


def let_forwarding_close() -> None:
    """Let the named handler close again (see
    :meth:`~isoplug.logs.ForwardingHandler.keep_open`): a runner's own end closes it with
    ``logging.shutdown()``."""
    if _kept is not None:
        _kept.keep_open(None)


def reaches(handler: logging.Handler, logger: logging.Logger | None) -> bool:
    """True if a record of ``logger`` reaches ``handler`` on its way up the loggers."""
    current = logger
    while current is not None:
        if handler in current.handlers:
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def _logger_named(name: str) -> logging.Logger:
    found = logging.root.manager.loggerDict.get(name)
    return found if isinstance(found, logging.Logger) else logging.root


def forward_once(what: Any, key: Any, forward: Callable[[Any], object]) -> None:
    """Forward ``what`` unless this thread forwarded ``key`` last (one rendering may take
    several writes; one record may be met on several paths)."""
    if key is not None and getattr(_last, "key", None) is key:
        return
    _last.key = key
    forward(what)


def forwarded_last(key: Any) -> bool:
    """True if ``key`` is what this thread forwarded last (:func:`forward_once`)."""
    return getattr(_last, "key", None) is key


def send_once(record: logging.LogRecord, logger: logging.Logger | None = None) -> None:
    """Hand ``record`` (of ``logger``, else of the logger its name names) to the named
    forwarding handler, unless it reaches that handler on its way anyway, or this thread
    handed it over just now, or it is a copy of a record handed over aside
    (:func:`forward_aside`)."""
    forwarder = _kept
    if forwarder is None:
        return
    if reaches(forwarder, logger if logger is not None else _logger_named(record.name)):
        return
    if _aside.holds(record):
        return
    forward_once(record, record, forwarder.handle)


class _RecentRecords:
    """The last :data:`_ASIDE_MEMORY` records handed to the forwarding handler off its way, by
    what a copy keeps of them. A ``QueueHandler`` on the plugin's root (its ``QueueListener``
    feeding a ``StreamHandler``) queues a copy of each record (``prepare()``), which the
    listener's thread renders later: the copy is not the record :func:`forward_once` knows,
    nor on that thread, and it would arrive a second time."""

    def __init__(self) -> None:
        self._order: collections.deque[Hashable] = collections.deque(maxlen=_ASIDE_MEMORY)
        self._keys: set[Hashable] = set()
        self._lock = threading.Lock()

    def add(self, record: logging.LogRecord) -> None:
        key = _copy_key(record)
        with self._lock:
            if key in self._keys:
                return
            if len(self._order) == _ASIDE_MEMORY:
                self._keys.discard(self._order[0])
            self._order.append(key)
            self._keys.add(key)

    def holds(self, record: logging.LogRecord) -> bool:
        return _copy_key(record) in self._keys


#: Records handed aside that a copy may still come for: a listener's queue rarely holds more.
_ASIDE_MEMORY = 1024
_aside = _RecentRecords()


def _copy_key(record: logging.LogRecord) -> Hashable:
    """What a copy of ``record`` keeps (``QueueHandler.prepare()`` replaces its message and
    arguments, ``makeLogRecord(record.__dict__)`` keeps all): its creation time, to the
    clock's resolution, tells records apart; the rest, records made at the same instant."""
    return (record.created, record.name, record.levelno, record.lineno, record.thread)


def forward_aside(record: logging.LogRecord, forwarder: logging.Handler) -> None:
    """Hand ``record`` to ``forwarder`` off its way up the loggers (the plugin took the
    handler off the root, its output still goes there), once: its copies that the plugin's
    handlers render later, in another thread, are known (:func:`send_once`)."""
    _aside.add(record)
    forward_once(record, record, forwarder.handle)


#: How many frames above the last of loguru's or structlog's a handler's ``emit()`` may be.
INTERCEPT_DEPTH = 3
#: Packages that render records on their own: a call into them from a handler's ``emit()``
#: renders the record in hand.
_RENDERING_PACKAGES = frozenset({"loguru", "structlog"})


def intercepted_record(frame: FrameType | None) -> logging.LogRecord | None:
    """The record that a logging handler's ``emit()`` (not the forwarding handler's) is
    handing to loguru or structlog, when ``frame`` runs in one of those: above their frames,
    within :data:`INTERCEPT_DEPTH` frames; else None."""
    while frame is not None and _in_rendering_package(frame):
        frame = frame.f_back
    for _ in range(INTERCEPT_DEPTH):
        if frame is None:
            return None
        if frame.f_code.co_name == "emit":
            names = frame.f_locals
            handler = names.get("self")
            record = names.get("record")
            if (
                isinstance(handler, logging.Handler)
                and isinstance(record, logging.LogRecord)
                and handler is not _kept
            ):
                return record
            return None
        frame = frame.f_back
    return None


#: Code of isoplug's that runs inside those packages' calls, as theirs (a wrapper of a
#: method of theirs): skipped as their frames are.
_WRAPPERS: set[CodeType] = set()


def as_rendering_package(code: CodeType) -> None:
    """Count frames running ``code`` (isoplug's wrapper of a loguru method) as loguru's in
    :func:`intercepted_record`, which would otherwise stop at the wrapper."""
    _WRAPPERS.add(code)


def _in_rendering_package(frame: FrameType) -> bool:
    if frame.f_code in _WRAPPERS:
        return True
    module = frame.f_globals.get("__name__")
    return type(module) is str and module.partition(".")[0] in _RENDERING_PACKAGES
