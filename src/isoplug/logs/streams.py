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
error report, the forwarding handler's fallback) goes to the original stream, the real fd.

:meth:`LogStream.write` runs for every ``print()`` of a plugin: its plain-line path is inlined,
and ``sys._getframe`` is a module global. When the line's record would reach one
:class:`~isoplug.logs.ForwardingHandler` and nothing else, with no filter on the way
(:func:`~isoplug.logs.output_records.sole_forwarder`, checked for every line; always so in a
runner unless the plugin adds handlers or filters), no record is built: the handler encodes the
line straight into the bytes its record would have had
(:meth:`~isoplug.logs.ForwardingHandler.forward_line`), which halves what a ``print()`` costs.
Otherwise the record is made and delivered by :mod:`~isoplug.logs.output_records`' functions.
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

from isoplug.logs.output_records import (
    HAS_TASK_NAME,
    Location,
    deliver_from,
    location_of,
    make_record,
    remember_site,
    skip_frames_of,
    sole_forwarder,
    stamp,
    task_name,
    text_record,
)
from isoplug.logs.quiet_flush import quiet_flusher
from isoplug.logs.sources import current_source
from isoplug.logs.stream_io import BinaryLogStream, WriteOnly
from isoplug.logs.stream_io import caller as _caller
from isoplug.logs.stream_state import LineState, PerThread, this_thread, tls
from isoplug.logs.textlines import TextRecord
from isoplug.logs.trace_ids import active_trace
from isoplug.wire.sanitize import IN_EMITTING_PROCESS, cut_mark

__all__ = ["MAX_LINE_CHARS", "LogStream", "is_plain_line"]

#: Longest line kept whole (16 Ki characters, like the host's fd-level capture); past it the line
#: is cut, marked with how many characters were cut and flagged ``truncated``, and its tail
#: skipped (counted).
MAX_LINE_CHARS = 16 * 1024

# The hot path's binding: a module global is found faster than an attribute of a module.
_getframe = sys._getframe
_time = time.time
_current_source = current_source.get

# Not a line's source either: close() flushes on behalf of its caller.
skip_frames_of(sys.modules[__name__])


def _cut_line(head: str, cut: int) -> str:
    """The text of a line cut to ``head``, ``cut`` characters shorter than it was."""
    return head + cut_mark(cut, where=IN_EMITTING_PROCESS)


#: First characters after which the classifier may find more than a plain line: a JSON object,
#: a bracketed level, or the start of a block (Traceback, Exception..., Unhandled..., an
#: exception group's indented drawing). Not "Fatal Python error:": this classifier starts no
#: crash dump (``fatal_blocks=False``: no real one is written through Python).
_NOT_PLAIN_START = frozenset("{[< +TEU\t")


def is_plain_line(line: str) -> bool:
    """True when :class:`~isoplug.logs.textlines.LineClassifier` (not holding a block) would
    return the line as is, at the stream's level: no JSON, no level prefix (``LEVEL:`` has its
    colon within the first 10 characters), no block start. Conservative: False says "ask the
    classifier", never the reverse."""
    return line[:1] not in _NOT_PLAIN_START and ":" not in line[:10]


# -- the streams ------------------------------------------------------------------------------


