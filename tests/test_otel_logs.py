"""Every plugin record, over OTLP/HTTP and OTLP/gRPC, as a collector decodes it: identity,
severity, source location, thread, extras, sequence numbers, the plugin's exceptions, its
stdout/stderr, and the host's own records."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from isoplug.otel.resources import resource_attributes, resource_key
from isoplug.testing.otlp import LogEntry, OtlpReceiver, Received
from tests import otel_helpers
from tests.otel_helpers import endpoint_of, exporting
from tests.plugins_fixtures import running

# One receiver process for the module; each test reads only what arrived during it.
module_otlp_receiver = otel_helpers.module_otlp_receiver
otlp_receiver = otel_helpers.shared_otlp_receiver

PROTOCOLS = ["http/protobuf", "grpc"]


def _with_body(received: Received, text: str) -> list[LogEntry]:
    return [e for e in received.logs() if isinstance(e.body, str) and text in e.body]


def test_a_forked_processs_records_have_its_pid_as_the_resources_process_pid() -> None:
    """A process the plugin forked logs through a connection of its own: its records' resource
    names its runner and itself; the runner's name it for both."""
    forked = resource_attributes({"service.name": "s"}, resource_key("p", _FORKED), "1.0")
    assert forked == {
        "service.name": "s",
        "isoplug.plugin.id": "p",
        "isoplug.plugin.version": "1.0",
        "isoplug.runner.pid": 10,
        "process.pid": 11,
    }
    own = resource_attributes({}, resource_key("p", {"runner_pid": 10, "process": 10}), None)
    assert own["isoplug.runner.pid"] == own["process.pid"] == 10
    assert resource_attributes({}, resource_key("p", {"runner_pid": "x"}), None) == {
        "isoplug.plugin.id": "p"
    }
    # The host's report about the plugin, made in the host's process: the runner's resource.
    report = resource_key("p", {"runner_pid": 10, "process": 99, "isoplug_report": True})
    assert resource_attributes({}, report, None)["process.pid"] == 10


_FORKED = {"runner_pid": 10, "process": 11}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_plugin_records_arrive_with_identity_fields_and_extras(
    tmp_path: Path, otlp_receiver: OtlpReceiver, protocol: str
) -> None:
    endpoint = endpoint_of(otlp_receiver, protocol)
    with exporting(endpoint=endpoint, protocol=protocol, service_name="shop", metrics=False):
        async with running(tmp_path, "telemetry") as (host, _):
            pid = await host.call("telemetry", "pid")
            where = await host.call("telemetry", "log_fields", "m-fields")
            (entry,) = await otlp_receiver.received.until(lambda r: _with_body(r, "m-fields"))
    assert entry.body == "quota at 93% for m-fields"
    assert entry.resource["service.name"] == "shop"
    assert entry.resource["isoplug.plugin.id"] == "telemetry"
    assert entry.resource["isoplug.plugin.version"] == "2.3.1"
    assert entry.resource["process.pid"] == pid
    assert entry.scope == "plugin.telemetry.telemetry.work"
    assert (entry.severity_number, entry.severity_text) == (13, "WARN")
    attributes = entry.attributes
    assert attributes["code.file.path"] == where["file"]
    assert attributes["code.line.number"] == where["line"]
    assert attributes["code.function.name"] == "work"
    assert attributes["thread.name"] == "quota-worker"
    assert isinstance(attributes["thread.id"], int)
    assert isinstance(attributes["isoplug.log.seq"], int) and attributes["isoplug.log.seq"] > 0
    assert attributes["tenant"] == "acme"
    assert attributes["attempt"] == 2
    assert attributes["ratio"] == 0.93
    assert attributes["flags"] == ["a", "b"]
    # The plugin's own trace context (as OpenTelemetry's logging instrumentation sets it).
    assert entry.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert entry.span_id == "b7ad6b7169203331"
    assert entry.flags == 1
    assert not {"otelTraceID", "plugin_id", "runner_pid"} & set(attributes)


