"""``sys.stdout`` and ``sys.stderr`` whose writes become log records, so printing never blocks.

:func:`redirect_stdio` replaces both with a :class:`LogStream`: every line written to it is a
record handled by the root logger's handlers (in a runner, the
:class:`~isoplug.logs.ForwardingHandler`, which never blocks: what it cannot queue it counts as
dropped). A plugin that prints therefore cannot stall on a full pipe, and its lines arrive with
the runner's pid, the thread and the source location of the ``print()`` (or ``write()``) call.

How text becomes records:

- **Lines, per thread.** Each thread has its own line buffer, so lines printed by several threads
  at once stay whole. A partial line waits for the rest of it, or for :meth:`LogStream.flush`, or
  for the exit (before the log handlers close: see :func:`flush_all`). A line is located at the
  ``write()`` that completes it (for ``print()``, the ``print()`` call; frames of ``traceback``,
  ``logging`` and ``warnings`` are skipped). A line longer than :data:`MAX_LINE_CHARS` is cut,
  marked and flagged ``truncated``; the rest of it is skipped.
- **Classification.** Each thread's lines go through its own
  :class:`~isoplug.logs.textlines.LineClassifier`: a JSON line gets its level, message and
  extras, a ``LEVEL:`` prefix sets the level, a printed traceback becomes one ERROR record. A
  traceback may continue with a chained one, so the classifier holds the finished block; one
  shared timer thread flushes held blocks once their thread has written nothing for
  :data:`QUIET_FLUSH_DELAY`. A plain line (the common case) skips the classifier: see
  :func:`is_plain_line`.
- **Records.** Logger ``stdout`` / ``stderr``, or ``<source>.stdout`` when :data:`current_source`
  names the code that is running (a runner sets it to ``plugin.<id>`` around each plugin's work;
  tasks and ``asyncio.to_thread`` inherit it). Extras: ``truncated`` (when cut), and a JSON
  line's fields (one named like a record attribute is renamed ``extra_<name>``); the receiver
  stamps ``stream`` from the logger's name. The logger's level and filters apply. Records are
  built directly (no ``findCaller``, no record factory) with exactly the standard attributes,
  so that a plain line takes :func:`~isoplug.logs.capture.capture_record`'s fast path: a plain
  ``print()`` must stay cheap.

Never a loop: text written while this thread is handing a record to the handlers (a handler's
error report, the forwarding handler's fallback) goes to the original stream, the real fd.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import io
import logging
import os
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from types import CodeType, FrameType
from typing import Any, TextIO

from isoplug.logs.textlines import LineClassifier, TextRecord

__all__ = [
    "MAX_LINE_CHARS",
    "QUIET_FLUSH_DELAY",
    "TRUNCATED_MARK",
    "LogStream",
    "attributed_to",
    "current_source",
    "deliver",
    "flush_all",
    "is_plain_line",
    "redirect_stdio",
]

#: Longest line kept whole (16 Ki characters, like the host's fd-level capture); past it the line
#: is cut, marked with :data:`TRUNCATED_MARK` and flagged ``truncated``, and its tail skipped.
MAX_LINE_CHARS = 16 * 1024
TRUNCATED_MARK = " [... line truncated by isoplug]"
#: A traceback the classifier holds (a chain may follow) is flushed once its thread has written
#: nothing to the stream for this long.
QUIET_FLUSH_DELAY = 0.05

#: The logger prefix of the code running now (``plugin.<id>`` in a runner), or None: output and
#: exceptions go to ``<source>.<stream>`` / ``<source>``. A context variable, so asyncio tasks
#: and ``asyncio.to_thread`` inherit it; a plain ``threading.Thread`` starts without it.
current_source: ContextVar[str | None] = ContextVar("isoplug_log_source", default=None)


@contextlib.contextmanager
def attributed_to(source: str) -> Iterator[None]:
    """Run the block (and what it starts: tasks, ``to_thread``) with :data:`current_source`
    set to ``source``."""
    token = current_source.set(source)
    try:
        yield
    finally:
        current_source.reset(token)


# -- per-thread state -------------------------------------------------------------------------


class _PerThread:
    """What one thread has in every stream: its line states, and whether it is inside the
    handlers right now (then its writes go to the original stream)."""

    __slots__ = ("emitting", "ident", "states", "thread")

    def __init__(self) -> None:
        self.emitting = False
        self.states: dict[LogStream, _LineState] = {}
        self.thread = threading.current_thread()
        self.ident = threading.get_ident()


_tls = threading.local()


def _this_thread() -> _PerThread:
    try:
        per_thread: _PerThread = _tls.t
    except AttributeError:
        per_thread = _tls.t = _PerThread()
    return per_thread


#: (pathname, filename, module, lineno, funcName): where a line was written.
_Location = tuple[str, str, str, int, str]
_NOWHERE: _Location = ("", "", "", 0, "")


class _LineState:
    """One thread's line in one stream: the partial line, its classifier, a held block."""

    __slots__ = (
        "classifier",
        "decoder",
        "held",
        "last_write",
        "lock",
        "owner",
        "partial",
        "site_attributes",
        "site_code",
        "site_lineno",
        "site_logger",
        "skipping",
        "watched",
    )

    def __init__(self, owner: _PerThread, level: int) -> None:
        self.owner = owner
        self.partial = ""
        # Inside the tail of a line that was cut: skipped up to its newline.
        self.skipping = False
        self.classifier = LineClassifier(level)
        # Where the block the classifier holds started, and for whom.
        self.held: tuple[str | None, _Location] | None = None
        # True while the quiet-flush timer may touch this state: its owner then writes under
        # ``lock`` (the owner's lock-free path never races the timer).
        self.watched = False
        self.lock = threading.Lock()
        self.last_write = 0.0
        self.decoder: codecs.IncrementalDecoder | None = None
        # The last place a plain line was written from, and its records' attributes there.
        self.site_code: CodeType | None = None
        self.site_lineno = 0
        self.site_logger: logging.Logger | None = None
        self.site_attributes: dict[str, Any] = {}


