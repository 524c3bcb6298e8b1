"""isoplug's metrics per plugin, over OTLP and for Prometheus: what the collector decodes
matches what happened (calls and their errors, exits by kind, restarts, records by level and
drop reason, stdout lines, the runner's memory and CPU, ready state)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from isoplug import Host
from isoplug.errors import ConnectionBroken, MethodNotFound, RemoteError
from isoplug.host import PluginState, observers
from isoplug.host.status import ExitAccount
from isoplug.logs import ReplayLimits
from isoplug.otel.metrics import HostMetrics, _proc_stat, exit_kind
from isoplug.testing.otlp import MetricPoint, OtlpReceiver, Received
from tests import otel_helpers
from tests.otel_helpers import endpoint_of, exporting
from tests.plugins_fixtures import FAST, plugins_dir, running

# One receiver process for the module; each test reads only what arrived during it.
module_otlp_receiver = otel_helpers.module_otlp_receiver
otlp_receiver = otel_helpers.shared_otlp_receiver
PLUGIN = "isoplug.plugin.id"


def _point(received: Received, name: str, **attributes: object) -> MetricPoint | None:
    return received.latest(name, **{key.replace(".", "__"): v for key, v in attributes.items()})


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
async def test_metrics_per_plugin_reach_the_collector(
    tmp_path: Path, otlp_receiver: OtlpReceiver, protocol: str
) -> None:
    endpoint = endpoint_of(otlp_receiver, protocol)
    limits = ReplayLimits(rate=200, burst=200)
    with exporting(endpoint=endpoint, protocol=protocol, logs=False, metrics_interval=0.2) as on:
        async with running(tmp_path, "telemetry", log_limits=limits) as (host, _):
            for _ in range(3):
                await host.call("telemetry", "pid")
            with pytest.raises(RemoteError):
                await host.call("telemetry", "fail", "no")
            # Refused by the host, which knows the plugin's methods: counted all the same.
            with pytest.raises(MethodNotFound, match=r"'telemetry.nosuch' was not sent: "):
                await host.call("telemetry", "nosuch")
            with pytest.raises(MethodNotFound) as refused:
                await host.call_with("telemetry", "nosuch_either")
            assert "remote side" not in str(refused.value) and not refused.value.asked
            await host.call("telemetry", "print_lines", "m")
            await host.call("telemetry", "log_levels", "m")
            await host.call("telemetry", "flood", 2000)
            with pytest.raises(ConnectionBroken):
                await host.call("telemetry", "crash")
            await host.wait_for("telemetry", lambda i: i.state is PluginState.READY, 20)
            await asyncio.to_thread(on.flush)
            received = otlp_receiver.received

            def settled(r: Received) -> bool:
                exits = _point(r, "isoplug.runner.exits", **{"isoplug.exit.kind": "crash"})
                ready = _point(r, "isoplug.plugin.ready", **{PLUGIN: "telemetry"})
                return bool(exits and exits.value == 1 and ready and ready.value == 1)

            await received.until(settled)
        # The export's last collection, at its shutdown, gives the closed host's final counts.
        log = host.log_metrics("telemetry")
    ready = _point(received, "isoplug.plugin.ready", **{PLUGIN: "telemetry"})
    assert ready is not None and ready.value == 0  # stopped with the host
    calls = _point(received, "rpc.client.call.duration", **{"rpc.method": "pid"})
    assert calls is not None and calls.count == 3 and calls.unit == "s"
    assert calls.attributes[PLUGIN] == "telemetry"
    assert calls.attributes["rpc.system.name"] == "isoplug"
    assert calls.sum is not None and 0 < calls.sum < 3 * 15
    failed = _point(received, "rpc.client.call.duration", **{"rpc.method": "fail"})
    assert failed is not None and failed.count == 1
    assert failed.attributes["error.type"] == "RemoteError"
    unknown = _point(received, "rpc.client.call.duration", **{"rpc.method": "_OTHER"})
    assert unknown is not None and unknown.count == 2
    assert unknown.attributes["error.type"] == "MethodNotFound"
    crashed = _point(received, "rpc.client.call.duration", **{"rpc.method": "crash"})
    assert crashed is not None and crashed.attributes["error.type"] == "ConnectionBroken"

    crashes = _point(received, "isoplug.runner.exits", **{"isoplug.exit.kind": "crash"})
    assert crashes is not None and crashes.value == 1 and crashes.attributes[PLUGIN] == "telemetry"
    # The host's close stopped the runner, and the export's last collection said so.
    stops = _point(received, "isoplug.runner.exits", **{"isoplug.exit.kind": "stopped"})
    assert stops is not None and stops.value == 1
    restarts = _point(received, "isoplug.runner.restarts", **{PLUGIN: "telemetry"})
    assert restarts is not None and restarts.value == 1

    stdout = _point(received, "isoplug.log.stream.lines", **{"log.iostream": "stdout"})
    assert stdout is not None and stdout.value == log.streams["stdout"] >= 1
    warnings = _point(received, "isoplug.log.records.replayed", **{"isoplug.log.level": "WARNING"})
    assert warnings is not None and warnings.value == log.replayed_levels[30]
    received_total = _point(received, "isoplug.log.records.received", **{PLUGIN: "telemetry"})
    assert received_total is not None and received_total.value == log.received
    violations = _point(received, "isoplug.log.sequence_violations", **{PLUGIN: "telemetry"})
    assert violations is not None and violations.value == log.sequence_violations == 0
    # The flood of 2,000 INFO records went over the rate limit of 200 records/s.
    rate_limited = _point(
        received,
        "isoplug.log.records.dropped",
        **{"isoplug.log.drop.reason": "rate_limited", "isoplug.log.level": "INFO"},
    )
    assert rate_limited is not None
    assert rate_limited.value == log.dropped_levels["rate_limited"][20] > 1000
    bytes_in = _point(received, "isoplug.log.bytes", **{PLUGIN: "telemetry"})
    assert bytes_in is not None and bytes_in.value == log.bytes > 0

    memory = _point(received, "process.memory.usage", **{PLUGIN: "telemetry"})
    assert memory is not None and memory.value is not None and memory.unit == "By"
    assert memory.value > 5_000_000
    cpu = _point(received, "process.cpu.time", **{"cpu.mode": "user"})
    assert cpu is not None and cpu.value is not None and cpu.unit == "s"
    # The latest point is the restarted runner's: forked from the zygote, it has not
    # necessarily used one clock tick (10 ms) of CPU yet, as a spawned one (its imports) had.
    assert cpu.value >= 0
    assert memory.resource["service.name"]


async def test_prometheus_scrapes_the_same_metrics(tmp_path: Path) -> None:
    with exporting(otlp=False, logs=False, metrics_port=0) as on:
        assert on.metrics_address is not None
        host_address, port = on.metrics_address
        async with running(tmp_path, "telemetry") as (host, waiter):
            await host.call("telemetry", "pid")
            await host.call("telemetry", "print_lines", "m")
            # The lines reach the host's logging (and its counts) on a log thread, a moment
            # after the call returned: scrape once they have.
            await waiter.wait_for("plugin.telemetry.stdout", "m on stdout")
            await waiter.wait_for("plugin.telemetry.stderr", "m on stderr")
            url = f"http://{host_address}:{port}/metrics"
            text = await asyncio.to_thread(_scrape, url)
    lines = text.splitlines()

    def value(prefix: str, *labels: str) -> float:
        for line in lines:
            if line.startswith(prefix + "{") and all(label in line for label in labels):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no {prefix} with {labels} in:\n{text}")

    assert value("isoplug_plugin_ready", 'isoplug_plugin_id="telemetry"') == 1.0
    assert value("rpc_client_call_duration_seconds_count", 'rpc_method="pid"') == 1.0
    assert value("isoplug_log_stream_lines_total", 'log_iostream="stdout"') >= 1.0
    assert value("process_memory_usage_bytes", 'isoplug_plugin_id="telemetry"') > 5_000_000


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        text: str = answer.read().decode()
        return text


def test_exit_kinds() -> None:
    def account(
        returncode: int, reason: str = "", oom: str | None = None, limit: str | None = None
    ) -> ExitAccount:
        return ExitAccount("r", 1, returncode, 1.0, 0, reason, oom_evidence=oom, limit=limit)

    assert exit_kind(account(0, "stopped on request")) == "stopped"
    assert exit_kind(account(-9, "restarted on request")) == "stopped"
    assert exit_kind(account(-9, "killed by the host: no answer to a health check (hung)")) == (
        "hung"
    )
    assert exit_kind(account(3)) == "crash"
    assert exit_kind(account(0)) == "exited"
    assert exit_kind(account(-11)) == "signal"
    assert exit_kind(account(-9)) == "signal"
    assert exit_kind(account(-9, oom="memory.events: oom_kill 1")) == "oom"
    assert exit_kind(account(-9, limit="memory")) == "limit"
    assert exit_kind(account(-24, limit="cpu_seconds")) == "limit"
    assert exit_kind(account(0, limit="recycle_rss")) == "recycled"
    stuck = (
        "recycled by the host: 4 worker threads still run calls that timed out or were cancelled"
    )
    assert exit_kind(account(0, stuck)) == "recycled"
    died = ExitAccount("r", 1, -9, 1.0, 0, "the runner zygote (pid 2) was", zygote_died=True)
    assert exit_kind(died) == "zygote"
    assert exit_kind(account(-9, stuck)) == "recycled"  # it ignored its stop
    # Reasons as accounts give them for runners that ended on their own, or that the host
    # ended for a reason of its own, or hot reload stopped: no hang among them.
    assert exit_kind(account(3, "exited with code 3")) == "crash"
    assert exit_kind(account(-9, "killed by SIGKILL, not sent by the host (sender unknown)")) == (
        "signal"
    )
    assert exit_kind(account(-9, "ended by the host: its supervision failed")) == "stopped"
    assert exit_kind(account(0, "stopped by hot reload (its plugin folder is gone)")) == "stopped"
    assert exit_kind(account(-9, "killed by the host: not ready within 15 s")) == "hung"
    # The runner's words, quoted in the reason, say nothing of the kind.
    forged = 'it exited before reporting ready; its stderr ended with: "not ready within 15 s"'
    assert exit_kind(account(1, forged)) == "crash"
    assert exit_kind(account(-6, f"{forged}; stopped on request")) == "signal"


async def test_a_call_of_a_method_the_plugin_does_not_offer_counts_once(tmp_path: Path) -> None:
    """Refused by the host (a ready plugin) or in the call (one still starting), through
    host.call or host.call_with: each call is one point of rpc.client.call.duration."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = HostMetrics(provider.get_meter("test"), None)
    observers.add_observer(metrics)
    try:
        async with Host(plugins_dir(tmp_path, "echo"), config=FAST) as host:
            # Not ready yet: the call waits for it, then is refused.
            with pytest.raises(MethodNotFound):
                await host.call("echo", "nosuch")
            with pytest.raises(MethodNotFound):
                await host.call_with("echo", "nosuch", timeout=20)
            await host.wait_ready(20)
            with pytest.raises(MethodNotFound):
                await host.call("echo", "nosuch")
            with pytest.raises(MethodNotFound):
                await host.call_with("echo", "nosuch")
    finally:
        observers.remove_observer(metrics)
    data = reader.get_metrics_data()
    assert data is not None
    counts = [
        point.count
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "rpc.client.call.duration"
        for point in metric.data.data_points
        if isinstance(point, HistogramDataPoint)
        and (point.attributes or {}).get("error.type") == "MethodNotFound"
    ]
    provider.shutdown()
    assert counts == [4], counts


def test_a_runner_that_exited_unreaped_gives_no_memory_point() -> None:
    """/proc says 0 bytes resident for a process that exited and is not yet reaped (as a
    runner is for a moment at its exit): no point, rather than a runner holding nothing."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, still a zombie
        assert _proc_stat(child.pid) is None
    finally:
        child.wait()
    alive = _proc_stat(os.getpid())
    assert alive is not None and alive[2] > 0
