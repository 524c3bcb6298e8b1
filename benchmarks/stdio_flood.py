"""A plugin that prints at full speed: what it costs the plugin, the host loop and delivery.

A plugin's ``print()`` becomes a log record inside its runner and travels the same forwarding
handler as ``logging`` (fd-level output, from C code or child processes, still arrives on the
runner's stdout/stderr pipes, read by host threads). This benchmark floods a ``Host`` with
100,000 lines three ways, interleaved round by round, while a host handler does nothing:

- ``print``: ``print(f"line {i}")`` in the plugin;
- ``log``: ``log.info("line %s", i)``, the reference;
- ``fd``: ``os.write(1, ...)``, one line per write, as a C extension would;
- ``pipe``: ``print(f"line {i}")`` in a second plugin, which chose ``stdio = "pipe"``: its
  ``sys.stdout`` is the standard library's C text stream onto the runner's stdout pipe, and the
  host makes the records (as of C code's output);
- ``tb-print`` and ``tb-fd``: a 20th as many printed tracebacks (a cause and 10 frames each),
  from ``traceback.print_exc()`` and written to fd 2: each becomes one ERROR record with its
  exception read back from the text (in the runner, and on the host's replay thread). Their
  "lines/s" are tracebacks/s.

It prints, for each: how late a 1 ms sleep on the host's loop wakes (p99 and max) while the
lines are sent and delivered; lines/s reaching the host's ``logging``, with the ratio of
printed lines/s to logged records/s; and, measured inside the plugin, the cost of one
``print()`` against a ``print()`` to ``/dev/null`` (the runner's stdout as Python sets it up
with ``PYTHONUNBUFFERED``, which the runner has, and a buffered one), and against two floors
written in Python: a stream that only keeps each thread's lines whole, and the least stream
that also keeps each line durable against a crash as isoplug does (location, sequence number,
one encode, a copy into shared memory), with none of isoplug's checks; and against a stream
with no Python in it at all, the standard library's C text stream writing through into shared
memory (durable, but with no location, thread or task name per line), and the same C stream
line-buffered onto an in-memory file (memfd, Linux: one system call per line, never full): what
a design that gave those up could reach without a compiler; and that C stream in front of one
Python call per line which frames each line with its time, location, thread, source and task:
what keeping them costs even when C does the rest.

The host's rate limit is off, so that lines/s measures delivery (with it, back-to-back floods
would mostly measure the limit). ``log.info()``'s cost in the plugin is printed beside the
``print()`` costs for comparison.

Then it floods again with a host handler that sleeps 50 ms every 1,000 records, and checks that
no runner is killed and that every line is delivered or reported dropped.

Run: ``python benchmarks/stdio_flood.py [--quick] [--rounds N] [--ways fd,print] [--floods-only]``
(``--ways``: only those floods; ``--floods-only``: no cost measurement and no slow-handler
flood). Each round's p99 / max lag is printed too: the max over all rounds is one sample.
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
from typing import TypeVar

from _helpers import loop_stalls_during, machine_line, percentile

from isoplug import Host, SupervisorConfig
from isoplug.logs import LogMetrics, ReplayLimits

T = TypeVar("T")
LINES = 100_000
PLUGIN_TOML = 'id = "{id}"\nversion = "0.1"\nentry = "printer_plugin:Printer"\nstdio = "{stdio}"\n'
#: The flood ways: (plugin, what its flood does).
WAYS = {
    "print": ("printer", "print"),
    "log": ("printer", "log"),
    "fd": ("printer", "fd"),
    "pipe": ("piped", "print"),
    # A flood of printed tracebacks (10 frames and a cause each), each read back into its
    # exception: from traceback.print_exc() (records), and written to fd 2 (host threads).
    "tb-print": ("printer", "tb-print"),
    "tb-fd": ("printer", "tb-fd"),
}
#: A traceback flood sends this many times fewer tracebacks than a line flood sends lines.
TRACEBACK_SHARE = 20
PLUGIN_CODE = '''\
"""Prints, logs or writes lines at full speed, from a worker thread (its loop stays free)."""

import asyncio
import contextvars
import io
import logging
import mmap
import os
import struct
import sys
import threading
import time
import traceback

import msgspec

import isoplug

log = logging.getLogger("bench")
SOURCE: contextvars.ContextVar[str | None] = contextvars.ContextVar("source", default=None)


def flood(count: int, how: str) -> float:
    began = time.perf_counter()
    if how == "print":
        for index in range(count):
            print(f"line {index}")
    elif how == "log":
        for index in range(count):
            log.info("line %s", index)
    elif how == "tb-print":
        for index in range(count):
            try:
                fail(index)
            except RuntimeError:
                traceback.print_exc()
    elif how == "tb-fd":
        try:
            fail(0)
        except RuntimeError:
            text = traceback.format_exc().encode()
        for index in range(count):
            os.write(2, text)
    else:
        for index in range(count):
            os.write(1, f"line {index}\\n".encode())
    return time.perf_counter() - began


def deeper(depth: int, index: int) -> None:
    if depth == 0:
        raise ValueError(f"bad value {index}")
    deeper(depth - 1, index)


def fail(index: int) -> None:
    try:
        deeper(8, index)
    except ValueError as exc:
        raise RuntimeError(f"flood item {index} failed") from exc


class WholeLines(io.TextIOBase):
    """The floor of any sys.stdout written in Python that keeps each thread's lines whole (as
    isoplug's does): print() calls its write() twice, and it only splits lines, per thread."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()
        self.lines = 0

    def write(self, text: str) -> int:
        local = self.local
        partial = getattr(local, "partial", "")
        if "\\n" not in text:
            local.partial = partial + text
            return len(text)
        *lines, local.partial = (partial + text).split("\\n")
        self.lines += len(lines)
        return len(text)


