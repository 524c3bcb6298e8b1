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

Device and inode do not tell apart the files of the kernel's anonymous inode (an ``epoll``
poller, an ``eventfd``, a ``signalfd``: an event loop's own): every epoll has the same. For
those, :meth:`FdIdentity.exact` keeps a duplicate of the descriptor and asks the kernel
(``kcmp(KCMP_FILE)``, Linux) whether the number still names the very file the duplicate does:
a plugin's own epoll put over an event loop's by ``os.dup2()`` is told apart then.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
from collections.abc import Callable

__all__ = ["FdIdentity", "detach_if_not_ours"]

#: ``kcmp``'s system call number by machine (no C library wraps it); elsewhere, no exact look.
_KCMP_CALLS = {
    "x86_64": 312,
    "aarch64": 272,
    "riscv64": 272,
    "i686": 349,
    "ppc64le": 354,
    "s390x": 343,
    "armv7l": 378,
}
_KCMP_FILE = 0


class _Kcmp:
    """The ``kcmp`` system call, while the kernel lets this process make it (a kernel without
    it, or a seccomp filter, answers ``ENOSYS`` or ``EPERM``: then never again)."""

    def __init__(self) -> None:
        self.number = _KCMP_CALLS.get(platform.machine())
        self._syscall = None
        if self.number is not None:
            try:
                self._syscall = ctypes.CDLL(None, use_errno=True).syscall
            except (OSError, AttributeError):
                self.number = None

    def same_file(self, fd: int, other: int) -> bool | None:
        """Whether this process's ``fd`` and ``other`` name one open file; None when the
        kernel cannot say (no kcmp, or ``other`` closed)."""
        if self.number is None or self._syscall is None:
            return None
        pid = os.getpid()
        answer = self._syscall(self.number, pid, pid, _KCMP_FILE, fd, other)
        if answer == 0:
            return True
        if answer > 0:
            return False
        if ctypes.get_errno() in (errno.ENOSYS, errno.EPERM, errno.EACCES):
            self.number = None
        return None


_kcmp = _Kcmp()


class FdIdentity:
    """The file descriptor ``fd`` named when this was made (``fstat``'s device and inode)."""

    __slots__ = ("_dev", "_ino", "duplicate", "fd")

    def __init__(self, fd: int) -> None:
        status = os.fstat(fd)
        self.fd = fd
        self._dev = status.st_dev
        self._ino = status.st_ino
        #: The duplicate :meth:`exact` keeps, if any (the owner closes it: :meth:`release`).
        self.duplicate: int | None = None

    @classmethod
    def of_socket(cls, sock: socket.socket) -> FdIdentity:
        return cls(sock.fileno())

    @classmethod
    def exact(cls, fd: int) -> FdIdentity:
        """As ``FdIdentity(fd)``; for a file of the anonymous inode, with a duplicate kept to
        tell it from another such file (one more descriptor, until :meth:`release`)."""
        identity = cls(fd)
        if _kcmp.number is not None and _is_anonymous(fd):
            # The lowest free number, not one put high out of a program's way: a number past
            # the 64 the process's descriptor table starts with makes the kernel grow it, which
            # in a process with threads waits out an RCU grace period (+10 ms per runner start).
            # Not inherited by programs run (close-on-exec).
            identity.duplicate = os.dup(fd)
        return identity

    def holds(self) -> bool:
        """Whether the number still names the same open file: False once it was closed, or
        reused for another file, pipe or socket (or, with :meth:`exact`, another epoll)."""
        try:
            status = os.fstat(self.fd)
        except OSError:
            return False  # EBADF: closed, and not reused (yet)
        if status.st_ino != self._ino or status.st_dev != self._dev:
            return False
        if self.duplicate is None:
            return True
        # None (the duplicate was closed behind our back): the device and inode decide.
        return _kcmp.same_file(self.fd, self.duplicate) is not False

    def release(self, close: Callable[[int], None] = os.close) -> None:
        """Close the duplicate :meth:`exact` kept, with ``close`` (``os.close`` by default)."""
        duplicate, self.duplicate = self.duplicate, None
        if duplicate is not None:
            try:
                close(duplicate)
            except OSError as error:
                if error.errno != errno.EBADF:  # closed behind our back: nothing to release
                    raise


def _is_anonymous(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("anon_inode:")
    except OSError:
        return False  # no /proc: no kcmp either


def detach_if_not_ours(sock: socket.socket, identity: FdIdentity | None) -> bool:
    """Forget ``sock``'s descriptor number, without closing it, if it no longer names the
    socket ``identity`` noted: it is someone else's now, or nobody's, and a later
    ``sock.close()`` must leave it alone. Returns whether it did."""
    if identity is None or sock.fileno() != identity.fd or identity.holds():
        return False
    sock.detach()
    return True
