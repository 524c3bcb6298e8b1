"""Sending encoded OTLP log requests through the OpenTelemetry SDK's own OTLP exporters.

isoplug encodes the request itself (:mod:`isoplug.otel.protobuf`); the transport is the SDK's:
``opentelemetry-exporter-otlp-proto-http`` (its HTTP client: endpoint, headers, TLS,
compression, timeout, retries with backoff on 429/502/503/504 and connection errors, all from
the standard ``OTEL_EXPORTER_OTLP_*`` variables) and ``opentelemetry-exporter-otlp-proto-grpc``
(its channel and retry loop). The SDK's exporters take its own ``LogRecord`` objects; the two
classes below feed them the request isoplug encoded instead, through the narrowest seam each
has (checked when the sender is made: an SDK whose seam moved is refused with a clear error
rather than failing at the first export).

:class:`JoinedSender` serves an application that configured OpenTelemetry itself: records go
to its ``LoggerProvider``, through its processors and exporters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from isoplug.errors import UsageError
from isoplug.otel.logs import encode_request
from isoplug.otel.resources import ResourceKey, resource_attributes
from isoplug.wire.sanitize import clean_text

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import LoggerProvider

__all__ = ["JoinedSender", "OwnSender", "grpc_log_exporter", "http_log_exporter"]

#: Looks up the version of a plugin (None: not known).
Versions = Callable[[str], str | None]
#: Sends an encoded request of ``count`` records; None when taken, else why not.
Transport = Callable[[bytes, int], str | None]

_MAX_RESOURCES = 1024


def http_log_exporter(
    endpoint: str | None, headers: Mapping[str, str] | None, timeout: float | None
) -> tuple[Transport, Callable[[], None]]:
    """The SDK's OTLP/HTTP log exporter, sending isoplug's encoded requests; and its
    shutdown. ``endpoint`` is the full URL (``.../v1/logs``); None: from the environment."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    exporter = OTLPLogExporter(endpoint=endpoint, headers=headers, timeout=timeout)
    client = getattr(exporter, "_client", None)
    if not callable(getattr(client, "export", None)):
        raise UsageError(
            "this version of opentelemetry-exporter-otlp-proto-http has no OTLP client that "
            "sends encoded requests (isoplug[otel] needs 1.45 or later)"
        )
    assert client is not None

    def send(payload: bytes, count: int) -> str | None:
        result = client.export(payload)
        if result.success:
            return None
        if result.status_code is not None:
            return f"HTTP {result.status_code} {clean_text(str(result.reason or ''), 200)}"
        error = result.error
        return clean_text(f"{type(error).__name__}: {error}" if error else "no answer", 300)

    return send, exporter.shutdown


