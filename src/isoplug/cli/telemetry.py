"""``--otlp-endpoint`` / ``--metrics-port``: the OpenTelemetry export ``isoplug run`` asks for."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from isoplug.cli.say import say_error
from isoplug.cli.signals import StopSignals, wait_unless_signalled
from isoplug.log_guard import guarded_logger

if TYPE_CHECKING:
    from isoplug.otel.setup import OtelExport

#: Seconds ``isoplug run`` gives the export, once the plugins stopped, to send its last
#: records and metrics (all of it when the collector is down or does not answer).
EXPORT_SHUTDOWN_TIMEOUT = 5.0


@contextlib.contextmanager
def telemetry(
    arguments: argparse.Namespace, signals: StopSignals | None = None
) -> Iterator[object | None]:
    """The OpenTelemetry export the options ask for, for the duration of the block (an
    object, possibly ``False`` when none is asked for); None when it cannot start (said on
    stderr). At the end it sends what is left within :data:`EXPORT_SHUTDOWN_TIMEOUT`; a stop
    signal meanwhile ends that at once (``signals.cut_short``), what was not sent counted and
    reported as dropped."""
    endpoint = arguments.otlp_endpoint
    from_environment = any(
        os.environ.get(name)
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
    )
    otlp = endpoint is not None or from_environment
    if arguments.otlp_protocol and not otlp:
        say_error("run", "--otlp-protocol needs --otlp-endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT)")
        yield None
        return
    port_text = arguments.metrics_port
    if not otlp and port_text is None:
        yield False
        return
    host, port = "127.0.0.1", None
    if port_text is not None:
        host_text, _, number = port_text.rpartition(":")
        if not number.isdigit() or int(number) > 65535:
            say_error("run", f"--metrics-port wants [HOST:]PORT, got {port_text!r}")
            yield None
            return
        host, port = host_text.strip("[]") or host, int(number)
    try:
        import isoplug.otel

        telemetry = isoplug.otel.export(
            endpoint,
            arguments.otlp_protocol,
            service_name=None if _service_named_by_environment() else "isoplug",
            otlp=otlp,
            metrics_port=port,
            metrics_host=host,
            join=False,
        )
    except (RuntimeError, ValueError) as exc:
        say_error("run", str(exc))
        yield None
        return
    if telemetry.metrics_address is not None:
        guarded_logger("isoplug.cli").info(
            "metrics for Prometheus at http://%s:%d/metrics", *telemetry.metrics_address
        )
    signals = signals or StopSignals()
    try:
        yield telemetry
    finally:
        _send_the_last_records(telemetry, signals, otlp)


def _send_the_last_records(telemetry: OtelExport, signals: StopSignals, otlp: bool) -> None:
    """The export's end: within :data:`EXPORT_SHUTDOWN_TIMEOUT`, said first when it may wait
    (an OTLP collector that does not answer takes all of it); none after a second signal, which
    asked for everything to end at once."""
    log = guarded_logger("isoplug.cli")
    if signals.killed:
        if otlp:
            log.warning(
                "not sending the last OpenTelemetry records: a second signal ended everything"
            )
        telemetry.shutdown(0.0)  # what was not sent is counted and reported as dropped
        return
    if otlp:
        log.info(
            "sending the last OpenTelemetry records (at most %g s; a signal skips it)...",
            EXPORT_SHUTDOWN_TIMEOUT,
        )
    wait_unless_signalled(
        lambda: telemetry.shutdown(EXPORT_SHUTDOWN_TIMEOUT),
        signals,
        "sending the last OpenTelemetry records",
        lambda: telemetry.shutdown(0.0),
    )


def _service_named_by_environment() -> bool:
    attributes = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    return bool(os.environ.get("OTEL_SERVICE_NAME")) or any(
        part.split("=", 1)[0].strip() == "service.name" for part in attributes.split(",")
    )
