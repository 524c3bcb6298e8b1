"""What each thread has in each :class:`~isoplug.logs.streams.LogStream`: its line state.

Every thread has one :class:`PerThread` (in the thread-local :data:`tls`, attribute ``t``):
whether it is handing a record to the handlers right now (then its writes go to the original
stream, never back into a ``LogStream``), and one :class:`LineState` per stream it has written
to. A ``LineState`` is its owner's alone, without a lock, except while the quiet-flush timer
(:mod:`isoplug.logs.quiet_flush`) watches it: then ``watched`` is True and whoever touches it
holds its ``lock``.
"""

from __future__ import annotations

import codecs
import logging
import threading
from types import CodeType
from typing import TYPE_CHECKING, Any

from isoplug.logs.textlines import LineClassifier

if TYPE_CHECKING:
    from isoplug.logs.capture import LineSite
    from isoplug.logs.output_records import Location
    from isoplug.logs.stream_lines import LineAssembly

__all__ = ["LineState", "PerThread", "this_thread", "tls"]


class PerThread:
    """What one thread has in every stream: its line states, and whether it is inside the
    handlers right now (then its writes go to the original stream)."""

    __slots__ = ("emitting", "ident", "states", "thread")

    def __init__(self) -> None:
        self.emitting = False
        self.states: dict[LineAssembly, LineState] = {}
        self.thread = threading.current_thread()
        self.ident = threading.get_ident()


#: Each thread's :class:`PerThread`, as attribute ``t`` (read directly on the hot path).
tls = threading.local()


def this_thread() -> PerThread:
    try:
        per_thread: PerThread = tls.t
    except AttributeError:
        per_thread = tls.t = PerThread()
    return per_thread


#: :attr:`LineState.partial_source` after a flush emitted the partial line (never a source:
#: sources are logger names).
EMITTED_UNENDED = "\0emitted"


class LineState:
    """One thread's line in one stream: the partial line, its classifier, a held block."""

    __slots__ = (
        "classifier",
        "cut_chars",
        "cut_head",
        "decoder",
        "emitted_source",
        "held",
        "last_write",
        "lock",
        "owner",
        "partial",
        "partial_source",
        "site_attributes",
        "site_code",
        "site_line",
        "site_lineno",
        "site_logger",
        "site_renders",
        "site_thread_name",
        "skipping",
        "watched",
    )

    def __init__(self, owner: PerThread, level: int) -> None:
        self.owner = owner
        self.partial = ""
        # Inside the tail of a line that was cut: skipped up to its newline (or a flush), only
        # counted; then the line's kept head is emitted, marked with the count.
        self.skipping = False
        # The source (current_source) the partial line, or the tail being skipped, was written
        # under: the thread's text of another source never joins it (a group runner's plugins
        # share the loop's thread).
        # EMITTED_UNENDED once a flush emitted the partial line, until the thread writes again:
        # that write's newline ends the line already emitted, no empty line of its own (tqdm
        # flushes each update, then writes "\n"). The line's source is then emitted_source.
        # Every write that starts a partial line sets partial_source, so the print() path
        # pays nothing for this.
        self.partial_source: str | None = None
        self.emitted_source: str | None = None
        self.cut_head = ""
        self.cut_chars = 0
        # Text written through Python never holds a real crash dump (C writes it to fd 2).
        self.classifier = LineClassifier(level, fatal_blocks=False)
        # Where the block the classifier holds started, and for whom.
        self.held: tuple[str | None, Location] | None = None
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
        # The same, encoded for ForwardingHandler.forward_line (None: not encodable), and the
        # thread's name then (a renamed thread makes a new site).
        self.site_line: LineSite | None = None
        self.site_thread_name: str | None = None
        # What a line written from the site is the rendering of: rendered_records.renders_from
        # (RENDERS_NOTHING, RENDERS_RECORD, RENDERS_EVENT).
        self.site_renders = 0