def grpc_log_exporter(
    endpoint: str | None, headers: Mapping[str, str] | None, timeout: float | None
) -> tuple[Transport, Callable[[], None]]:
    """The SDK's OTLP/gRPC log exporter, sending isoplug's encoded requests; and its
    shutdown. ``endpoint``: ``http://host:port`` (plain) or ``https://`` (TLS); None: from the
    environment."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )
    from opentelemetry.sdk._logs.export import LogRecordExportResult

    class _Encoded:
        __slots__ = ("count", "payload")

        def __init__(self, payload: bytes, count: int) -> None:
            self.payload = payload
            self.count = count

    class _Exporter(OTLPLogExporter):
        # The mixin's seams: what it sends for a batch, and how many records it holds.
        def _translate_data(self, data: Any) -> ExportLogsServiceRequest:
            request: ExportLogsServiceRequest = ExportLogsServiceRequest.FromString(data.payload)
            return request

        def _count_data(self, data: Any) -> int:
            return int(data.count)

    for seam in ("_translate_data", "_count_data", "_export"):
        if not callable(getattr(OTLPLogExporter, seam, None)):
            raise UsageError(
                f"this version of opentelemetry-exporter-otlp-proto-grpc has no {seam}() "
                "(isoplug[otel] needs 1.45 or later)"
            )
    exporter = _Exporter(
        endpoint=endpoint, headers=dict(headers) if headers else None, timeout=timeout
    )

    def send(payload: bytes, count: int) -> str | None:
        batch: Any = _Encoded(payload, count)
        result = exporter._export(batch)
        if result is LogRecordExportResult.SUCCESS:
            return None
        return "the gRPC export failed (the SDK's exporter logged why)"

    return send, exporter.shutdown


class OwnSender:
    """Delivers batches as requests of isoplug's encoding, over ``transport``; each plugin's
    records under its own resource (``base`` plus the plugin, its version, its runner's pid)."""

    def __init__(self, transport: Transport, base: Mapping[str, Any], versions: Versions) -> None:
        self._transport = transport
        self._base = dict(base)
        self._versions = versions
        self._resources: dict[ResourceKey, bytes] = {}

    def __call__(
        self, grouped: Mapping[ResourceKey, Mapping[str, Sequence[bytes]]], count: int
    ) -> str | None:
        return self._transport(encode_request(grouped, self._resource), count)

    def _resource(self, key: ResourceKey) -> bytes:
        from isoplug.otel import protobuf

        encoded = self._resources.get(key)
        if encoded is None:
            version = self._versions(key[0]) if key is not None else None
            encoded = protobuf.encoded_resource(resource_attributes(self._base, key, version))
            if len(self._resources) >= _MAX_RESOURCES:
                self._resources.clear()  # runner pids of a long crash loop
            self._resources[key] = encoded
        return encoded


class JoinedSender:
    """Delivers batches to the application's own ``LoggerProvider`` (its resource, processors
    and exporters); each plugin is a scope: the logger's name, with the plugin, its version
    and its runner's pid as the scope's attributes."""

    def __init__(self, provider: LoggerProvider, versions: Versions) -> None:
        from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs

        self._provider = provider
        self._versions = versions
        self._parse = ScopeLogs.FromString
        self._loggers: dict[tuple[ResourceKey, str], Any] = {}

    def __call__(
        self, grouped: Mapping[ResourceKey, Mapping[str, Sequence[bytes]]], count: int
    ) -> str | None:
        from opentelemetry._logs import SeverityNumber

        for key, scopes in grouped.items():
            for scope, records in scopes.items():
                logger = self._loggers.get((key, scope)) or self._logger(key, scope)
                for record in self._parse(b"".join(records)).log_records:
                    logger.emit(
                        timestamp=record.time_unix_nano,
                        observed_timestamp=record.observed_time_unix_nano,
                        severity_number=SeverityNumber(record.severity_number),
                        severity_text=record.severity_text,
                        body=_value(record.body),
                        attributes={kv.key: _value(kv.value) for kv in record.attributes},
                        context=_context(record.trace_id, record.span_id, record.flags),
                    )
        return None

    def _logger(self, key: ResourceKey, scope: str) -> Any:
        attributes: dict[str, Any] = {}
        if key is not None:
            attributes = resource_attributes({}, key, self._versions(key[0]))
            attributes.pop("process.pid", None)  # the application's resource says whose process
        logger = self._provider.get_logger(scope, attributes=attributes or None)
        if len(self._loggers) >= _MAX_RESOURCES:
            self._loggers.clear()
        self._loggers[(key, scope)] = logger
        return logger


def _value(value: Any) -> Any:
    """An ``AnyValue`` message as the Python value the SDK takes."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


@functools.lru_cache(maxsize=256)
def _context(trace_id: bytes, span_id: bytes, flags: int) -> Any:
    if len(trace_id) != 16 or len(span_id) != 8:
        return None
    from opentelemetry import trace

    span = trace.NonRecordingSpan(
        trace.SpanContext(
            int.from_bytes(trace_id, "big"),
            int.from_bytes(span_id, "big"),
            is_remote=True,
            trace_flags=trace.TraceFlags(flags & 0xFF),
        )
    )
    return trace.set_span_in_context(span)