class LeastDurable(io.TextIOBase):
    """The floor of any sys.stdout written in Python that keeps each line durable as isoplug's
    does, with none of its checks: the thread's partial line, the source (a context variable)
    and the caller's location, then under a lock a sequence number, one encode, a copy into
    shared memory (where the host reads what a crash left) and a queue for the sender. No
    level, handler or rate checks, no task name, no sender wake-up."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()
        self.lock = threading.Lock()
        self.seq = 0
        self.ring = mmap.mmap(-1, 1 << 20)
        self.head = 0
        self.queue: list[bytes] = []
        self.site = b"\\x9f" + b"s" * 60
        self.encoder = msgspec.msgpack.Encoder()

    def write(self, text: str) -> int:
        local = self.local
        if text != "\\n":
            local.partial = getattr(local, "partial", "") + text
            return len(text)
        line = local.partial
        local.partial = ""
        source = SOURCE.get()
        frame = sys._getframe(1)
        where = (frame.f_code, frame.f_lineno, source)
        with self.lock:
            self.seq = seq = self.seq + 1
            encoded = self.site + self.encoder.encode((time.time(), seq, line, where[1]))
            head = self.head
            end = head + len(encoded)
            if end > len(self.ring):
                head, end = 0, len(encoded)
            self.ring[head:end] = encoded
            self.head = end
            self.queue.append(encoded)
            if len(self.queue) >= 1000:
                self.queue.clear()
        return 1


class SharedPages(mmap.mmap):
    """Shared memory as the buffer of a C text stream: mmap's own write() (C) copies each
    encoded piece in, where a reader in another process (or after a crash) finds it."""

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        pass


def shared_memory_text() -> io.TextIOWrapper:
    """A sys.stdout with no Python in it, for comparison: the standard library's text stream
    (C) writing through into shared memory (mmap.write, C). Durable like isoplug's, but it
    keeps no location, thread or task name per line, no rate limit or level, and a print()
    whose arguments run Python (a __str__) may interleave with another thread's."""
    pages = SharedPages(-1, 1 << 26)
    return io.TextIOWrapper(pages, encoding="utf-8", errors="backslashreplace", write_through=True)


def kernel_text() -> io.TextIOWrapper | None:
    """A sys.stdout with no Python in it that never fills: the C text stream, line-buffered
    (one write per line), onto an in-memory file (memfd) the host would read and trim. Each
    line is in the kernel, durable against a crash, when print() returns. Linux only."""
    if not hasattr(os, "memfd_create"):
        return None
    raw = open(os.memfd_create("isoplug-bench-stdout"), "wb", buffering=0)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", line_buffering=True)


_getframe = sys._getframe
_now = time.time
_thread_ident = threading.get_ident
_running_loop = asyncio.events._get_running_loop
_frame_header = struct.Struct("<IdIII").pack


class FramedLines(io.RawIOBase):
    """The least a C text front can leave to Python and still keep, per line, what isoplug's
    records carry: one call per line (line-buffered), which frames the line's bytes with its
    time, location, thread, source and task (each a small number for a table sent once) and
    writes both to an in-memory file in one system call."""

    def __init__(self) -> None:
        super().__init__()
        self.fd = os.memfd_create("isoplug-bench-framed")
        self.sites: dict[tuple[object, int], int] = {}
        self.threads: dict[int, int] = {}
        self.names: dict[str | None, int] = {None: 0}

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        frame = _getframe(1)
        key = (frame.f_code, frame.f_lineno)
        site = self.sites.get(key) or self.sites.setdefault(key, len(self.sites) + 1)
        ident = _thread_ident()
        thread = self.threads.get(ident) or self.threads.setdefault(ident, len(self.threads) + 1)
        source = SOURCE.get()
        named = self.names.get(source) or self.names.setdefault(source, len(self.names))
        if _running_loop() is not None:
            task = asyncio.current_task()
            named += 0 if task is None else 0x10000
        os.write(self.fd, _frame_header(len(data), _now(), site, thread, named) + data)
        return len(data)


