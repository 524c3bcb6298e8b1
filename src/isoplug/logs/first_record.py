"""The first record: a forwarding handler waits for its connection before the process may end.

The connection (and, on a unix socket, the ledger and ring the receiver must open while this
process lives) is opened by the sender thread, on the first record or on
:meth:`~FirstRecord.start`. Until it is, a record is in this process's memory only, and a
process that ends at once (``os._exit`` in a forked child, a crash) would take it along unseen:
the receiver would not even learn that the process existed. So the first record of a process
waits, up to the handler's ``first_record_wait`` (:data:`FIRST_RECORD_WAIT`, 0.5 s), until the
connection is open and the receiver has opened the ledger (its acknowledgement,
:data:`~isoplug.logs.ledger.ACKNOWLEDGED`): about a millisecond when the receiver is there (see
``docs/benchmarks.md``); an address where nothing listens fails at once on a unix socket. Past
the wait (a receiver too slow to answer) the record is queued as any other, and only what a
crash takes before the connection is open goes unreported. :meth:`~FirstRecord.start` (which
:func:`~isoplug.logs.forward_logs` calls) waits the same way, so later records never wait. A
receiver that never acknowledges (one that cannot open this process's ``/proc/<pid>/fd``:
another pid namespace, a non-dumpable process) costs the wait once: neither this handler nor
its forked children wait for the acknowledgement again. A receiver on the event loop of the
very thread that logs the first record cannot answer while that thread waits: there, call
:meth:`~FirstRecord.start` from another thread first (``asyncio.to_thread``), or pass
``first_record_wait=0``.

Separate from :mod:`isoplug.logs.handler` because it is the start of a handler's life, not the
path of every record: :class:`FirstRecord` (a base class of
:class:`~isoplug.logs.ForwardingHandler`) holds the check a record makes while the handler has
no sender thread yet (or must not forward: on the sender thread, after ``close()``), and the
waits of the first record and of :meth:`~FirstRecord.start`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

from isoplug.logs.ledger import ACKNOWLEDGED, SenderLedger

__all__ = ["ACKNOWLEDGE_WAIT", "FIRST_RECORD_WAIT", "FirstRecord"]

#: The longest a process's first record waits for the connection and the receiver's
#: acknowledgement of the ledger (see the module docstring): long enough for a receiver on
#: a loaded machine to answer (milliseconds, usually), short enough that a hung one costs a
#: program one noticeable pause, once.
FIRST_RECORD_WAIT = 0.5
#: Once connected, how long :meth:`FirstRecord.start` waits for the acknowledgement (the
#: receiver opens the ledger as soon as it reads the connection's first batch).
ACKNOWLEDGE_WAIT = 0.5
#: How often a wait for the acknowledgement looks at the ledger: the receiver writes it into
#: shared memory and sends nothing that could wake us. Doubling from 50 us, up to 5 ms.
_ACK_FIRST_PAUSE = 0.00005
_ACK_LAST_PAUSE = 0.005


class FirstRecord:
    """The first record's half of :class:`~isoplug.logs.ForwardingHandler` (see the module
    docstring). The state is the handler's (``SenderThread``'s declarations)."""

    _first_record_wait: float
    #: Set once a receiver did not acknowledge within the wait: not waited for again, here or
    #: in forked children.
    _ack_missing: bool
    _connect_timeout: float
    _queue_lock: threading.Lock
    _queue_changed: threading.Condition
    _ledger: memoryview
    _shared_ledger: SenderLedger | None
    _sock: socket.socket | None
    _failed: str | None
    _closed: bool
    _thread: threading.Thread | None
    _sender_ident: int | None

    if TYPE_CHECKING:  # the handler's own, SenderThread's, logging.Handler's: no stub may shadow

        def _fallback(self, record: logging.LogRecord, why: str) -> None: ...

        def _start(self) -> None: ...

        def handleError(self, record: logging.LogRecord) -> None: ...

    def _may_forward(self, record: logging.LogRecord) -> bool:
        """The first record (starts the sender), or one that must not be forwarded."""
        if record.thread == self._sender_ident or self._closed:
            # Never loop back: records from our own sender thread (a library it calls, say),
            # or arriving after close (interpreter shutdown), go to stderr instead of nowhere.
            self._fallback(
                record, "log handler closed" if self._closed else "logged by the log sender"
            )
            return False
        try:
            self._start()
        except Exception:
            self.handleError(record)
            return False
        if self._first_record_wait > 0:
            # Until the connection (and the receiver's hold on the ledger) exists, this record
            # would die unseen with the process (see the module docstring).
            self._wait_ready(time.monotonic() + self._first_record_wait, self._first_record_wait)
        return True

    def start(self, timeout: float | None = None) -> bool:
        """Connect now instead of on the first record; wait up to ``timeout`` for it, then up
        to :data:`ACKNOWLEDGE_WAIT` for the receiver to open the ledger (unix sockets).

        Returns True once connected; False if still connecting or failed (see
        :attr:`~isoplug.logs.ForwardingHandler.failure`).
        """
        if self._thread is None:
            self._start()
        deadline = time.monotonic() + (self._connect_timeout if timeout is None else timeout)
        return self._wait_ready(deadline, ACKNOWLEDGE_WAIT)

    def _wait_ready(self, deadline: float, ack_wait: float) -> bool:
        """Wait until connected, or ``deadline`` (``time.monotonic()``); then, with a ledger,
        up to ``ack_wait`` more (not past ``deadline``) for the receiver's acknowledgement.
        True once connected."""
        with self._queue_changed:
            while self._sock is None and self._failed is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue_changed.wait(remaining)
            if self._sock is None:
                return False
            if self._ack_missing:
                return True
        ack_deadline = min(deadline, time.monotonic() + ack_wait)
        pause = _ACK_FIRST_PAUSE
        while True:
            with self._queue_lock:
                # Under the lock: a break or close() swaps the ledger and releases its memory.
                if self._shared_ledger is None or self._ledger[ACKNOWLEDGED]:
                    return True
            remaining = ack_deadline - time.monotonic()
            if remaining <= 0:
                self._ack_missing = True
                return True
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, _ACK_LAST_PAUSE)
