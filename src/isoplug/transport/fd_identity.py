"""Whether a descriptor number still names the file this process opened under it.

A process may close any of its descriptors behind a library's back: a program that daemonizes,
or cleans up its descriptors in a loop, closes the sockets of isoplug's threads too. The
library's objects keep the number, and the kernel hands that number to the next ``open()``,
``socket()`` or ``accept()`` of the program. Writing to the number then writes into the
program's file or connection; closing it closes the program's.

So a thread that owns a descriptor other code may close notes its identity when it opens it
(the device and inode ``fstat`` gives: a socket's inode is its own, for as long as it is
open), and asks :meth:`FdIdentity.holds` before a write it must not misdirect and before it
closes the number. One ``fstat`` (about half a microsecond): cheap once per batch or per
close, not free once per record. The check and the write are two system calls, so another
thread that closes and reopens the number between them still wins the race; a descriptor
closed before the check (the usual case: the program closed it and went on) is found.
"""

from __future__ import annotations

import os
import socket

__all__ = ["FdIdentity", "detach_if_not_ours"]


class FdIdentity:
    """The file descriptor ``fd`` named when this was made (``fstat``'s device and inode)."""

    __slots__ = ("_dev", "_ino", "fd")

    def __init__(self, fd: int) -> None:
        status = os.fstat(fd)
        self.fd = fd
        self._dev = status.st_dev
        self._ino = status.st_ino

    @classmethod
    def of_socket(cls, sock: socket.socket) -> FdIdentity:
        return cls(sock.fileno())

    def holds(self) -> bool:
        """Whether the number still names the same open file: False once it was closed, or
        reused for another file, pipe or socket."""
        try:
            status = os.fstat(self.fd)
        except OSError:
            return False  # EBADF: closed, and not reused (yet)
        return status.st_ino == self._ino and status.st_dev == self._dev


def detach_if_not_ours(sock: socket.socket, identity: FdIdentity | None) -> bool:
    """Forget ``sock``'s descriptor number, without closing it, if it no longer names the
    socket ``identity`` noted: it is someone else's now, or nobody's, and a later
    ``sock.close()`` must leave it alone. Returns whether it did."""
    if identity is None or sock.fileno() != identity.fd or identity.holds():
        return False
    sock.detach()
    return True