class LogStream(WriteOnly, io.TextIOBase):
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
                state.partial_source = _current_source()
                return len(s)
        elif (
            s == "\n"
            and state.partial
            and not state.classifier.phase
            and (source := _current_source()) == state.partial_source
        ):
            # The second half of print(): one line. The common case, so inlined here: a
            # plain line skips the classifier and becomes a record without another call.
            line = state.partial
            state.partial = ""
            if line[-1:] == "\r":
                line = line[:-1]
            if line[:1] in _NOT_PLAIN_START or ":" in line[:10]:
                self._classify(per_thread, state, line, False, _caller(1), source=source)
                return 1
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
                self._classify(per_thread, state, line, False, None, source=source)
                return 1
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
                return 1
            if attributes is None:
                attributes = state.site_attributes.copy()
            deliver_from(per_thread, logger, stamp(attributes, line, state.owner))
            return 1
        self._take(per_thread, state, s, _caller(1))
        return len(s)

    def flush(self) -> None:
        """Emit this thread's partial line, and the block its classifier holds."""
        per_thread = this_thread()
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

    def write_bytes(self, data: bytes, frame: FrameType | None) -> None:
        """``buffer.write()``: decoded as UTF-8 (invalid bytes replaced), then as ``write``."""
        per_thread = this_thread()
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

    def _new_state(self, per_thread: PerThread) -> LineState:
        state = LineState(per_thread, self.level)
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
        self, per_thread: PerThread, state: LineState, s: str, frame: FrameType | None
    ) -> None:
        """Add ``s`` to ``state``'s line; emit the lines it completes (the general case)."""
        source = _current_source()
        if (state.partial or state.skipping) and state.partial_source != source:
            self._end_line_of_other_source(per_thread, state)
        held = state.held
        if held is not None and held[0] != source:
            self._flush_held(per_thread, state, held)
        text = state.partial + s if state.partial else s
        state.partial = ""
        start = 0
        if state.skipping:
            cut = text.find("\n")
            if cut < 0:
                state.cut_chars += len(text)
                return
            state.cut_chars += cut - (text[cut - 1 : cut] == "\r")
            self._end_cut_line(per_thread, state, frame)
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
                line = _cut_line(line[:MAX_LINE_CHARS], len(line) - MAX_LINE_CHARS)
                self._classify(per_thread, state, line, True, frame, source=source)
            elif not state.classifier.holding and is_plain_line(line):
                self._emit(per_thread, state, line, frame, source)
            else:
                self._classify(per_thread, state, line, False, frame, source=source)
        rest = text[start:] if start else text
        if len(rest) > MAX_LINE_CHARS:
            # Its record waits for the line's end, to say how much was cut; only the count
            # grows meanwhile.
            state.cut_head = rest[:MAX_LINE_CHARS]
            state.cut_chars = len(rest) - MAX_LINE_CHARS
            state.skipping = True
            state.partial_source = source
        elif rest:
            state.partial = rest
            state.partial_source = source
        if state.classifier.holding and not state.watched:
            quiet_flusher.watch(self, state)

    def _classify(
        self,
        per_thread: PerThread,
        state: LineState,
        line: str,
        truncated: bool,
        frame: FrameType | None,
        *,
        source: str | None,
    ) -> None:
        """Feed ``line``, written under ``source``, to ``state``'s classifier; emit the records
        it completes. A block held for another source is emitted first: never continued."""
        held = state.held
        if held is not None and held[0] != source:
            self._flush_held(per_thread, state, held)
            held = None
        classifier = state.classifier
        was_holding = classifier.holding
        records = classifier.feed(line, truncated)
        here: tuple[str | None, Location] | None = None
        if classifier.holding and (not was_holding or any(r.traceback for r in records)):
            # A block starts with this line: its record will say it was written here.
            here = (source, location_of(frame))
            state.held = here
        elif not classifier.holding:
            state.held = None
        for record in records:
            if record.traceback and held is not None:
                self._emit_text(per_thread, state, record, held)
            else:
                if here is None:
                    here = (source, location_of(frame))
                self._emit_text(per_thread, state, record, here)
        if classifier.holding and not state.watched:
            quiet_flusher.watch(self, state)

    def _end_cut_line(
        self, per_thread: PerThread, state: LineState, frame: FrameType | None
    ) -> None:
        """Emit the line being skipped, cut, with how much was cut, for the source it was
        written under; the next text starts a line. ``frame`` is where it ended, None when
        not ended by its writer."""
        head, cut = state.cut_head, state.cut_chars
        state.skipping = False
        state.cut_head = ""
        state.cut_chars = 0
        # Nothing but its CR skipped: the line was whole.
        line = _cut_line(head, cut) if cut else head
        self._classify(per_thread, state, line, cut > 0, frame, source=state.partial_source)

    def _finish(self, per_thread: PerThread, state: LineState, frame: FrameType | None) -> None:
        """Emit the partial line (or the cut line being skipped) and the held block of
        ``state`` (its lock held if watched), each for the source it was written under."""
        source = _current_source()
        if state.skipping:
            self._end_cut_line(per_thread, state, frame if state.partial_source == source else None)
        if state.partial:
            line = state.partial
            state.partial = ""
            # Flushed by other code than the partial line's writer: no place of its own.
            where = frame if state.partial_source == source else None
            self._classify(per_thread, state, line, False, where, source=state.partial_source)
        if state.classifier.holding:
            self._flush_held(per_thread, state, state.held or (source, location_of(frame)))
        state.held = None

    def _end_line_of_other_source(self, per_thread: PerThread, state: LineState) -> None:
        """Text of another source comes: the partial line (or the cut line whose tail is being
        skipped) ends here, as a line of the source it was written under. Its ``write()`` that
        would have completed it never comes, so it has no place of its own."""
        if state.skipping:
            self._end_cut_line(per_thread, state, None)
        if state.partial:
            line = state.partial
            state.partial = ""
            self._classify(per_thread, state, line, False, None, source=state.partial_source)

    def _flush_held(
        self, per_thread: PerThread, state: LineState, held: tuple[str | None, Location]
    ) -> None:
        """Emit the block ``state``'s classifier holds, as written under ``held``."""
        state.held = None
        for record in state.classifier.flush():
            self._emit_text(per_thread, state, record, held)

    def _flush_state(self, state: LineState) -> None:
        """Emit what another thread (or a dead one) left in ``state``."""
        per_thread = this_thread()
        # Its owner, if still writing, now takes the lock. Restored, not cleared: the quiet
        # flusher may be watching the state too, and then its owner must keep taking the lock.
        was_watched, state.watched = state.watched, True
        with state.lock:
            try:
                self._finish(per_thread, state, None)
            finally:
                state.watched = was_watched

    def flush_all(self) -> None:
        """Emit every thread's partial line and held block (at exit)."""
        with self._states_lock:
            states = list(self._states)
        for state in states:
            if state.partial or state.skipping or state.classifier.holding:
                self._flush_state(state)

    # -- records -------------------------------------------------------------------------------

    def _target(self, source: str | None) -> logging.Logger:
        logger = self._targets.get(source)
        if logger is None:
            logger = logging.getLogger(f"{source}.{self.stream}")
            if len(self._targets) < 1024:
                self._targets[source] = logger
        return logger

    def _emit(
        self,
        per_thread: PerThread,
        state: LineState,
        line: str,
        frame: FrameType | None,
        source: str | None,
    ) -> None:
        """The plain-line path: one record at the stream's level, written from ``frame``."""
        logger = self._targets.get(source) or self._target(source)
        level = self.level
        if not logger.isEnabledFor(level):
            return
        record = make_record(logger.name, level, line, location_of(frame), state.owner)
        deliver_from(per_thread, logger, record)

    def _emit_text(
        self,
        per_thread: PerThread,
        state: LineState,
        text: TextRecord,
        where: tuple[str | None, Location],
    ) -> None:
        source, location = where
        logger = self._targets.get(source) or self._target(source)
        if not logger.isEnabledFor(text.level):
            return
        deliver_from(per_thread, logger, text_record(logger.name, text, location, state.owner))
