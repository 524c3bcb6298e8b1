"""A collector that is down, slow, refusing or flooded never hurts the host or its plugins:
the event loop keeps its pace (lag measured), calls answer, nothing blocks, the queue stays
bounded, and every record the export loses is counted and reported (rate limited)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from isoplug.otel import OtelExport, OutboxLimits
from isoplug.otel.sdk_messages import SDK_LOGGERS
from isoplug.testing.otlp import OtlpReceiver, Received
from tests import otel_helpers
from tests.otel_helpers import endpoint_of, exporting
from tests.plugins_fixtures import running
from tests.record_waiter import watching

otlp_receiver = otel_helpers.otlp_receiver
T = TypeVar("T")
QUICK = OutboxLimits(interval=0.05, report_interval=0.5)
#: A loop that waits on an export (the tests' timeouts: 1 s and more) would stall that long at
#: least; the loop's own noise on a 2-core machine running two tests at once stays below this
#: (0.3 s was passed once in a full run: a plugin's flood and another test's host share them).
MAX_STALL = 0.8


async def _stalls_during(work: Awaitable[T]) -> tuple[list[float], T]:
    """How late a 1 ms sleep on this loop wakes while ``work`` runs (as benchmarks/_helpers)."""
    stalls: list[float] = []
    running_work = asyncio.ensure_future(work)
    while not running_work.done():
        began = time.perf_counter()
        await asyncio.sleep(0.001)
        stalls.append(time.perf_counter() - began - 0.001)
    return stalls, await running_work


def _numbers(received: Received) -> set[int]:
    return {
        e.attributes["n"]
        for e in received.logs()
        if e.resource.get("isoplug.plugin.id") == "telemetry" and "n" in e.attributes
    }


def _dropped(export: OtelExport, reason: str) -> int:
    return export.stats().dropped.get("telemetry", {}).get(reason, 0)


@contextlib.contextmanager
def _silent_listener() -> Iterator[int]:
    """A port that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
async def test_collector_not_started(tmp_path: Path, protocol: str) -> None:
    endpoint = f"http://127.0.0.1:{_free_port()}"
    with (
        watching("isoplug.otel") as reports,
        exporting(endpoint=endpoint, protocol=protocol, metrics=False, timeout=1.0) as export,
    ):
        async with running(tmp_path, "telemetry") as (host, _):
            stalls, took = await _stalls_during(host.call("telemetry", "flood", 500))
            started = time.perf_counter()
            assert await host.call("telemetry", "pid") > 0
            call_time = time.perf_counter() - started
            report = await reports.wait_for("isoplug.otel", "OpenTelemetry export dropped")
            await reports.wait_until(lambda: _dropped(export, "export_failed") >= 500 or None)
    assert max(stalls) < MAX_STALL, max(stalls)
    assert call_time < MAX_STALL
    assert took < 5
    assert "the collector did not take them" in report.getMessage()
    assert export.stats().exported.get("telemetry", 0) == 0
    assert _dropped(export, "export_failed") >= 500


