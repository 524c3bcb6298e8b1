"""Plumbing of the OpenTelemetry export tests: an OTLP receiver process per test (a real
collector when ``OTELCOL_BIN`` names one), and the export switched on for a block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import isoplug.otel
from isoplug.otel import OtelExport, OutboxLimits
from isoplug.testing.otlp import OtlpReceiver

#: Short intervals, so that tests see exports within a fraction of a second.
QUICK = OutboxLimits(interval=0.05, report_interval=0.5)


@pytest.fixture
def otlp_receiver(tmp_path: Path) -> Iterator[OtlpReceiver]:
    """An OTLP receiver (HTTP and gRPC) on free local ports, stopped after the test."""
    receiver = OtlpReceiver(tmp_path / "receiver")
    receiver.directory.mkdir()
    with receiver:
        yield receiver


def endpoint_of(receiver: OtlpReceiver, protocol: str) -> str:
    return receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint


@contextlib.contextmanager
def exporting(**options: Any) -> Iterator[OtelExport]:
    """``isoplug.otel.export(**options)`` for the block (quick limits unless given)."""
    options.setdefault("limits", QUICK)
    running = isoplug.otel.export(**options)
    try:
        yield running
    finally:
        running.shutdown()