# -- records ----------------------------------------------------------------------------------

_new = object.__new__
_time = time.time
_start_time: float = getattr(logging, "_startTime", time.time())
_HAS_TASK_NAME = sys.version_info >= (3, 12)
#: Levels loguru and others use that the logging module may not know by name.
_EXTRA_LEVEL_NAMES = {5: "TRACE", 25: "SUCCESS"}
#: The record attributes a JSON line's field must not overwrite (it is renamed extra_<name>).
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "stream",
    "truncated",
}


def _level_name(level: int) -> str:
    name = logging.getLevelName(level)
    if isinstance(name, str) and not name.startswith("Level "):
        return name
    return _EXTRA_LEVEL_NAMES.get(level, f"Level {level}")


class _Process:
    """This process's pid and name for records, refreshed after a fork."""

    pid = os.getpid()
    name: str | None = None

    @classmethod
    def refresh_name(cls) -> str:
        name = "MainProcess"
        mp = sys.modules.get("multiprocessing")
        if mp is not None:
            with contextlib.suppress(Exception):
                name = mp.current_process().name
        cls.name = name
        return name


def _task_name() -> str | None:
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    return None if task is None else task.get_name()


#: Every standard attribute, in the order ``LogRecord.__init__`` sets them: a record whose
#: ``__dict__`` starts with these in this order has its extras found without a search.
_STANDARD = dict(logging.LogRecord("", logging.NOTSET, "", 0, "", None, None).__dict__)


def _site_attributes(
    name: str, level: int, location: _Location, owner: _PerThread
) -> dict[str, Any]:
    """A record's attributes, except those of each record (see :func:`_stamp`)."""
    pathname, filename, module, lineno, func = location
    attributes = _STANDARD.copy()
    attributes["name"] = name
    attributes["levelname"] = _level_name(level)
    attributes["levelno"] = level
    attributes["pathname"] = pathname
    attributes["filename"] = filename
    attributes["module"] = module
    attributes["lineno"] = lineno
    attributes["funcName"] = func
    attributes["thread"] = owner.ident
    attributes["processName"] = _Process.name or _Process.refresh_name()
    attributes["process"] = _Process.pid
    return attributes