async def test_collector_killed_mid_stream_then_restarted(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    with exporting(endpoint=otlp_receiver.http_endpoint, metrics=False, timeout=1.0) as export:
        async with running(tmp_path, "telemetry") as (host, _):
            received = otlp_receiver.received
            await host.call("telemetry", "flood", 300)  # records 0-299
            await received.until(lambda r: set(range(300)) <= _numbers(r))
            otlp_receiver.kill()
            stalls, _ = await _stalls_during(host.call("telemetry", "flood", 300, 0.0, 300))
            # The outage's batches fail after the exporter's retries (a second at most).
            await received.until(lambda r: export.flush(0.01) or None, timeout=20)
            otlp_receiver.start()
            await host.call("telemetry", "flood", 300, 0.0, 600)  # records 600-899
            await received.until(lambda r: set(range(600, 900)) <= _numbers(r), timeout=20)
            lost = _dropped(export, "export_failed")
    assert max(stalls) < MAX_STALL, max(stalls)
    numbers = _numbers(otlp_receiver.received)
    # Every record of the outage either arrived (a retry got it through) or was counted lost.
    assert len(numbers & set(range(300, 600))) + lost >= 300, (len(numbers), lost)
    assert lost > 0


@pytest.mark.slow
@pytest.mark.parametrize("request_timeout", [1.0, 60.0])
async def test_endpoint_that_accepts_and_never_answers(
    tmp_path: Path, request_timeout: float
) -> None:
    """Also with the export thread held for a minute by one request: the first record the
    full queue drops is reported at once, from the thread that dropped it."""
    limits = OutboxLimits(interval=0.05, report_interval=0.5, max_records=400, batch_records=100)
    with (
        _silent_listener() as port,
        watching("isoplug.otel") as reports,
        exporting(
            endpoint=f"http://127.0.0.1:{port}",
            metrics=False,
            timeout=request_timeout,
            limits=limits,
        ) as export,
    ):
        async with running(tmp_path, "telemetry") as (host, _):
            stalls, _ = await _stalls_during(host.call("telemetry", "flood", 3000))
            await reports.wait_for("isoplug.otel", "the export queue was full", 10)
        began = time.perf_counter()
        export.shutdown(timeout=0.5)
        shutdown_took = time.perf_counter() - began
    assert max(stalls) < MAX_STALL, max(stalls)
    # Bounded: what waited in the outbox at shutdown is at most its 400 records (INFO may
    # fill 80 % of it), and what the abandoned export thread held at most what it took at
    # once, the outbox's 400 (one batch of 100 in the request, the rest waiting their turn:
    # a loaded machine left 510 in all); the batches the exporter took and lost to the silent
    # endpoint before are counted as failed, however many it managed to take (that depends
    # on the machine's pace).
    assert _dropped(export, "shutdown") <= 400 + 400
    assert _dropped(export, "queue_full") > 0
    assert shutdown_took < 1.5
    stats = export.stats()
    assert stats.exported.get("telemetry", 0) == 0
    assert sum(stats.dropped["telemetry"].values()) == 3000


@pytest.mark.parametrize(("protocol", "status"), [("http/protobuf", 500), ("grpc", 400)])
async def test_endpoint_that_answers_errors(tmp_path: Path, protocol: str, status: int) -> None:
    receiver = OtlpReceiver(tmp_path / "refusing", fail_status=status)
    receiver.directory.mkdir()
    with (
        receiver,
        watching("isoplug.otel") as reports,
        exporting(
            endpoint=endpoint_of(receiver, protocol), protocol=protocol, metrics=False, timeout=2.0
        ) as export,
    ):
        async with running(tmp_path, "telemetry") as (host, _):
            stalls, _ = await _stalls_during(host.call("telemetry", "flood", 400))
            await reports.wait_until(lambda: _dropped(export, "export_failed") >= 400 or None)
            report = await reports.wait_for("isoplug.otel", "OpenTelemetry export dropped")
    assert max(stalls) < MAX_STALL, max(stalls)
    assert _dropped(export, "export_failed") == 400
    if protocol == "http/protobuf":
        assert "HTTP 500" in report.getMessage()
    # Rate limited: the first report at once, then at most one summary per report interval.
    drop_reports = [r for r in reports.records if "export dropped" in r.getMessage()]
    assert len(drop_reports) <= 3


#: Asked for at 100,000 a second: the host's replay and export take the CPU the plugin would
#: need, so the plugin gets through about 10,000 a second on 2 cores (the whole test then takes
#: about 5 s; 100,000 records took 17 s).
FLOOD_RECORDS = 30_000


@pytest.mark.slow
async def test_a_plugin_flooding_100000_records_a_second(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    with exporting(endpoint=otlp_receiver.http_endpoint, metrics=False, limits=QUICK) as export:
        async with running(tmp_path, "telemetry") as (host, _):

            def accounted() -> bool:
                # Every record the plugin logged reached the host or was counted lost.
                log = host.log_metrics("telemetry")
                return log.received + sum(log.dropped.values()) >= FLOOD_RECORDS

            async def flood_and_replay() -> float:
                # No call timeout: the runner, at nice 19, may get little CPU on a loaded
                # machine; what this checks is the host's loop and the accounting.
                took: float = await host.call_with(
                    "telemetry", "flood", args=(FLOOD_RECORDS, 100_000.0), timeout=None
                )
                while not accounted():
                    await asyncio.sleep(0.01)
                return took

            stalls, took = await _stalls_during(flood_and_replay())
        # The host closed: every record it received is replayed, and so handed to the export.
        replayed = host.log_metrics("telemetry").replayed_levels.get(logging.INFO, 0)

        def exported(r: Received) -> bool:
            dropped = sum(export.stats().dropped.get("telemetry", {}).values())
            return export.flush(0.05) and len(_numbers(r)) + dropped >= replayed

        await otlp_receiver.received.until(exported, timeout=60)
    stalls.sort()
    p99 = stalls[int(len(stalls) * 0.99)]
    # Small: the loop gets the GIL at least every switch interval while the replay and export
    # threads work (a loop that waited on them would stall for seconds). Under a second, not
    # half: one stall of 0.53 s (p99 38 ms) came on a VM four times slower than usual.
    # The p99 bound says the same at a quarter of a second: a fresh-clone run measured 0.11 s
    # against an earlier 0.1 s bound, on an idle VM.
    assert max(stalls) < 1.0, (p99, max(stalls))
    assert p99 < 0.25, (p99, max(stalls))
    assert took < 20
    assert replayed > 20_000, replayed
    numbers = _numbers(otlp_receiver.received)
    dropped = sum(export.stats().dropped.get("telemetry", {}).values())
    assert len(numbers) + dropped == replayed, (len(numbers), dropped, replayed)


async def test_shutdown_shares_one_deadline_and_reports_the_final_count(tmp_path: Path) -> None:
    """A collector that never answers: the logs' close and the metrics' last export share the
    shutdown's timeout (not one each), and the one warning of what the shutdown dropped gives
    the final count, which the abandoned export does not change when it ends later."""
    import isoplug.otel
    from isoplug.testing import eventually

    with _silent_listener() as port, watching("isoplug.otel") as reports:
        export = isoplug.otel.export(
            endpoint=f"http://127.0.0.1:{port}", timeout=3.0, limits=QUICK, metrics_interval=60
        )
        try:
            async with running(tmp_path, "telemetry") as (host, _):
                await host.call("telemetry", "flood", 2000)
                await eventually(
                    lambda: (
                        host.log_metrics("telemetry").replayed_levels.get(logging.INFO, 0) >= 2000
                    )
                )
        finally:
            began = time.perf_counter()
            await asyncio.to_thread(export.shutdown, 1.5)
            took = time.perf_counter() - began
        assert export.log_export is not None
        thread = export.log_export._thread
        at_shutdown = export.stats()
        (said,) = [r for r in reports.records if "exporter closed" in r.getMessage()]
        # The abandoned request ends with the exporter's timeout (3 s): it changes no count.
        await eventually(lambda: not thread.is_alive())
    shutdown_drops = sum(r.get("shutdown", 0) for r in at_shutdown.dropped.values())
    # All 2,000 but those of an export that timed out before the shutdown (the collector never
    # answers: a loaded machine reached that 3 s timeout once, 3 records dropped so).
    assert at_shutdown.dropped["telemetry"].get("shutdown", 0) > 0, at_shutdown.dropped
    assert f"dropped {shutdown_drops:,} log records" in said.getMessage()
    assert export.stats() == at_shutdown
    assert sum(at_shutdown.dropped["telemetry"].values()) == 2000
    assert took < 2.6, took  # one deadline: 1.5 s, not 1.5 s for logs and again for metrics


def _isoplugs_filters(logger: str) -> list[object]:
    filters = logging.getLogger(logger).filters
    return [f for f in filters if type(f).__module__.startswith("isoplug.")]


async def test_the_sdks_messages_are_named_and_throttled(tmp_path: Path) -> None:
    """The SDK's exporters log a warning per retry: they go out on ``isoplug.otel.sdk``,
    named, each kind once and then summed up, never as a record of the SDK's own logger."""
    endpoint = f"http://127.0.0.1:{_free_port()}"
    with (
        watching() as everything,
        exporting(endpoint=endpoint, metrics=False, timeout=2.0) as export,
    ):
        async with running(tmp_path, "telemetry") as (host, _):
            for start in range(0, 600, 100):  # several batches, each retried
                await host.call("telemetry", "flood", 100, 0.0, start)
                export.flush(0.01)
            await everything.wait_until(lambda: _dropped(export, "export_failed") >= 600 or None)
        assert all(_isoplugs_filters(name) for name in SDK_LOGGERS)
    # The shutdown detached it: the SDK's loggers are as the application left them.
    assert not any(_isoplugs_filters(name) for name in SDK_LOGGERS)
    raw = [r for r in everything.records if r.name.startswith("opentelemetry.")]
    assert not raw, [r.getMessage() for r in raw]
    named = [r.getMessage() for r in everything.records if r.name == "isoplug.otel.sdk"]
    retries = [m for m in named if "Transient error" in m and "more like this" not in m]
    assert len(retries) == 1, named
    assert retries[0].startswith(
        "OpenTelemetry SDK (exporter.otlp.proto.http._log_exporter): Transient error"
    )
    assert any("more like this in the last" in m for m in named), named
