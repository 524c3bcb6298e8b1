"""loguru, when a program uses it, logs through the standard ``logging`` module.

loguru's default sink writes formatted text to stderr, where a log record's level, extras and
exception would be lost. :func:`forward_loguru` (which a runner calls, and
:func:`~isoplug.logs.forward_logs` by default) waits for the program to import loguru (isoplug
never imports it, and does not need it installed), then removes that default sink (handler 0,
if still there; kept on request) and adds one that turns each message into a
``logging.LogRecord`` handed to ``logging.getLogger(<source>.<module>)``'s handlers (in a
program of its own, ``<module>``'s: the module that called loguru):

- the level is loguru's, number and name (``SUCCESS`` 25, ``TRACE`` 5, custom levels too);
- ``logger.bind(user=42)`` / ``contextualize`` values become record attributes (extras); one
  named like a standard attribute or like a name the record's identity, level or message is
  read under (``logger``, ``plugin_id``, ``level``, ``event``, ``log.logger``...:
  :func:`isoplug.logs.record_names.reserved_field`, the host's rule) is renamed
  ``extra_<name>``, as the host would rename it;
- an exception (``logger.exception``, ``opt(exception=...)``) is the record's ``exc_info``;
- the source location, thread, process and time are loguru's record's.

loguru's own ``StandardSink`` (a ``logging.Handler`` as sink, ``logger.add(handler)``) hands
the handler loguru's whole formatted line as the message (time, level, ``module:function:line``
before the text), nests the extras under one ``extra`` attribute, and bakes the traceback into
the message, with the variables' values where ``diagnose`` is on (loguru's default): that is why
this sink builds the record itself. It adds itself once: calling again (a second
``forward_logs()``, a forked child's) replaces it.

A program that sets loguru up itself (``logger.remove()``, then ``logger.add(sys.stderr,
format=..., level=...)``) removes this sink too; what its own sink writes to ``sys.stdout`` or
``sys.stderr`` is then taken for the record it renders, made as this sink makes it and sent to
the forwarding handler (:func:`forward_rendered_loguru`), so its records keep their level,
extras and exception.

A program may route ``logging`` into loguru too (loguru's README ``InterceptHandler``, a
logging handler that logs each record through loguru): what loguru makes of such a record is
that record, which reaches the host once, as itself; never bridged back into ``logging``,
where it would reach the same handler again, without end (:func:`_accepts`); with a sink of
``enqueue=True`` too, whose text loguru's own thread writes (:data:`SENT_KEY`).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import sys
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from isoplug.log_guard import failure_report
from isoplug.logs.kept_forwarder import (
    as_rendering_package,
    forward_once,
    forwarded_last,
    intercepted_record,
    kept_forwarder,
    send_once,
)
from isoplug.logs.loguru_sinks import (
    Unbridged,
    add_sinks_one_at_a_time,
    bridge_sink_removed,
    bridge_sinks,
    count_if_unbridged,
    count_messages_reaching_no_sink,
    sinks_changing,
    sinks_of,
    take_unbridged,
    writes_where_the_host_reads,
)
from isoplug.logs.nested_output import passed_as_text
from isoplug.logs.output_records import deliver, output_enabled
from isoplug.logs.record_names import add_extras
from isoplug.logs.sources import current_source
from isoplug.logs.stream_state import this_thread

__all__ = [
    "Unbridged",
    "bridge_sink_removed",
    "forward_loguru",
    "forward_rendered_loguru",
    "install_loguru_bridge",
    "restore_bridge_sink",
]

#: The loguru record this thread's bridge sink took last: loguru hands the same record to
#: each of its sinks in turn, so a sink of the program's own that writes it to a stream can
#: tell it arrived already.
_bridged = threading.local()
_TRACEBACK_START = "Traceback (most recent call last):"


def forward_loguru(*, keep_default_sink: bool = False) -> None:
    """Send loguru's messages to ``logging`` as records of their own (see the module
    docstring), from now on if the program has imported loguru, else as soon as it does;
    loguru's default sink (stderr) is removed unless ``keep_default_sink``. Never imports
    loguru. :func:`~isoplug.logs.forward_logs` calls it (``loguru=True``, the default), and a
    program whose forwarding handler is placed otherwise (``dictConfig``) may."""
    module = sys.modules.get("loguru")
    if module is not None:
        _bridge(module, keep_default_sink)
        return
    for finder in sys.meta_path:
        if isinstance(finder, _LoguruFinder):
            # The last call's wish is the one kept.
            finder.keep_default_sink = keep_default_sink
            return
    sys.meta_path.insert(0, _LoguruFinder(keep_default_sink))


def install_loguru_bridge() -> None:
    """Forward loguru to ``logging`` as soon as the program imports loguru (now, if it has),
    in place of its default sink: a runner's (see :func:`forward_loguru`)."""
    forward_loguru()


