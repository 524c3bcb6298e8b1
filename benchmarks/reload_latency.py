"""Hot reload: how long from saving a plugin's file to the restarted plugin being ready.

With ``Host(reload=True)`` over a trivial plugin, each round appends a comment to the
plugin's module and times until the plugin is ready in a new runner process. In the same run,
``await host.restart(plugin)`` (the same restart, asked for by code) gives the floor; the
ratio is what watching the files adds. Target (issue 19): edit to ready <= 1 s.

Then the fix of a plugin that crashes at setup, saved while it waits out a 30 s restart
backoff: the fix must end the wait (same target), not wait for it.

Run: ``python benchmarks/reload_latency.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from _helpers import percentile

from isoplug import Host, SupervisorConfig

MANIFEST = 'id = "trivial"\nversion = "1"\nentry = "trivial_plugin:Trivial"\n'
CODE = "import isoplug\n\n\nclass Trivial(isoplug.Plugin):\n    pass\n"


@contextlib.asynccontextmanager
async def watched_plugin(manifest: str) -> AsyncIterator[tuple[Host, Path]]:
    """A host with hot reload over the trivial plugin (``manifest``), ready and watching; the
    host and the plugin's module."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "plugins" / "trivial"
        folder.mkdir(parents=True)
        (folder / "plugin.toml").write_text(manifest)
        module = folder / "trivial_plugin.py"
        module.write_text(CODE)
        async with Host(folder.parent, config=SupervisorConfig(), reload=True) as host:
            await host.wait_ready(30)
            assert host.reloader is not None
            await asyncio.wait_for(host.reloader.watching.wait(), 30)
            yield host, module


async def measure(rounds: int) -> tuple[list[float], list[float]]:
    async with watched_plugin(MANIFEST) as (host, module):
        edits: list[float] = []
        for _ in range(rounds):
            pid = host.plugin("trivial").pid
            began = time.perf_counter()
            with module.open("a") as source:
                source.write("# edited\n")
            while True:
                info = host.plugin("trivial")
                if info.pid not in (None, pid) and info.state.value == "ready":
                    break
                await asyncio.sleep(0.001)
            edits.append(time.perf_counter() - began)
        restarts: list[float] = []
        for _ in range(rounds):
            began = time.perf_counter()
            await host.restart("trivial")
            restarts.append(time.perf_counter() - began)
    return edits, restarts


CRASHING = (
    "import isoplug\n\n\nclass Trivial(isoplug.Plugin):\n"
    "    async def setup(self, ctx):\n        raise RuntimeError('not yet')\n"
)
BACKOFF = "\n[restart]\nbackoff_initial = 30\nbackoff_max = 30\nmax_restarts = 1000\n"


async def measure_backoff(rounds: int) -> list[float]:
    """Seconds from saving the fix of a plugin waiting in a 30 s backoff to it being ready."""
    async with watched_plugin(MANIFEST + BACKOFF) as (host, module):
        fixes: list[float] = []
        for round_ in range(rounds):
            module.write_text(CRASHING)
            while host.plugin("trivial").state.value != "restarting":
                await asyncio.sleep(0.001)
            began = time.perf_counter()
            module.write_text(CODE + f"# fix {round_}\n")
            while host.plugin("trivial").state.value != "ready":
                await asyncio.sleep(0.001)
            fixes.append(time.perf_counter() - began)
    return fixes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    arguments = parser.parse_args()
    edits, restarts = asyncio.run(measure(arguments.rounds))
    edit, restart = statistics.median(edits), statistics.median(restarts)
    print(f"{'what':<34} {'median':>9} {'p90':>9}")
    edit_p90 = percentile(edits, 0.9)
    print(f"{'edit to ready (reload=True)':<34} {edit * 1e3:8.0f}ms {edit_p90 * 1e3:8.0f}ms")
    print(
        f"{'host.restart() to ready':<34} {restart * 1e3:8.0f}ms "
        f"{percentile(restarts, 0.9) * 1e3:8.0f}ms"
    )
    print(f"edit/restart ratio: {edit / restart:.2f}x; target: edit to ready <= 1000 ms")
    # The crashes on purpose log errors: not onto the table (no handler: lastResort's stderr).
    logging.getLogger().addHandler(logging.NullHandler())
    fixes = asyncio.run(measure_backoff(max(3, arguments.rounds // 4)))
    print(
        f"{'fix during a 30 s backoff to ready':<34} {statistics.median(fixes) * 1e3:8.0f}ms "
        f"{percentile(fixes, 0.9) * 1e3:8.0f}ms (target <= 1000 ms)"
    )


if __name__ == "__main__":
    main()
