"""Hot reload: how long from saving a plugin's file to the restarted plugin being ready.

With ``Host(reload=True)`` over a trivial plugin, each round appends a comment to the
plugin's module and times until the plugin is ready in a new runner process. In the same run,
``await host.restart(plugin)`` (the same restart, asked for by code) gives the floor; the
ratio is what watching the files adds. Target (issue 19): edit to ready <= 1 s.

Run: ``python benchmarks/reload_latency.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from _helpers import percentile

from isoplug import Host, SupervisorConfig

MANIFEST = 'id = "trivial"\nversion = "1"\nentry = "trivial_plugin:Trivial"\n'
CODE = "import isoplug\n\n\nclass Trivial(isoplug.Plugin):\n    pass\n"


async def measure(rounds: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "plugins" / "trivial"
        folder.mkdir(parents=True)
        (folder / "plugin.toml").write_text(MANIFEST)
        module = folder / "trivial_plugin.py"
        module.write_text(CODE)
        async with Host(folder.parent, config=SupervisorConfig(), reload=True) as host:
            await host.wait_ready(30)
            assert host.reloader is not None
            await asyncio.wait_for(host.reloader.watching.wait(), 30)
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


if __name__ == "__main__":
    main()
