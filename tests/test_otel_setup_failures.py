"""An ``isoplug.otel.export()`` that cannot start: what it says, and that it leaves nothing
running (threads, servers, sockets, handlers, providers), so that a retry starts clean."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

import isoplug.otel
from isoplug.otel.logs import LogExport
from isoplug.testing.otlp import OtlpReceiver, Received
from tests import otel_helpers
from tests.otel_helpers import exporting
from tests.plugins_fixtures import plugins_dir, running

otlp_receiver = otel_helpers.otlp_receiver


def _open_descriptors() -> set[str]:
    # A descriptor's number and what it points at: a number closed and reused for another
    # socket counts as new.
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            continue  # the listing's own descriptor, closed since
    return found


def _export_handlers() -> list[logging.Handler]:
    return [
        handler
        for name in ("plugin", "isoplug.host")
        for handler in logging.getLogger(name).handlers
        if type(handler).__module__ == LogExport.__module__
    ]


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        text: str = answer.read().decode()
        return text


async def test_a_port_in_use_leaves_nothing_running_and_a_retry_once_freed_works(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    threads = set(threading.enumerate())
    descriptors = _open_descriptors()
    # OTLP logs and metrics with it: each has a piece (an exporter, a reader's thread) that
    # would start before or after the Prometheus server, and must not outlive its failure.
    for _ in range(3):
        with pytest.raises(ValueError, match=f"cannot serve metrics on 127.0.0.1:{port}: "):
            isoplug.otel.export(endpoint=otlp_receiver.http_endpoint, metrics_port=port)
        assert isoplug.otel.active() is None
        assert [t.name for t in threading.enumerate() if t not in threads] == []
        assert _open_descriptors() - descriptors == set()
        assert _export_handlers() == []
    taken.close()

    with exporting(endpoint=otlp_receiver.http_endpoint, metrics_port=port) as export:
        assert export.metrics_address == ("127.0.0.1", port)
        async with running(tmp_path, "telemetry") as (host, _):
            assert await host.call("telemetry", "pid") > 0
            text = await asyncio.to_thread(_scrape, f"http://127.0.0.1:{port}/metrics")
            assert 'isoplug_plugin_ready{isoplug_plugin_id="telemetry"' in text
            await host.call("telemetry", "log_fields", "m-retried")
            await otlp_receiver.received.until(lambda r: _with_body(r, "m-retried"))


def _with_body(received: Received, text: str) -> bool:
    return any(isinstance(e.body, str) and text in e.body for e in received.logs())


# What an application that already uses OpenTelemetry may lack of what isoplug[otel] brings;
# a finder refuses the distribution's modules as an environment without it would.
_HIDING = """
import sys, threading

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name == HIDDEN or name.startswith(HIDDEN + "."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
import isoplug.otel
from isoplug.cli import main

try:
    isoplug.otel.export(**API)
except RuntimeError as exc:
    print("export():", exc)
print("threads left:", [t.name for t in threading.enumerate() if t is not threading.main_thread()])
sys.exit(main(["run", DIRECTORY, *CLI]))
"""


@pytest.mark.parametrize(
    ("hidden", "distribution", "api", "cli"),
    [
        (
            "opentelemetry.exporter.otlp.proto.grpc",
            "opentelemetry-exporter-otlp-proto-grpc",
            {"endpoint": "http://127.0.0.1:4317", "protocol": "grpc"},
            ["--otlp-endpoint", "http://127.0.0.1:4317", "--otlp-protocol", "grpc"],
        ),
        (
            "opentelemetry.exporter.prometheus",
            "opentelemetry-exporter-prometheus",
            {"otlp": False, "metrics_port": 0},
            ["--metrics-port", "0"],
        ),
        (
            "prometheus_client",
            "opentelemetry-exporter-prometheus",
            {"otlp": False, "metrics_port": 0},
            ["--metrics-port", "0"],
        ),
        (
            "opentelemetry.exporter.otlp.proto.http",
            "opentelemetry-exporter-otlp-proto-http",
            {"endpoint": "http://127.0.0.1:4318"},
            ["--otlp-endpoint", "http://127.0.0.1:4318"],
        ),
        (
            "opentelemetry.sdk",
            "opentelemetry-sdk",
            {"endpoint": "http://127.0.0.1:4318"},
            ["--otlp-endpoint", "http://127.0.0.1:4318"],
        ),
    ],
)
def test_a_missing_part_of_the_extra_is_named_with_the_pip_command(
    tmp_path: Path, hidden: str, distribution: str, api: dict[str, object], cli: list[str]
) -> None:
    directory = plugins_dir(tmp_path, "telemetry")
    settings = f"HIDDEN = {hidden!r}\nAPI = {api!r}\nDIRECTORY = {str(directory)!r}\nCLI = {cli!r}"
    result = subprocess.run(
        [sys.executable, "-c", settings + _HIDING],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    said = f"needs the otel extra: {distribution} "
    install = "pip install 'isoplug[otel]'"
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and said in lines[0] and install in lines[0], result
    assert lines[1] == "threads left: []", result
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    [message] = [line for line in result.stderr.splitlines() if said in line]
    assert install in message
