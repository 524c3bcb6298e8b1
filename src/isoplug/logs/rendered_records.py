"""Text a logging handler writes to ``sys.stdout`` / ``sys.stderr``: the record it renders.

A plugin that configures logging for itself (``logging.basicConfig(...)``, ``dictConfig()``
with a console handler, a ``StreamHandler`` added to a logger) has its handlers format records
into lines on ``sys.stdout`` or ``sys.stderr``, which in a runner are
:class:`~isoplug.logs.streams.LogStream` objects. Made records of their own, those lines would
arrive as text at the stream's level (an ERROR with its traceback as a WARNING line of stderr),
besides the record itself where isoplug's handler gets it too, and a line record that reached
the same console handler again would be written to the real file descriptor, formatted twice.

So once :func:`~isoplug.logs.kept_forwarder.keep_forwarding` names the process's forwarding
handler (a runner's), a write
made by a handler's ``emit()`` of a record is taken for what it is, that record's rendering:
the record goes to the forwarding handler as itself, unless the forwarding handler is on the
record's way anyway (then it has it, or is about to), and the text goes nowhere. Each record
arrives once, with its level, logger, location and exception, whatever the plugin's format.

A handler's rendering is text written from inside its ``emit()`` (an ``emit`` of a
:class:`logging.Handler` with a :class:`logging.LogRecord` in hand, at most
:data:`RENDER_DEPTH` frames above the stream's ``write()``: rich's ``RichHandler`` writes
through its console's buffer, six frames down). Text written from ``Handler.handleError`` (its
report of a handler that failed) stays text. A loguru sink of the program's own writing a
record to a stream is taken likewise
(:func:`~isoplug.logs.loguru_bridge.forward_rendered_loguru`), and so is structlog printing an
event (its ``PrintLogger``, structlog's default: :mod:`isoplug.logs.structlog_events`); unless
a logging handler's ``emit()`` called loguru or structlog with the record in its hands
(loguru's ``InterceptHandler``): then what they write is that record's rendering
(:func:`~isoplug.logs.kept_forwarder.intercepted_record`). A loguru record or structlog event
rendered while the thread hands out a record of isoplug's is never made a record: its text is
plain text (:mod:`isoplug.logs.nested_output`), so that no output comes back to the handler
that wrote it without end. loguru's report of a sink that failed is text, as
``handleError``'s is.
"""

from __future__ import annotations

import logging
import sys
from types import FrameType
from typing import Any

from isoplug.logs.kept_forwarder import (
    forward_once,
    intercepted_record,
    kept_forwarder,
    send_once,
)
from isoplug.logs.loguru_bridge import forward_rendered_loguru
from isoplug.logs.output_records import deliver, output_enabled
from isoplug.logs.stream_state import this_thread
from isoplug.logs.structlog_events import is_event_frame, record_of_event

__all__ = [
    "RENDERS_EVENT",
    "RENDERS_NOTHING",
    "RENDERS_RECORD",
    "RENDER_DEPTH",
    "RenderingPipe",
    "forward_rendered",
    "renders_from",
]

#: How many frames above a stream's ``write()`` a handler's ``emit()`` may be.
RENDER_DEPTH = 8