def print_costs(count: int, rounds: int) -> dict[str, list[float]]:
    """ns per print(), interleaved: to the captured stdout, and to /dev/null opened as Python
    opens stdout with PYTHONUNBUFFERED (write-through, no buffer) and with a buffer."""
    unbuffered = io.TextIOWrapper(open(os.devnull, "wb", buffering=0), write_through=True)
    buffered = open(os.devnull, "w")
    targets = {
        "captured": None,
        "/dev/null (unbuffered)": unbuffered,
        "/dev/null (buffered)": buffered,
        "floor: Python stream, whole lines": WholeLines(),
        "floor: least durable capture": LeastDurable(),
        "C only: text stream into shm": shared_memory_text(),
        "C only: line-buffered into memfd": kernel_text(),
        "C front, Python framing per line": io.TextIOWrapper(
            FramedLines(), encoding="utf-8", errors="backslashreplace", line_buffering=True
        ),
    }
    if targets["C only: line-buffered into memfd"] is None:
        del targets["C only: line-buffered into memfd"]
    costs: dict[str, list[float]] = {name: [] for name in targets}
    costs["log.info() (for comparison)"] = []
    for _ in range(rounds):
        for name, target in targets.items():
            stream = sys.stdout if target is None else target
            began = time.perf_counter()
            for index in range(count):
                print(f"cost {index}", file=stream)
            costs[name].append((time.perf_counter() - began) / count * 1e9)
        # print("cost", n, "done"): four writes, where the one-value print() makes two.
        for name in ("captured", "/dev/null (unbuffered)"):
            target = targets[name]
            stream = sys.stdout if target is None else target
            began = time.perf_counter()
            for index in range(count):
                print("cost", index, "done", file=stream)
            elapsed = (time.perf_counter() - began) / count * 1e9
            costs.setdefault(f"{name}, 3 values", []).append(elapsed)
            # stream.write("cost n\\n"): a whole line in one write, no print().
            write = stream.write
            began = time.perf_counter()
            for index in range(count):
                write(f"cost {index}\\n")
            elapsed = (time.perf_counter() - began) / count * 1e9
            costs.setdefault(f"{name}, write()", []).append(elapsed)
        began = time.perf_counter()
        for index in range(count):
            log.info("cost %s", index)
        costs["log.info() (for comparison)"].append((time.perf_counter() - began) / count * 1e9)
    unbuffered.close()
    buffered.close()
    return costs


class Printer(isoplug.Plugin):
    @isoplug.method
    async def flood(self, count: int, how: str) -> float:
        return await asyncio.to_thread(flood, count, how)

    @isoplug.method
    async def print_costs(self, count: int, rounds: int) -> dict[str, list[float]]:
        return await asyncio.to_thread(print_costs, count, rounds)
