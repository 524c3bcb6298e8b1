"""Exporting every plugin record to an OTLP collector: what it costs the host, how fast it goes.

A ``Host`` runs one plugin that logs ``log.info("order %s paid by %s", n, "ann",
extra={"n": n, "amount": 12.5})`` from a worker thread; an OTLP receiver runs in a process of
its own (``isoplug.testing.otlp``, counting only, so that it is never the bottleneck) and takes
OTLP/HTTP. Three ways, interleaved round by round:

- ``off``: no export (the host's replay alone);
- ``isoplug``: ``isoplug.otel.export()``, records encoded from the replayed record's fields
  straight into OTLP bytes, sent by the SDK's OTLP/HTTP exporter;
- ``sdk``: what a user would otherwise pick, the OpenTelemetry SDK's ``LoggingHandler`` with a
  ``BatchLogRecordProcessor`` and the same OTLP/HTTP exporter, on the same ``plugin`` logger
  (its queue sized to hold the whole flood, so that it drops nothing).

It prints:

1. host CPU per record (all of the host's threads: replay, export, event loop; the receiver is
   another process), for 30,000 records sent at full speed until the collector has them all;
   export on against off, and the extra CPU per record of ``isoplug`` against ``sdk``;
2. the host's loop lag (how late a 1 ms sleep wakes, p50 / p99 / max) while a flood of
   100,000 records is replayed and exported;
3. the highest sustained rate, of those tried, at which every record reaches the collector
   and nothing is dropped anywhere (plugin, host, export), for ``isoplug`` and ``sdk``.

The host's rate limit is off (it would cap every rate at 20,000/s). Run:
``python benchmarks/otel_export.py [--quick] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from _helpers import loop_stalls_during, percentile

import isoplug.otel
from isoplug import Host, SupervisorConfig
from isoplug.logs import ReplayLimits
from isoplug.otel import OutboxLimits
from isoplug.testing.otlp import OtlpReceiver

PLUGIN_TOML = 'id = "orders"\nversion = "1.0"\nentry = "orders_plugin:Orders"\n'
PLUGIN_CODE = """\
import logging
import time

import isoplug

log = logging.getLogger("orders")


class Orders(isoplug.Plugin):
    @isoplug.method
    def flood(self, count: int, rate: float = 0.0) -> float:
        began = time.perf_counter()
        for n in range(count):
            if rate and n % 50 == 0:
                ahead = began + n / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            log.info("order %s paid by %s", n, "ann", extra={"n": n, "amount": 12.5})
        return time.perf_counter() - began