def forward_rendered(writer: FrameType | None) -> bool:
    """True when the text written from the frame ``writer`` is the rendering of a record, a
    loguru record or a structlog event (see the module docstring); the record has then gone to
    the forwarding handler, or will, and the text is to be dropped. False for any other text,
    and in a process with no forwarding handler named.

    A loguru record or structlog event that a logging handler's ``emit()`` made of the record
    in its hands (loguru's ``InterceptHandler``) is that record's rendering. One rendered while
    this thread hands out a record of isoplug's (:func:`~isoplug.logs.output_records.deliver`)
    is never made a record: its text is plain text (see :mod:`isoplug.logs.nested_output`)."""
    forwarder = kept_forwarder()
    if forwarder is None:
        return False
    rendering = _rendering_frame(writer)
    if rendering is None:
        return False
    names = rendering.f_locals
    name = rendering.f_code.co_name
    if name == _LOGURU_QUEUE_WRITER:
        # loguru's enqueue=True: the sink writes in loguru's own thread what the logging
        # thread formatted and queued, the record (a copy) on the message.
        message = names.get("message")
        queued = getattr(message, "record", None)
        if not isinstance(queued, dict):
            return False
        return forward_rendered_loguru(queued, str(message))
    handler = names.get("self")
    record = names.get("record")
    is_event = name == "_proxy_to_logger"
    if is_event or type(handler).__module__ == "loguru._handler":
        intercepted = intercepted_record(rendering)
        if intercepted is not None:
            send_once(intercepted)
            return True
        if this_thread().emitting:
            return False  # nested: the stream passes it on as plain text
        if is_event:
            forward_once(rendering, names.get("event_kw"), _forward_event)
            return True
        return isinstance(record, dict) and forward_rendered_loguru(record)
    if (
        not isinstance(handler, logging.Handler)
        or not isinstance(record, logging.LogRecord)
        or handler is forwarder
    ):
        return False
    send_once(record)
    return True


#: What :func:`renders_from` says of a place that writes.
RENDERS_NOTHING, RENDERS_RECORD, RENDERS_EVENT = 0, 1, 2


def renders_from(frame: FrameType | None) -> int:
    """What text written from ``frame`` would be the rendering of (:func:`forward_rendered`
    would look further): a record (a logging handler's or a loguru sink's ``emit``), a
    structlog event, or nothing. Cheap, for a place that prints, once."""
    if kept_forwarder() is None:
        return RENDERS_NOTHING
    rendering = _rendering_frame(frame)
    if rendering is None:
        return RENDERS_NOTHING
    return RENDERS_EVENT if rendering.f_code.co_name == "_proxy_to_logger" else RENDERS_RECORD


def _forward_event(frame: FrameType) -> None:
    made = record_of_event(frame)
    if made is None:
        return
    logger, record = made
    if output_enabled(logger, record.levelno):
        deliver(logger, record)


#: The function of loguru's own thread that writes a sink's queued messages (``enqueue=True``).
_LOGURU_QUEUE_WRITER = "_queued_writer"
#: The module whose ``print`` writes loguru's report of a sink that failed (text, as
#: ``handleError``'s).
_LOGURU_ERROR_REPORTS = "loguru._error_interceptor"


def _rendering_frame(frame: FrameType | None) -> FrameType | None:
    """The first frame from ``frame`` up, within :data:`RENDER_DEPTH`, that renders a record:
    an ``emit`` (logging's handlers, loguru's), loguru's thread writing queued messages,
    structlog's ``_proxy_to_logger``; None past a ``handleError`` frame or loguru's error
    report (a failed handler's report is text)."""
    for _ in range(RENDER_DEPTH):
        if frame is None:
            return None
        name = frame.f_code.co_name
        if (
            name == "emit"
            or (name == "_proxy_to_logger" and is_event_frame(frame))
            or (
                name == _LOGURU_QUEUE_WRITER
                and frame.f_globals.get("__name__") == "loguru._handler"
            )
        ):
            return frame
        if name == "handleError" or (
            name == "print" and frame.f_globals.get("__name__") == _LOGURU_ERROR_REPORTS
        ):
            return None
        frame = frame.f_back
    return None


class RenderingPipe:
    """A ``stdio = "pipe"`` stream as a logging handler of the plugin's own writes to it:
    what that handler renders goes as its record (:func:`forward_rendered`), the rest to the
    pipe. A ``print()`` there runs no Python, so a rendering cannot be told on the stream
    itself; the runner puts this one under the plugin's console handlers instead
    (:func:`~isoplug.logs.pipe_consoles.render_through`)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        if forward_rendered(sys._getframe(1)):
            return len(text)
        written: int = self.stream.write(text)
        return written

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
