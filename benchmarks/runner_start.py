"""How fast runners start and restart, and what each costs in memory: forked from the host's
zygote (``start = "fork"``, the default) against spawned (``start = "spawn"``), and against two
peers, measured in the same run:

- *restart to ready*: ``await host.restart(plugin)`` for a trivial plugin, request to ready
  (the old runner's shutdown included), median of ``--restarts`` alternating rounds; a spawned
  plugin with ``PYTHONDONTWRITEBYTECODE=1`` (every spawn recompiles isoplug) for scale;
- *host start*: from entering ``async with Host(...)`` to ``--plugins`` trivial plugins ready,
  one runner each (the zygote's own start included);
- *USS per runner*: unique memory (``Private_*`` of ``/proc/<pid>/smaps_rollup``) of those
  runners, median;
- peers: spawning ``python -c 'import <the runner's modules>'`` (start to imported), and
  ``multiprocessing``'s forkserver with those modules preloaded (``Process.start()`` to the
  child's first message), with their USS.

Run: ``python benchmarks/runner_start.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from isoplug import Host, SupervisorConfig
from isoplug.host.zygote import fork_supported

PLUGIN = """\
import isoplug


class Trivial(isoplug.Plugin):
    @isoplug.method
    async def ping(self) -> str:
        return "pong"
"""
#: What a runner imports before any plugin: ``python -m isoplug.runner``'s module.
RUNNER_IMPORTS = "isoplug.runner.__main__"
CONFIG = SupervisorConfig()


def write_plugin(root: Path, name: str, start: str, environment: str = "") -> None:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "trivial.py").write_text(PLUGIN)
    (directory / "plugin.toml").write_text(
        f'id = "{name}"\nversion = "1"\nentry = "trivial:Trivial"\nstart = "{start}"\n'
        + (f"[environment]\n{environment}\n" if environment else "")
    )


def uss(pid: int) -> int:
    """Bytes of memory only ``pid`` uses (``Private_*`` of its smaps_rollup)."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Private_"):
                total += int(line.split()[1]) * 1024
    return total


async def restarts(root: Path, rounds: int) -> dict[str, list[float]]:
    variants = {
        "fork": "",
        "spawn": "",
        "spawn, PYTHONDONTWRITEBYTECODE=1": 'PYTHONDONTWRITEBYTECODE = "1"',
    }
    names = {}
    for index, (label, environment) in enumerate(variants.items()):
        names[label] = f"r{index}"
        write_plugin(root, f"r{index}", "spawn" if "spawn" in label else "fork", environment)
    times: dict[str, list[float]] = {label: [] for label in variants}
    async with Host(root, config=CONFIG) as host:
        await host.wait_ready(120)
        for name in names.values():  # warm up: caches, the zygote's first fork
            await host.restart(name)
        for _ in range(rounds):
            for label, name in names.items():
                started = time.perf_counter()
                info = await host.restart(name)
                times[label].append(time.perf_counter() - started)
                assert info.state.value == "ready", info
    return times


async def host_start(root: Path, count: int, start: str) -> tuple[float, list[int]]:
    for index in range(count):
        write_plugin(root, f"p{index}", start)
    started = time.perf_counter()
    async with Host(root, config=CONFIG) as host:
        infos = await host.wait_ready(300)
        elapsed = time.perf_counter() - started
        assert all(i.state.value == "ready" for i in infos), infos
        memory = [uss(i.pid) for i in infos if i.pid is not None]
    return elapsed, memory


def plain_spawn() -> tuple[float, int]:
    """``python -c 'import <runner modules>'``: start to imported, and its USS then."""
    code = (
        f"import sys, {RUNNER_IMPORTS}; sys.stdout.write('x'); sys.stdout.flush(); sys.stdin.read()"
    )
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.read(1) == b"x"
    elapsed = time.perf_counter() - started
    memory = uss(child.pid)
    child.stdin.close()
    child.wait()
    return elapsed, memory


