"""``sys.stdout`` and ``sys.stderr`` whose writes become log records, so printing never blocks.

:func:`~isoplug.logs.redirect.redirect_stdio` replaces both with a :class:`LogStream`: every
line written to it is a record handled by the root logger's handlers (in a runner, the
:class:`~isoplug.logs.ForwardingHandler`, which never blocks: what it cannot queue it counts as
dropped). A plugin that prints therefore cannot stall on a full pipe, and its lines arrive with
the runner's pid, the thread and the source location of the ``print()`` (or ``write()``) call.

How text becomes records:

- **Lines, per thread.** Each thread has its own line buffer
  (:mod:`isoplug.logs.stream_state`), so lines printed by several threads at once stay whole. A
  partial line waits for the rest of it, or for :meth:`LogStream.flush`, or for the exit (before
  the log handlers close: see :func:`~isoplug.logs.redirect.flush_all`). A line is located at
  the ``write()`` that completes it (for ``print()``, the ``print()`` call; frames of
  ``traceback``, ``logging`` and ``warnings`` are skipped). A line longer than
  :data:`MAX_LINE_CHARS` is cut and flagged ``truncated``; the rest of it is skipped, only
  counted, and the line's record, once it ends (or at a flush, or the exit), says how much was
  cut: ``... [truncated 2983616 characters in the emitting process]``
  (:func:`~isoplug.wire.sanitize.cut_mark`, a mark the host keeps).
- **Carriage returns** end lines too (a progress bar's ``\r 40%`` updates): the text
  between them is a line, an empty one none; a CR at the end of a write waits for the next
  (its CRLF's LF may follow). A newline that ends a line a flush already emitted makes no
  empty line (tqdm flushes each update, then writes ``\n``). Text with a CR takes the
  general path.
- **Never across sources.** A partial line remembers the source
  (:data:`~isoplug.logs.sources.current_source`) it was written under, and so does a held
  block. Several sources share a thread (a group runner's plugins share the loop's), so text
  written under another source first ends what the thread holds: the partial line becomes a
  line of its own (as a :meth:`LogStream.flush` makes it, with no location: the ``write()``
  that would have completed it never came), the held block a record, each its writer's. A
  flush, and the exit's, emits them as their writer's too. Only a partial line costs the
  source's lookup on the ``print()`` path (its newline compares it).
- **Classification.** Each thread's lines go through its own
  :class:`~isoplug.logs.textlines.LineClassifier`: a JSON line gets its level, message and
  extras, a ``LEVEL:`` prefix sets the level, a printed traceback becomes one ERROR record (a
  ``Fatal Python error:`` line is an ordinary line here: no real crash dump is written
  through Python, see :mod:`isoplug.logs.textlines`). A traceback may continue with a
  chained one, so the classifier holds the finished block; one shared timer thread
  (:mod:`isoplug.logs.quiet_flush`) flushes held blocks once their thread has written nothing
  for a moment. A plain line (the common case) skips the classifier: see
  :func:`is_plain_line`.
- **Records.** Logger ``stdout`` / ``stderr``, or ``<source>.stdout`` when
  :data:`~isoplug.logs.sources.current_source` names the code that is running (a runner sets it
  to ``plugin.<id>`` around each plugin's work; tasks and ``asyncio.to_thread`` inherit it); the
  receiver stamps ``stream`` from the logger's name. The logger's level and filters apply.
  Records are built as :mod:`isoplug.logs.output_records` says.

Never a loop: text written while this thread is handing a record to the handlers (a handler's
error report) goes to the original stream, the real fd, counted
(:mod:`isoplug.logs.nested_output`), unless it is a handler's rendering of a record.

:meth:`LogStream.write` runs for every ``print()`` of a plugin: its plain-line path is inlined,
and ``sys._getframe`` is a module global. It takes the pieces of a ``print()`` of several
values (the line grows) and a whole line in one ``write()`` (as a ``print()``'s two halves)
too. A line written from a logging handler's ``emit()`` is that record's rendering before its
text is looked at (see :mod:`isoplug.logs.rendered_records`). When the line's record would
reach one :class:`~isoplug.logs.ForwardingHandler` and nothing else, with no filter on the way
(:func:`~isoplug.logs.output_records.sole_forwarder`, checked for every line; always so in a
runner unless the plugin adds handlers or filters), no record is built: the handler encodes the
line straight into the bytes its record would have had
(:meth:`~isoplug.logs.ForwardingHandler.forward_line`), which halves what a ``print()`` costs.
Otherwise the record is made and delivered by :mod:`~isoplug.logs.output_records`' functions.
Everything off that path (text of several lines, carriage returns, cut lines, classification,
held blocks, flushes, the threads' line states) is :mod:`isoplug.logs.stream_lines`'
(:class:`~isoplug.logs.stream_lines.LineAssembly`, a base class of :class:`LogStream`).
"""

