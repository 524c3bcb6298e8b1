"""The dashboard under a flood: the host's event-loop lag and ``host.call`` latency while one
plugin logs as fast as it can, with the dashboard (``isoplug run --tui``, headless through
Textual's ``run_test``) and without it.

The dashboard shares the host's event loop, so whatever it renders delays the host's calls
and supervision. Both modes run in the same process, alternating round by round, with the
same :class:`~isoplug.tui.log_feed.LogFeed` on the root logger (what the log threads pay is
the same): the ratio is what the view adds. A probe sleeps 50 ms (its overshoot is the loop's
lag), then calls a trivial method of a second plugin, again and again.

Run: ``python benchmarks/tui_flood_lag.py [--rounds N] [--seconds S]`` (needs isoplug[tui]).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

from _helpers import percentile

from isoplug import Host, SupervisorConfig
from isoplug.tui import PluginDashboard, feeding
from isoplug.tui.log_feed import LogFeed

FLOOD = """
import logging, threading, isoplug

class Flood(isoplug.Plugin):
    async def setup(self, ctx):
        def run():
            n = 0
            while True:
                n += 1
                ctx.logger.info("flood line %d", n)
        threading.Thread(target=run, daemon=True).start()
"""
PING = """
import isoplug

class Ping(isoplug.Plugin):
    @isoplug.method
    async def ping(self):
        return 1
"""


def write_plugins(root: Path) -> Path:
    for name, code in (("flood", FLOOD), ("ping", PING)):
        folder = root / "plugins" / name
        folder.mkdir(parents=True)
        cls = name.capitalize()
        (folder / "plugin.toml").write_text(
            f'id = "{name}"\nversion = "1"\nentry = "{name}_plugin:{cls}"\n'
        )
        (folder / f"{name}_plugin.py").write_text(code)
    return root / "plugins"


async def probe(host: Host, seconds: float) -> tuple[list[float], list[float]]:
    lags: list[float] = []
    calls: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        began = time.monotonic()
        await asyncio.sleep(0.05)
        lags.append(time.monotonic() - began - 0.05)
        began = time.monotonic()
        await host.call("ping", "ping")
        calls.append(time.monotonic() - began)
    return lags, calls


async def measure(rounds: int, seconds: float) -> dict[str, tuple[list[float], list[float]]]:
    results: dict[str, tuple[list[float], list[float]]] = {"plain": ([], []), "tui": ([], [])}
    with tempfile.TemporaryDirectory() as scratch, feeding(LogFeed()) as feed:
        async with Host(write_plugins(Path(scratch)), config=SupervisorConfig()) as host:
            await host.wait_ready(30)
            for _ in range(rounds):
                lags, calls = await probe(host, seconds)
                results["plain"][0].extend(lags)
                results["plain"][1].extend(calls)
                app = PluginDashboard(host, feed)
                async with app.run_test(size=(200, 50)) as pilot:
                    await pilot.pause(0.5)
                    lags, calls = await probe(host, seconds)
                    results["tui"][0].extend(lags)
                    results["tui"][1].extend(calls)
                    received = host.log_metrics("flood").received
    print(f"(the flooding plugin's records received by the host in all: {received})")
    return results


def main() -> None:
    # As `isoplug run` sets it: the records reach the feed (an unconfigured root drops INFO).
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("plugin").setLevel(logging.DEBUG)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    arguments = parser.parse_args()
    results = asyncio.run(measure(arguments.rounds, arguments.seconds))
    print(f"{'mode':<8} {'lag p50':>9} {'lag p99':>9} {'call p50':>9} {'call p99':>9} {'calls':>6}")
    figures = {}
    for mode, (lags, calls) in results.items():
        lag, call = statistics.median(lags), statistics.median(calls)
        figures[mode] = (lag, call)
        print(
            f"{mode:<8} {lag * 1e3:7.1f}ms {percentile(lags, 0.99) * 1e3:7.1f}ms"
            f" {call * 1e3:7.2f}ms {percentile(calls, 0.99) * 1e3:7.1f}ms {len(calls):>6}"
        )
    (plain_lag, plain_call), (tui_lag, tui_call) = figures["plain"], figures["tui"]
    print(
        f"with/without the dashboard: call p50 {tui_call / plain_call:.1f}x, loop lag p50 "
        f"{tui_lag * 1e3:.1f} ms vs {plain_lag * 1e3:.1f} ms; more calls in the same time is better"
    )


if __name__ == "__main__":
    main()
