"""Host CPU per line of a runner's fd-level output, against per record of a log connection.

A runner's stdout/stderr (C code, child processes, a plugin with ``stdio = "pipe"``) is read
by the host: split into lines and classified in a reader thread, put in the backlog, built
into records and replayed in a second thread (``isoplug.host.stdio_reader``,
``isoplug.host.stdio_replay``). A log connection's records arrive encoded and are decoded and
replayed (``LogReplayer``). Issue 13 asks for printed lines to reach ``logging`` within 20 % of
logged records' rate; on a 2-core machine that comes down to the host CPU each costs. This
benchmark runs each stage on one thread, with no pipes, sockets or GIL contention, into a
do-nothing handler, and prints the cost per line or record and their ratio (best of the
rounds: the stages are pure CPU, so the best is the least disturbed).

``stdio_flood.py`` measures the same paths end to end, with real runners.

Run: ``python benchmarks/stdio_host_cpu.py [--lines N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import msgspec

from isoplug.host.stdio_backlog import Backlog, Entry
from isoplug.host.stdio_reader import _Stream
from isoplug.host.stdio_replay import StdioDestination, StdioReplay
from isoplug.logs import LogReplayer, ReplayLimits
from isoplug.wire import LogRecordData

#: Backlog bounds no run reaches: nothing is dropped, every line is replayed.
_UNBOUNDED = 10**12


class _Nothing(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        pass


def _replayer() -> LogReplayer:
    return LogReplayer(
        "plugin.bench",
        identity={"plugin_id": "bench", "runner_pid": os.getpid()},
        limits=ReplayLimits(rate=None),
    )


def fd_lines(lines: int) -> tuple[float, float, float]:
    """Seconds per line: split and classify; through the backlog; build and replay."""
    data = b"".join(b"line %d\n" % number for number in range(lines))
    read_end, write_end = os.pipe()  # the stream's fd is never read: lines are handed to it
    try:
        stream = _Stream("stdout", read_end)
        backlog = Backlog(_UNBOUNDED, _UNBOUNDED)
        replay = StdioReplay(os.getpid(), backlog, StdioDestination(_replayer()))
        began = time.perf_counter()
        stream._keep(stream.splitter.split(data), backlog)
        entries = stream.classify(None)
        classified = time.perf_counter()
        backlog.put(entries)
        batches: list[list[Entry]] = []
        while True:
            taken, _, _ = backlog.take(256, 0)
            if not taken:
                break
            batches.append(taken)
        queued = time.perf_counter()
        for batch in batches:
            replay._replay_items(batch)
        replayed = time.perf_counter()
    finally:
        os.close(read_end)
        os.close(write_end)
    return (
        (classified - began) / lines,
        (queued - classified) / lines,
        (replayed - queued) / lines,
    )


def log_records(lines: int) -> float:
    """Seconds per record of a log connection: decode a batch of 256, replay it."""
    now = time.time()
    records = [
        LogRecordData(
            name="bench.work",
            levelno=logging.INFO,
            levelname="INFO",
            created=now,
            pathname="/srv/plugins/bench/bench_plugin.py",
            filename="bench_plugin.py",
            module="bench_plugin",
            lineno=42,
            func_name="work",
            process=os.getpid(),
            process_name="isoplug-runner",
            message=f"line {number}",
        )
        for number in range(lines)
    ]
    frames = [msgspec.msgpack.encode(records[i : i + 256]) for i in range(0, lines, 256)]
    decoder = msgspec.msgpack.Decoder(list[LogRecordData])
    replayer = _replayer()
    began = time.perf_counter()
    for frame in frames:
        replayer.replay_records(decoder.decode(frame))
    return (time.perf_counter() - began) / lines


def main(lines: int, rounds: int) -> None:
    logger = logging.getLogger("plugin.bench")
    logger.addHandler(_Nothing())
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    fd_runs = [fd_lines(lines) for _ in range(rounds)]
    log_runs = [log_records(lines) for _ in range(rounds)]
    classify, backlog, replay = (min(stage) for stage in zip(*fd_runs, strict=True))
    fd_total = classify + backlog + replay
    log_total = min(log_runs)
    print(f"{lines:,} lines or records per round, best of {rounds} rounds, one thread, us each")
    print(
        f"   fd-level line: split+classify {classify * 1e6:.2f}, backlog {backlog * 1e6:.2f},"
        f" build+replay {replay * 1e6:.2f}; in all {fd_total * 1e6:.2f}"
    )
    print(f"   log record:    decode+replay {log_total * 1e6:.2f}")
    print(f"   fd-level line / log record: x{fd_total / log_total:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000, help="lines per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (the best is kept)")
    arguments = parser.parse_args()
    main(arguments.lines, arguments.rounds)