async def test_extras_cannot_set_or_repeat_isoplugs_attributes_nor_the_resources(
    tmp_path: Path, otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An extra named like an attribute isoplug writes, anything under ``isoplug.``, or a
    resource attribute (the application's too) arrives as ``extra_<name>``: one key per
    attribute, and what isoplug says of the record stays isoplug's."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=core")
    with exporting(endpoint=otlp_receiver.http_endpoint, service_name="shop", metrics=False):
        async with running(tmp_path, "telemetry") as (host, _):
            await host.call("telemetry", "log_forged", "m-forged")
            (entry,) = await otlp_receiver.received.until(lambda r: _with_body(r, "m-forged"))
    keys = entry.attribute_keys
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    attributes = entry.attributes
    assert attributes["code.file.path"].endswith("telemetry_plugin.py")
    assert attributes["isoplug.log.seq"] > 0
    assert "log.iostream" not in attributes  # a logging record, not a line of output
    assert "exception.type" not in attributes
    for name in (
        "service.name",
        "isoplug.plugin.id",
        "isoplug.plugin.version",
        "isoplug.runner.pid",
        "isoplug.anything",
        "process.pid",
        "team",
    ):
        assert name not in attributes, name
    assert attributes["extra_service.name"] == "evil-svc"
    assert attributes["extra_isoplug.plugin.id"] == "victim"
    assert attributes["extra_isoplug.anything"] == "mine"
    assert attributes["extra_process.pid"] == 1
    assert attributes["extra_team"] == "red"
    assert attributes["extra_log.iostream"] == "stderr"
    assert attributes["extra_exception.type"] == "Forged"
    assert attributes["extra_isoplug.log.seq"] == -1
    # The plugin's own extra_code.file.path keeps its name; the forged one moves past it.
    assert attributes["extra_code.file.path"] == "the plugin's own extra_ name"
    assert attributes["extra_extra_code.file.path"] == "/etc/shadow"
    assert entry.resource["service.name"] == "shop"
    assert entry.resource["isoplug.plugin.id"] == "telemetry"
    assert entry.resource["team"] == "core"


async def test_extras_cannot_disguise_reserved_names(
    tmp_path: Path, otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name read as words (:mod:`isoplug.otel.reserved_names`) that is a reserved one, or
    under a reserved namespace, arrives as ``extra_<name>``, nested maps judged by their key
    paths; ordinary extras keep their names."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=core")
    with exporting(endpoint=otlp_receiver.http_endpoint, service_name="shop", metrics=False):
        async with running(tmp_path, "telemetry") as (host, _):
            await host.call("telemetry", "log_disguised", "m-disguised")
            (entry,) = await otlp_receiver.received.until(lambda r: _with_body(r, "m-disguised"))
    keys = entry.attribute_keys
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    attributes = entry.attributes
    renamed = {
        "isoplug",
        "service",
        "code",
        "isoplug_plugin_id",
        "service_name",
        "process_pid",
        "Service.Name",
        "ISOPLUG.LOG.SEQ",
        " service.name",
        "service.version",
        "host.name",
        "deployment.environment",
        "code.filepath",
        "code.lineno",
        "Team",
    }
    for name in renamed:
        assert name not in attributes, name
        assert f"extra_{name}" in attributes, name
    assert attributes["extra_isoplug"] == {"plugin": {"id": "victim"}, "log": {"seq": -1}}
    assert attributes["extra_code"] == {"file": {"path": "/etc/shadow"}}
    # The sanitizer escapes the zero-width space; the Cyrillic i (U+0456) is kept as it is.
    disguised = {k for k in attributes if k.endswith("plugin.id") and "_plugin" not in k}
    assert disguised == {"extra_isoplug\\u200b.plugin.id", "extra_\u0456soplug.plugin.id"}
    assert attributes["user_id"] == 7
    assert attributes["request"] == {"id": "r1", "code": 404}
    assert attributes["order.total"] == 12.5
    assert attributes["host"] == "db1"
    assert attributes["processing_time"] == 0.5


async def test_extras_with_keys_that_are_not_text_arrive_renamed_and_unique(
    tmp_path: Path, otlp_receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """``extra={1: ...}`` reaches the host (it used to be refused as malformed, and reported
    lost) as ``extra_1``; inside a nested map, keys with the same text are made unique."""
    caplog.set_level(logging.INFO)
    with exporting(endpoint=otlp_receiver.http_endpoint, metrics=False):
        async with running(tmp_path, "telemetry") as (host, _):
            await host.call("telemetry", "log_odd_keys", "m-oddkeys")
            (entry,) = await otlp_receiver.received.until(lambda r: _with_body(r, "m-oddkeys"))
    (record,) = [r for r in caplog.records if r.getMessage() == "m-oddkeys"]
    assert record.__dict__["extra_1"] == "int-one"
    assert record.__dict__["extra_('t',)"] == "tuple"
    complaints = [
        r.getMessage()
        for r in caplog.records
        if "malformed" in r.getMessage() or "never arrived" in r.getMessage()
    ]
    assert complaints == []
    attributes = entry.attributes
    assert attributes["extra_1"] == "int-one"
    assert attributes["extra_('t',)"] == "tuple"
    assert attributes["mixed"] == {"1": "int-one", "1 (2)": "str-one", "('t',)": "tuple"}


async def test_severity_follows_the_level(tmp_path: Path, otlp_receiver: OtlpReceiver) -> None:
    with exporting(endpoint=otlp_receiver.http_endpoint, metrics=False):
        async with running(tmp_path, "telemetry") as (host, _):
            await host.call("telemetry", "log_levels", "m-levels")
            entries = await otlp_receiver.received.until(
                lambda r: (found := _with_body(r, "m-levels")) and len(found) == 6 and found
            )
    severities = {e.body: (e.severity_number, e.severity_text) for e in entries}
    assert severities == {
        "m-levels at DEBUG": (5, "DEBUG"),
        "m-levels at INFO": (9, "INFO"),
        "m-levels at WARNING": (13, "WARN"),
        "m-levels at ERROR": (17, "ERROR"),
        "m-levels at CRITICAL": (21, "FATAL"),
        "m-levels at 25": (12, "Level 25"),
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_exceptions_are_the_plugins(
    tmp_path: Path, otlp_receiver: OtlpReceiver, protocol: str
) -> None:
    endpoint = endpoint_of(otlp_receiver, protocol)
    with exporting(endpoint=endpoint, protocol=protocol, metrics=False):
        async with running(tmp_path, "telemetry") as (host, _):
            printed = await host.call("telemetry", "raise_logged", "m-exc")
            (entry,) = await otlp_receiver.received.until(lambda r: _with_body(r, "m-exc"))
    assert entry.severity_text == "ERROR"
    assert entry.attributes["exception.type"] == "telemetry_plugin.QuotaExceeded"
    assert entry.attributes["exception.message"] == "tenant over quota (m-exc)"
    # The traceback as the plugin's Python printed it, down to the plugin's own source line.
    assert entry.attributes["exception.stacktrace"] == printed
    assert 'raise QuotaExceeded(f"tenant over quota ({marker})")' in printed


async def test_stdout_and_stderr_are_marked_by_stream(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    with exporting(endpoint=otlp_receiver.http_endpoint, metrics=False):
        async with running(tmp_path, "telemetry") as (host, _):
            await host.call("telemetry", "print_lines", "m-print")
            entries = await otlp_receiver.received.until(
                lambda r: (found := _with_body(r, "m-print")) and len(found) == 2 and found
            )
    by_stream = {e.attributes["log.iostream"]: e for e in entries}
    assert by_stream["stdout"].body == "m-print on stdout"
    assert by_stream["stdout"].scope == "plugin.telemetry.stdout"
    assert by_stream["stdout"].severity_text == "INFO"
    assert by_stream["stderr"].body == "m-print on stderr"
    assert by_stream["stderr"].severity_text == "WARN"
    assert all(e.resource["isoplug.plugin.id"] == "telemetry" for e in entries)


async def test_the_hosts_own_records_are_exported(
    tmp_path: Path, otlp_receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "isoplug.host")  # what the application's logging lets through
    with exporting(endpoint=otlp_receiver.http_endpoint, metrics=False, service_name="shop"):
        async with running(tmp_path, "telemetry"):
            pass
        entries = await otlp_receiver.received.until(
            lambda r: [e for e in r.logs() if e.scope == "isoplug.host" and "ready" in e.body]
        )
    assert entries[0].resource["service.name"] == "shop"
    assert "isoplug.plugin.id" not in entries[0].resource
    assert entries[0].attributes["state"] == "ready"


async def test_host_records_carry_the_active_span(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with exporting(endpoint=otlp_receiver.http_endpoint, metrics=False):
        with tracer.start_as_current_span("request") as span:
            logging.getLogger("isoplug.host").warning("inside the span m-span")
        (entry,) = await otlp_receiver.received.until(lambda r: _with_body(r, "m-span"))
    context = span.get_span_context()
    assert entry.trace_id == f"{context.trace_id:032x}"
    assert entry.span_id == f"{context.span_id:016x}"


def test_standard_environment_variables_are_honoured(otlp_receiver: OtlpReceiver) -> None:
    """No endpoint in code: OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES decide."""
    script = (
        "import logging, isoplug.otel\n"
        "running = isoplug.otel.export(metrics=False)\n"
        "logging.getLogger('isoplug.host').warning('m-env')\n"
        "running.shutdown()\n"
    )
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_SERVICE_NAME": "from-env",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test,team=core",
    }
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    (entry,) = otlp_receiver.received.wait(lambda r: _with_body(r, "m-env"))
    assert entry.resource["service.name"] == "from-env"
    assert entry.resource["deployment.environment.name"] == "test"
    assert entry.resource["team"] == "core"


def test_without_the_export_nothing_of_opentelemetry_is_imported(tmp_path: Path) -> None:
    """A host runs a plugin, calls it and logs, and no opentelemetry module is loaded."""
    script = f"""
import asyncio, sys
import isoplug
from tests.plugins_fixtures import running

async def main():
    async with running(__import__("pathlib").Path({str(tmp_path)!r}), "telemetry") as (host, _):
        await host.call("telemetry", "log_fields", "x")
        await host.call("telemetry", "print_lines", "x")
asyncio.run(main())
loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry", "grpc", "google")))
print(loaded)
sys.exit(1 if loaded else 0)
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_receiver_decodes_otlp_json(otlp_receiver: OtlpReceiver) -> None:
    """OTLP/HTTP with JSON bodies (what other SDKs may send) decodes as protobuf does."""
    import json
    import urllib.request

    body = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "j"}}]
                },
                "scopeLogs": [
                    {
                        "scope": {"name": "json.scope"},
                        "logRecords": [
                            {
                                "timeUnixNano": "1700000000000000000",
                                "severityNumber": 17,
                                "severityText": "ERROR",
                                "body": {"stringValue": "m-json"},
                                "attributes": [{"key": "n", "value": {"intValue": "7"}}],
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "spanId": "b7ad6b7169203331",
                            }
                        ],
                    }
                ],
            }
        ]
    }
    request = urllib.request.Request(
        f"{otlp_receiver.http_endpoint}/v1/logs",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
    (entry,) = otlp_receiver.received.wait(lambda r: _with_body(r, "m-json"))
    assert (entry.scope, entry.severity_number, entry.attributes) == ("json.scope", 17, {"n": 7})
    assert entry.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert entry.span_id == "b7ad6b7169203331"


def test_an_application_with_its_own_providers_is_joined(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    """The application set an SDK LoggerProvider and MeterProvider: isoplug's records and
    metrics go through them (its resource, its exporters), each plugin a scope."""
    script = f"""
import asyncio, pathlib
from opentelemetry import _logs, metrics
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
import isoplug.otel
from tests.plugins_fixtures import running

endpoint = {otlp_receiver.http_endpoint!r}
resource = Resource.create({{"service.name": "the-app"}})
logs = LoggerProvider(resource=resource)
logs.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint + "/v1/logs")))
_logs.set_logger_provider(logs)
reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint + "/v1/metrics"))
meters = MeterProvider(resource=resource, metric_readers=[reader])
metrics.set_meter_provider(meters)
try:
    isoplug.otel.export(endpoint="http://127.0.0.1:1")
