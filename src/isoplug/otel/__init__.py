"""Export every plugin's records, and isoplug's metrics, to OpenTelemetry (``isoplug[otel]``).

::

    import isoplug.otel

    isoplug.otel.export(endpoint="http://127.0.0.1:4318")   # OTLP/HTTP: /v1/logs, /v1/metrics

One call, before or after hosts start, covers every :class:`~isoplug.Host` of the process:

- logs: every record of every plugin (logging, prints, stdout/stderr lines, the host's reports
  about it) and the host's own ``isoplug.host`` records, each plugin as a resource of its own
  (``service.name`` the application's, ``isoplug.plugin.id``, ``isoplug.plugin.version``, the
  runner's pid), see :mod:`isoplug.otel.records` for the fields;
- metrics per plugin (:mod:`isoplug.otel.metrics`), over OTLP and, with ``metrics_port``, for
  Prometheus to scrape.

The protocol follows the OpenTelemetry specification: ``protocol``, else
``OTEL_EXPORTER_OTLP_LOGS_PROTOCOL`` / ``..._METRICS_PROTOCOL``, else
``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``http/protobuf``; ``grpc`` is the other. With no
``endpoint`` the standard variables decide (``OTEL_EXPORTER_OTLP_ENDPOINT``, the per-signal
ones, headers, timeout, certificates, compression), as do ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` for the resource.

An application that configured OpenTelemetry itself (an SDK ``LoggerProvider`` /
``MeterProvider`` set globally) is joined: records go through its provider (each plugin a
scope, with the plugin's attributes), the instruments on its meter provider.

A collector that is down, slow or refusing never holds up the host or a plugin: see
:mod:`isoplug.otel.logs` for the bounds, the drop counts and the reports. Without the extra
installed, nothing here imports OpenTelemetry until :func:`export` is called (which then
says what to install).
"""

from __future__ import annotations

from isoplug.otel.logs import LogExportStats, OutboxLimits
from isoplug.otel.setup import (
    PROTOCOLS,
    OtelExport,
    active,
    export,
    resolve_protocol,
)

__all__ = [
    "PROTOCOLS",
    "LogExportStats",
    "OtelExport",
    "OutboxLimits",
    "active",
    "export",
    "resolve_protocol",
]