def _bridge(module: ModuleType, keep_default_sink: bool = False) -> None:
    """Add the sink into ``logging`` to loguru (once: an earlier one is replaced), and remove
    its default stderr sink (if still there) unless ``keep_default_sink``."""
    logger = module.logger
    if not keep_default_sink:
        with contextlib.suppress(ValueError):
            logger.remove(0)  # the default sink; gone already if the program removed it
    if bridge_sinks:
        added_to, sink_id = bridge_sinks.pop()
        if added_to is logger:
            with contextlib.suppress(ValueError):  # the program removed every sink meanwhile
                logger.remove(sink_id)
    # Level 0: every message reaches logging, whose logger levels decide. No exception
    # formatting with variable values (diagnose): the record carries the exception itself.
    sink_id = logger.add(
        _sink, level=0, format="{message}", backtrace=False, diagnose=False, filter=_accepts
    )
    bridge_sinks.append((logger, sink_id))
    _report_failures_as_such(module)
    _settle_queued_in_logging_thread(module)
    count_messages_reaching_no_sink(module)
    add_sinks_one_at_a_time(module)


def _accepts(record: Any) -> bool:
    """loguru asks this, before it takes the sink's lock, whether the sink is to have a
    message. Not one logged from inside the handing out of a ``logging`` record:

    - a message that a logging handler's ``emit()`` made of the record in its hands (loguru's
      ``InterceptHandler`` recipe: ``logging`` into loguru) is that record, which goes to the
      forwarding handler once as itself (if it is not on its way there anyway). Bridged back
      into ``logging``, it reached that handler again, and loguru again, without end; and a
      record this sink bridged (a direct loguru call) reached it too, and came back to this
      very sink, which loguru refused then (its lock held), with a report on stderr;
    - any other message, while this thread hands out a record of isoplug's: its text goes to
      the real stderr, counted (:mod:`isoplug.logs.nested_output`)."""
    intercepted = intercepted_record(sys._getframe(1))
    if intercepted is not None:
        send_once(intercepted)
        return False
    if this_thread().emitting:
        _pass_as_text(record)
        return False
    return True


def _pass_as_text(record: Any) -> None:
    stream = sys.__stderr__
    if stream is not None:
        with contextlib.suppress(OSError, ValueError):  # a closed stderr: nowhere to say it
            stream.write(f"{record['level'].name} {record['name']}: {record['message']}\n")
            stream.flush()
    passed_as_text("loguru")


def _sink(message: Any) -> None:
    """loguru calls this, in the logging thread, for each message."""
    record = message.record
    if forwarded_last(record):
        # A sink of the program's own, before this one, wrote it to a stream already: it is
        # there as the record it rendered (forward_rendered_loguru).
        return
    _bridged.record = record
    _forward(record)