'''


class Sink(logging.Handler):
    """Counts the plugin's lines (and tracebacks read back into their exceptions); optionally
    sleeps 50 ms every 1,000 of them."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        #: Every record handled, the flood's or not (the cost measurement's lines).
        self.seen = 0
        self.last = 0.0
        self.slow = False
        #: Printed tracebacks that arrived with their exception read back.
        self.read_back = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.seen += 1
        if getattr(record, "isoplug_report", False):
            return
        message = record.getMessage()
        if not message.startswith("line ") and "RuntimeError: flood item" not in message:
            return
        if record.exc_info is not None:
            self.read_back += 1
        self.count += 1
        self.last = time.perf_counter()
        if self.slow and self.count % 1000 == 0:
            time.sleep(0.05)


def dropped_between(before: LogMetrics, after: LogMetrics) -> int:
    """Lines reported dropped (any reason) between two metrics snapshots."""
    return sum(after.dropped.values()) - sum(before.dropped.values())


async def flood_and_settle(host: Host, sink: Sink, way: str, count: int) -> tuple[float, int, int]:
    """Flood, then wait until every line is delivered or counted dropped; returns
    (lines/s from the first line sent to the last delivered, delivered, dropped)."""
    plugin, how = WAYS[way]
    if way.startswith("tb-"):
        count //= TRACEBACK_SHARE
    before = host.log_metrics(plugin)
    sink.count = sink.read_back = 0
    began = time.perf_counter()
    await host.call_with(plugin, "flood", kwargs={"count": count, "how": how}, timeout=300)
    deadline = time.monotonic() + 300
    while True:
        # Delivered: what reached the host's handler itself, whatever the metrics say.
        delivered, dropped = sink.count, dropped_between(before, host.log_metrics(plugin))
        if delivered + dropped >= count or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    # Lines that reached the handler, not lines sent: a dropped line was not delivered.
    return delivered / (max(sink.last, began) - began), delivered, dropped


async def quiet(sink: Sink, still: float = 1.0) -> None:
    """Wait until the sink has handled nothing for ``still`` seconds."""
    seen, since = sink.seen, time.monotonic()
    while time.monotonic() - since < still:
        await asyncio.sleep(0.05)
        if sink.seen != seen:
            seen, since = sink.seen, time.monotonic()


async def main(
    rounds: int, count: int, ways: tuple[str, ...] = tuple(WAYS), extras: bool = True
) -> None:
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    sink = Sink()
    for plugin in ("printer", "piped"):
        plugin_logger = logging.getLogger(f"plugin.{plugin}")
        plugin_logger.addHandler(sink)
        plugin_logger.setLevel(logging.DEBUG)
        plugin_logger.propagate = False
    lag: dict[str, list[float]] = {how: [] for how in ways}
    round_lags: dict[str, list[tuple[float, float]]] = {how: [] for how in ways}
    rates: dict[str, list[float]] = {how: [] for how in ways}
    losses: dict[str, int] = {how: 0 for how in ways}
    read_back: dict[str, int] = {how: 0 for how in ways}
    delivered_total: dict[str, int] = {how: 0 for how in ways}
    config = SupervisorConfig(health_interval=0.5, health_timeout=1.0)
    with tempfile.TemporaryDirectory(prefix="isoplug-stdio-bench-") as plugins:
        for plugin, stdio in (("printer", "records"), ("piped", "pipe")):
            plugin_dir = Path(plugins) / plugin
            plugin_dir.mkdir()
            (plugin_dir / "plugin.toml").write_text(PLUGIN_TOML.format(id=plugin, stdio=stdio))
            (plugin_dir / "printer_plugin.py").write_text(PLUGIN_CODE)
        # No rate limit: the floods are back to back, and the limit (20,000/s after a burst
        # of 100,000) would drop most of them, which would measure the limit, not delivery.
        async with Host(plugins, config=config, log_limits=ReplayLimits(rate=None)) as host:
            await host.wait_ready(60)
            for number in range(rounds):
                order = list(ways) if number % 2 == 0 else list(reversed(ways))
                for how in order:
                    stalls, result = await loop_stalls_during(
                        flood_and_settle(host, sink, how, count)
                    )
                    rate, delivered, dropped = result
                    read_back[how] += sink.read_back
                    delivered_total[how] += delivered
                    lag[how].extend(stalls)
                    round_lags[how].append((percentile(stalls, 0.99), max(stalls)))
                    rates[how].append(rate)
                    losses[how] += dropped
                print(f"round {number + 1} of {rounds} done", file=sys.stderr)
            if extras:
                costs, pipe_costs, slow_runs = await costs_and_slow_flood(host, sink, rounds, count)
    print(machine_line(f"{count:,} lines per flood, {rounds} rounds, interleaved"))
    print("host loop lag (1 ms sleeps) while lines are sent and delivered, ms; lines/s to logging")
    print(f"   {'':10s}{'p99':>10s}{'max':>10s}{'lines/s (median)':>20s}{'dropped':>10s}")
    for how in ways:
        print(
            f"   {how:10s}{percentile(lag[how], 0.99) * 1e3:10.2f}{max(lag[how]) * 1e3:10.1f}"
            f"{statistics.median(rates[how]):20,.0f}{losses[how]:10,d}"
        )
    print("   each round's p99 / max, ms; lines/s:")
    for how in ways:
        rounds_text = ", ".join(
            f"{p99 * 1e3:.1f} / {worst * 1e3:.1f}; {rate:,.0f}"
            for (p99, worst), rate in zip(round_lags[how], rates[how], strict=True)
        )
        print(f"   {how:10s}{rounds_text}")
    for way in ways:
        if way.startswith("tb-"):
            print(
                f"   {way}: {read_back[way]:,} of {delivered_total[way]:,} tracebacks arrived "
                "with their exception read back (at most 100 a second are, per process; the "
                "rest stay text)"
            )
    for way in ("print", "pipe"):
        if way in ways and "log" in ways:
            print(
                f"   {way} lines/s / logged records/s: "
                f"{statistics.median(rates[way]) / statistics.median(rates['log']):.2f}"
            )
    if extras:
        print_extras(costs, pipe_costs, slow_runs, count)


SlowRun = tuple[list[float], int, int, int, str]


async def costs_and_slow_flood(
    host: Host, sink: Sink, rounds: int, count: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, SlowRun]]:
    """The print() costs inside each plugin (the records one, then the pipe one), then a print
    flood of each onto a slow host handler: (costs, the pipe plugin's costs, {way: (lag
    samples, delivered, dropped, runner restarts during it, state)})."""
    costs: dict[str, dict[str, list[float]]] = {}
    for plugin in ("printer", "piped"):
        costs[plugin] = await host.call_with(
            plugin,
            "print_costs",
            kwargs={"count": 20_000, "rounds": rounds * 3},
            timeout=300,
        )
        await quiet(sink)  # the cost measurement's own lines are all handled first
    slow_runs: dict[str, SlowRun] = {}
    for way in ("print", "pipe"):
        plugin = WAYS[way][0]
        restarts_before = host.plugin(plugin).restarts
        sink.slow = True
        stalls, slow = await loop_stalls_during(flood_and_settle(host, sink, way, count))
        _, delivered, dropped = slow
        sink.slow = False
        await quiet(sink)
        info = host.plugin(plugin)
        slow_runs[way] = (
            stalls,
            delivered,
            dropped,
            info.restarts - restarts_before,
            info.state.value,
        )
    return costs["printer"], costs["piped"], slow_runs


def print_extras(
    costs: dict[str, list[float]],
    pipe_costs: dict[str, list[float]],
    slow_runs: dict[str, SlowRun],
    count: int,
) -> None:
    print("one print() in the plugin, ns (median of rounds)")
    medians = {name: statistics.median(values) for name, values in costs.items()}
    for name, value in medians.items():
        print(f"   {name:36s}{value:10.0f}")
    base = medians["/dev/null (unbuffered)"]
    print("   each against a print() to unbuffered /dev/null (target for captured: <= x2.00):")
    for name, value in medians.items():
        print(f"   {name:36s}x{value / base:.2f}")
    buffered = medians["/dev/null (buffered)"]
    print(f"   captured / buffered /dev/null: x{medians['captured'] / buffered:.2f}")
    several = medians["captured, 3 values"] / medians["/dev/null (unbuffered), 3 values"]
    print(f'   print("cost", n, "done"), captured against unbuffered /dev/null: x{several:.2f}')
    whole = medians["captured, write()"] / medians["/dev/null (unbuffered), write()"]
    print(f'   write("cost n\\n"), captured against unbuffered /dev/null: x{whole:.2f}')
    pipe = {name: statistics.median(values) for name, values in pipe_costs.items()}
    print(
        f'in the plugin with stdio = "pipe": print() {pipe["captured"]:.0f} ns, '
        f"/dev/null (unbuffered) {pipe['/dev/null (unbuffered)']:.0f} ns: "
        f"x{pipe['captured'] / pipe['/dev/null (unbuffered)']:.2f} (target <= x2.00)"
    )
    for way, (stalls, delivered, dropped, restarts, state) in slow_runs.items():
        print(f"slow host handler (50 ms every 1,000 records), {way} flood:")
        print(
            f"   delivered {delivered:,}, reported dropped {dropped:,}, of {count:,}; "
            f"accounted: {delivered + dropped == count}; runner restarts during it: "
            f"{restarts}; state {state}; loop lag p99 "
            f"{percentile(stalls, 0.99) * 1e3:.2f} ms, max {max(stalls) * 1e3:.1f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer lines and rounds")
    parser.add_argument("--rounds", type=int, help="rounds to run (default 3; quick 1)")
    parser.add_argument(
        "--ways",
        default=",".join(WAYS),
        help=f"floods to run, comma-separated ({','.join(WAYS)})",
    )
    parser.add_argument(
        "--floods-only",
        action="store_true",
        help="no print() cost measurement and no slow-handler flood",
    )
    arguments = parser.parse_args()
    quick: bool = arguments.quick
    chosen = tuple(how for how in arguments.ways.split(",") if how)
    if not chosen or set(chosen) - set(WAYS):
        parser.error(f"--ways takes {', '.join(WAYS)}, not {arguments.ways!r}")
    asyncio.run(
        main(
            arguments.rounds or (1 if quick else 3),
            20_000 if quick else LINES,
            chosen,
            not arguments.floods_only,
        )
    )
