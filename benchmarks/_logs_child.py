"""The child side of ``benchmarks/logs_vs_peers.py``: a process that logs, then reports or dies.

Run as a script for the peers started with ``subprocess.Popen``::

    python _logs_child.py KIND MODE COUNT RATE WARMUP RESULT [ADDRESS]

with KIND one of ``nop``, ``isoplug``, ``isoplug-noring`` (isoplug without its shared-memory
ring: records batched in memory, the first after a pause written through, as before rings),
``socket``, ``socket-nodelay``. The peers that must share
a ``multiprocessing`` object with the parent (the stdlib ``multiprocessing.Queue``, loguru's
``enqueue=True`` queue) start :func:`mp_queue_child` and :func:`loguru_child` with the spawn
start method instead.

Every child first logs ``WARMUP`` records (connections open, threads start), then ``COUNT``
records ``"value %s"`` from the logger ``bench``, and then, by ``MODE``:

- ``burst``: at full speed; writes ``{"start": wall clock of the first call, "seconds": the
  burst's duration}`` as JSON to ``RESULT``, then exits normally (handlers flush);
- ``paced``: at ``RATE`` records/s; writes ``{"cpu_seconds": CPU time of the whole process
  (every thread) while logging}`` to ``RESULT``, then exits normally;
- ``bursts``: in bursts of :data:`BURST_RECORDS` at full speed, :data:`BURST_PAUSE` apart;
  writes ``{"start": ..., "seconds": the time spent inside the bursts}`` (as ``burst`` does);
- ``crash``: at ``RATE`` records/s (full speed when 0), then ``os._exit(0)`` at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import logging.handlers
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import multiprocessing.queues

    import loguru

LOGGER_NAME = "bench"
#: Issue 18, item 4: a program that logs bursts of 50 records every 20 ms.
BURST_RECORDS = 50
BURST_PAUSE = 0.020
STDLIB_FORMAT = "value %s"
LOGURU_FORMAT = "value {}"


@dataclasses.dataclass(frozen=True)
class Task:
    """What one child does (see the module docstring); picklable for spawned children."""

    mode: str
    count: int
    rate: float
    warmup: int
    result_path: str

    def argv(self) -> list[str]:
        return [self.mode, str(self.count), str(self.rate), str(self.warmup), self.result_path]

    @classmethod
    def from_argv(cls, argv: list[str]) -> Task:
        mode, count, rate, warmup, result_path = argv
        return cls(mode, int(count), float(rate), int(warmup), result_path)


class Nop(logging.Handler):
    """The floor: a handler that does nothing."""

    def emit(self, record: logging.LogRecord) -> None:
        pass


class NoDelaySocketHandler(logging.handlers.SocketHandler):
    """The stdlib SocketHandler with ``TCP_NODELAY`` (no Nagle delay for small records)."""

    def makeSocket(self, timeout: float = 1) -> socket.socket:
        sock = super().makeSocket(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def log_records(info: Callable[..., None], fmt: str, task: Task) -> None:
    """Carry out ``task``; ``info`` is a bound ``logger.info``, ``fmt`` its message format."""
    for index in range(task.warmup):
        info(fmt, -1 - index)
    time.sleep(0.05)  # let the warm-up records drain before the measured part
    count = task.count
    if task.mode == "bursts":
        start = time.time()
        seconds = 0.0
        for first in range(0, count, BURST_RECORDS):
            time.sleep(BURST_PAUSE)
            began = time.perf_counter()
            for index in range(first, min(first + BURST_RECORDS, count)):
                info(fmt, index)
            seconds += time.perf_counter() - began
        with open(task.result_path, "w") as file:
            json.dump({"start": start, "seconds": seconds}, file)
        return
    if task.mode == "burst":
        start = time.time()
        began = time.perf_counter()
        for index in range(count):
            info(fmt, index)
        seconds = time.perf_counter() - began
        with open(task.result_path, "w") as file:
            json.dump({"start": start, "seconds": seconds}, file)
        return
    cpu_began = time.process_time()
    if task.rate > 0:
        interval = 1.0 / task.rate
        began = time.perf_counter()
        for index in range(count):
            delay = began + index * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            info(fmt, index)
    else:
        for index in range(count):
            info(fmt, index)
    if task.mode == "crash":
        os._exit(0)
    with open(task.result_path, "w") as file:
        json.dump({"cpu_seconds": time.process_time() - cpu_began}, file)


def _stdlib_logger(handler: logging.Handler) -> logging.Logger:
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return logging.getLogger(LOGGER_NAME)


def mp_queue_child(queue: multiprocessing.queues.Queue[Any], task: Task) -> None:
    """Peer (b): the stdlib ``QueueHandler`` on a ``multiprocessing.Queue`` (spawned child)."""
    logger = _stdlib_logger(logging.handlers.QueueHandler(queue))
    log_records(logger.info, STDLIB_FORMAT, task)


def loguru_child(logger: loguru.Logger, task: Task) -> None:
    """Peer (d): loguru with ``enqueue=True``; ``logger`` is the parent's, pickled by spawn."""
    log_records(logger.info, LOGURU_FORMAT, task)


def main(argv: list[str]) -> None:
    kind, task = argv[0], Task.from_argv(argv[1:6])
    handler: logging.Handler
    if kind == "nop":
        handler = Nop()
    elif kind in ("isoplug", "isoplug-noring"):
        # Only these kinds need isoplug (the spawned children import this module too).
        from isoplug.logs import ADDRESS_ENV, TOKEN_ENV, forward_logs

        if kind == "isoplug-noring":
            from isoplug.logs import handler as handler_module

            # Rings of no bytes: the ledger alone, as before rings.
            vars(handler_module)["ring_capacity"] = lambda queue_bytes: 0

        forward_logs(os.environ[ADDRESS_ENV], os.environ[TOKEN_ENV], level=logging.INFO)
        handler = logging.getLogger().handlers[0]
    elif kind in ("socket", "socket-nodelay"):
        host, port = argv[6].rsplit(":", 1)
        factory = (
            NoDelaySocketHandler if kind == "socket-nodelay" else logging.handlers.SocketHandler
        )
        handler = factory(host, int(port))
    else:
        raise SystemExit(f"unknown child kind {kind!r}")
    logger = _stdlib_logger(handler)
    log_records(logger.info, STDLIB_FORMAT, task)


if __name__ == "__main__":
    main(sys.argv[1:])