from __future__ import annotations

import codecs
import contextlib
import io
import logging
import sys
import threading
import time
from types import FrameType
from typing import TextIO

from isoplug.logs.nested_output import passed_as_text
from isoplug.logs.output_records import (
    HAS_TASK_NAME,
    deliver_from,
    output_enabled,
    remember_site,
    skip_frames_of,
    sole_forwarder,
    stamp,
    task_name,
)
from isoplug.logs.rendered_records import (
    RENDERS_EVENT,
    RENDERS_RECORD,
    forward_rendered,
    renders_from,
)
from isoplug.logs.sources import current_source
from isoplug.logs.stream_io import BinaryLogStream, WriteOnly
from isoplug.logs.stream_io import caller as _caller
from isoplug.logs.stream_lines import MAX_LINE_CHARS, LineAssembly
from isoplug.logs.stream_state import EMITTED_UNENDED, LineState, PerThread, this_thread, tls
from isoplug.logs.textlines import NOT_PLAIN_START as _NOT_PLAIN_START
from isoplug.logs.textlines import is_plain_line
from isoplug.logs.trace_ids import active_trace

__all__ = ["MAX_LINE_CHARS", "LogStream", "is_plain_line"]

# The hot path's binding: a module global is found faster than an attribute of a module (so
# are MAX_LINE_CHARS and _NOT_PLAIN_START, imported for write()'s inlined checks).
_getframe = sys._getframe
_time = time.time
_current_source = current_source.get

# Not a line's source either: close() flushes on behalf of its caller.
skip_frames_of(sys.modules[__name__])


# -- the streams ------------------------------------------------------------------------------


