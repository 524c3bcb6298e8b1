"""The W3C trace context (``traceparent`` / ``tracestate``) that travels with calls and events.

The host reads the active OpenTelemetry span (:func:`current_traceparent`) only when the
application already imported ``opentelemetry.trace``: without it, no span can be active, and
isoplug imports nothing of OpenTelemetry. The runner parses the header
(:func:`parse_traceparent`) without OpenTelemetry too; see :mod:`isoplug.runner.tracing`.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

__all__ = ["TraceIds", "current_traceparent", "parse_traceparent"]

_HEX = frozenset("0123456789abcdef")


class TraceIds(NamedTuple):
    """A span's ids as lowercase hex (the form of OpenTelemetry's logging instrumentation)."""

    trace_id: str
    span_id: str
    sampled: bool


def current_traceparent() -> tuple[str, str]:
    """The ``traceparent`` and ``tracestate`` of the active OpenTelemetry span; empty strings
    when there is none (or the application never imported OpenTelemetry)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return "", ""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return "", ""
    flags = int(context.trace_flags) & 0xFF
    parent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
    state = context.trace_state
    return parent, state.to_header() if state else ""


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and _HEX.issuperset(text) and text.strip("0") != ""


def parse_traceparent(header: str) -> TraceIds | None:
    """The ids of a W3C ``traceparent`` header; None if it is not a valid one."""
    parts = header.strip().split("-")
    if len(parts) < 4:
        return None
    version, trace_id, span_id, flags = parts[:4]
    # Version 00 has exactly four fields; later versions may append more (the spec says to
    # read the first four), and ff is forbidden.
    if len(version) != 2 or not _HEX.issuperset(version) or version == "ff":
        return None
    if version == "00" and len(parts) != 4:
        return None
    if not (_is_hex(trace_id, 32) and _is_hex(span_id, 16)):
        return None
    if len(flags) != 2 or not _HEX.issuperset(flags):
        return None
    return TraceIds(trace_id, span_id, bool(int(flags, 16) & 1))
