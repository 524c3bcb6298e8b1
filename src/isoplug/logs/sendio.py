"""Writing to a log connection's socket without blocking on a full buffer: the sends of
:mod:`isoplug.logs.sender`, :mod:`isoplug.logs.batching` and :mod:`isoplug.logs.closing`, and
the real stderr on which isoplug says its own trouble."""

from __future__ import annotations

import select
import socket
import ssl
import sys
import time

__all__ = ["say", "send_now", "send_tls_now", "send_within", "wait_for_room"]

#: How long a send that found no room waits before it tries again (see send_within).
_FIRST_PAUSE = 0.001
_LAST_PAUSE = 0.05


def send_within(
    sock: socket.socket, data: bytes | memoryview, *, tls: bool, deadline: float | None = None
) -> bool:
    """Send all of ``data``, taking room in the kernel as soon as it has some; False if
    ``deadline`` (``time.monotonic()``) passed first, the rest unsent. Raises ``OSError`` when
    the connection broke.

    Not ``sendall()``: Linux wakes a writer blocked on a full unix socket (and says POLLOUT)
    only once its buffer is three quarters empty, while a non-blocking send succeeds as soon
    as any of it is free. With a receiver taking 1 ms a record and 8 MiB in the kernel, a
    blocked frame waited some 25 s, past any close deadline; so a send that finds no room
    waits for POLLOUT at most a short pause, then tries again (pauses of 1 ms doubling up to
    50 ms, or to what is left of the deadline).
    """
    view = memoryview(data)
    pause = _FIRST_PAUSE
    while view:
        sent = send_now(sock, view, tls=tls)
        if sent:
            view = view[sent:]
            pause = _FIRST_PAUSE
            continue
        wait = pause
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                return False
        wait_for_room(sock, wait)
        pause = min(pause * 2, _LAST_PAUSE)
    return True


def wait_for_room(sock: socket.socket, seconds: float) -> None:
    """Wait up to ``seconds`` for ``sock`` to say it takes more (see :func:`send_within`)."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    poller.poll(seconds * 1000)


def send_now(sock: socket.socket, data: bytes | memoryview, *, tls: bool) -> int:
    """Send what the kernel takes of ``data`` at once, without blocking."""
    if tls:
        assert isinstance(sock, ssl.SSLSocket)
        return send_tls_now(sock, data)
    try:
        return sock.send(data, socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return 0


def send_tls_now(sock: ssl.SSLSocket, data: bytes | memoryview) -> int:
    """``send(data, MSG_DONTWAIT)`` for TLS, which takes no flags: all of it, or 0.

    Python's TLS writes are whole or nothing, and one that could not finish must be retried
    with the same bytes: the caller leaves the whole frame to the sender thread, which sends
    it before anything else.
    """
    sock.setblocking(False)
    try:
        return sock.send(data)
    except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
        return 0
    finally:
        sock.setblocking(True)


def say(text: str) -> None:
    """isoplug's own trouble, on the real stderr: in a runner ``sys.stderr`` turns lines into
    records, which would come back into the handler that is failing."""
    stream = sys.__stderr__ or sys.stderr
    try:
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError):
        return  # no stderr left (closed, or at interpreter exit): nowhere to say it
