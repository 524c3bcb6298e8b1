"""Several runners flooding their stdout at once (fd level): the host loop's lag, against one.

Each runner's fd-level output is read by two host threads (a reader and a replay thread, see
``docs/design.md``). This benchmark floods ``--runners`` plugins at once with ``os.write(1,
...)``, one line per write (as C code or a child process would), and, interleaved round by
round, one runner alone with as many lines as each of them (a runner's backlog holds them
all, as it holds each of the many runners' floods). For each it prints how late a 1 ms
sleep on the host's loop wakes (p99 and max, per round), the lines/s reaching the host's
``logging`` (all runners together) and the lines dropped (counted and reported, never lost
unsaid), with the ratios of the many runners' figures to the one runner's.

Run: ``python benchmarks/stdio_flood_many.py [--runners N] [--rounds N] [--lines N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _helpers import loop_stalls_during, machine_line, percentile
from stdio_flood import PLUGIN_CODE, PLUGIN_TOML, Sink, dropped_between

from isoplug import Host, SupervisorConfig
from isoplug.logs import ReplayLimits


async def flood(host: Host, sink: Sink, plugins: list[str], lines: int) -> tuple[float, int]:
    """``lines`` lines from each of ``plugins`` at once; waits until every line was delivered
    or counted dropped. Returns (lines/s, from the first sent to the last delivered; dropped)."""
    before = {plugin: host.log_metrics(plugin) for plugin in plugins}
    sink.count = 0
    total = lines * len(plugins)
    began = time.perf_counter()
    await asyncio.gather(
        *(
            host.call_with(plugin, "flood", kwargs={"count": lines, "how": "fd"}, timeout=300)
            for plugin in plugins
        )
    )
    deadline = time.monotonic() + 300
    while True:
        dropped = sum(
            dropped_between(before[plugin], host.log_metrics(plugin)) for plugin in plugins
        )
        if sink.count + dropped >= total or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    return total / (max(sink.last, began) - began), dropped


async def main(runners: int, rounds: int, lines: int) -> None:
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    sink = Sink()
    plugin_logger = logging.getLogger("plugin")
    plugin_logger.addHandler(sink)
    plugin_logger.setLevel(logging.DEBUG)
    plugin_logger.propagate = False
    names = [f"printer{index}" for index in range(runners)]
    ways = {"many": names, "one": names[:1]}
    results: dict[str, list[tuple[float, float, float, int]]] = {way: [] for way in ways}
    config = SupervisorConfig(health_interval=0.5, health_timeout=1.0)
    with tempfile.TemporaryDirectory(prefix="isoplug-stdio-many-") as plugins:
        for name in names:
            plugin_dir = Path(plugins) / name
            plugin_dir.mkdir()
            (plugin_dir / "plugin.toml").write_text(PLUGIN_TOML.format(id=name, stdio="records"))
            (plugin_dir / "printer_plugin.py").write_text(PLUGIN_CODE)
        # No rate limit: it would measure the limit, not the host's threads (stdio_flood.py).
        async with Host(plugins, config=config, log_limits=ReplayLimits(rate=None)) as host:
            await host.wait_ready(60)
            for number in range(rounds):
                order = list(ways) if number % 2 == 0 else list(reversed(ways))
                for way in order:
                    chosen = ways[way]
                    stalls, (rate, dropped) = await loop_stalls_during(
                        flood(host, sink, chosen, lines)
                    )
                    results[way].append((percentile(stalls, 0.99), max(stalls), rate, dropped))
                print(f"round {number + 1} of {rounds} done", file=sys.stderr)
    print(
        machine_line(
            f"{runners} runners x {lines:,} lines at once, against one runner alone; "
            f"{rounds} rounds, interleaved"
        )
    )
    print("host loop lag (1 ms sleeps), ms, each round p99 / max; lines/s to logging; dropped")
    medians: dict[str, tuple[float, float, float]] = {}
    for way, rows in results.items():
        p99s, maxes, rates, drops = zip(*rows, strict=True)
        medians[way] = (statistics.median(p99s), statistics.median(maxes), statistics.median(rates))
        per_round = ", ".join(
            f"{p * 1e3:.1f} / {m * 1e3:.1f}" for p, m in zip(p99s, maxes, strict=True)
        )
        label = f"{runners} runners" if way == "many" else "1 runner"
        print(
            f"   {label:10s} {per_round}; median p99 {medians[way][0] * 1e3:.1f}, max "
            f"{medians[way][1] * 1e3:.1f}; {medians[way][2]:,.0f} lines/s; dropped {sum(drops):,}"
        )
    many, one = medians["many"], medians["one"]
    print(
        f"   {runners} runners / 1 runner: p99 x{many[0] / one[0]:.2f}, "
        f"max x{many[1] / one[1]:.2f}, lines/s x{many[2] / one[2]:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", type=int, default=3, help="runners flooding at once")
    parser.add_argument("--rounds", type=int, default=3, help="rounds to run (default 3)")
    parser.add_argument("--lines", type=int, default=50_000, help="lines per runner per flood")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runners, arguments.rounds, arguments.lines))
