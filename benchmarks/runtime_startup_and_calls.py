"""How fast the plugin runtime starts and answers, with the example plugins.

Measures, on this machine:

- *startup*: from entering ``async with Host(examples/plugins)`` to every plugin ready (4
  runner processes: interpreter start, ``import isoplug``, connect back, import the plugin,
  ``setup``), repeated a few times;
- *call round trip*: ``await host.call("chatty", "stats")`` (an ``async def`` method, answered on
  the runner's loop) and ``host.call("chatty", "shout", text=...)`` (a plain ``def``, run in a
  worker thread of the runner), median and 99th percentile.

Run: ``python benchmarks/runtime_startup_and_calls.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from pathlib import Path

from isoplug import Host, SupervisorConfig

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "plugins"
#: The hanger blocks its loop on purpose and the crasher dies; keep health checks at their
#: defaults so that neither disturbs the numbers within a run.
CONFIG = SupervisorConfig()


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def startup() -> float:
    started = time.perf_counter()
    async with Host(EXAMPLES, config=CONFIG) as host:
        host.register_capability("clock.now", time.time)
        infos = await host.wait_ready(60)
        elapsed = time.perf_counter() - started
        assert all(i.state.value == "ready" for i in infos), infos
    return elapsed


async def round_trips(calls: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"async method": [], "sync method (thread)": []}
    async with Host(EXAMPLES, config=CONFIG) as host:
        host.register_capability("clock.now", time.time)
        await host.wait_ready(60)
        for _ in range(200):  # warm up: thread pool, caches
            await host.call("chatty", "stats")
            await host.call("chatty", "shout", text="warm")
        for _ in range(calls):
            start = time.perf_counter()
            await host.call("chatty", "stats")
            results["async method"].append(time.perf_counter() - start)
            start = time.perf_counter()
            await host.call("chatty", "shout", text="hi")
            results["sync method (thread)"].append(time.perf_counter() - start)
    return results


async def main(quick: bool) -> None:
    logging.basicConfig(level=logging.CRITICAL)  # plugin chatter would drown the numbers
    rounds = 2 if quick else 5
    startups = [await startup() for _ in range(rounds)]
    print(
        f"startup to all {len(list(EXAMPLES.iterdir()))} example plugins ready: "
        f"median {statistics.median(startups) * 1e3:.0f} ms, "
        f"runs: {', '.join(f'{s * 1e3:.0f}' for s in startups)} ms"
    )
    samples = await round_trips(500 if quick else 3000)
    for name, values in samples.items():
        print(
            f"host.call round trip, {name}: median {statistics.median(values) * 1e6:.0f} us, "
            f"p99 {percentile(values, 0.99) * 1e6:.0f} us  ({len(values)} calls)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke test")
    asyncio.run(main(parser.parse_args().quick))
