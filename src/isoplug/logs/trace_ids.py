"""The ids of the host's trace that the code running now serves, for records made without the
logging module's record factory (a plugin's printed lines).

The runner sets :data:`active_trace` while it serves a call or event that carries a W3C trace
context (see :mod:`isoplug.runner.tracing`, which also sets :data:`resolver`: inside a span the
plugin started, its ids). Records made through ``logging`` get the ids from a record factory;
printed lines become records here (:mod:`isoplug.logs.output_records`), so
:func:`add_trace_ids` puts the same attributes on them: ``otelTraceID``, ``otelSpanID`` and
``otelTraceSampled``, as OpenTelemetry's logging instrumentation names them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from isoplug.wire.tracecontext import TraceIds

__all__ = ["active_trace", "add_trace_ids", "resolver"]

#: The ids of the host's span the code running now serves, or None.
active_trace: ContextVar[TraceIds | None] = ContextVar("isoplug_active_trace", default=None)


def _as_given(ids: TraceIds) -> TraceIds:
    return ids


#: The ids a record made now carries, given the host's (the runner replaces it while
#: OpenTelemetry is in use, for the spans a plugin starts itself).
resolver: list[Callable[[TraceIds], TraceIds]] = [_as_given]


def add_trace_ids(attributes: dict[str, Any]) -> None:
    """Put the active trace's ids on a record's ``attributes`` (none outside a trace, and
    never over ids already there)."""
    ids = active_trace.get()
    if ids is None or "otelTraceID" in attributes:
        return
    ids = resolver[0](ids)
    attributes["otelTraceID"], attributes["otelSpanID"], attributes["otelTraceSampled"] = ids
