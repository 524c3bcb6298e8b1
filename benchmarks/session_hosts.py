"""A test session's hosts: each with a zygote of its own, against all sharing one.

A test suite starts a host per test. This starts ``--hosts`` hosts one after another over one
trivial plugin (as ``isoplug.testing``'s harness does: start, ready, one call, close) and
times each, first with a zygote per host (what an application gets), then with sharing on (what
isoplug's pytest plugin turns on: ``isoplug.testing.share_zygotes``), interleaved by round so
that both see the same machine. It prints the medians and their ratio.

    python benchmarks/session_hosts.py [--hosts 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from _helpers import machine_line

from isoplug import Host
from isoplug.testing import share_zygotes

PLUGIN_TOML = 'id = "trivial"\nversion = "1.0"\nentry = "trivial:Trivial"\n'
PLUGIN_CODE = """\
import isoplug


class Trivial(isoplug.Plugin):
    @isoplug.method
    async def ping(self) -> int:
        return 1
"""


async def host_times(plugins: Path, hosts: int) -> tuple[list[float], list[float]]:
    """Seconds from a host's start to its plugin's first answer, and to its close, per host."""
    ready, whole = [], []
    for _ in range(hosts):
        started = time.perf_counter()
        async with Host(plugins) as host:
            await host.wait_ready(60)
            await host.call("trivial", "ping")
            ready.append(time.perf_counter() - started)
        whole.append(time.perf_counter() - started)
    return ready, whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    print(machine_line(f"{options.hosts} hosts one after another, {options.rounds} rounds"))
    results: dict[bool, tuple[list[float], list[float]]] = {False: ([], []), True: ([], [])}
    with tempfile.TemporaryDirectory() as folder:
        plugins = Path(folder)
        (plugins / "trivial").mkdir()
        (plugins / "trivial" / "plugin.toml").write_text(PLUGIN_TOML)
        (plugins / "trivial" / "trivial.py").write_text(PLUGIN_CODE)
        for _ in range(options.rounds):
            for shared in (False, True):
                share_zygotes(shared)
                ready, whole = asyncio.run(host_times(plugins, options.hosts))
                results[shared][0].extend(ready)
                results[shared][1].extend(whole)
        share_zygotes(False)
    for shared, label in ((False, "a zygote per host"), (True, "one shared zygote")):
        ready, whole = results[shared]
        print(
            f"{label:>18}: start to first answer median {statistics.median(ready) * 1e3:6.1f} ms"
            f" (p90 {statistics.quantiles(ready, n=10)[-1] * 1e3:6.1f}), start to closed"
            f" {statistics.median(whole) * 1e3:6.1f} ms"
        )
    ready_ratio = statistics.median(results[True][0]) / statistics.median(results[False][0])
    closed_ratio = statistics.median(results[True][1]) / statistics.median(results[False][1])
    print(
        f"shared against a zygote per host: start to answer x{ready_ratio:.2f}, "
        f"start to closed x{closed_ratio:.2f}"
    )
    print("(the first host of each shared run starts the zygote: it counts among them)")


if __name__ == "__main__":
    main()
