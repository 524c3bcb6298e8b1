"""Switching the export on and off: :func:`export` and the :class:`OtelExport` it returns."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from isoplug.errors import UsageError
from isoplug.host import observers
from isoplug.log_guard import guarded_logger
from isoplug.otel import senders
from isoplug.otel.logs import LogExport, LogExportStats, OutboxLimits
from isoplug.otel.requirements import (
    JOINED_LOGS,
    PROMETHEUS,
    SDK,
    otlp_exporter,
    require,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider

    from isoplug.otel.metrics import HostMetrics

__all__ = ["PROTOCOLS", "OtelExport", "active", "export", "resolve_protocol"]

_log = guarded_logger("isoplug.otel")

PROTOCOLS = ("http/protobuf", "grpc")
DEFAULT_PROTOCOL = "http/protobuf"


class _State:
    active: OtelExport | None = None


_lock = threading.RLock()  # export() shuts a half-started export down while holding it
_state = _State()


def resolve_protocol(protocol: str | None, signal: str = "logs") -> str:
    """The OTLP protocol for ``signal`` (``logs``, ``metrics``): ``protocol``, else
    ``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL``, else
    ``http/protobuf``. Raises ``ValueError`` for anything but ``http/protobuf`` and ``grpc``."""
    source = "protocol"
    value = protocol
    for variable in (
        f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ):
        if value is None and os.environ.get(variable):
            value, source = os.environ[variable], variable
    value = (value or DEFAULT_PROTOCOL).strip().lower()
    if value not in PROTOCOLS:
        extra = " (isoplug does not send http/json)" if value == "http/json" else ""
        raise ValueError(
            f"{source}: unknown OTLP protocol {value!r}{extra}; use one of: {', '.join(PROTOCOLS)}"
        )
    return value


def signal_endpoint(endpoint: str | None, protocol: str, signal: str) -> str | None:
    """Where ``signal`` goes for the base ``endpoint`` (as ``OTEL_EXPORTER_OTLP_ENDPOINT``
    means it: OTLP/HTTP appends ``/v1/<signal>``, gRPC takes it as it is); None: let the
    standard variables decide. Raises ``ValueError`` for an endpoint that is no such URL."""
    if endpoint is None:
        return None
    parsed = urllib.parse.urlsplit(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(
            f"the OTLP endpoint must be a URL such as http://127.0.0.1:4318, got {endpoint!r}"
        )
    if protocol == "grpc":
        return endpoint
    return f"{endpoint.rstrip('/')}/v1/{signal}"


def active() -> OtelExport | None:
    """The export :func:`export` started and that is not shut down yet."""
    return _state.active


class OtelExport:
    """A running export (from :func:`export`): :meth:`stats`, :meth:`flush`, :meth:`shutdown`;
    a context manager that shuts down at its end."""

    def __init__(self) -> None:
        self.joined = False
        self.log_export: LogExport | None = None
        self.metrics_address: tuple[str, int] | None = None
        self._host_metrics: list[HostMetrics] = []
        self._meter_providers: list[MeterProvider] = []
        self._closers: list[Callable[[], None]] = []

    def stats(self) -> LogExportStats:
        """What the log export did so far (empty when logs are not exported)."""
        return self.log_export.stats() if self.log_export is not None else LogExportStats()

    def flush(self, timeout: float = 10.0) -> bool:
        """Export the records waiting and collect and export the metrics now; True when done
        within ``timeout`` seconds."""
        done = self.log_export.flush(timeout) if self.log_export is not None else True
        for provider in self._meter_providers:
            done = provider.force_flush(int(timeout * 1000)) and done
        return done

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop exporting within ``timeout`` seconds in all: the records waiting are sent (the
        rest counted as dropped and reported), then the metrics collected and sent a last time
        in what is left of it. ``timeout=0`` stops at once, dropping what waits (counted and
        reported all the same); so does a call from another thread while one runs."""
        deadline = time.monotonic() + timeout
        for metrics in self._host_metrics:
            observers.remove_observer(metrics)
        if self.log_export is not None:
            self.log_export.close(timeout)
        while self._meter_providers:
            # Each provider is shut down once, by whichever call takes it (pop is atomic).
            try:
                provider = self._meter_providers.pop()
            except IndexError:
                break
            # A moment at least, so that its reader is told to stop: with no time left at
            # all, the SDK would not even do that.
            left = max(deadline - time.monotonic(), 0.001)
            with contextlib.suppress(Exception):
                provider.shutdown(timeout_millis=left * 1000)
        while self._closers:
            try:
                close = self._closers.pop()
            except IndexError:
                break
            try:
                close()
            except Exception:
                _log.exception("closing the OpenTelemetry export failed")
        with _lock:
            if _state.active is self:
                _state.active = None

    def __enter__(self) -> OtelExport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


