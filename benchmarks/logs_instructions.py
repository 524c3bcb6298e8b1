"""Child-side cost of one ``logger.info()`` call, counted in CPU instructions (noise-free).

``logs_vs_peers.py`` times the same call with a clock. On a shared 2-core VM the clock swings by
half between runs (the do-nothing floor alone measured 7.7 to 14 us within minutes), so its
ratios carry that noise. This benchmark counts the instructions the *calling thread* executes
per call, under valgrind's callgrind: the count repeats (to 0.01 %), whatever else the machine
does.

Each kind runs in a child under callgrind twice, logging 2,000 and 12,000 records; the
difference divided by 10,000 is the cost of one call (start-up and imports cancel out). Only
the calling thread is counted: the cost ``logger.info()`` puts on the program, not the
background threads (isoplug's sender, mp.Queue's feeder), which the clock-based benchmark
includes. Kinds:

- **floor**: a do-nothing handler;
- **stage: capture** and **stage: capture+queue**: two of ``logs_cost_breakdown.py``'s stages
  (the record encoded and thrown away; encoded under a lock into a queue), which that script
  times with a clock;
- **isoplug batched**: ``forward_logs()`` to a real ``LogReceiver``, on the path a burst takes
  (records queued, pushed into the socket by the calling thread, 64 at a time as a millisecond
  of a real burst holds; the sender thread, which valgrind's slowness would otherwise let take
  over, is kept out);
- **isoplug batched no ring**: the same without the shared-memory ring (issue 18), as before
  it: what the ring's copy and stores cost each call;
- **isoplug batched group**: the same through a group runner's handler, logged in one
  member's code on a logger of its own, which it renames for that member
  (:mod:`isoplug.logs.source_names`): what naming a record for its plugin costs in a group;
- **isoplug write-through**: the same at a moderate rate, every record sent on its own (valgrind
  slows the child to about that rate, so this is what an unchanged handler does under it);
- **mp.Queue**: stdlib ``QueueHandler`` on a ``multiprocessing.Queue``, drained by a process;
- **SocketHandler**: stdlib ``SocketHandler`` to a TCP server that discards the bytes.

The receiving side is counted the same way, per record handed to the receiver's ``logging``
(a do-nothing handler there), from bytes already read off the socket (a file here):

- **receive floor**: ``logger.info()`` in the receiving process itself, what a record costs
  there when nothing crosses a process boundary;
- **receive isoplug**: frames split, decoded and replayed by a ``LogReplayer`` (sanitizing,
  rate limit, identity stamping included), 64 records per batch as a burst sends them;
- **receive pickle**: the stdlib's receiving side for ``SocketHandler`` (and, but for the queue,
  ``QueueListener``): unpickle each record's dict, ``logging.makeLogRecord``, ``handle``.

With ``--misses``, the sending kinds also run under callgrind's model of the first-level
caches and the branch predictor, which prints how many instruction-cache misses, data-cache
misses and mispredicted branches each call causes (x the floor's): the interpreter's stalls
that an instruction count does not show, and one reason the clock's ratios run higher.

Needs valgrind. Run: ``python benchmarks/logs_instructions.py [--misses]`` (about 10 minutes;
15 with ``--misses``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SMALL, LARGE = 2_000, 12_000
KINDS = (
    "floor",
    "stage: capture",
    "stage: capture+queue",
    "isoplug batched",
    "isoplug batched no ring",
    "isoplug batched group",
    "isoplug write-through",
    "mp.Queue",
    "SocketHandler",
)
RECEIVE_KINDS = ("receive floor", "receive isoplug", "receive pickle")
#: Records per batch on the receiving side: what a burst's sender pushes at a time (about a
#: millisecond of records, see the batched kind).
BATCH = 64

CHILD = r"""
import logging, logging.handlers, multiprocessing, os, sys
kind, count = sys.argv[1], int(sys.argv[2])

class Nop(logging.Handler):
    def emit(self, record):
        pass

def drain(queue):
    while queue.get() is not None:
        pass

if kind.startswith("receive"):
    import pickle, struct
    root = logging.getLogger()
    root.handlers[:] = [Nop()]
    root.setLevel(logging.INFO)
    data = b""
    if kind != "receive floor":
        with open(os.environ["RECEIVE_INPUT"] + "." + str(count), "rb") as file:
            data = file.read()

    def receive():
        if kind == "receive floor":
            info = logging.getLogger("bench").info
            for index in range(count):
                info("value %s", index)
        elif kind == "receive isoplug":
            from isoplug.logs import LogReplayer
            from isoplug.wire import FrameDecoder, decode_message
            replayer = LogReplayer("rx", identity={"sender": "bench", "sender_pid": 1})
            for frame in FrameDecoder().receive_data(data):
                replayer.replay(decode_message(frame))
        else:
            view, offset = memoryview(data), 0
            unpack, loads = struct.Struct(">L").unpack_from, pickle.loads
            make, get_logger = logging.makeLogRecord, logging.getLogger
            while offset < len(data):
                (length,) = unpack(view, offset)
                record = make(loads(view[offset + 4 : offset + 4 + length]))
                get_logger(record.name).handle(record)
                offset += 4 + length

    receive()
    sys.exit(0)
