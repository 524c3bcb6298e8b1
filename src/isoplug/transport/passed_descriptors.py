"""A descriptor passed along with a connection's first bytes (``SCM_RIGHTS``, unix sockets).

A log sender hands its receiver the shared memory that holds its unsent records (its sequence
ledger and ring, :mod:`isoplug.logs.ledger`) with the very write that carries its hello. Once
that write returned, the kernel holds the descriptor for the receiver, in the connection's
queue, however late the receiver reads it and whatever becomes of the sender meanwhile: a
sender that ``os._exit()``-s or is killed before the receiver even accepted the connection
still leaves its records where the receiver can read them. Opening ``/proc/<pid>/fd/<n>``
instead works only while the sender lives.

The receiving side must take the descriptor with the first read of those bytes: a plain
``recv()`` of them makes the kernel drop it. A blocking listener reads them with
:func:`receive_passing`; an asyncio one cannot choose how its transport reads, so it peeks at
them first (:func:`peek_passed_now`, ``MSG_PEEK``: the bytes stay for the transport, the
descriptor comes as a duplicate of our own; see :class:`~isoplug.transport.SocketStream`).
At most one descriptor is taken: a peer that passes more has the rest closed. What the
descriptor is, is the taker's to check; it is close-on-exec, and the taker's to close.
"""

from __future__ import annotations

import array
import os
import socket

__all__ = ["descriptor_of", "pass_with", "peek_passed_now", "receive_passing"]

#: Room for one descriptor's control message: any more are closed by the kernel.
_CONTROL_ROOM = socket.CMSG_SPACE(array.array("i").itemsize)


def pass_with(sock: socket.socket, data: bytes, descriptor: int) -> None:
    """Write all of ``data`` on a blocking unix socket, ``descriptor`` passed with its first
    byte. Raises ``OSError`` as ``sendall`` would."""
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [descriptor]))]
    sent = sock.sendmsg([data], rights)
    if sent < len(data):
        # The descriptor went with the first part; the rest is plain bytes.
        sock.sendall(memoryview(data)[sent:])


def descriptor_of(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The descriptor in ``recvmsg()``'s ancillary data, if any; closes any extra ones."""
    found: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            numbers = array.array("i")
            numbers.frombytes(data[: len(data) - len(data) % numbers.itemsize])
            found.extend(numbers)
    for extra in found[1:]:
        os.close(extra)
    return found[0] if found else None


def peek_passed_now(sock: socket.socket) -> tuple[bool, int | None]:
    """Without waiting: ``(True, descriptor or None)`` once the peer wrote its first bytes
    (or closed its end), ``(False, None)`` while it has not."""
    try:
        data, ancillary, _, _ = sock.recvmsg(
            1, _CONTROL_ROOM, socket.MSG_PEEK | socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
        )
    except (BlockingIOError, InterruptedError):
        return False, None
    except OSError:
        # A reset connection: the handshake's own read says so.
        return True, None
    return True, descriptor_of(ancillary) if data else None


def receive_passing(sock: socket.socket, size: int, passed: list[int]) -> bytes:
    """``sock.recv(size)`` that appends a descriptor passed with the bytes to ``passed``
    (none past the first: any further ones are closed)."""
    data, ancillary, _, _ = sock.recvmsg(size, _CONTROL_ROOM, socket.MSG_CMSG_CLOEXEC)
    descriptor = descriptor_of(ancillary)
    if descriptor is not None:
        if passed:
            os.close(descriptor)
        else:
            passed.append(descriptor)
    return data