def _stamp(attributes: dict[str, Any], message: str, owner: _PerThread) -> logging.LogRecord:
    """A record of ``attributes`` (from :func:`_site_attributes`), with its message and time."""
    created = _time()
    attributes["msg"] = message
    attributes["created"] = created
    attributes["msecs"] = int((created - int(created)) * 1000) + 0.0
    attributes["relativeCreated"] = (created - _start_time) * 1000
    attributes["threadName"] = owner.thread.name
    if _HAS_TASK_NAME:
        attributes["taskName"] = _task_name()
    record = _new(logging.LogRecord)
    record.__dict__ = attributes
    return record


def _make_record(
    name: str,
    level: int,
    message: str,
    location: _Location,
    owner: _PerThread,
    *,
    extra: dict[str, Any] | None = None,
) -> logging.LogRecord:
    """A complete record: the standard attributes first, in ``LogRecord.__init__``'s order (so
    the encoder finds the extras at the end), then ``extra``."""
    attributes = _site_attributes(name, level, location, owner)
    if extra:
        attributes.update(extra)
    return _stamp(attributes, message, owner)


def deliver(logger: logging.Logger, record: logging.LogRecord) -> None:
    """Hand ``record`` to ``logger``'s handlers (its filters apply; its level is the caller's
    to check). Text the handlers write meanwhile on this thread (an error report) goes to the
    original streams, not back into a :class:`LogStream`; a failure is reported there too."""
    per_thread = _this_thread()
    _deliver(per_thread, logger, record)


def _deliver(per_thread: _PerThread, logger: logging.Logger, record: logging.LogRecord) -> None:
    was_emitting = per_thread.emitting
    per_thread.emitting = True
    try:
        if logger.filters:
            logger.handle(record)
        else:
            logger.callHandlers(record)
    except Exception as exc:
        _report_failure(f"isoplug: handling a record of {logger.name} failed: {exc!r}")
    finally:
        per_thread.emitting = was_emitting


def _report_failure(text: str) -> None:
    """isoplug's own trouble, said where the host still listens: the real stderr."""
    with contextlib.suppress(Exception):
        stream = sys.__stderr__
        if stream is not None:
            stream.write(text + "\n")
            stream.flush()


# -- source locations -------------------------------------------------------------------------

#: Files whose frames are not a line's source: the writer that called them is (the code that
#: called traceback.print_exc(), logger.info() through a StreamHandler, this module).
_SKIPPED_FILES = frozenset(
    path
    for module in (traceback, logging, warnings, sys.modules[__name__])
    for path in (getattr(module, "__file__", None),)
    if path
)
_file_names: dict[str, tuple[str, str]] = {}
_MAX_FILE_NAMES = 10_000


def _location(frame: FrameType | None) -> _Location:
    while frame is not None and frame.f_code.co_filename in _SKIPPED_FILES:
        frame = frame.f_back
    if frame is None:
        return _NOWHERE
    code = frame.f_code
    pathname = code.co_filename
    names = _file_names.get(pathname)
    if names is None:
        filename = os.path.basename(pathname)
        names = (filename, os.path.splitext(filename)[0])
        if len(_file_names) < _MAX_FILE_NAMES:
            _file_names[pathname] = names
    return (pathname, names[0], names[1], frame.f_lineno, code.co_name)


_getframe = sys._getframe


def _caller(depth: int) -> FrameType | None:
    """The frame ``depth`` levels up from the caller's, or None (a call straight from C at
    interpreter shutdown has no Python frame above it)."""
    try:
        return _getframe(depth + 1)
    except ValueError:
        return None


#: First characters after which the classifier may find more than a plain line: a JSON object,
#: a bracketed level, or the start of a block (Traceback, Exception..., Unhandled..., Fatal...,
#: an exception group's indented drawing).
_NOT_PLAIN_START = frozenset("{[< +TEUF\t")