def _forkserver_child(conn: multiprocessing.connection.Connection) -> None:
    __import__(RUNNER_IMPORTS)  # preloaded in the server: already there
    conn.send(os.getpid())
    conn.recv()


def forkserver_start(context: multiprocessing.context.ForkServerContext) -> tuple[float, int]:
    ours, theirs = context.Pipe()
    started = time.perf_counter()
    process = context.Process(target=_forkserver_child, args=(theirs,))
    process.start()
    pid = ours.recv()
    elapsed = time.perf_counter() - started
    memory = uss(pid)
    ours.send(None)
    process.join()
    return elapsed, memory


def ms(values: list[float]) -> str:
    low, high = min(values) * 1e3, max(values) * 1e3
    return f"median {statistics.median(values) * 1e3:.1f} ms (range {low:.1f}-{high:.1f})"


def mib(values: list[int]) -> str:
    low, high = min(values) / 2**20, max(values) / 2**20
    return f"median {statistics.median(values) / 2**20:.1f} MiB (range {low:.1f}-{high:.1f})"


async def main(quick: bool, count: int, rounds: int, starts: int) -> None:
    logging.basicConfig(level=logging.CRITICAL)
    if not fork_supported():
        print("runners cannot be forked from a zygote here: nothing to compare")
        return
    if quick:
        count, rounds, starts = min(count, 8), min(rounds, 3), 1
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; {count} plugins")

    with tempfile.TemporaryDirectory() as scratch:
        restart = await restarts(Path(scratch), rounds)
    for label, values in restart.items():
        print(f"restart to ready, {label}: {ms(values)}")
    fork_restart = statistics.median(restart["fork"])
    print(
        f"  ratio fork/spawn {fork_restart / statistics.median(restart['spawn']):.2f}x, "
        f"fork/spawn without bytecode writes "
        f"{fork_restart / statistics.median(restart['spawn, PYTHONDONTWRITEBYTECODE=1']):.2f}x"
    )

    start_times: dict[str, list[float]] = {"fork": [], "spawn": []}
    memory: dict[str, list[int]] = {"fork": [], "spawn": []}
    for _ in range(starts):
        for method in ("fork", "spawn"):
            with tempfile.TemporaryDirectory() as scratch:
                elapsed, used = await host_start(Path(scratch), count, method)
            start_times[method].append(elapsed)
            memory[method].extend(used)
    for method in ("fork", "spawn"):
        print(f"host start to {count} plugins ready, {method}: {ms(start_times[method])}")
    print(
        "  ratio fork/spawn "
        f"{statistics.median(start_times['fork']) / statistics.median(start_times['spawn']):.2f}x"
    )
    for method in ("fork", "spawn"):
        print(f"USS per runner, {method}: {mib(memory[method])}")

    plain = [plain_spawn() for _ in range(rounds)]
    context = multiprocessing.get_context("forkserver")
    # "__main__" too: else every child imports this script again (and the host with it).
    context.set_forkserver_preload(["__main__", RUNNER_IMPORTS])
    forkserver_start(context)  # starts the server: not counted
    served = [forkserver_start(context) for _ in range(rounds)]
    print(f"peer: spawn python -c 'import {RUNNER_IMPORTS}': {ms([p[0] for p in plain])}")
    print(f"  USS: {mib([p[1] for p in plain])}")
    print(f"peer: multiprocessing forkserver, imports preloaded: {ms([s[0] for s in served])}")
    print(f"  USS: {mib([s[1] for s in served])}")
    fork_uss = statistics.median(memory["fork"])
    print(
        f"  ratios: fork restart / plain import spawn "
        f"{fork_restart / statistics.median([p[0] for p in plain]):.2f}x; "
        f"fork USS / plain spawn USS {fork_uss / statistics.median([p[1] for p in plain]):.2f}x; "
        f"fork USS / forkserver USS {fork_uss / statistics.median([s[1] for s in served]):.2f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke test")
    parser.add_argument("--plugins", type=int, default=64)
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--starts", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.quick, arguments.plugins, arguments.restarts, arguments.starts))
