"""Traces across the process boundary: a call or event made inside a host span carries its W3C
trace context, the plugin's records are exported inside that span, and the plugin's own spans
are its children; without a span, the runner imports nothing of OpenTelemetry."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from isoplug.testing.otlp import LogEntry, OtlpReceiver, Received
from isoplug.wire.tracecontext import parse_traceparent
from tests import otel_helpers
from tests.otel_helpers import exporting
from tests.plugins_fixtures import running

# One receiver process for the module; each test reads only what arrived during it.
module_otlp_receiver = otel_helpers.module_otlp_receiver
otlp_receiver = otel_helpers.shared_otlp_receiver

pytest.importorskip("opentelemetry.sdk.trace")


@pytest.fixture
def tracer() -> Iterator[object]:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    yield provider.get_tracer("host-app")
    provider.shutdown()


def _with_body(received: Received, text: str) -> list[LogEntry]:
    return [e for e in received.logs() if isinstance(e.body, str) and text in e.body]


def _trace_attributes(record: logging.LogRecord) -> tuple[object, object, object]:
    values = vars(record)
    return values.get("otelTraceID"), values.get("otelSpanID"), values.get("otelTraceSampled")


def _ids(span: object) -> tuple[str, str]:
    context = span.get_span_context()  # type: ignore[attr-defined]
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


async def test_plugin_records_are_exported_inside_the_hosts_span(
    tmp_path: Path, otlp_receiver: OtlpReceiver, tracer: object
) -> None:
    with exporting(endpoint=otlp_receiver.http_endpoint, metrics=False):
        async with running(tmp_path, "telemetry") as (host, _):
            with tracer.start_as_current_span("request") as span:  # type: ignore[attr-defined]
                await host.call("telemetry", "traced_log", "m-traced")
                await host.call("telemetry", "traced_sync", "m-traced")
            await host.call("telemetry", "traced_log", "m-untraced")
            traced = await otlp_receiver.received.until(
                lambda r: (found := _with_body(r, "m-traced")) and len(found) == 4 and found
            )
            untraced = await otlp_receiver.received.until(
                lambda r: (found := _with_body(r, "m-untraced")) and len(found) == 3 and found
            )
    trace_id, span_id = _ids(span)
    assert sorted(e.body for e in traced) == [
        "m-traced from a task",
        "m-traced from a worker thread",
        "m-traced from the call",
        "m-traced from to_thread",
    ]
    assert {(e.trace_id, e.span_id, e.flags) for e in traced} == {(trace_id, span_id, 1)}
    # The ids are the record's trace context, not attributes.
    assert not any("otelTraceID" in e.attributes for e in traced)
    assert {(e.trace_id, e.span_id) for e in untraced} == {("", "")}


async def test_the_hosts_log_records_carry_the_ids_too(tmp_path: Path, tracer: object) -> None:
    """Without any export: the replayed records have the attributes OpenTelemetry's logging
    instrumentation uses, so a host formatter can show them."""
    async with running(tmp_path, "telemetry") as (host, waiter):
        with tracer.start_as_current_span("request") as span:  # type: ignore[attr-defined]
            await host.call("telemetry", "traced_sync", "m-replayed")
        record = await waiter.wait_for_record(text="m-replayed")
    trace_id, span_id = _ids(span)
    assert _trace_attributes(record) == (
        trace_id,
        span_id,
        True,
    )


async def test_printed_lines_carry_the_ids_inside_a_traced_call(
    tmp_path: Path, tracer: object
) -> None:
    """A plugin's print() inside a traced call becomes a record with the trace's ids, from a
    thread it starts too; outside any trace, none (and the print takes its fast path)."""
    async with running(tmp_path, "telemetry") as (host, waiter):
        with tracer.start_as_current_span("request") as span:  # type: ignore[attr-defined]
            await host.call("telemetry", "traced_print", "p-traced")
        await host.call("telemetry", "traced_print", "p-untraced")
        traced = [
            await waiter.wait_for_record(stream="stdout", text="p-traced printed"),
            await waiter.wait_for_record(stream="stdout", text="p-traced printed from a thread"),
        ]
        untraced = await waiter.wait_for_record(stream="stdout", text="p-untraced printed")
    trace_id, span_id = _ids(span)
    for record in traced:
        assert _trace_attributes(record) == (trace_id, span_id, True), record.getMessage()
    assert _trace_attributes(untraced) == (None, None, None)


async def test_a_plugins_own_spans_are_children_of_the_hosts_span(
    tmp_path: Path, otlp_receiver: OtlpReceiver, tracer: object
) -> None:
    with exporting(endpoint=otlp_receiver.http_endpoint, metrics=False):
        async with running(tmp_path, "telemetry") as (host, _):
            with tracer.start_as_current_span("request") as span:  # type: ignore[attr-defined]
                state = await host.call("telemetry", "otel_state", "m-own-span")
            (entry,) = await otlp_receiver.received.until(lambda r: _with_body(r, "m-own-span"))
    trace_id, span_id = _ids(span)
    assert state["current"] == [trace_id, span_id]
    assert state["parent"] == [trace_id, span_id]
    assert state["remote_parent"] is True
    assert state["own"][0] == trace_id
    assert state["own"][1] != span_id
    # A record logged inside the plugin's span names that span.
    assert (entry.trace_id, entry.span_id) == tuple(state["own"])


async def test_events_published_inside_a_span_carry_it(
    tmp_path: Path, otlp_receiver: OtlpReceiver, tracer: object
) -> None:
    with exporting(endpoint=otlp_receiver.http_endpoint, metrics=False):
        async with running(tmp_path, "telemetry") as (host, _):
            with tracer.start_as_current_span("publish") as span:  # type: ignore[attr-defined]
                assert await host.publish("telemetry.ping", "m-event") == 1
            entries = await otlp_receiver.received.until(
                lambda r: (found := _with_body(r, "m-event")) and len(found) == 2 and found
            )
    trace_id, span_id = _ids(span)
    assert sorted(e.body for e in entries) == [
        "m-event from the event handler",
        "m-event from the sync event handler",
    ]
    assert {(e.trace_id, e.span_id) for e in entries} == {(trace_id, span_id)}


async def test_without_a_span_the_runner_imports_nothing_of_opentelemetry(
    tmp_path: Path, tracer: object
) -> None:
    """The host application uses OpenTelemetry, but calls outside any span carry nothing."""
    async with running(tmp_path, "telemetry") as (host, _):
        await host.call("telemetry", "traced_log", "m-no-span")
        await host.publish("telemetry.ping", "m-no-span")
        state = await host.call("telemetry", "otel_state", "m-no-span")
    assert state == {"loaded": []}


def test_traceparent_parsing() -> None:
    parsed = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert parsed == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", True)
    assert parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00") == (
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
        False,
    )
    # A later version may append fields.
    assert parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x")
    for bad in (
        "",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
    ):
        assert parse_traceparent(bad) is None, bad


def test_the_record_factory_is_there_only_while_a_traced_call_is_served() -> None:
    """In this process: records made inside :func:`joined` carry the ids; afterwards the
    factory is the one before (records pay nothing), unless another was installed over it."""
    from isoplug.runner.tracing import joined

    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    before = logging.getLogRecordFactory()
    make = logging.makeLogRecord
    with joined(parent, "vendor=1"):
        assert logging.getLogRecordFactory() is not before
        record = logging.getLogRecordFactory()("x", logging.INFO, "f", 1, "m", (), None)
        with joined(parent, ""):
            pass
        assert logging.getLogRecordFactory() is not before  # the outer call still runs
    assert logging.getLogRecordFactory() is before
    assert _trace_attributes(record) == (
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
        True,
    )
    assert not hasattr(make({}), "otelTraceID")
    after = logging.getLogRecordFactory()("x", logging.INFO, "f", 1, "m", (), None)
    assert not hasattr(after, "otelTraceID")

    def on_top(*args: object, **kwargs: object) -> logging.LogRecord:
        return ours(*args, **kwargs)

    try:
        with joined(parent, ""):
            ours = logging.getLogRecordFactory()
            logging.setLogRecordFactory(on_top)
        # Removing ours would remove the application's too: both stay, and still work.
        assert logging.getLogRecordFactory() is on_top
        plain = on_top("x", logging.INFO, "f", 1, "m", (), None)
        assert not hasattr(plain, "otelTraceID")
        with joined(parent, ""):
            traced = on_top("x", logging.INFO, "f", 1, "m", (), None)
        assert _trace_attributes(traced)[1] == "b7ad6b7169203331"
    finally:
        logging.setLogRecordFactory(before)


def test_an_invalid_traceparent_is_served_outside_any_trace() -> None:
    from isoplug.runner.tracing import active_trace, joined

    before = logging.getLogRecordFactory()
    with joined("00-not-a-trace-01", ""):
        assert active_trace.get() is None
        assert logging.getLogRecordFactory() is before
