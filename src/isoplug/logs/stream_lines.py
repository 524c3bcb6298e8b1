"""How a :class:`~isoplug.logs.streams.LogStream`'s text becomes lines, and lines records, off
the ``print()`` fast path.

:meth:`LogStream.write <isoplug.logs.streams.LogStream.write>` handles the common case itself
(one plain line, the two halves of a ``print()``); everything else comes here
(:class:`LineAssembly`, a base class of ``LogStream``): text with several lines or none
complete, lines past :data:`MAX_LINE_CHARS` (cut, their tail skipped and counted), lines that
need the :class:`~isoplug.logs.textlines.LineClassifier` (JSON, a level prefix, a traceback),
blocks it holds, text of another source ending what the thread holds, flushes, the exit's
:meth:`~LineAssembly.flush_all`, and every thread's line states (made on its first write,
pruned once their thread is gone). Separate from :mod:`isoplug.logs.streams` because none of
it is on the path of a plain ``print()``, whose code there is tuned line by line; the rules it
follows are that module's docstring's.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING

from isoplug.logs.output_records import (
    Location,
    deliver_from,
    location_of,
    make_record,
    output_enabled,
    skip_frames_of,
    text_record,
)
from isoplug.logs.quiet_flush import quiet_flusher
from isoplug.logs.sources import current_source
from isoplug.logs.stream_state import EMITTED_UNENDED, LineState, PerThread, this_thread
from isoplug.logs.textlines import is_plain_line, is_terminal_drawing, redrawn
from isoplug.wire.sanitize import IN_EMITTING_PROCESS, cut_mark

if TYPE_CHECKING:
    from isoplug.logs.textlines import TextRecord

__all__ = ["MAX_LINE_CHARS", "LineAssembly", "is_plain_line"]


#: Longest line kept whole (16 Ki characters, like the host's fd-level capture); past it the line
#: is cut, marked with how many characters were cut and flagged ``truncated``, and its tail
#: skipped (counted).
MAX_LINE_CHARS = 16 * 1024

_current_source = current_source.get

# A stream's own code, as streams.py is: never a line's source.
skip_frames_of(sys.modules[__name__])


def _cut_line(head: str, cut: int) -> str:
    """The text of a line cut to ``head``, ``cut`` characters shorter than it was."""
    return head + cut_mark(cut, where=IN_EMITTING_PROCESS)


class LineAssembly:
    """The general text-to-records half of :class:`~isoplug.logs.streams.LogStream` (a base
    class of it; see the module docstring). Below: the stream's state it uses, set up by
    ``LogStream.__init__``."""

    stream: str
    level: int
    _targets: dict[str | None, logging.Logger]
    #: Every thread's line state in this stream (pruned of dead threads', see _new_state).
    _states: list[LineState]
    _states_lock: threading.Lock
    _prune_at: int

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
        if state.partial_source is EMITTED_UNENDED:
            state.partial_source = source
            if source == state.emitted_source:
                # The newline of the line a flush emitted: no line of its own.
                s = s[1:] if s[:1] == "\n" else s[2:] if s[:2] == "\r\n" else s
                if not s:
                    return
        if (state.partial or state.skipping) and state.partial_source != source:
            self._end_line_of_other_source(per_thread, state)
        held = state.held
        if held is not None and held[0] != source:
            self._flush_held(per_thread, state, held)
        text = state.partial + s if state.partial else s
        state.partial = ""
        start = 0
        carriage_returns = "\r" in text
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
            if carriage_returns and "\r" in line and not state.classifier.holding:
                # What comes before a CR alone is a line of its own (see _classify), a status
                # frame; this one, the last, ends at the newline, a redraw.
                last = line.rindex("\r")
                if last:
                    self._classify(
                        per_thread, state, line[:last], False, frame, source=source, redraw=True
                    )
                if last == len(line) - 1:
                    # Nothing after the CR: an empty line drawn over another, no record.
                    continue
                # Its CR stays in front: _classify reads it as a redraw.
                line = line[last:]
            if len(line) > MAX_LINE_CHARS:
                line = _cut_line(line[:MAX_LINE_CHARS], len(line) - MAX_LINE_CHARS)
                self._classify(per_thread, state, line, True, frame, source=source)
            elif not carriage_returns and not state.classifier.holding and is_plain_line(line):
                self._emit(per_thread, state, line, frame, source)
            else:
                self._classify(per_thread, state, line, False, frame, source=source)
        rest = text[start:] if start else text
        if (
            carriage_returns
            and not state.classifier.holding
            and (last := rest.rfind("\r", 0, len(rest) - 1)) >= 0
        ):
            # Lines ended by carriage returns (print(..., end="\r"), a progress bar's
            # updates): each is a record now, not a line that grows until a newline comes. A
            # CR at the very end waits: the next write may bring its CRLF's LF. The CR before
            # the rest stays in front of it: it redraws the line before (see _classify).
            if last:
                self._classify(
                    per_thread, state, rest[:last], False, frame, source=source, redraw=True
                )
            rest = rest[last:]
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
        redraw: bool = False,
    ) -> None:
        """Feed ``line``, written under ``source``, to ``state``'s classifier; emit the records
        it completes. A block held for another source is emitted first: never continued.

        Carriage returns outside a block split ``line``: a progress bar writes ``\r40%``,
        ``\r50%``..., which a terminal shows one over the other; each text between them is a
        line (``redraw``: one after a CR redraws the line before, one a CR ends is a status
        frame that the next redraws): at :data:`~isoplug.logs.textlines.REDRAWN_LEVEL` (INFO)
        where the stream says more (stderr), unless it says a level of its own (inside a
        traceback, a CR is the exception message's own, escaped by the host). Such a line that
        is only terminal drawing (empty, blanks clearing the line, a cursor movement) makes no
        record."""
        if "\r" in line and not state.classifier.holding:
            parts = line.split("\r")
            end = max(index for index, part in enumerate(parts) if part) if any(parts) else 0
            for index, part in enumerate(parts):
                if part:
                    cut = truncated and index == end
                    self._classify(per_thread, state, part, cut, frame, source=source, redraw=True)
            return
        if redraw and not state.classifier.holding and is_terminal_drawing(line):
            return
        held = state.held
        if held is not None and held[0] != source:
            self._flush_held(per_thread, state, held)
            held = None
        classifier = state.classifier
        was_holding = classifier.holding
        # print_exception() prints a message's later lines and the notes after the exception
        # line: the traceback module's writes belong to the block they follow.
        records = classifier.feed(
            line, truncated, frame is not None and frame.f_globals.get("__name__") == "traceback"
        )
        if redraw and not (was_holding or classifier.holding):
            records = redrawn(records, self.level)
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
        emitted = state.skipping or bool(state.partial)
        if emitted:
            state.emitted_source = state.partial_source
        if state.skipping:
            self._end_cut_line(per_thread, state, frame if state.partial_source == source else None)
        if state.partial:
            line = state.partial
            state.partial = ""
            # Flushed by other code than the partial line's writer: no place of its own.
            where = frame if state.partial_source == source else None
            self._flushed(per_thread, state, line, where)
        if emitted:
            state.partial_source = EMITTED_UNENDED
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
            self._flushed(per_thread, state, line, None)

    def _flushed(
        self, per_thread: PerThread, state: LineState, line: str, frame: FrameType | None
    ) -> None:
        """Classify ``line``, a partial line ended by a flush or by another source's text,
        unless it is only terminal drawing outside a block: what a progress bar flushes
        around its frames (tqdm's nested bars flush a lone cursor-up) is no text of its own."""
        if not state.classifier.holding and is_terminal_drawing(line):
            return
        self._classify(per_thread, state, line, False, frame, source=state.partial_source)

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
        if not output_enabled(logger, level):
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
        if not output_enabled(logger, text.level):
            return
        deliver_from(per_thread, logger, text_record(logger.name, text, location, state.owner))
