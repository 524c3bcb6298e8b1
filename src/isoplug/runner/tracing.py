"""Serving a call or event inside the host's trace.

A :class:`~isoplug.control.CallRequest` or :class:`~isoplug.control.EventDelivery` made inside
an active span carries its W3C ``traceparent``. While the runner serves it (:func:`joined`):

- ``active_trace`` (:mod:`isoplug.logs.trace_ids`) holds its ids; it is a context variable,
  so the plugin's tasks, ``asyncio.to_thread`` and the worker pool (which copies the context)
  see it too;
- a log record factory puts them on every record created while it is set, as the attributes
  ``otelTraceID`` / ``otelSpanID`` / ``otelTraceSampled`` of OpenTelemetry's logging
  instrumentation, which the host's OTLP export turns into the log record's trace context.
  The factory is installed only while some call carries a trace: records logged outside
  traced calls pay nothing (nor does the forwarding handler's hot path, which sends records
  with extras down its general path anyway). Printed lines are not made by the factory:
  :func:`isoplug.logs.trace_ids.add_trace_ids` puts the same ids on them;
- if OpenTelemetry is importable (and only then is it imported), the extracted context is
  the current OpenTelemetry context, so spans the plugin starts are children of the host's
  span, and records logged inside them carry those spans' ids.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Callable, Iterator
from typing import Any

from isoplug.log_guard import guarded_logger
from isoplug.logs.capture import forget_extras_hints
from isoplug.logs.trace_ids import active_trace, resolver
from isoplug.wire.tracecontext import TraceIds, parse_traceparent

__all__ = ["active_trace", "joined"]

_log = guarded_logger("isoplug.runner")


class _State:
    """What the module keeps between calls (the event loop's thread changes it)."""

    #: How many calls and events being served carry a trace (the factory is installed while
    #: there are any).
    traced = 0
    #: Our record factory and the one it wraps, while it is installed (a closure over the one
    #: it wraps, so that a thread still in it after it was removed finds what it needs).
    installed: tuple[Callable[..., logging.LogRecord], Callable[..., logging.LogRecord]] | None = (
        None
    )
    #: ``opentelemetry.trace``, ``opentelemetry.context`` and a W3C propagator once imported;
    #: False: not importable; None: not looked for yet.
    otel: tuple[Any, Any, Any] | bool | None = None
    warned_invalid = False


_state = _State()


def _factory_over(previous: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """A record factory that makes records with ``previous`` and adds the trace's ids."""

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        ids = active_trace.get()
        if ids is not None and not hasattr(record, "otelTraceID"):
            ids = _innermost(ids)
            record.otelTraceID, record.otelSpanID, record.otelTraceSampled = ids
        return record

    return make_record


def _innermost(ids: TraceIds) -> TraceIds:
    """The ids of the plugin's own span, if it started one inside the call; else ``ids``."""
    otel = _state.otel
    if isinstance(otel, tuple):
        context = otel[0].get_current_span().get_span_context()
        if context.is_valid:
            return TraceIds(
                f"{context.trace_id:032x}",
                f"{context.span_id:016x}",
                context.trace_flags.sampled,
            )
    return ids


def _opentelemetry() -> tuple[Any, Any, Any] | None:
    if _state.otel is None:
        _state.otel = False
        if importlib.util.find_spec("opentelemetry") is not None:
            try:
                from opentelemetry import context, trace
                from opentelemetry.trace.propagation.tracecontext import (
                    TraceContextTextMapPropagator,
                )
            except ImportError as exc:
                _log.warning(
                    "opentelemetry is installed but cannot be imported (%s): plugin spans "
                    "will not join the host's traces",
                    exc,
                )
            else:
                _state.otel = (trace, context, TraceContextTextMapPropagator())
    return _state.otel if isinstance(_state.otel, tuple) else None


_UNTRACED = contextlib.nullcontext()


def joined(traceparent: str, tracestate: str) -> contextlib.AbstractContextManager[None]:
    """Serve the block inside the trace of ``traceparent`` (nothing happens for "")."""
    # Most calls carry no trace: they take no generator-based context manager (2 us).
    return _joined(traceparent, tracestate) if traceparent else _UNTRACED


@contextlib.contextmanager
def _joined(traceparent: str, tracestate: str) -> Iterator[None]:
    ids = parse_traceparent(traceparent)
    if ids is None:
        if not _state.warned_invalid:
            _state.warned_invalid = True
            _log.warning(
                "the host sent a trace context that is not a W3C traceparent (%.80r): "
                "calls are served outside its trace",
                traceparent,
            )
        yield
        return
    token = active_trace.set(ids)
    _state.traced += 1
    if _state.installed is None:
        previous = logging.getLogRecordFactory()
        _state.installed = (_factory_over(previous), previous)
        logging.setLogRecordFactory(_state.installed[0])
    otel = None
    otel_token = None
    try:
        otel = _opentelemetry()
        if otel is not None:
            carrier = {"traceparent": traceparent}
            if tracestate:
                carrier["tracestate"] = tracestate
            otel_token = otel[1].attach(otel[2].extract(carrier))
        yield
    finally:
        if otel is not None and otel_token is not None:
            otel[1].detach(otel_token)
        active_trace.reset(token)
        _state.traced -= 1
        installed = _state.installed
        if _state.traced == 0 and installed is not None:
            _state.installed = None
            # A factory installed over ours stays, and ours under it: removing ours would
            # remove it too. Ours then only costs a context variable lookup per record.
            if logging.getLogRecordFactory() is installed[0]:
                logging.setLogRecordFactory(installed[1])
            # Records made by the factory had extras, which taught the handler's fast path
            # to skip their messages; untraced records of those messages must not pay for it.
            forget_extras_hints()


# Printed lines become records without the record factory (isoplug.logs.trace_ids): the same
# ids for them, the plugin's own span's included.
resolver[0] = _innermost
