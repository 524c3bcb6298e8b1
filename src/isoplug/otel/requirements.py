"""What an export needs installed, checked before any part of it starts.

``isoplug[otel]`` brings several distributions, and an application that already uses
OpenTelemetry often has only some of them (the SDK and the OTLP/HTTP exporter, say). Each
part of an export imports the modules it needs first, through :func:`require`: a missing one is
refused with the distribution it belongs to and the pip command, before a thread, a server or
a provider exists that the failure would have to undo.
"""

from __future__ import annotations

import dataclasses
import importlib

from isoplug.errors import UsageError

__all__ = [
    "GRPC_EXPORTER",
    "HTTP_EXPORTER",
    "INSTALL",
    "JOINED_LOGS",
    "PROMETHEUS",
    "SDK",
    "Requirement",
    "otlp_exporter",
    "require",
]

INSTALL = "pip install 'isoplug[otel]'"


@dataclasses.dataclass(frozen=True)
class Requirement:
    """A distribution of the otel extra, for ``purpose``, as the modules isoplug imports."""

    purpose: str
    distribution: str
    modules: tuple[str, ...]


SDK = Requirement(
    "exporting to OpenTelemetry",
    "opentelemetry-sdk",
    (
        "opentelemetry.sdk._logs",
        "opentelemetry.sdk.metrics",
        "opentelemetry.sdk.metrics.export",
        "opentelemetry.sdk.resources",
    ),
)
HTTP_EXPORTER = Requirement(
    "exporting over OTLP/HTTP (protocol http/protobuf)",
    "opentelemetry-exporter-otlp-proto-http",
    (
        "opentelemetry.exporter.otlp.proto.http._log_exporter",
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    ),
)
GRPC_EXPORTER = Requirement(
    "exporting over OTLP/gRPC (protocol grpc)",
    "opentelemetry-exporter-otlp-proto-grpc",
    (
        "opentelemetry.exporter.otlp.proto.grpc._log_exporter",
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
        "opentelemetry.proto.collector.logs.v1.logs_service_pb2",
    ),
)
PROMETHEUS = Requirement(
    "serving metrics for Prometheus (metrics_port, --metrics-port)",
    "opentelemetry-exporter-prometheus",
    ("opentelemetry.exporter.prometheus", "prometheus_client"),
)
# The records handed to the application's LoggerProvider are parsed back from isoplug's
# encoding with the OTLP protobuf classes, which an SDK-only install lacks.
JOINED_LOGS = Requirement(
    "joining the application's LoggerProvider",
    "opentelemetry-proto",
    ("opentelemetry.proto.logs.v1.logs_pb2",),
)


def otlp_exporter(protocol: str) -> Requirement:
    """The exporter distribution of an OTLP ``protocol`` (one of ``PROTOCOLS``)."""
    return GRPC_EXPORTER if protocol == "grpc" else HTTP_EXPORTER


def require(*requirements: Requirement) -> None:
    """Import every module of ``requirements``; raises ``RuntimeError`` naming the first one
    missing (or failing to import: versions that do not fit together), its distribution and
    the pip command."""
    for requirement in requirements:
        for module in requirement.modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                name = getattr(exc, "name", None) or ""
                absent = isinstance(exc, ModuleNotFoundError) and (
                    module == name or module.startswith(f"{name}.")
                )
                state = "is not installed" if absent else "does not import"
                raise UsageError(
                    f"{requirement.purpose} needs the otel extra: {requirement.distribution} "
                    f"{state} ({type(exc).__name__}: {exc}); {INSTALL}"
                ) from exc
