"""How long a plugin writing tens of MB of lines to fd 1 waits for the host to read them.

Output that bypasses Python (``os.write``, a C library's ``printf``, a child process's output)
reaches the host through the runner's stdout pipe, and a write to a full pipe waits until the
host has read enough. When the writer is the plugin's event loop, that wait blocks the loop.
This benchmark has one writer write ``--megabytes`` of 80-byte lines in writes of
``--write-kib`` (64 KiB by default; a C library's stdio buffer is 4 KiB), and times the
writing, three ways in the same run, rounds interleaved:

- ``drain``: a child process whose stdout a bare thread of this process reads 1 MiB at a time
  and throws away: the floor, what the pipe itself allows;
- ``lines``: the usual way to log a child's output, a thread doing
  ``for line in proc.stdout: log.info(line)`` into a handler that does nothing;
- ``isoplug``: a plugin's event loop writing to its runner's fd 1, the host's handler doing
  nothing (rate limit at its default: past it, lines are dropped and counted, not waited for).

It prints each way's MB/s (median of the rounds) and its time against the floor's. The host
reads a pipe it finds full a megabyte at a time (``isoplug.host.pipe_size``); with 64 KiB reads
it drained some 13-20 MB/s on the 2-core test machine.

Run: ``python benchmarks/fd_writer_wait.py [--megabytes 40] [--write-kib 64] [--rounds 3]``
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
import threading
from pathlib import Path

from _helpers import machine_line

from isoplug import Host

LINE = b"a line a C library wrote, some eighty bytes long as such lines often are......\n"

#: The writer, as a plain child process: writes, then says how long it took on stderr.
CHILD = """
import os, sys, time
line = b"a line a C library wrote, some eighty bytes long as such lines often are......\\n"
block = line * (int(sys.argv[2]) * 1024 // len(line))
began = time.perf_counter()
for _ in range(int(sys.argv[1]) * 1024 // int(sys.argv[2])):
    view = memoryview(block)
    while view:
        view = view[os.write(1, view):]
sys.stderr.write(repr(time.perf_counter() - began))
"""

PLUGIN_TOML = 'id = "writer"\nversion = "0.1"\nentry = "writer_plugin:Writer"\n'
PLUGIN_CODE = f'''
import os, time

import isoplug

LINE = {LINE!r}


class Writer(isoplug.Plugin):
    @isoplug.method
    async def write(self, megabytes: int, kib: int) -> float:
        """Write from the event loop, as a C library called there would."""
        block = LINE * (kib * 1024 // len(LINE))
        began = time.perf_counter()
        for _ in range(megabytes * 1024 // kib):
            view = memoryview(block)
            while view:
                view = view[os.write(1, view):]
        return time.perf_counter() - began
'''


class Nothing(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        pass


def child_write(megabytes: int, kib: int, read: str) -> float:
    """The child's writing time while this process reads its stdout the way ``read`` says."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(megabytes), str(kib)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    stdout = child.stdout

    def drain() -> None:
        while os.read(stdout.fileno(), 1 << 20):
            pass

    def lines() -> None:
        log = logging.getLogger("child.stdout")
        for line in stdout:
            log.info(line.decode(errors="replace").rstrip("\n"))

    reader = threading.Thread(target=drain if read == "drain" else lines)
    reader.start()
    took = float(child.stderr.read())
    reader.join()
    child.wait()
    return took


async def main(megabytes: int, kib: int, rounds: int) -> None:
    for name in ("child", "plugin"):
        logger = logging.getLogger(name)
        logger.addHandler(Nothing())
        logger.setLevel(logging.INFO)
        logger.propagate = False
    times: dict[str, list[float]] = {"drain": [], "lines": [], "isoplug": []}
    with tempfile.TemporaryDirectory(prefix="isoplug-fd-writer-") as plugins:
        folder = Path(plugins) / "writer"
        folder.mkdir()
        (folder / "plugin.toml").write_text(PLUGIN_TOML)
        (folder / "writer_plugin.py").write_text(PLUGIN_CODE)
        async with Host(plugins) as host:
            await host.wait_ready(60)
            for number in range(rounds):
                ways = list(times) if number % 2 == 0 else list(reversed(times))
                for way in ways:
                    if way == "isoplug":
                        asked = {"megabytes": megabytes, "kib": kib}
                        took = await host.call_with("writer", "write", kwargs=asked, timeout=600)
                        restarts = host.plugin("writer").restarts
                        assert restarts == 0, "the writing plugin was restarted"
                    else:
                        took = await asyncio.to_thread(child_write, megabytes, kib, way)
                    times[way].append(took)
                print(f"round {number + 1} of {rounds} done", file=sys.stderr)
    print(
        machine_line(
            f"{megabytes} MB of 80-byte lines in {kib} KiB writes, {rounds} rounds, interleaved"
        )
    )
    floor = statistics.median(times["drain"])
    print(f"   {'':10s}{'MB/s (median)':>15s}{'time vs drain':>15s}   each round, s")
    for way, took in times.items():
        median = statistics.median(took)
        rounds_text = ", ".join(f"{t:.2f}" for t in took)
        print(f"   {way:10s}{megabytes / median:15,.0f}{median / floor:14.1f}x   {rounds_text}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=40, help="MB each writer writes")
    parser.add_argument("--write-kib", type=int, default=64, help="KiB per write (divides 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds to run")
    arguments = parser.parse_args()
    if arguments.write_kib <= 0 or 1024 % arguments.write_kib:
        parser.error(f"--write-kib must divide 1024, not {arguments.write_kib}")
    asyncio.run(main(arguments.megabytes, arguments.write_kib, arguments.rounds))