except ValueError as exc:
    print("refused:", exc)
running_export = isoplug.otel.export()
assert running_export.joined

async def main():
    async with running(pathlib.Path({str(tmp_path)!r}), "telemetry") as (host, _):
        await host.call("telemetry", "log_fields", "m-joined")
        await host.call("telemetry", "pid")
asyncio.run(main())
running_export.shutdown()
logs.shutdown()
meters.shutdown()
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "refused: this application configured OpenTelemetry itself" in result.stdout
    (entry,) = _with_body(otlp_receiver.received, "m-joined")
    assert entry.resource["service.name"] == "the-app"
    assert "isoplug.plugin.id" not in entry.resource
    assert entry.scope == "plugin.telemetry.telemetry.work"
    assert entry.scope_attributes["isoplug.plugin.id"] == "telemetry"
    assert entry.scope_attributes["isoplug.plugin.version"] == "2.3.1"
    assert entry.attributes["tenant"] == "acme"
    assert entry.trace_id == "0af7651916cd43dd8448eb211c80319c"
    calls = otlp_receiver.received.latest("rpc.client.call.duration", rpc__method="pid")
    assert calls is not None and calls.count == 1
    assert calls.resource["service.name"] == "the-app"


async def test_a_later_dict_config_does_not_silence_the_export(
    tmp_path: Path, otlp_receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """An application that configures logging after starting the export (here: handlers of
    its own on the ``plugin`` logger) keeps exporting every record, those logged the moment
    after the configuration too (the export thread looks only every half second), and is told
    once."""
    import logging.config

    with exporting(endpoint=otlp_receiver.http_endpoint, metrics=False) as export:
        assert export.log_export is not None
        try:
            async with running(tmp_path, "telemetry") as (host, _):
                logging.config.dictConfig(
                    {
                        "version": 1,
                        "disable_existing_loggers": False,
                        "handlers": {"null": {"class": "logging.NullHandler"}},
                        "loggers": {"plugin": {"handlers": ["null"], "level": "DEBUG"}},
                    }
                )
                # No look at the handlers here: the export thread may have attached it
                # again already (a flake on a loaded machine). Its WARNING, below, says the
                # configuration took it off.
                await host.call("telemetry", "log_levels", "after the reconfiguration")
                entries = await otlp_receiver.received.until(
                    lambda r: len(_with_body(r, "after the reconfiguration")) == 6 and r
                )
        finally:
            logging.getLogger("plugin").handlers.clear()
    assert len(_with_body(entries, "after the reconfiguration")) == 6
    warnings = [r for r in caplog.records if "attached it again" in r.getMessage()]
    assert len(warnings) == 1 and "'plugin'" in warnings[0].getMessage()
