"""The first record: a forwarding handler waits for its connection before the process may end.

The connection (and, on a unix socket, the ledger and ring the receiver must open while this
process lives) is opened by the sender thread, on the first record or on the handler's
``start()``. Until it is, a record is in this process's memory only, and a process that ends at
once (``os._exit`` in a forked child, a crash) would take it along unseen: the receiver would
not even learn that the process existed. So the first record of a process waits, up to the
handler's ``first_record_wait`` (:data:`FIRST_RECORD_WAIT`, 0.5 s), until the connection is open
and the receiver has opened the ledger (its acknowledgement,
:data:`~isoplug.logs.ledger.ACKNOWLEDGED`): about a millisecond when the receiver is there (see
``docs/benchmarks.md``); an address where nothing listens fails at once on a unix socket. Past
the wait (a receiver too slow to answer) the record is queued as any other, and only what a
crash takes before the connection is open goes unreported. ``start()`` (which
:func:`~isoplug.logs.forward_logs` calls) waits the same way, so later records never wait. A
receiver that never acknowledges (one that cannot open this process's ``/proc/<pid>/fd``:
another pid namespace, a non-dumpable process) costs the wait once: neither this handler nor its
forked children wait for the acknowledgement again. A receiver on the event loop of the very
thread that logs the first record cannot answer while that thread waits: there, call ``start()``
from another thread first (``asyncio.to_thread``), or pass ``first_record_wait=0``.

Separate from :mod:`isoplug.logs.handler` because it is the start of a handler's life, not the
path of every record: :func:`may_forward` is what a record does while the handler has no
sender thread yet (or must not forward: on the sender thread, after ``close()``), and
:func:`wait_ready` the wait of the first record and of
:meth:`~isoplug.logs.ForwardingHandler.start`. Functions of the handler, not a base class of
it: as a base class (one more class in the handler's MRO) it made every ``logger.info()`` about
50 instructions dearer (0.1 %, ``benchmarks/logs_instructions.py``, repeatable under
callgrind); as functions it costs nothing there.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from isoplug.logs.ledger import ACKNOWLEDGED, acknowledged_level

if TYPE_CHECKING:
    from isoplug.logs.handler import ForwardingHandler

__all__ = [
    "ACKNOWLEDGE_WAIT",
    "FIRST_RECORD_WAIT",
    "acknowledged_within",
    "may_forward",
    "wait_ready",
]

#: The longest a process's first record waits for the connection and the receiver's
#: acknowledgement of the ledger (see the module docstring): long enough for a receiver on
#: a loaded machine to answer (milliseconds, usually), short enough that a hung one costs a
#: program one noticeable pause, once.
FIRST_RECORD_WAIT = 0.5
#: Once connected, how long :meth:`~isoplug.logs.ForwardingHandler.start` waits for the
#: acknowledgement (the receiver opens the ledger as soon as it reads the connection's first
#: batch).
ACKNOWLEDGE_WAIT = 0.5
#: How often a wait for the acknowledgement looks at the ledger: the receiver writes it into
#: shared memory and sends nothing that could wake us. Doubling from 50 us, up to 5 ms.
_ACK_FIRST_PAUSE = 0.00005
_ACK_LAST_PAUSE = 0.005


def may_forward(handler: ForwardingHandler, record: logging.LogRecord) -> bool:
    """Whether ``handler`` may forward ``record``, a record it handles with no sender thread
    yet, on its sender thread, or after ``close()``: the first record starts the sender and
    waits; the others must not be forwarded."""
    if record.thread == handler._sender_ident or handler._closed:
        # Never loop back: records from our own sender thread (a library it calls, say),
        # or arriving after close (interpreter shutdown), go to stderr instead of nowhere.
        handler._fallback(
            record, "log handler closed" if handler._closed else "logged by the log sender"
        )
        return False
    try:
        handler._start()
    except Exception:
        handler.handleError(record)
        return False
    wait = handler._first_record_wait
    if wait > 0:
        # Until the connection (and the receiver's hold on the ledger) exists, this record
        # would die unseen with the process (see the module docstring).
        wait_ready(handler, time.monotonic() + wait, wait)
    return True


def wait_ready(handler: ForwardingHandler, deadline: float, ack_wait: float) -> bool:
    """Wait until ``handler`` is connected, or ``deadline`` (``time.monotonic()``); then, with
    a ledger, up to ``ack_wait`` more (not past ``deadline``) for the receiver's
    acknowledgement. True once connected."""
    with handler._queue_changed:
        while handler._sock is None and handler._failed is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            handler._queue_changed.wait(remaining)
        if handler._sock is None:
            return False
        if handler._ack_missing:
            return True
    ack_deadline = min(deadline, time.monotonic() + ack_wait)
    pause = _ACK_FIRST_PAUSE
    while True:
        with handler._queue_lock:
            # Under the lock: a break or close() swaps the ledger and releases its memory.
            if handler._shared_ledger is None or handler._ledger[ACKNOWLEDGED]:
                return True
        remaining = ack_deadline - time.monotonic()
        if remaining <= 0:
            # Not waited for again, here or in forked children (kept across _init_state).
            handler._ack_missing = True
            return True
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, _ACK_LAST_PAUSE)


def receiver_level(handler: ForwardingHandler) -> int | None:
    """The level from which the receiver's side handles records, as its acknowledgement of the
    ledger said, or else its welcome (None: neither said)."""
    with handler._queue_lock:
        # Under the lock: a break or close() swaps the ledger and releases its memory.
        if handler._shared_ledger is not None:
            level = acknowledged_level(handler._ledger[ACKNOWLEDGED])
            if level is not None:
                return level
        return handler.welcome_level


def acknowledged_within(ledger: memoryview, timeout: float) -> bool:
    """Wait up to ``timeout`` for the receiver's acknowledgement of a ledger no other thread
    uses yet (a reconnection's new one: see :mod:`isoplug.logs.sender_link`); whether it came."""
    deadline = time.monotonic() + timeout
    pause = _ACK_FIRST_PAUSE
    while not ledger[ACKNOWLEDGED]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, _ACK_LAST_PAUSE)
    return True
