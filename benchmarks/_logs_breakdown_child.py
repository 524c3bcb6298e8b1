"""The child side of ``benchmarks/logs_cost_breakdown.py``: one process, every stage, interleaved.

Run as ``python _logs_breakdown_child.py CHUNK ROUNDS`` with ``LogReceiver.child_env()`` in the
environment. Each stage is a root handler that does a little more of what the forwarding handler
does; the child logs ``CHUNK`` records through each in turn, round after round (forward, then
backward, so that drifts of the machine's speed hit every stage alike), and prints JSON:
``{stage: [[wall seconds, thread CPU seconds], ...]}``, one pair per chunk.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time

from _logs_child import Nop

from isoplug.logs import ADDRESS_ENV, TOKEN_ENV, forward_logs
from isoplug.logs.capture import capture_record
from isoplug.logs.handler import ForwardingHandler
from isoplug.transport import Address

#: Records per push in the queueing stage: about a millisecond of a burst, as the real handler
#: pushes (by the records' timestamps).
PUSH_RECORDS = 100
WARMUP = 200
#: The sender names the parent counts each forwarding stage's records by.
ISOPLUG_SENDER = "breakdown: isoplug"
NO_WRITES_SENDER = "breakdown: no writes"


class CaptureOnly(logging.Handler):
    """Turns each record into wire bytes and throws them away: what any design must do in the
    logging process, which may die the next moment, before the record can leave it."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = 0

    def handle(self, record: logging.LogRecord) -> bool:
        self.seq += 1
        capture_record(record, self.seq)
        return True


class CaptureAndQueue(logging.Handler):
    """Capture under a lock, queue, and join the queue into one buffer every PUSH_RECORDS: the
    least a thread-safe batching handler does, without its bookkeeping or a socket."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = 0
        self.queue: list[bytes] = []
        self.queue_lock = threading.Lock()

    def handle(self, record: logging.LogRecord) -> bool:
        lock = self.queue_lock
        lock.acquire()
        try:
            self.seq = seq = self.seq + 1
            queue = self.queue
            queue.append(capture_record(record, seq))
            if len(queue) >= PUSH_RECORDS:
                b"".join(queue)
                self.queue = []
        finally:
            lock.release()
        return True


class WithoutSocketWrites(ForwardingHandler):
    """The real handler, connected, with its sender thread, whose frames are thrown away instead
    of written to the socket: what the kernel's part costs is the difference to the next stage.
    Overrides a private method: the handler has no switch for this, and should not. Its sender
    thread still sends the records a chunk leaves queued, after its linger: the receiver sees
    gaps and reports them, which the parent counts apart."""

    def _write_through(self, frame: bytes, size: int, count: int) -> None:
        # As if the kernel took it whole: the ring lets go of its records.
        self._released(size, count)


def stages(address: str | Address, token: str) -> dict[str, logging.Handler]:
    without_writes = WithoutSocketWrites(address, token, name=NO_WRITES_SENDER)
    if not without_writes.start(timeout=10.0):
        raise SystemExit(f"could not connect to {address}: {without_writes.failure}")
    return {
        "floor": Nop(),
        "capture": CaptureOnly(),
        "capture+queue": CaptureAndQueue(),
        "handler, no writes": without_writes,
        "isoplug": forward_logs(level=logging.INFO, name=ISOPLUG_SENDER),
    }


def main(chunk: int, rounds: int) -> None:
    handlers = stages(os.environ[ADDRESS_ENV], os.environ[TOKEN_ENV])
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    info = logging.getLogger("bench").info

    def log_chunk(handler: logging.Handler, first: int) -> tuple[float, float]:
        root.handlers[:] = [handler]
        cpu_began = time.thread_time()
        began = time.perf_counter()
        for index in range(first, first + chunk):
            info("value %s", index)
        # A burst's last records are part of its cost. Not for the no-writes stage: its flush
        # would write them (its sender thread does, later, out of the timed part).
        if type(handler) is ForwardingHandler:
            handler.flush()
        wall = time.perf_counter() - began
        cpu = time.thread_time() - cpu_began
        time.sleep(0.05)  # let the receiver drain before the next stage
        return wall, cpu

    for handler in handlers.values():
        root.handlers[:] = [handler]
        for index in range(WARMUP):
            info("value %s", -1 - index)
    time.sleep(0.1)
    names = list(handlers)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for round_number in range(rounds):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            results[name].append(log_chunk(handlers[name], round_number * chunk))
    root.handlers[:] = []
    for handler in handlers.values():
        handler.close()
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
