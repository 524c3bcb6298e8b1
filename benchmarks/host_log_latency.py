"""Delivery latency of a plugin's records through a ``Host``, next to standalone forwarding.

A plugin's record reaches the host application's handlers through the runner's forwarding
handler and the host's log bridge (a thread per runner log connection, see
``isoplug.host.logbridge``). The same pipeline without the runtime is ``forward_logs()`` in a
child process and ``with LogReceiver()`` in the parent, which ``logs_vs_peers.py`` compares with
the stdlib's and loguru's ways. This benchmark runs both at 2,000 records/s, interleaved round
by round, and prints the latency (handled time - ``record.created``) at p50 and p99 with the
ratio: what the plugin runtime adds around the pipeline, which should be nothing.

Second, what a flood does to the host's event loop: while 100,000 records arrive at full speed,
how late a task that sleeps 1 ms on the loop wakes. Through the ``Host`` they are replayed by a
thread per runner log connection; ``async with LogReceiver()`` replays on the loop itself, in
slices. Both share the loop with the flood in their own way (the GIL, or the slices).

Run: ``python benchmarks/host_log_latency.py [--quick] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _helpers import (
    PACER_PLUGIN_CODE,
    PACER_PLUGIN_TOML,
    loop_stalls_during,
    machine_line,
    percentile,
)

from isoplug import Host
from isoplug.logs import LogReceiver, ReplayLimits

RATE = 2_000.0
WARMUP = 20
#: Records of the flood. The host's rate limit is off (below): its default keeps part of
#: its burst for warnings, so a 100,000-record INFO flood lost about 12 % to it, and the
#: flood never completed.
FLOOD = 100_000
CHILD_SCRIPT = Path(__file__).resolve().parent / "_logs_child.py"


class LatencySink(logging.Handler):
    """Notes how long each record took from ``created`` to here, after the warm-up ones."""

    def __init__(self) -> None:
        super().__init__()
        self.latencies: list[float] = []
        self.skip = 0

    def expect(self, skip: int) -> None:
        self.latencies = []
        self.skip = skip

    def emit(self, record: logging.LogRecord) -> None:
        now = time.time()
        if getattr(record, "isoplug_report", False):
            return
        if self.skip:
            self.skip -= 1
            return
        self.latencies.append(now - record.created)


def sink_on(logger_name: str) -> LatencySink:
    sink = LatencySink()
    logger = logging.getLogger(logger_name)
    logger.addHandler(sink)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return sink


async def wait_for_count(sink: LatencySink, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(sink.latencies) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(sink.latencies)} of {count} records arrived")
        await asyncio.sleep(0.05)


async def through_host(host: Host, sink: LatencySink, count: int) -> list[float]:
    sink.expect(WARMUP)
    await host.call("pacer", "paced", count=WARMUP, rate=RATE)
    await host.call_with(
        "pacer", "paced", kwargs={"count": count, "rate": RATE}, timeout=count / RATE + 30
    )
    await wait_for_count(sink, count)
    return sink.latencies


async def run_forwarding_child(receiver: LogReceiver, mode: str, count: int, rate: float) -> None:
    """Run ``_logs_child.py`` (``forward_logs()`` to ``receiver``) in ``mode``; wait for it."""
    with tempfile.TemporaryDirectory(prefix="isoplug-host-bench-") as directory:
        result = os.path.join(directory, "result.json")
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD_SCRIPT),
            "isoplug",
            *[mode, str(count), str(rate), str(WARMUP), result],
            env={**os.environ, **receiver.child_env()},
            stdout=subprocess.DEVNULL,
        )
        if await child.wait() != 0:
            raise SystemExit(f"the {mode} child failed with code {child.returncode}")


async def standalone(receiver: LogReceiver, sink: LatencySink, count: int) -> list[float]:
    sink.expect(WARMUP)
    await run_forwarding_child(receiver, "paced", count, RATE)
    await wait_for_count(sink, count)
    return sink.latencies


async def flood_through_host(host: Host, sink: LatencySink) -> None:
    sink.expect(0)
    await host.call_with("pacer", "paced", kwargs={"count": FLOOD, "rate": 0.0}, timeout=120)
    await wait_for_count(sink, FLOOD, timeout=120)


async def flood_into_async_receiver(sink: LatencySink) -> None:
    sink.expect(WARMUP)
    async with LogReceiver(prefix="flood") as receiver:
        await run_forwarding_child(receiver, "burst", FLOOD, 0.0)
        await wait_for_count(sink, FLOOD, timeout=120)


def row(name: str, p50: list[float], p99: list[float]) -> str:
    def cell(values: list[float]) -> str:
        return (
            f"{statistics.median(values) * 1e3:.3f} "
            f"({min(values) * 1e3:.3f}..{max(values) * 1e3:.3f})"
        )

    return f"   {name:28s}{cell(p50):>26s}{cell(p99):>26s}"


async def main(rounds: int, count: int) -> None:
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    host_sink = sink_on("plugin.pacer")
    standalone_sink = sink_on("standalone")
    flood_sink = sink_on("flood")
    results: dict[str, tuple[list[float], list[float]]] = {
        "through a Host (plugin)": ([], []),
        "standalone LogReceiver": ([], []),
    }
    stalls: dict[str, list[float]] = {"Host (a thread per runner)": [], "async LogReceiver": []}
    with tempfile.TemporaryDirectory(prefix="isoplug-host-bench-plugins-") as plugins:
        plugin_dir = Path(plugins) / "pacer"
        plugin_dir.mkdir()
        (plugin_dir / "plugin.toml").write_text(PACER_PLUGIN_TOML)
        (plugin_dir / "pacer_plugin.py").write_text(PACER_PLUGIN_CODE)
        receiver = LogReceiver(prefix="standalone")
        await asyncio.to_thread(receiver.open)
        try:
            # No rate limit, as a standalone LogReceiver has none: the latency and the loop are
            # measured, not the limit (stdio_flood.py does the same).
            async with Host(plugins, log_limits=ReplayLimits(rate=None)) as host:
                await host.wait_ready(60)
                for number in range(rounds):
                    runs = [
                        ("through a Host (plugin)", through_host(host, host_sink, count)),
                        ("standalone LogReceiver", standalone(receiver, standalone_sink, count)),
                    ]
                    if number % 2:
                        runs.reverse()  # neither always runs first after a pause
                    for name, run in runs:
                        latencies = await run
                        results[name][0].append(percentile(latencies, 0.50))
                        results[name][1].append(percentile(latencies, 0.99))
                    floods = [
                        ("Host (a thread per runner)", flood_through_host(host, host_sink)),
                        ("async LogReceiver", flood_into_async_receiver(flood_sink)),
                    ]
                    for name, flood in floods:
                        stalls[name].extend((await loop_stalls_during(flood))[0])
                    print(f"round {number + 1} of {rounds} done", file=sys.stderr)
        finally:
            await asyncio.to_thread(receiver.close)
    print(machine_line(f"{count:,} records at {RATE:,.0f}/s per run, {rounds} rounds"))
    print("delivery latency (handled - created), ms: median over rounds (min..max)")
    print(f"   {'':28s}{'p50':>26s}{'p99':>26s}")
    for name, (p50, p99) in results.items():
        print(row(name, p50, p99))
    hosted, alone = results["through a Host (plugin)"], results["standalone LogReceiver"]
    p50_ratio = statistics.median(hosted[0]) / statistics.median(alone[0])
    p99_ratio = statistics.median(hosted[1]) / statistics.median(alone[1])
    print(f"   host / standalone: p50 x{p50_ratio:.2f}, p99 x{p99_ratio:.2f}")
    print()
    print(
        f"the event loop while {FLOOD:,} records arrive at full speed: how late a 1 ms sleep "
        "wakes, ms (all rounds' samples)"
    )
    print(f"   {'':28s}{'p50':>10s}{'p99':>10s}{'max':>10s}")
    for name, samples in stalls.items():
        print(
            f"   {name:28s}{percentile(samples, 0.50) * 1e3:10.2f}"
            f"{percentile(samples, 0.99) * 1e3:10.2f}{max(samples) * 1e3:10.1f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer records and rounds")
    parser.add_argument("--rounds", type=int, help="rounds to run (default 5; quick 2)")
    arguments = parser.parse_args()
    quick: bool = arguments.quick
    asyncio.run(main(arguments.rounds or (2 if quick else 5), 1_000 if quick else 6_000))