def export(
    endpoint: str | None = None,
    protocol: str | None = None,
    *,
    service_name: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
    logs: bool = True,
    metrics: bool = True,
    otlp: bool = True,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    metrics_interval: float | None = None,
    join: bool | None = None,
    limits: OutboxLimits | None = None,
) -> OtelExport:
    """Export every plugin's log records and isoplug's metrics (see the package docstring).

    ``endpoint``: the collector's base URL (``http://127.0.0.1:4318`` for OTLP/HTTP,
    ``http://127.0.0.1:4317`` for gRPC; ``https://`` for TLS); None: the standard variables.
    ``protocol``: ``http/protobuf`` or ``grpc``, else from the environment. ``headers`` and
    ``timeout`` (seconds per export, retries included) as the OTLP exporters take them.
    ``otlp=False`` sends nothing over OTLP (say, only ``metrics_port``).
    ``metrics_port`` serves the metrics for Prometheus on ``metrics_host`` (give ``0.0.0.0``
    to be scraped from other machines; port 0 picks a free one, see
    :attr:`OtelExport.metrics_address`). ``metrics_interval``: seconds between OTLP metric
    exports (default ``OTEL_METRIC_EXPORT_INTERVAL``, else 60). ``join``: None joins the
    application's own providers when it set SDK ones, True requires them, False never joins.
    ``limits`` bounds the queue of records waiting to be sent.

    Raises ``RuntimeError`` while another export runs, or when a part of the extra this export
    needs is not installed (naming its distribution); ``ValueError`` for a bad endpoint,
    protocol or option, or a ``metrics_port`` that cannot be served. A call that raises leaves
    nothing running (no thread, server, socket, handler or provider): it may be retried.
    """
    require(SDK)
    from opentelemetry import _logs as logs_api
    from opentelemetry import metrics as metrics_api
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider

    with _lock:
        if _state.active is not None:
            raise UsageError("isoplug.otel.export() is already running; shutdown() it first")
        app_logs = logs_api.get_logger_provider()
        app_meters = metrics_api.get_meter_provider()
        has_logs = isinstance(app_logs, LoggerProvider)
        has_meters = isinstance(app_meters, SdkMeterProvider)
        if join and not (has_logs or has_meters):
            raise ValueError(
                "join=True: this application has set no OpenTelemetry SDK LoggerProvider "
                "or MeterProvider to join"
            )
        joining = join is not False and (has_logs or has_meters)
        if joining and (endpoint is not None or protocol is not None):
            raise ValueError(
                "this application configured OpenTelemetry itself, so isoplug joins its "
                "providers and sends where they send; pass join=False to send to an endpoint "
                "of isoplug's own"
            )
        options = _Options(
            endpoint,
            headers,
            timeout,
            limits,
            logs_via=_own_protocol(logs and otlp and not (joining and has_logs), protocol, "logs"),
            metrics_via=_own_protocol(
                metrics and otlp and not (joining and has_meters), protocol, "metrics"
            ),
        )
        needed = [otlp_exporter(via) for via in (options.logs_via, options.metrics_via) if via]
        if logs and joining and has_logs:
            needed.append(JOINED_LOGS)
        if metrics and metrics_port is not None:
            needed.append(PROMETHEUS)
        require(*needed)
        running = OtelExport()
        running.joined = joining
        # What can fail (a port in use, an exporter refusing its settings) is done first, each
        # piece closed by shutdown() from the moment it exists; the threads that would outlive
        # a failure (the log export's, the metric reader's) start last.
        try:
            if otlp and not joining:
                _name_sdk_messages(running)
            resource = _resource(service_name, app_logs, app_meters, joining)
            prometheus = None
            if metrics and metrics_port is not None:
                prometheus = _serve_prometheus(running, metrics_host, metrics_port)
            transport = _log_transport(running, options) if options.logs_via else None
            metric_exporter = _metric_exporter(running, options) if options.metrics_via else None
            if logs:
                _start_logs(running, options, resource, joining and has_logs, transport)
            if metrics:
                _start_metrics(
                    running,
                    resource,
                    joining and has_meters,
                    readers=[prometheus] if prometheus is not None else [],
                    exporter=metric_exporter,
                    interval=metrics_interval,
                )
        except BaseException:
            running.shutdown(timeout=0.0)
            raise
        _state.active = running
    return running


def _own_protocol(needed: bool, protocol: str | None, signal: str) -> str | None:
    """The protocol isoplug's own exporter of ``signal`` sends with; None: it has none."""
    return resolve_protocol(protocol, signal) if needed else None


@dataclasses.dataclass(frozen=True)
class _Options:
    """How isoplug's own exporters send (when the application's providers are not joined)."""

    endpoint: str | None
    headers: Mapping[str, str] | None
    timeout: float | None
    limits: OutboxLimits | None
    #: The protocols of isoplug's own OTLP exporters; None: that signal has none (not sent
    #: over OTLP, or sent through the application's provider).
    logs_via: str | None
    metrics_via: str | None


def _name_sdk_messages(running: OtelExport) -> None:
    """Throttle and name the SDK's messages about isoplug's own exporters (retries, batches
    given up) while they run (:mod:`isoplug.otel.sdk_messages`); undone last at shutdown."""
    from isoplug.otel.sdk_messages import sdk_messages

    messages = sdk_messages()
    messages.start()
    running._closers.append(messages.stop)


