"""What a process's first forwarded record costs, now that it waits for the connection.

A :class:`~isoplug.logs.ForwardingHandler` that nobody started (placed by ``dictConfig``, or
inherited by an ``os.fork()`` child) connects on its first record, which waits (at most
``first_record_wait``, 0.5 s) until the connection is open and the receiver has opened the
ledger, so that a process ending at once loses nothing. Measured in one run, against the same
handler with ``first_record_wait=0`` (the old behaviour: the first record only starts the
sender thread) and against a later record (which never waits):

- **fresh**: a new interpreter with a handler made as ``dictConfig`` makes it; the time of its
  first ``logger.info()``, then of its second;
- **forked**: a process that called ``forward_logs()`` forks; the child's first
  ``logger.info()``, then its second.

Each case runs ``--rounds`` times (interleaved); the table shows medians and min..max. The
receiver runs in this process, in its own threads (``with LogReceiver()``). Run:
``python benchmarks/logs_first_record.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys

from isoplug.logs import LogReceiver

CHILD = r"""
import json, logging, os, sys, time
from isoplug.logs import ForwardingHandler, forward_logs

case, wait = sys.argv[1], float(sys.argv[2])
log = logging.getLogger("bench")
address, token = os.environ["ISOPLUG_LOG_ADDRESS"], os.environ["ISOPLUG_LOG_TOKEN"]


def two_records(out):
    began = time.perf_counter()
    log.warning("first")
    first = time.perf_counter() - began
    began = time.perf_counter()
    log.warning("second")
    second = time.perf_counter() - began
    os.write(out, json.dumps([first, second]).encode())


if case == "fresh":
    handler = ForwardingHandler(address, token, first_record_wait=wait)
    logging.getLogger().handlers[:] = [handler]
    two_records(1)
    handler.close()
else:
    handler = forward_logs()
    handler._first_record_wait = wait  # as if it had been made with it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        two_records(write)
        handler.close()
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    sys.stdout.write(os.read(read, 1000).decode())
"""


def run(receiver: LogReceiver, case: str, wait: float) -> tuple[float, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, case, str(wait)],
        env={**os.environ, **receiver.child_env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    first, second = json.loads(done.stdout)
    return first, second


def show(label: str, samples: list[float]) -> str:
    micro = [s * 1e6 for s in samples]
    return f"{label:<28} {statistics.median(micro):9.0f} us  ({min(micro):.0f}..{max(micro):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    results: dict[tuple[str, str], list[float]] = {}
    # The children's records (and the receiver's reports) are not the point: no output.
    logging.getLogger().addHandler(logging.NullHandler())
    logging.getLogger().setLevel(logging.CRITICAL)
    with LogReceiver() as receiver:
        for _ in range(rounds):
            for case in ("fresh", "forked"):
                for wait, label in ((0.5, "waits"), (0.0, "no wait")):
                    first, second = run(receiver, case, wait)
                    results.setdefault((case, f"first record, {label}"), []).append(first)
                    results.setdefault((case, f"second record, {label}"), []).append(second)
    print(f"{rounds} rounds; medians (min..max) of one logger.warning() in the child")
    for case in ("fresh", "forked"):
        print(f"{case}:")
        for (kind, label), samples in results.items():
            if kind == case:
                print("  " + show(label, samples))
        waits = statistics.median(results[(case, "first record, waits")])
        old = statistics.median(results[(case, "first record, no wait")])
        extra = (waits - old) * 1e3
        print(f"  first record: {waits / old:.1f}x the no-wait first record (+{extra:.2f} ms)")


if __name__ == "__main__":
    main()