elif kind == "floor":
    handler = Nop()
elif kind.startswith("stage"):
    import _logs_breakdown_child as stages
    handler = stages.CaptureOnly() if kind == "stage: capture" else stages.CaptureAndQueue()
elif kind.startswith("isoplug"):
    from isoplug.logs import forward_logs
    if kind.endswith("no ring"):
        import isoplug.logs.handler
        vars(isoplug.logs.handler)["ring_capacity"] = lambda queue_bytes: 0
    if kind.endswith("group"):
        # A group runner's handler, records logged in member a's code on a logger of its own
        # (renamed plugin.a.bench as they go: isoplug.logs.source_names).
        from isoplug.logs import ADDRESS_ENV, TOKEN_ENV
        from isoplug.logs.source_names import SourceNamingHandler
        from isoplug.logs.sources import current_source
        handler = SourceNamingHandler(
            os.environ[ADDRESS_ENV], os.environ[TOKEN_ENV], sources=("plugin.a", "plugin.b")
        )
        handler.start()
        current_source.set("plugin.a")
    else:
        handler = forward_logs()
    if kind.startswith("isoplug batched"):
        import isoplug.logs.handler
        import isoplug.logs.sender
        handler._write_through_rate = 0.0  # never earns a token: every record takes the queue
        handler._tokens = float("-inf")
        # Valgrind runs the child ~50 times slower, and the handler's timing is in real time:
        # the emitting thread would push every record or two instead of once a millisecond,
        # and the sender thread would take over pushes the calling thread makes in a real
        # burst. So push by count, as many as a millisecond holds at ~15 us per call, and keep
        # the sender thread out.
        isoplug.logs.handler.EMIT_PUSH_INTERVAL = float("inf")
        isoplug.logs.handler.EMIT_PUSH_RECORDS = 64
        isoplug.logs.sender.SENDER_LINGER = 3600.0
elif kind == "mp.Queue":
    queue = multiprocessing.Queue()
    drainer = multiprocessing.Process(target=drain, args=(queue,))
    drainer.start()
    handler = logging.handlers.QueueHandler(queue)
else:
    handler = logging.handlers.SocketHandler("127.0.0.1", int(os.environ["DRAIN_PORT"]))
root = logging.getLogger()
root.handlers[:] = [handler]
root.setLevel(logging.INFO)
info = logging.getLogger("bench").info

def log_records(count):
    # From inside a function, as real code logs: at module level CPython pays ~10,000 more
    # instructions per call (in every kind) finding the line number in the module's long code.
    for index in range(count):
        info("value %s", index)

log_records(count)
if kind == "mp.Queue":
    queue.put(None)
    drainer.join()
"""


@contextmanager
def tcp_drain() -> Iterator[int]:
    """A TCP server that accepts connections and discards what they send; yields its port."""
    server = socket.create_server(("127.0.0.1", 0))

    def discard(connection: socket.socket) -> None:
        with connection:
            while connection.recv(1 << 20):
                pass

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return  # the server was closed: the benchmark is over
            threading.Thread(target=discard, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def write_receive_inputs(path: str) -> None:
    """What each receiving kind reads: ``path.isoplug.N`` holds N records as the frames a burst
    sends, ``path.pickle.N`` as SocketHandler sends them (from the same real LogRecords)."""
    import logging
    import logging.handlers

    from isoplug.logs.capture import capture_record
    from isoplug.wire import DEFAULT_MAX_FRAME_SIZE
    from isoplug.wire.logframes import log_batch_frame

    made: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            made.append(record)

    logger = logging.getLogger("bench")
    keep = Keep()
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        for index in range(LARGE):
            logger.info("value %s", index)
    finally:
        logger.removeHandler(keep)
    pickler = logging.handlers.SocketHandler("127.0.0.1", 9)  # makePickle only: never connects
    for count in (SMALL, LARGE):
        records = made[:count]
        with open(f"{path}.isoplug.{count}", "wb") as file:
            for start in range(0, count, BATCH):
                encoded = [
                    capture_record(record, start + offset + 1)
                    for offset, record in enumerate(records[start : start + BATCH])
                ]
                file.write(log_batch_frame(encoded, {}, DEFAULT_MAX_FRAME_SIZE))
        with open(f"{path}.pickle.{count}", "wb") as file:
            file.writelines(pickler.makePickle(record) for record in records)


def calling_thread_events(
    kind: str, count: int, env: dict[str, str], *, simulate: bool
) -> dict[str, int]:
    """callgrind's totals for the child's main thread, logging ``count`` records: ``Ir``
    (instructions), and with ``simulate`` its cache and branch-predictor model's events too."""
    simulation = ["--cache-sim=yes", "--branch-sim=yes"] if simulate else []
    with tempfile.TemporaryDirectory(prefix="isoplug-callgrind-") as directory:
        result = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
                *simulation,
                f"--callgrind-out-file={directory}/out.%p",
                sys.executable,
                "-c",
                CHILD,
                kind,
                str(count),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"{kind}: the child failed:\n{result.stderr[-2000:]}")
        pid = re.search(r"==(\d+)== Callgrind", result.stderr)
        if pid is None:
            raise SystemExit(f"{kind}: no callgrind output:\n{result.stderr[-2000:]}")
        # Thread 1 of the process valgrind started (forked helpers write files of their own).
        with open(f"{directory}/out.{pid.group(1)}-01") as file:
            text = file.read()
        events = re.search(r"^events: (.+)$", text, re.MULTILINE)
        totals = re.search(r"^totals: (.+)$", text, re.MULTILINE)
        if events is None or totals is None:
            raise SystemExit(f"{kind}: callgrind wrote no totals")
        return dict(zip(events.group(1).split(), map(int, totals.group(1).split()), strict=True))