"""
WAYS = ("off", "isoplug", "sdk")


@contextlib.contextmanager
def exporting(way: str, receiver: OtlpReceiver, queue: int) -> Iterator[Callable[[], int]]:
    """Export the way named, for the block; yields a function that flushes it and returns
    the records it dropped."""
    if way == "off":
        yield lambda: 0
        return
    if way == "isoplug":
        limits = OutboxLimits(max_records=max(queue, 50_000))
        running = isoplug.otel.export(
            endpoint=receiver.http_endpoint, metrics=False, join=False, limits=limits
        )

        def flush() -> int:
            running.flush(60)
            return running.stats().total_dropped()

        try:
            yield flush
        finally:
            running.shutdown()
        return
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider()
    provider.add_log_record_processor(
        BatchLogRecordProcessor(
            OTLPLogExporter(endpoint=f"{receiver.http_endpoint}/v1/logs"), max_queue_size=queue
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(logger_provider=provider)
    logging.getLogger("plugin").addHandler(handler)
    try:
        yield lambda: (provider.force_flush(60_000), 0)[1]
    finally:
        logging.getLogger("plugin").removeHandler(handler)
        provider.shutdown()


def settled_count(host: Host) -> int:
    """Records the host has accounted for: received or reported dropped by the plugin."""
    log = host.log_metrics("orders")
    return log.received + sum(log.dropped.values())


async def replayed(host: Host, target: int) -> None:
    """Wait until the host accounted for ``target`` records and replayed all it received."""
    while True:
        log = host.log_metrics("orders")
        if log.received + sum(log.dropped.values()) >= target and log.replayed >= log.received:
            return
        await asyncio.sleep(0.005)


async def cpu_round(host: Host, receiver: OtlpReceiver, way: str, count: int) -> float:
    """Host CPU seconds per record, for ``count`` records until the collector has them."""
    received = receiver.received.log_count()
    before = settled_count(host)
    replayed_before = host.log_metrics("orders").replayed
    with exporting(way, receiver, count) as flush:
        began = time.process_time()
        await host.call("orders", "flood", count)
        await replayed(host, before + count)
        dropped = await asyncio.to_thread(flush)
        cpu = time.process_time() - began
    handled = host.log_metrics("orders").replayed - replayed_before
    if way != "off":
        got = receiver.received.log_count() - received
        assert got + dropped >= handled, f"{way}: {got} received, {dropped} dropped of {handled}"
    return cpu / handled


async def lag_round(host: Host, receiver: OtlpReceiver, way: str, count: int) -> list[float]:
    before = settled_count(host)
    with exporting(way, receiver, count) as flush:

        async def flood() -> None:
            await host.call("orders", "flood", count)
            await replayed(host, before + count)
            await asyncio.to_thread(flush)

        stalls, _ = await loop_stalls_during(flood())
    return stalls


async def sustained(
    host: Host, receiver: OtlpReceiver, way: str, rates: list[int], seconds: float
) -> tuple[int, dict[int, str]]:
    """The highest of ``rates`` at which everything arrived and nothing was dropped."""
    best = 0
    outcome: dict[int, str] = {}
    for rate in rates:
        count = int(rate * seconds)
        received = receiver.received.log_count()
        before = host.log_metrics("orders")
        settled_count_before = settled_count(host)
        # The SDK's default queue (2,048): what a user gets without tuning.
        with exporting(way, receiver, 2048 if way == "sdk" else count) as flush:
            took = await host.call("orders", "flood", count, float(rate))
            await replayed(host, settled_count_before + count)
            dropped = await asyncio.to_thread(flush)
        after = host.log_metrics("orders")
        host_dropped = sum(after.dropped.values()) - sum(before.dropped.values())
        got = receiver.received.log_count() - received
        achieved = count / took
        # The collector may get a few more: the host's reports about the plugin export too.
        whole = got >= count and not dropped and not host_dropped
        outcome[rate] = (
            f"{'all' if whole else 'LOST'}: {got:,} records at the collector for {count:,} "
            f"sent at {achieved:,.0f}/s; dropped: {host_dropped:,} before the host's logging, "
            f"{dropped:,} by the export"
        )
        if not whole:
            break
        best = int(min(rate, achieved))
        if achieved < 0.9 * rate:
            outcome[rate] += " (the plugin's own ceiling: it cannot log faster here)"
            break
    return best, outcome


def stats_line(stalls: list[float]) -> str:
    return (
        f"p50 {percentile(stalls, 0.5) * 1000:5.2f}  p99 {percentile(stalls, 0.99) * 1000:6.2f}"
        f"  max {max(stalls) * 1000:6.1f} ms"
    )


async def main(rounds: int, quick: bool) -> None:
    cpu_count = 10_000 if quick else 30_000
    lag_count = 30_000 if quick else 100_000
    rates = [5_000, 10_000, 20_000, 40_000, 60_000, 80_000]
    with tempfile.TemporaryDirectory() as tmp:
        plugins = Path(tmp) / "plugins"
        (plugins / "orders").mkdir(parents=True)
        (plugins / "orders" / "plugin.toml").write_text(PLUGIN_TOML)
        (plugins / "orders" / "orders_plugin.py").write_text(PLUGIN_CODE)
        (Path(tmp) / "receiver").mkdir()
        logging.getLogger("plugin").setLevel(logging.INFO)
        config = SupervisorConfig(health_timeout=5.0, call_timeout=120.0)
        limits = ReplayLimits(rate=None)
        with OtlpReceiver(Path(tmp) / "receiver", count_only=True) as receiver:
            async with Host(plugins, config=config, log_limits=limits) as host:
                await host.wait_ready(30)
                await host.call("orders", "flood", 2000)  # warm up
                await replayed(host, 2000)
                cpu: dict[str, list[float]] = {way: [] for way in WAYS}
                lag: dict[str, list[float]] = {way: [] for way in WAYS}
                for round_number in range(rounds):
                    for way in WAYS:
                        cpu[way].append(await cpu_round(host, receiver, way, cpu_count))
                    for way in WAYS:
                        lag[way] += await lag_round(host, receiver, way, lag_count)
                    print(f"round {round_number + 1}/{rounds} done", file=sys.stderr)
                sustained_rates = {
                    way: await sustained(host, receiver, way, rates, 1.0 if quick else 2.0)
                    for way in ("isoplug", "sdk")
                }
    per = {way: statistics.median(values) * 1e6 for way, values in cpu.items()}
    print(f"\n1. host CPU per record, {cpu_count:,} records at full speed, median of {rounds}:")
    for way in WAYS:
        print(f"   {way:8} {per[way]:7.1f} us   ({per[way] / per['off']:.2f}x off)")
    extra_isoplug = per["isoplug"] - per["off"]
    extra_sdk = per["sdk"] - per["off"]
    print(
        f"   export's own cost per record: isoplug {extra_isoplug:.1f} us, "
        f"SDK LoggingHandler + BatchLogRecordProcessor {extra_sdk:.1f} us: "
        f"{extra_sdk / extra_isoplug:.1f}x less with isoplug"
    )
    print(f"\n2. host loop lag while {lag_count:,} records are replayed and exported:")
    for way in WAYS:
        print(f"   {way:8} {stats_line(lag[way])}")
    print("\n3. sustained rate reaching the collector with nothing dropped:")
    for way, (best, outcome) in sustained_rates.items():
        print(f"   {way:8} {best:,}/s")
        for rate, text in outcome.items():
            print(f"            {rate:>6,}/s: {text}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer records, one round")
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(1 if arguments.quick else arguments.rounds, arguments.quick))
