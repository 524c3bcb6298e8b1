"""The timer thread that flushes a held traceback once its thread goes quiet.

A :class:`~isoplug.logs.textlines.LineClassifier` holds a finished traceback, since a chained
one may follow. :data:`quiet_flusher`, one daemon thread for every
:class:`~isoplug.logs.streams.LogStream` (started on first use), emits a held block once its
thread has written nothing to that stream for :data:`QUIET_FLUSH_DELAY`. While it watches a
line state, that state's ``watched`` is True and both sides touch it under its ``lock``; a
thread that wrote again meanwhile keeps its block (it was not quiet after all). In a forked
child the thread and its lock start afresh.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from isoplug.logs.output_records import NOWHERE, report_failure
from isoplug.logs.stream_state import LineState, this_thread

if TYPE_CHECKING:
    from isoplug.logs.stream_lines import LineAssembly

__all__ = ["QUIET_FLUSH_DELAY", "QuietFlusher", "quiet_flusher"]

#: A traceback the classifier holds (a chain may follow) is flushed once its thread has written
#: nothing to the stream for this long.
QUIET_FLUSH_DELAY = 0.05


class QuietFlusher:
    """One daemon thread for every stream: flushes a held block once its thread has written
    nothing for :data:`QUIET_FLUSH_DELAY` (started on first use)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._watched: list[tuple[LineAssembly, LineState]] = []
        self._thread: threading.Thread | None = None

    def watch(self, stream: LineAssembly, state: LineState) -> None:
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
                    report_failure(f"isoplug: flushing {stream.stream} failed: {exc!r}")

    def _flush(self, stream: LineAssembly, state: LineState) -> None:
        with state.lock:
            if state.last_write + QUIET_FLUSH_DELAY > time.monotonic():
                # Its thread wrote again since this flush was decided: not quiet after all.
                with self._changed:
                    self._watched.append((stream, state))
                return
            try:
                held = state.held or (None, NOWHERE)
                state.held = None
                per_thread = this_thread()
                for record in state.classifier.flush():
                    stream._emit_text(per_thread, state, record, held)
            finally:
                state.watched = False

    def after_fork_in_child(self) -> None:
        self._reset()


quiet_flusher = QuietFlusher()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=quiet_flusher.after_fork_in_child)
