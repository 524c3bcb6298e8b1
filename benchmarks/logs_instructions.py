"""Child-side cost of one ``logger.info()`` call, counted in CPU instructions (noise-free).

``logs_vs_peers.py`` times the same call with a clock. On a shared 2-core VM the clock swings by
half between runs (the do-nothing floor alone measured 7.7 to 14 us within minutes), so its
ratios carry that noise. This benchmark counts the instructions the *calling thread* executes
per call, under valgrind's callgrind: the count repeats exactly, whatever else the machine does.

Each kind runs in a child under callgrind twice, logging 2,000 and 12,000 records; the
difference divided by 10,000 is the cost of one call (start-up and imports cancel out). Only
the calling thread is counted: the cost ``logger.info()`` puts on the program, not the
background threads (isoplug's sender, mp.Queue's feeder), which the clock-based benchmark
includes. Kinds:

- **floor**: a do-nothing handler;
- **isoplug batched**: ``forward_logs()`` to a real ``LogReceiver``, on the path a burst takes
  (records queued, pushed into the socket every 32 by the calling thread);
- **isoplug write-through**: the same at a moderate rate, every record sent on its own (valgrind
  slows the child to about that rate, so this is what an unchanged handler does under it);
- **mp.Queue**: stdlib ``QueueHandler`` on a ``multiprocessing.Queue``, drained by a process;
- **SocketHandler**: stdlib ``SocketHandler`` to a TCP server that discards the bytes.

Needs valgrind. Run: ``python benchmarks/logs_instructions.py`` (about 4 minutes).
"""

from __future__ import annotations

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
KINDS = ("floor", "isoplug batched", "isoplug write-through", "mp.Queue", "SocketHandler")

CHILD = r"""
import logging, logging.handlers, multiprocessing, os, sys
kind, count = sys.argv[1], int(sys.argv[2])

class Nop(logging.Handler):
    def emit(self, record):
        pass

def drain(queue):
    while queue.get() is not None:
        pass

if kind == "floor":
    handler = Nop()
elif kind.startswith("isoplug"):
    from isoplug.logs import forward_logs
    handler = forward_logs()
    if kind == "isoplug batched":
        handler._write_through_rate = 0.0  # never earns a token: every record takes the queue
        handler._tokens = float("-inf")
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


def calling_thread_instructions(kind: str, count: int, env: dict[str, str]) -> int:
    """Instructions the child's main thread executed, logging ``count`` records."""
    with tempfile.TemporaryDirectory(prefix="isoplug-callgrind-") as directory:
        result = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
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
            totals = re.search(r"^totals: (\d+)", file.read(), re.MULTILINE)
        if totals is None:
            raise SystemExit(f"{kind}: callgrind wrote no totals")
        return int(totals.group(1))


def main() -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("this benchmark needs valgrind (Debian: apt install valgrind)")
    from isoplug.logs import LogReceiver

    source = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    per_call: dict[str, float] = {}
    with LogReceiver(prefix="isoplug-bench") as receiver, tcp_drain() as port:
        env = dict(os.environ, **receiver.child_env(), DRAIN_PORT=str(port))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
        for kind in KINDS:
            small = calling_thread_instructions(kind, SMALL, env)
            large = calling_thread_instructions(kind, LARGE, env)
            per_call[kind] = (large - small) / (LARGE - SMALL)
            print(f"   measured {kind}", file=sys.stderr)
    floor = per_call["floor"]
    print(f"Python {sys.version.split()[0]}; instructions of the calling thread per logger.info()")
    print(f"   {'':<24}{'instructions':>14}{'x floor':>10}")
    for kind in KINDS:
        print(f"   {kind:<24}{per_call[kind]:>14,.0f}{per_call[kind] / floor:>10.2f}")
    batched = per_call["isoplug batched"] / floor
    verdict = "PASS" if batched <= 1.3 else "MISS"
    print(f"target: per-call <= 1.3x floor (isoplug batched): {verdict} at {batched:.2f}x")


if __name__ == "__main__":
    main()