def is_plain_line(line: str) -> bool:
    """True when :class:`~isoplug.logs.textlines.LineClassifier` (not holding a block) would
    return the line as is, at the stream's level: no JSON, no level prefix (``LEVEL:`` has its
    colon within the first 10 characters), no block start. Conservative: False says "ask the
    classifier", never the reverse."""
    return line[:1] not in _NOT_PLAIN_START and ":" not in line[:10]


# -- the streams ------------------------------------------------------------------------------


class LogStream(io.TextIOBase):
    """A text stream whose lines become records on logger ``<source>.<stream>`` (see the module
    docstring). ``original`` is the real stream (``fileno()``, and where re-entrant writes go)."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, stream: str, original: TextIO | None, level: int) -> None:
        super().__init__()
        self.stream = stream
        self.original = original
        self.level = level
        self.buffer = _BinaryLogStream(self)
        self._targets: dict[str | None, logging.Logger] = {None: logging.getLogger(stream)}
        self._states: list[_LineState] = []
        self._states_lock = threading.Lock()
        self._prune_at = 64

    @property
    def name(self) -> str:
        return f"<{self.stream}>"

    @property
    def mode(self) -> str:
        return "w"

    @property
    def line_buffering(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<isoplug LogStream {self.stream!r}>"

    # -- io API --------------------------------------------------------------------------------

    def write(self, s: str) -> int:
        """Add ``s`` to this thread's line; every line it completes becomes a record."""
        if type(s) is not str:
            if not isinstance(s, str):
                raise TypeError(f"write() argument must be str, not {type(s).__name__}")
            s = str.__str__(s)
        try:
            per_thread: _PerThread = _tls.t
        except AttributeError:
            per_thread = _this_thread()
        if per_thread.emitting:
            return self._write_original(s)
        state = per_thread.states.get(self)
        if state is None:
            state = self._new_state(per_thread)
        if state.watched:
            with state.lock:
                state.last_write = time.monotonic()
                self._take(per_thread, state, s, _caller(1))
            return len(s)
        if "\n" not in s:
            if not state.partial and not state.skipping and len(s) <= MAX_LINE_CHARS:
                # The first half of print(): the text; its newline comes in the next call.
                state.partial = s
                return len(s)
        elif s == "\n" and state.partial and not state.classifier.holding:
            # The second half of print(): one line. The common case, so inlined here: a
            # plain line skips the classifier and becomes a record without another call.
            line = state.partial
            state.partial = ""
            if line[-1:] == "\r":
                line = line[:-1]
            if line[:1] in _NOT_PLAIN_START or ":" in line[:10]:
                self._classify(per_thread, state, line, False, _caller(1))
                return 1
            source = current_source.get()
            logger = self._targets.get(source) or self._target(source)
            level = self.level
            if logger.disabled:
                return 1
            try:
                enabled = logger._cache[level]  # type: ignore[attr-defined] # isEnabledFor's
            except (KeyError, AttributeError):
                enabled = logger.isEnabledFor(level)
            if not enabled:
                return 1
            try:
                frame = _getframe(1)
            except ValueError:  # called from C with no Python frame (interpreter shutdown)
                frame = None
            if frame is None:
                self._classify(per_thread, state, line, False, None)
                return 1
            code = frame.f_code
            lineno = frame.f_lineno
            if (
                code is state.site_code
                and lineno == state.site_lineno
                and logger is state.site_logger
            ):
                attributes = state.site_attributes.copy()
            else:
                attributes = self._site(state, logger, frame)
            # _stamp(), inlined.
            created = _time()
            attributes["msg"] = line
            attributes["created"] = created
            attributes["msecs"] = int((created - int(created)) * 1000) + 0.0
            attributes["relativeCreated"] = (created - _start_time) * 1000
            attributes["threadName"] = state.owner.thread.name
            if _HAS_TASK_NAME:
                attributes["taskName"] = _task_name()
            record = _new(logging.LogRecord)
            record.__dict__ = attributes
            per_thread.emitting = True
            try:
                if logger.filters:
                    logger.handle(record)
                else:
                    logger.callHandlers(record)
            except Exception as exc:
                _report_failure(f"isoplug: handling a record of {logger.name} failed: {exc!r}")
            finally:
                per_thread.emitting = False
            return 1
        self._take(per_thread, state, s, _caller(1))
        return len(s)

    def flush(self) -> None:
        """Emit this thread's partial line, and the block its classifier holds."""
        per_thread = _this_thread()
        if per_thread.emitting:
            self._flush_original()
            return
        state = per_thread.states.get(self)
        if state is None:
            return
        if state.watched:
            with state.lock:
                self._finish(per_thread, state, _caller(1))
        else:
            self._finish(per_thread, state, _caller(1))

    def close(self) -> None:
        """Flush; the stream stays usable (the process's stdout cannot be closed from here)."""
        with contextlib.suppress(Exception):
            self.flush()

    def fileno(self) -> int:
        if self.original is None:
            raise io.UnsupportedOperation("no file descriptor")
        return self.original.fileno()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    # -- lines ---------------------------------------------------------------------------------

    def _write_original(self, s: str) -> int:
        original = self.original
        if original is not None:
            with contextlib.suppress(OSError, ValueError):
                original.write(s)
                original.flush()
        return len(s)

    def _flush_original(self) -> None:
        if self.original is not None:
            with contextlib.suppress(OSError, ValueError):
                self.original.flush()

    def _write_bytes(self, data: bytes, frame: FrameType | None) -> None:
        """``buffer.write()``: decoded as UTF-8 (invalid bytes replaced), then as ``write``."""
        per_thread = _this_thread()
        if per_thread.emitting:
            original = getattr(self.original, "buffer", None)
            with contextlib.suppress(OSError, ValueError, AttributeError):
                original.write(data)  # type: ignore[union-attr]
                original.flush()  # type: ignore[union-attr]
            return
        state = per_thread.states.get(self)
        if state is None:
            state = self._new_state(per_thread)
        if state.decoder is None:
            state.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        text = state.decoder.decode(data)
        if not text:
            return
        if state.watched:
            with state.lock:
                state.last_write = time.monotonic()
                self._take(per_thread, state, text, frame)
        else:
            self._take(per_thread, state, text, frame)

    def _new_state(self, per_thread: _PerThread) -> _LineState:
        state = _LineState(per_thread, self.level)
        per_thread.states[self] = state
        with self._states_lock:
            self._states.append(state)
            if len(self._states) < self._prune_at:
                return state
            alive = [s for s in self._states if s.owner.thread.is_alive()]
            dead = [s for s in self._states if not s.owner.thread.is_alive()]
            self._states = alive
            self._prune_at = max(64, 2 * len(alive))
        for leftover in dead:
            # A thread that ended with a partial line or a held block: emitted now.
            self._flush_state(leftover)
        return state

    def _take(
        self, per_thread: _PerThread, state: _LineState, s: str, frame: FrameType | None
    ) -> None:
        """Add ``s`` to ``state``'s line; emit the lines it completes (the general case)."""
        text = state.partial + s if state.partial else s
        state.partial = ""
        start = 0
        if state.skipping:
            cut = text.find("\n")
            if cut < 0:
                return
            state.skipping = False
            start = cut + 1
        while True:
            end = text.find("\n", start)
            if end < 0:
                break
            line = text[start:end]
            start = end + 1
            if line[-1:] == "\r":
                line = line[:-1]
            if len(line) > MAX_LINE_CHARS:
                self._classify(
                    per_thread, state, line[:MAX_LINE_CHARS] + TRUNCATED_MARK, True, frame
                )
            elif not state.classifier.holding and is_plain_line(line):
                self._emit(per_thread, state, line, frame)
            else:
                self._classify(per_thread, state, line, False, frame)
        rest = text[start:] if start else text
        if len(rest) > MAX_LINE_CHARS:
            self._classify(per_thread, state, rest[:MAX_LINE_CHARS] + TRUNCATED_MARK, True, frame)
            state.skipping = True
        elif rest:
            state.partial = rest
        if state.classifier.holding and not state.watched:
            _quiet_flusher.watch(self, state)

    def _classify(
        self,
        per_thread: _PerThread,
        state: _LineState,
        line: str,
        truncated: bool,
        frame: FrameType | None,
    ) -> None:
        classifier = state.classifier
        was_holding = classifier.holding
        held = state.held
        records = classifier.feed(line, truncated)
        here: tuple[str | None, _Location] | None = None
        if classifier.holding and (not was_holding or any(r.traceback for r in records)):
            # A block starts with this line: its record will say it was written here.
            here = (current_source.get(), _location(frame))
            state.held = here
        elif not classifier.holding:
            state.held = None
        for record in records:
            if record.traceback and held is not None:
                self._emit_text(per_thread, state, record, held)
            else:
                if here is None:
                    here = (current_source.get(), _location(frame))
                self._emit_text(per_thread, state, record, here)
        if classifier.holding and not state.watched:
            _quiet_flusher.watch(self, state)

    def _finish(self, per_thread: _PerThread, state: _LineState, frame: FrameType | None) -> None:
        """Emit the partial line and the held block of ``state`` (its lock held if watched)."""
        if state.partial:
            line = state.partial
            state.partial = ""
            self._classify(per_thread, state, line, False, frame)
        records = state.classifier.flush()
        if records:
            held = state.held or (current_source.get(), _location(frame))
            for record in records:
                self._emit_text(per_thread, state, record, held)
        state.held = None

    def _flush_state(self, state: _LineState) -> None:
        """Emit what another thread (or a dead one) left in ``state``."""
        per_thread = _this_thread()
        state.watched = True  # its owner, if still writing, now takes the lock
        with state.lock:
            try:
                self._finish(per_thread, state, None)
            finally:
                state.watched = False

    def flush_all(self) -> None:
        """Emit every thread's partial line and held block (at exit)."""
        with self._states_lock:
            states = list(self._states)
        for state in states:
            if state.partial or state.classifier.holding:
                self._flush_state(state)

    # -- records -------------------------------------------------------------------------------

    def _site(self, state: _LineState, logger: logging.Logger, frame: FrameType) -> dict[str, Any]:
        """The attributes of a line written from ``frame`` to ``logger``, remembered in
        ``state`` for the next line from there (a loop that prints)."""
        location = _location(frame)
        attributes = _site_attributes(logger.name, self.level, location, state.owner)
        if frame.f_code.co_filename in _SKIPPED_FILES:
            # The location is that of an outer frame, which the next call may not share.
            state.site_code = None
        else:
            state.site_code = frame.f_code
            state.site_lineno = frame.f_lineno
            state.site_logger = logger
            state.site_attributes = attributes.copy()
        return attributes

    def _target(self, source: str | None) -> logging.Logger:
        logger = self._targets.get(source)
        if logger is None:
            logger = logging.getLogger(f"{source}.{self.stream}")
            if len(self._targets) < 1024:
                self._targets[source] = logger
        return logger

    def _emit(
        self,
        per_thread: _PerThread,
        state: _LineState,
        line: str,
        frame: FrameType | None,
    ) -> None:
        """The plain-line path: one record at the stream's level, written from ``frame``."""
        source = current_source.get()
        logger = self._targets.get(source) or self._target(source)
        level = self.level
        if not logger.isEnabledFor(level):
            return
        record = _make_record(logger.name, level, line, _location(frame), state.owner)
        _deliver(per_thread, logger, record)

    def _emit_text(
        self,
        per_thread: _PerThread,
        state: _LineState,
        text: TextRecord,
        where: tuple[str | None, _Location],
    ) -> None:
        source, location = where
        logger = self._targets.get(source) or self._target(source)
        if not logger.isEnabledFor(text.level):
            return
        extra: dict[str, Any] | None = None
        if text.extra or text.truncated:
            extra = {}
            for key, value in text.extra.items():
                extra[f"extra_{key}" if key in _RESERVED else key] = value
            if text.truncated:
                extra["truncated"] = True
        record = _make_record(
            logger.name,
            text.level,
            text.message,
            location,
            state.owner,
            extra=extra,
        )
        _deliver(per_thread, logger, record)