def restore_bridge_sink() -> Unbridged | None:
    """Add the bridge's sink back if the program removed it and none of its own sinks left
    writes where the host reads (a file alone: ``logger.remove(); logger.add("app.log")``, or
    no sink at all: ``logger.remove()``); return what the host missed meanwhile, or None when
    nothing was done (the sink is there, or the program's own console sink sends its
    records)."""
    module = sys.modules.get("loguru")
    if module is None or not bridge_sink_removed():
        return None
    if not sinks_changing.acquire(blocking=False):
        return None  # the program is adding a sink: the next look sees it
    try:
        logger, _ = bridge_sinks[-1]
        sinks = sinks_of(logger) or {}
        if any(writes_where_the_host_reads(handler) for handler in list(sinks.values())):
            return None
        _bridge(module, keep_default_sink=True)
    finally:
        sinks_changing.release()
    return take_unbridged(had_own_sinks=bool(sinks))


def _report_failures_as_such(module: ModuleType) -> None:
    """Make loguru's report of a sink that failed (``--- Logging error in Loguru Handler``)
    what ``logging``'s ``handleError`` report is: text for the host, never handed to the
    handlers again (:func:`~isoplug.log_guard.failure_report`)."""
    interceptor = getattr(
        sys.modules.get(f"{module.__name__}._error_interceptor"), "ErrorInterceptor", None
    )
    report = getattr(interceptor, "print", None)
    if interceptor is None or not callable(report) or getattr(report, "_isoplug", False):
        return

    def print_as_a_failure_report(self: Any, *args: Any, **kwargs: Any) -> Any:
        with failure_report():
            return report(self, *args, **kwargs)

    print_as_a_failure_report._isoplug = True  # type: ignore[attr-defined]
    interceptor.print = print_as_a_failure_report


#: The key of a loguru record, in the copy a sink of ``enqueue=True`` queues, saying that the
#: logging thread sent the record already: its text, written by loguru's thread, is dropped.
SENT_KEY = "isoplug_sent"


def _settle_queued_in_logging_thread(module: ModuleType) -> None:
    """Make a sink of ``enqueue=True`` tell, in the logging thread, what only that thread
    can: that the message it queues is the rendering of a ``logging`` record an
    ``InterceptHandler`` hands to loguru, or a message the bridge's sink sent already. Its
    text comes back from loguru's own thread, where neither shows (another thread, a copy
    of the record): made a record again there, a ``logging`` record arrived twice, once as
    itself and once as loguru's copy on the plugin's module logger."""
    handler_class = getattr(sys.modules.get(f"{module.__name__}._handler"), "Handler", None)
    emit = getattr(handler_class, "emit", None)
    if handler_class is None or not callable(emit) or getattr(emit, "_isoplug", False):
        return

    def emit_settled(self: Any, record: Any, *args: Any, **kwargs: Any) -> Any:
        count_if_unbridged(record)
        if getattr(self, "_enqueue", False) and isinstance(record, dict):
            intercepted = intercepted_record(sys._getframe(1))
            if intercepted is not None:
                send_once(intercepted)
            bridged = getattr(_bridged, "record", None) is record
            if intercepted is not None or bridged:
                record[SENT_KEY] = True
        return emit(self, record, *args, **kwargs)

    emit_settled._isoplug = True  # type: ignore[attr-defined]
    as_rendering_package(emit_settled.__code__)
    handler_class.emit = emit_settled