class LogStream(LineAssembly, WriteOnly, io.TextIOBase):
    """A text stream whose lines become records on logger ``<source>.<stream>`` (see the module
    docstring). ``original`` is the real stream (``fileno()``, and where re-entrant writes go)."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, stream: str, original: TextIO | None, level: int) -> None:
        super().__init__()
        self.stream = stream
        self.original = original
        self.level = level
        self.buffer = BinaryLogStream(self)
        self._targets: dict[str | None, logging.Logger] = {None: logging.getLogger(stream)}
        self._states: list[LineState] = []
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
            per_thread: PerThread = tls.t
        except AttributeError:
            per_thread = this_thread()
        if per_thread.emitting:
            if forward_rendered(_caller(1)):
                return len(s)
            return self._write_original(s)
        state = per_thread.states.get(self)
        if state is None:
            state = self._new_state(per_thread)
        if state.watched:
            writer = _caller(1)
            if forward_rendered(writer):
                return len(s)
            with state.lock:
                state.last_write = time.monotonic()
                self._take(per_thread, state, s, writer)
            return len(s)
        size = 1
        if "\n" not in s:
            if not s:
                # Nothing to add, and nothing to forget: tqdm writes "" between the cursor-up
                # it flushed and the newline that line's flush already ended.
                return 0
            if (
                not state.partial
                and not state.skipping
                and len(s) <= MAX_LINE_CHARS
                and "\r" not in s  # carriage returns end lines too: the general path's
            ):
                # The first half of print(): the text; its newline comes in the next call.
                state.partial = s
                state.partial_source = _current_source()
                return len(s)
            if (
                state.partial
                and "\r" not in s
                and state.partial[-1] != "\r"  # a line's end, unless an LF comes next
                and len(state.partial) + len(s) <= MAX_LINE_CHARS
                and _current_source() == state.partial_source
            ):
                # The next pieces of a print() of several values (print("total:", n) writes
                # "total:", " ", "42", then "\n"): the line grows, nothing ends yet.
                state.partial += s
                return len(s)
        elif (
            s != "\n"
            and s[-1] == "\n"
            and s.find("\n") == len(s) - 1
            and "\r" not in s
            and not state.skipping
            and not state.classifier.phase
            and len(state.partial) + len(s) <= MAX_LINE_CHARS
            and (
                not state.partial
                or (state.partial[-1] != "\r" and _current_source() == state.partial_source)
            )
        ):
            # A whole line in one write (sys.stdout.write("done\n"), a library's own line):
            # taken as a print()'s two halves, its text and its newline, below.
            size = len(s)
            if state.partial:
                state.partial += s[:-1]
            else:
                state.partial = s[:-1]
                state.partial_source = _current_source()
            s = "\n"
        if (
            s == "\n"
            and not state.classifier.phase
            and (
                (state.partial and (source := _current_source()) == state.partial_source)
                # An empty line (print()): nothing held, no flushed line that it would end.
                or (
                    not state.partial
                    and not state.skipping
                    and state.partial_source is not EMITTED_UNENDED
                )
            )
        ):
            # The second half of print(): one line. The common case, so inlined here: a
            # plain line skips the classifier and becomes a record without another call.
            line = state.partial
            if line:
                state.partial = ""
            else:
                source = _current_source()
            if line[-1:] == "\r":
                if line == "\r\r":
                    # An empty line drawn over another (a CR, then a CRLF): the general
                    # path's, which says it is a redraw.
                    state.partial = line
                    self._take(per_thread, state, s, _caller(1))
                    return size
                line = line[:-1]
            try:
                frame = _getframe(1)
            except ValueError:  # called from C with no Python frame (interpreter shutdown)
                frame = None
            if frame is None:
                self._classify(per_thread, state, line, False, None, source=source)
                return size
            logger = self._targets.get(source) or self._target(source)
            level = self.level
            code = frame.f_code
            lineno = frame.f_lineno
            attributes = None
            if not (
                code is state.site_code
                and lineno == state.site_lineno
                and logger is state.site_logger
                and per_thread.thread.name is state.site_thread_name
            ):
                attributes = remember_site(state, logger, level, frame)
                # Looked for once per place: a print() inside a logging handler's emit(), a
                # handler's own write of its line, or structlog's PrintLogger printing an
                # event (see rendered_records).
                state.site_renders = renders_from(frame)
            # A handler's rendering is its record, before its text is looked at (one that
            # reads as JSON or "[INFO] ..." too). So is an event structlog printed, unless it
            # printed JSON, read as a JSON line: it holds what structlog's processors added,
            # which the event does not. (Its console lines start with a time, or "[info ]".)
            if state.site_renders == RENDERS_RECORD and forward_rendered(frame):
                return size
            if line[:1] in _NOT_PLAIN_START or ":" in line[:10] or "=" in line[:10]:
                if (
                    line[:1] == "{"
                    or state.site_renders != RENDERS_EVENT
                    or not forward_rendered(frame)
                ):
                    self._classify(per_thread, state, line, False, frame, source=source)
                return size
            if state.site_renders == RENDERS_EVENT and forward_rendered(frame):
                return size
            if logger.disabled:
                return size
            try:
                enabled = logger._cache[level]  # type: ignore[attr-defined] # isEnabledFor's
            except (KeyError, AttributeError):
                enabled = logger.isEnabledFor(level)
            if not enabled and not output_enabled(logger, level):
                return size
            # Inside a traced call the line's record carries the trace's ids: the record path.
            forwarder = sole_forwarder(logger, level) if active_trace.get() is None else None
            if (
                forwarder is not None
                and state.site_code is not None
                and state.site_line is not None
                and forwarder.forward_line(
                    state.site_line,
                    _time(),
                    line,
                    task_name() if HAS_TASK_NAME else None,
                    per_thread.ident,
                )
            ):
                return size
            if attributes is None:
                attributes = state.site_attributes.copy()
            deliver_from(per_thread, logger, stamp(attributes, line, state.owner))
            return size
        writer = _caller(1)
        if forward_rendered(writer):
            return len(s)
        self._take(per_thread, state, s, writer)
        return len(s)

    def flush(self) -> None:
        """Emit this thread's partial line, and the block its classifier holds."""
        try:
            per_thread: PerThread = tls.t
        except AttributeError:
            per_thread = this_thread()
        if per_thread.emitting:
            self._flush_original()
            return
        state = per_thread.states.get(self)
        if state is None:
            return
        if not (state.partial or state.skipping or state.classifier.phase):
            # Nothing held: print(..., flush=True) after a whole line, the common case.
            return
        if state.watched:
            with state.lock:
                self._finish(per_thread, state, _caller(1))
        else:
            self._finish(per_thread, state, _caller(1))

    def reconfigure(
        self,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        line_buffering: bool | None = None,
        write_through: bool | None = None,
    ) -> None:
        """As :meth:`io.TextIOWrapper.reconfigure`, which scripts call on ``sys.stdout``
        (``encoding="utf-8"``, ``line_buffering=True``), with its checks. ``encoding`` is what
        bytes written to :attr:`buffer` are decoded from, from the next write on. The rest
        changes nothing: every line is a record as it ends, text is never encoded, and bytes
        are always decoded with replacement, so that a write never raises."""
        if encoding is not None:
            codecs.lookup(encoding)  # LookupError for an unknown one, as the standard streams
        if errors is not None:
            codecs.lookup_error(errors)
        if newline not in (None, "", "\n", "\r", "\r\n"):
            raise ValueError(f"illegal newline value: {newline!r}")
        if encoding is not None and encoding != self.encoding:
            self.encoding = encoding
            with self._states_lock:
                for state in self._states:
                    state.decoder = None

    def close(self) -> None:
        """Flush; the stream stays usable (the process's stdout cannot be closed from here)."""
        with contextlib.suppress(Exception):
            self.flush()

    def fileno(self) -> int:
        if self.original is None:
            raise io.UnsupportedOperation("no file descriptor")
        return self.original.fileno()

    # -- lines ---------------------------------------------------------------------------------

    def _write_original(self, s: str) -> int:
        """A write made while this thread hands out a record: plain text, counted (made a
        record, it could reach the handler that wrote it again, without end)."""
        original = self.original
        if original is not None:
            with contextlib.suppress(OSError, ValueError):
                original.write(s)
                original.flush()
        passed_as_text(self.stream, self.stream)
        return len(s)

    def _flush_original(self) -> None:
        if self.original is not None:
            with contextlib.suppress(OSError, ValueError):
                self.original.flush()

    def write_bytes(self, data: bytes, frame: FrameType | None) -> None:
        """``buffer.write()``: decoded as UTF-8 (invalid bytes replaced), then as ``write``."""
        per_thread = this_thread()
        if per_thread.emitting:
            original = getattr(self.original, "buffer", None)
            with contextlib.suppress(OSError, ValueError, AttributeError):
                original.write(data)  # type: ignore[union-attr]
                original.flush()  # type: ignore[union-attr]
            passed_as_text(self.stream, self.stream)
            return
        state = per_thread.states.get(self)
        if state is None:
            state = self._new_state(per_thread)
        if state.decoder is None:
            state.decoder = codecs.getincrementaldecoder(self.encoding)("replace")
        text = state.decoder.decode(data)
        if not text:
            return
        if state.watched:
            with state.lock:
                state.last_write = time.monotonic()
                self._take(per_thread, state, text, frame)
        else:
            self._take(per_thread, state, text, frame)