#: What --misses prints, from callgrind's model of the caches (first level) and of the branch
#: predictor: front-end stalls a count of instructions does not show.
MISS_COLUMNS = {
    "I1mr": "I1 misses",
    "D1mr": "D1 read misses",
    "Bcm": "cond. mispredicts",
    "Bim": "indirect mispredicts",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--misses",
        action="store_true",
        help="also simulate caches and branch prediction for the sending kinds (slower)",
    )
    parser.add_argument(
        "--kinds",
        help="a comma-separated subset of the sending kinds to count (the floor always is)",
    )
    args = parser.parse_args()
    kinds: tuple[str, ...] = KINDS
    if args.kinds:
        chosen = {kind.strip() for kind in args.kinds.split(",")}
        if unknown := chosen - set(KINDS):
            raise SystemExit(f"unknown kinds: {sorted(unknown)}; known: {KINDS}")
        kinds = tuple(kind for kind in KINDS if kind == "floor" or kind in chosen)
    if shutil.which("valgrind") is None:
        raise SystemExit("this benchmark needs valgrind (Debian: apt install valgrind)")
    from isoplug.logs import LogReceiver

    source = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    per_call: dict[str, float] = {}
    misses: dict[str, dict[str, float]] = {}
    with (
        LogReceiver(prefix="isoplug-bench") as receiver,
        tcp_drain() as port,
        tempfile.TemporaryDirectory(prefix="isoplug-receive-") as inputs,
    ):
        write_receive_inputs(f"{inputs}/input")
        env = dict(os.environ, **receiver.child_env(), DRAIN_PORT=str(port))
        stages = os.path.dirname(os.path.abspath(__file__))  # the stage kinds' handlers
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, stages, env.get("PYTHONPATH")]))
        # A fixed hash seed: string hashes decide dict probing, which moved counts by ~1 %.
        env["PYTHONHASHSEED"] = "0"
        for kind in kinds + (RECEIVE_KINDS if not args.kinds else ()):
            env["RECEIVE_INPUT"] = f"{inputs}/input.{kind.rpartition(' ')[2]}"
            simulate = args.misses and kind in KINDS
            small = calling_thread_events(kind, SMALL, env, simulate=simulate)
            large = calling_thread_events(kind, LARGE, env, simulate=simulate)
            per_record = {event: (large[event] - small[event]) / (LARGE - SMALL) for event in large}
            per_call[kind] = per_record["Ir"]
            if simulate:
                misses[kind] = per_record
            print(f"   measured {kind}", file=sys.stderr)
    floor = per_call["floor"]
    print(f"Python {sys.version.split()[0]}; instructions of the calling thread per logger.info()")
    print(f"   {'':<24}{'instructions':>14}{'x floor':>10}")
    for kind in kinds:
        print(f"   {kind:<24}{per_call[kind]:>14,.0f}{per_call[kind] / floor:>10.2f}")
    if "isoplug batched" in per_call:
        batched = per_call["isoplug batched"] / floor
        verdict = "PASS" if batched <= 1.3 else "MISS"
        print(f"target: per-call <= 1.3x floor (isoplug batched): {verdict} at {batched:.2f}x")
    if misses:
        print("callgrind's model of the first-level caches and the branch predictor, per call")
        print(f"   {'':<24}" + "".join(f"{title:>22}" for title in MISS_COLUMNS.values()))
        floor_misses = misses["floor"]
        for kind in kinds:
            cells = (
                f"{misses[kind][event]:>10,.0f} ({misses[kind][event] / floor_misses[event]:.2f}x)"
                for event in MISS_COLUMNS
            )
            print(f"   {kind:<24}" + "".join(f"{cell:>22}" for cell in cells))
    if args.kinds:
        return
    receive_floor = per_call["receive floor"]
    print("receiving side: instructions per record handed to logging")
    print(f"   {'':<24}{'instructions':>14}{'x floor':>10}")
    for kind in RECEIVE_KINDS:
        print(f"   {kind:<24}{per_call[kind]:>14,.0f}{per_call[kind] / receive_floor:>10.2f}")
    ours, pickled = per_call["receive isoplug"], per_call["receive pickle"]
    print(f"isoplug's receiver does {pickled / ours:.2f}x less work per record than pickle's")


if __name__ == "__main__":
    main()