def forward_rendered_loguru(record: Any, rendered: str = "") -> bool:
    """A loguru sink of the program's own writes ``record`` (loguru's record, a dict) to
    ``sys.stdout`` or ``sys.stderr`` (``logger.remove(); logger.add(sys.stderr, ...)``, loguru's
    usual setup, removes the bridge's sink too): the record, made as the bridge's sink makes
    it, goes to the forwarding handler, unless that sink sent it already (it is still there
    too) or another of the program's sinks wrote it already, and its text is dropped (see
    :mod:`isoplug.logs.rendered_records`). Returns True: the text is the record's.

    To the forwarding handler only, as what a logging handler renders does: in a program of
    its own the sink's text reaches no logging handler, and handed to them it reached the
    plugin's ``InterceptHandler`` (loguru's recipe, ``logging`` into loguru), which gave it
    back to loguru, to the very sink writing it: loguru refused that (its lock held), with a
    report on stderr, or, with ``enqueue=True``, wrote it again, and so without end.

    ``rendered``: the sink's text, for a record that went through loguru's queue
    (``enqueue=True``), whose exception lost its traceback on the way (loguru cannot pickle
    one): the traceback loguru printed in the text is the record's ``exc_text`` then. Unless
    the logging thread sent it already (:data:`SENT_KEY`)."""
    if record.get(SENT_KEY):
        return True
    if getattr(_bridged, "record", None) is not record:
        # Once, though several sinks write it (one on stderr, one on stdout): loguru hands
        # each the same record.
        forward_once(record, record, lambda _: _forward(record, rendered, to_handlers=False))
    return True


def _printed_traceback(rendered: str) -> str | None:
    """The traceback loguru printed after a message (from its ``Traceback (most recent call
    last):`` line on), or None."""
    start = rendered.find(_TRACEBACK_START)
    if start < 0 or (start and rendered[start - 1] != "\n"):
        return None
    return rendered[start:].rstrip("\n")


def _forward(record: Any, rendered: str = "", *, to_handlers: bool = True) -> None:
    """Make ``record`` (loguru's) a ``LogRecord`` on logger ``<source>.<module>``, and hand it
    to that logger's handlers (``to_handlers``), or to the forwarding handler alone."""
    level = record["level"]
    source = current_source.get()
    module_name = record["name"] or "loguru"
    name = f"{source}.{module_name}" if source else module_name
    target = logging.getLogger(name)
    if not output_enabled(target, level.no):
        return
    exception = record["exception"]
    exc_info = None
    exc_text = None
    if exception is not None and exception.type is not None:
        exc_info = (exception.type, exception.value, exception.traceback)
        if exception.traceback is None and rendered:
            exc_text = _printed_traceback(rendered)
    log_record = logging.LogRecord(
        name,
        level.no,
        record["file"].path,
        record["line"],
        record["message"],
        None,
        exc_info,
        record["function"],
    )
    log_record.levelname = level.name
    created = record["time"].timestamp()
    log_record.created = created
    log_record.msecs = int((created - int(created)) * 1000) + 0.0
    log_record.relativeCreated = (created - getattr(logging, "_startTime", created)) * 1000
    log_record.thread = record["thread"].id
    log_record.threadName = record["thread"].name
    log_record.process = record["process"].id
    log_record.processName = record["process"].name
    if exc_text is not None:
        log_record.exc_text = exc_text
    add_extras(log_record.__dict__, record["extra"])
    if to_handlers:
        deliver(target, log_record)
        return
    forwarder = kept_forwarder()
    if forwarder is not None:
        forwarder.handle(log_record)


class _LoguruFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: lets the other finders find loguru, and wraps its loader so that
    :func:`forward_loguru` runs right after loguru's module has run. Then leaves
    ``sys.meta_path``."""

    def __init__(self, keep_default_sink: bool = False) -> None:
        self.keep_default_sink = keep_default_sink

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "loguru":
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec: importlib.machinery.ModuleSpec | None = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and not isinstance(spec.loader, _ForwardingLoader):
            spec.loader = _ForwardingLoader(spec.loader, self)
        return spec


class _ForwardingLoader(importlib.abc.Loader):
    """loguru's own loader, and :func:`forward_loguru` once it has loaded the module."""

    def __init__(self, loader: importlib.abc.Loader, finder: _LoguruFinder) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # The module keeps its real loader (importlib.resources and friends ask it).
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self._finder)
        try:
            _bridge(module, self._finder.keep_default_sink)
        except Exception as exc:
            stream = sys.__stderr__
            if stream is not None:
                stream.write(f"isoplug: forwarding loguru to logging failed: {exc!r}\n")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)
