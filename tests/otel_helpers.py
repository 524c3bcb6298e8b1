"""Plumbing of the OpenTelemetry export tests: an OTLP receiver process (a real collector when
``OTELCOL_BIN`` names one), one per test or one a module's tests share, and the export
switched on for a block."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import isoplug.otel
from isoplug.otel import OtelExport, OutboxLimits
from isoplug.testing.otlp import OtlpReceiver, Received

#: Short intervals, so that tests see exports within a fraction of a second.
QUICK = OutboxLimits(interval=0.05, report_interval=0.5)


@pytest.fixture
def otlp_receiver(tmp_path: Path) -> Iterator[OtlpReceiver]:
    """An OTLP receiver (HTTP and gRPC) on free local ports, stopped after the test: for
    tests that kill or restart it."""
    receiver = OtlpReceiver(tmp_path / "receiver")
    receiver.directory.mkdir()
    with receiver:
        yield receiver


@pytest.fixture(scope="module")
def module_otlp_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtlpReceiver]:
    """One receiver process for a module's tests: starting and stopping one costs most of a
    second, more than most of these tests take otherwise."""
    receiver = OtlpReceiver(tmp_path_factory.mktemp("receiver"))
    with receiver:
        yield receiver


@pytest.fixture
def shared_otlp_receiver(module_otlp_receiver: OtlpReceiver) -> OtlpReceiver:
    """The module's receiver, whose ``received`` holds only what arrived during this test
    (each test's export is shut down, its final batches sent, before the test ends). Not for
    tests that kill or restart it: :func:`otlp_receiver` is."""
    shared = module_otlp_receiver
    view = copy.copy(shared)
    offset = shared.output.stat().st_size if shared.output.exists() else 0
    view.received = Received(shared.output, offset)
    return view


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
