"""The first record: a forwarding handler makes its records safe before the process may end.

The connection (and, on a unix socket, the ledger and ring that hold every record not sent yet,
:mod:`isoplug.logs.ledger`) is opened by the sender thread, on the first record or on the
handler's ``start()``. Until then, a record is in this process's memory only, and a process
that ends at once (``os._exit`` in a forked child, a crash) would take it along unseen: the
receiver would not even learn that the process existed. So the first record of a process waits,
up to the handler's ``first_record_wait`` (:data:`FIRST_RECORD_WAIT`, 0.5 s), until the
receiver welcomed the connection: about a millisecond when the receiver is there (see
``docs/benchmarks.md``); an address where nothing listens fails at once on a unix socket.
``start()`` (which :func:`~isoplug.logs.forward_logs` calls) waits the same way, so later
records never wait.

On a unix socket the records are safe long before that: the ledger and its ring go to the
receiver with the hello, in the same write (the descriptor passed with it:
:mod:`isoplug.transport.passed_descriptors`), and take every record from then on. The kernel
holds them for the receiver, however late it reads the connection and whatever becomes of this
process, so a process that ends once the wait gave up (a receiver too slow to answer on a
loaded machine) loses nothing either: the receiver replays its records from the ring when it
gets there. Only a process that ends before its hello is written (a connection that could not
be made within the wait: a listening backlog full) takes records along unseen. The wait for the
welcome remains for the host's sake: it admits a process of a runner's tree only while it can
see the process in that tree.

The first record used to wait, instead, for the receiver to open the ledger through
``/proc/<pid>/fd`` (possible only while the process lives) and acknowledge it: on a loaded
machine a receiver could take longer than the wait to get there, and a forked child that
logged and ``os._exit()``-ed then lost its records uncounted (about a third of 300 children
forked at once, found by an outside check). A receiver still acknowledges a ledger (the
acknowledgement carries the level its side handles records from), but nothing waits for it.

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

import contextlib
import logging
import sys
import time
import traceback
from typing import TYPE_CHECKING

from isoplug.logs.ledger import ACKNOWLEDGED, acknowledged_level

if TYPE_CHECKING:
    from isoplug.logs.handler import ForwardingHandler

__all__ = ["FIRST_RECORD_WAIT", "may_forward", "wait_ready"]

#: The longest a process's first record waits for the receiver's welcome (see the module
#: docstring): long enough for a receiver on a loaded machine to answer (milliseconds,
#: usually), short enough that a hung one costs a program one noticeable pause, once.
FIRST_RECORD_WAIT = 0.5


def may_forward(handler: ForwardingHandler, record: logging.LogRecord) -> bool:
    """Whether ``handler`` may forward ``record``, a record it handles with no sender thread
    yet, on its sender thread, or after ``close()``: the first record starts the sender and
    waits; the others must not be forwarded."""
    if record.thread == handler._sender_ident or handler._closed:
        # Never loop back: records from our own sender thread (a library it calls, say),
        # or arriving after close (interpreter shutdown), go to stderr instead of nowhere.
        _to_stderr(record, "log handler closed" if handler._closed else "logged by the log sender")
        return False
    try:
        handler._start()
    except Exception:
        handler.handleError(record)
        return False
    wait = handler._first_record_wait
    if wait > 0:
        # Until the hello (and the ledger with it) is written, this record would die unseen
        # with the process; until the welcome, the host could not place it in its runner's
        # tree (see the module docstring).
        wait_ready(handler, time.monotonic() + wait)
    return True


def wait_ready(handler: ForwardingHandler, deadline: float) -> bool:
    """Wait until ``handler`` is connected (the receiver welcomed it), or failed, or
    ``deadline`` (``time.monotonic()``). True once connected."""
    with handler._queue_changed:
        while handler._sock is None and handler._failed is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            handler._queue_changed.wait(remaining)
        return handler._sock is not None


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


def _to_stderr(record: logging.LogRecord, why: str) -> None:
    """Write a record that cannot be forwarded to stderr, where the supervisor still sees it.

    The process's own stderr: ``sys.stderr`` may be redirected into logging (a runner's
    is), which would bring the text back here, to be wrapped a second time."""
    stream = sys.__stderr__ or sys.stderr
    text = f"[{record.levelname} {record.name}] {record.getMessage()} ({why})\n"
    if record.exc_info and record.exc_info[1] is not None:
        # The traceback too: it is often the whole point (the sender thread's own failure,
        # which threading.excepthook logs on this very thread).
        text += "".join(traceback.format_exception(record.exc_info[1]))
    elif record.exc_text:
        text += record.exc_text + "\n"
    with contextlib.suppress(OSError, ValueError):
        stream.write(text)
        stream.flush()