def _resource(
    service_name: str | None, app_logs: Any, app_meters: Any, joining: bool
) -> dict[str, Any]:
    from opentelemetry.sdk.resources import Resource

    if joining:
        # The SDK's LoggerProvider says its resource; its MeterProvider keeps it in its config.
        for resource in (
            getattr(app_logs, "resource", None),
            getattr(getattr(app_meters, "_sdk_config", None), "resource", None),
        ):
            attributes = getattr(resource, "attributes", None)
            if attributes:
                return dict(attributes)
    return dict(Resource.create({"service.name": service_name} if service_name else {}).attributes)


def _version() -> str | None:
    """isoplug's version, as installed (the instrumentation scope's version)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("isoplug")
    except importlib.metadata.PackageNotFoundError:
        return None


def _versions(plugin_id: str) -> str | None:
    # A running host first; then one that closed (its last records are still on their way).
    for host in [*observers.live_hosts(), *observers.known_hosts()]:
        version = observers.plugin_versions(host).get(plugin_id)
        if version is not None:
            return version
    return None


def _current_trace() -> tuple[bytes, bytes, int]:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return b"", b"", 0
    return (
        context.trace_id.to_bytes(16, "big"),
        context.span_id.to_bytes(8, "big"),
        int(context.trace_flags),
    )


def _log_transport(running: OtelExport, options: _Options) -> senders.Transport:
    """isoplug's own OTLP log exporter (``options.logs_via``), closed by ``running``'s
    shutdown from now on."""
    chosen = options.logs_via or DEFAULT_PROTOCOL
    url = signal_endpoint(options.endpoint, chosen, "logs")
    make = senders.grpc_log_exporter if chosen == "grpc" else senders.http_log_exporter
    transport, close = make(url, options.headers, options.timeout)
    running._closers.append(close)
    return transport


def _metric_exporter(running: OtelExport, options: _Options) -> Any:
    """isoplug's own OTLP metric exporter (``options.metrics_via``), closed by ``running``'s
    shutdown until the reader that sends with it (made last) takes it over."""
    chosen = options.metrics_via or DEFAULT_PROTOCOL
    url = signal_endpoint(options.endpoint, chosen, "metrics")
    headers = dict(options.headers) if options.headers else None
    if chosen == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        exporter: Any = GrpcMetricExporter(endpoint=url, headers=headers, timeout=options.timeout)
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetricExporter,
        )

        exporter = HttpMetricExporter(endpoint=url, headers=headers, timeout=options.timeout)
    running._closers.append(exporter.shutdown)
    return exporter


def _start_logs(
    running: OtelExport,
    options: _Options,
    resource: Mapping[str, Any],
    join: bool,
    transport: senders.Transport | None,
) -> None:
    if join:
        from opentelemetry import _logs as logs_api

        provider: Any = logs_api.get_logger_provider()
        deliver: Any = senders.JoinedSender(provider, _versions)
    elif transport is not None:
        deliver = senders.OwnSender(transport, resource, _versions)
    else:
        return
    running.log_export = LogExport(
        deliver, limits=options.limits, current_trace=_current_trace, resource=resource
    )
    running.log_export.attach()


def _start_metrics(
    running: OtelExport,
    resource: Mapping[str, Any],
    join: bool,
    *,
    readers: list[Any],
    exporter: Any,
    interval: float | None,
) -> None:
    from opentelemetry import metrics as metrics_api
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    from isoplug.otel.metrics import HostMetrics

    log_stats = running.log_export.stats if running.log_export is not None else None
    meters = []
    if join:
        meters.append(metrics_api.get_meter_provider().get_meter("isoplug", _version()))
    elif exporter is not None:
        millis = None if interval is None else interval * 1000
        readers.append(PeriodicExportingMetricReader(exporter, export_interval_millis=millis))
        # The provider's shutdown stops the reader, which shuts its exporter down: a second
        # shutdown of it would only have the SDK warn.
        running._closers.remove(exporter.shutdown)
    if readers:
        provider = MeterProvider(resource=Resource(dict(resource)), metric_readers=readers)
        running._meter_providers.append(provider)
        meters.append(provider.get_meter("isoplug", _version()))
    for meter in meters:
        host_metrics = HostMetrics(meter, log_stats)
        running._host_metrics.append(host_metrics)
        observers.add_observer(host_metrics)


_SERVING_FIXES = {
    errno.EADDRINUSE: " (something else listens there: stop it, or choose another port; 0 "
    "takes a free one)",
    errno.EADDRNOTAVAIL: " (not an address of this machine: give one of its own, or 0.0.0.0 "
    "for all)",
    errno.EACCES: " (ports below 1024 need privileges: choose a higher one)",
}


def _serve_prometheus(running: OtelExport, host: str, port: int) -> Any:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ValueError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
            f"{_SERVING_FIXES.get(exc.errno or 0, '')}"
        ) from exc
    running.metrics_address = (host, server.server_port)

    def close() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5.0)

    running._closers.append(close)
    return reader