class _BinaryLogStream(io.BufferedIOBase):
    """``sys.stdout.buffer``: bytes written here take the text stream's path, decoded as UTF-8
    with invalid bytes replaced."""

    def __init__(self, text: LogStream) -> None:
        super().__init__()
        self._text = text

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._text._write_bytes(view.tobytes(), _caller(1))
        return view.nbytes

    def flush(self) -> None:
        self._text.flush()

    def close(self) -> None:
        self.flush()

    def fileno(self) -> int:
        return self._text.fileno()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<isoplug LogStream {self._text.stream!r} buffer>"


# -- flushing held blocks when a thread goes quiet -----------------------------------------------


class _QuietFlusher:
    """One daemon thread for every stream: flushes a held block once its thread has written
    nothing for :data:`QUIET_FLUSH_DELAY` (started on first use)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._watched: list[tuple[LogStream, _LineState]] = []
        self._thread: threading.Thread | None = None

    def watch(self, stream: LogStream, state: _LineState) -> None:
        with self._changed:
            state.last_write = time.monotonic()
            if state.watched:
                return
            state.watched = True
            self._watched.append((stream, state))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="isoplug-stdio-flush", daemon=True
                )
                self._thread.start()
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._watched:
                    self._changed.wait()
                now = time.monotonic()
                due = min(state.last_write for _, state in self._watched) + QUIET_FLUSH_DELAY
                if due > now:
                    self._changed.wait(due - now)
                    continue
                ready = [w for w in self._watched if w[1].last_write + QUIET_FLUSH_DELAY <= now]
                self._watched = [
                    w for w in self._watched if w[1].last_write + QUIET_FLUSH_DELAY > now
                ]
            for stream, state in ready:
                try:
                    self._flush(stream, state)
                except Exception as exc:
                    _report_failure(f"isoplug: flushing {stream.stream} failed: {exc!r}")

    def _flush(self, stream: LogStream, state: _LineState) -> None:
        with state.lock:
            if state.last_write + QUIET_FLUSH_DELAY > time.monotonic():
                # Its thread wrote again since this flush was decided: not quiet after all.
                with self._changed:
                    self._watched.append((stream, state))
                return
            try:
                held = state.held or (None, _NOWHERE)
                state.held = None
                per_thread = _this_thread()
                for record in state.classifier.flush():
                    stream._emit_text(per_thread, state, record, held)
            finally:
                state.watched = False

    def after_fork_in_child(self) -> None:
        self._reset()


_quiet_flusher = _QuietFlusher()
_streams: list[LogStream] = []


def flush_all() -> None:
    """Emit every partial line and held block of every :class:`LogStream` (at exit, before the
    log handlers close; :func:`redirect_stdio` arranges for that)."""
    for stream in list(_streams):
        try:
            stream.flush_all()
        except Exception as exc:
            _report_failure(f"isoplug: flushing {stream.stream} at exit failed: {exc!r}")


class _FlushBeforeHandlers(logging.Handler):
    """Not attached to any logger: ``logging.shutdown()`` flushes handlers newest first, so one
    created after the forwarding handler flushes the streams while that one still forwards."""

    def emit(self, record: logging.LogRecord) -> None:
        pass

    def flush(self) -> None:
        flush_all()


_flushers: list[_FlushBeforeHandlers] = []


def _after_fork_in_child() -> None:
    _Process.pid = os.getpid()
    _Process.name = None
    _quiet_flusher.after_fork_in_child()
    for stream in _streams:
        for state in stream._states:
            # A lock another thread held at the fork stays held in the child: start afresh.
            state.lock = threading.Lock()
            state.watched = False
            state.site_code = None  # its attributes name the parent's pid


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
    # Registered now, so it runs before the atexit hooks of the handlers created earlier.
    atexit.register(flush_all)
    _flushers.append(_FlushBeforeHandlers())
    sys.stdout, sys.stderr = out, err
    return out, err
