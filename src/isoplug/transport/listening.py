"""The socket a listener listens on, for each kind of address: a unix one in a fresh private
folder (or at a path given, freed of a stale socket file), a TCP one.

The private folder comes from :func:`tempfile.mkdtemp`, which creates it with mode 0700 in one
system call, so there is no moment at which another local user could reach the socket (no chmod
race). Shared by the asyncio listener (:mod:`isoplug.transport.sockets`) and the threads' one
(:mod:`isoplug.transport.blocking`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from typing import Any

from isoplug.errors import TransportError
from isoplug.transport.address import Address, Scheme
from isoplug.transport.owner_lock import hold_owner_lock
from isoplug.transport.private_places import PrivatePlace, remove_folder
from isoplug.transport.socket_dirs import owner_prefix
from isoplug.transport.temp_places import make_private_folder

__all__ = [
    "cannot_listen_again",
    "given_unix_path",
    "make_private_socket_dir",
    "private_unix_socket",
    "private_unix_socket_again",
    "tcp_listening_socket",
    "unix_listening_socket",
]


def _someone_listens_on(path: str) -> bool:
    """Whether a live process accepts connections on unix socket file ``path``.

    asyncio's ``create_unix_server`` removes an existing socket file before binding, which is
    right for a stale file left by a crash, and wrong for one another process is serving: it
    would silently lose its clients to us. A non-blocking connect tells the two apart.
    """
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return False  # not a socket: binding fails with a clear "address in use"
    except FileNotFoundError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False  # stale: nobody listens
        except BlockingIOError:
            return True  # a listener whose backlog is full
        return True


def given_unix_path(parsed: Address) -> str:
    """``parsed``'s path (a ``unix:PATH`` address), freed of a stale socket file. Refused with
    :class:`~isoplug.errors.TransportError` when a live process listens there."""
    if _someone_listens_on(parsed.path):
        raise TransportError(
            f"cannot listen on {parsed}: another process is listening there "
            "(choose another path, or stop it first)"
        )
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(parsed.path).st_mode):
            os.unlink(parsed.path)  # stale: nobody listens (checked above)
    return parsed.path


def tcp_listening_socket(resolved: list[Any], backlog: int) -> socket.socket:
    """A TCP socket listening on the first of ``resolved`` (what ``getaddrinfo`` returned for
    the host): one socket, one port, whatever else the name resolves to."""
    family, _, _, _, sockaddr = resolved[0]
    return socket.create_server(sockaddr, family=family, backlog=backlog)


def make_private_socket_dir() -> str:
    """Create a new directory only this user can enter (mode 0700) and return its path: in
    the first temporary folder that takes it where a socket path inside fits the kernel's
    limit (:func:`~isoplug.transport.temp_places.make_private_folder`: a ``$TMPDIR`` deleted,
    full or too deep gives way to ``/tmp``, ``/var/tmp``, said once; never the working
    directory). Its name says which process made it, so that it can be removed should this
    process die without closing its listener (see :mod:`isoplug.transport.socket_dirs`).
    Raises :class:`~isoplug.errors.NoTemporaryFolder` when no temporary folder takes it."""
    return make_private_folder(owner_prefix(), socket_name="sock")


def unix_listening_socket(path: str, backlog: int) -> socket.socket:
    """A unix socket bound to ``path`` and listening (its stale file already removed: see
    :func:`unix_listening_path`)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def private_unix_socket(parsed: Address, backlog: int) -> tuple[socket.socket, PrivatePlace]:
    """A unix socket listening for ``parsed``, and its place as made. ``unix:`` alone: in a
    fresh private folder (:func:`make_private_socket_dir`'s), whose owner lock this process
    holds until the listener removes it (:mod:`isoplug.transport.owner_lock`); a temporary
    folder that takes the folder but not its lock or socket (out of inodes) gives way to the
    next. A given path: see :func:`given_unix_path`. Raises :class:`OSError`,
    :class:`~isoplug.errors.NoTemporaryFolder` or :class:`~isoplug.errors.TransportError`."""
    if parsed.path:
        path = given_unix_path(parsed)
        sock = unix_listening_socket(path, backlog)
        try:
            return sock, PrivatePlace.made(path, None)
        except BaseException:
            sock.close()
            raise
    made: list[socket.socket] = []

    def listen_inside(folder: str) -> None:
        path = os.path.join(folder, "sock")
        try:
            hold_owner_lock(folder)
            made.append(unix_listening_socket(path, backlog))
        except BaseException:
            # Made just now, for this socket alone; the error says what failed.
            _discard(folder, path)
            raise

    folder = make_private_folder(owner_prefix(), socket_name="sock", fill=listen_inside)
    path = os.path.join(folder, "sock")
    try:
        return made[0], PrivatePlace.made(path, folder)
    except BaseException:
        made[0].close()
        _discard(folder, path)
        raise


def private_unix_socket_again(
    lost: PrivatePlace, backlog: int
) -> tuple[socket.socket, PrivatePlace]:
    """:func:`private_unix_socket` in place of ``lost`` (a private folder's socket a
    temporary-file cleaner deleted): at the same path where this process can make it again now
    (its folder deleted and the name still free, or its folder still ours): then every process
    that was given the address (a plugin's own children, started with it) reaches it again.
    Else (someone made a folder under the name) in a fresh private folder. Raises as
    :func:`private_unix_socket` does."""
    folder = lost.folder
    if folder is None:
        raise ValueError("only a socket in a private folder of its own is made again")
    change = folder.change()
    remade = False
    if change == "deleted":
        try:
            # Atomic: made by us now, 0700 (the umask can only take bits away), or not at
            # all when someone made it first.
            os.mkdir(folder.path, 0o700)
        except OSError:
            return private_unix_socket(Address(Scheme.UNIX), backlog)
        remade = True
        try:
            hold_owner_lock(folder.path)
        except OSError:
            # Its name was free, but no file can be made in it (the temporary folder out of
            # inodes, say): a fresh folder, in the next temporary folder that takes one.
            _discard(folder.path, lost.path)
            return private_unix_socket(Address(Scheme.UNIX), backlog)
        except BaseException:
            _discard(folder.path, lost.path)
            raise
    elif change is not None:
        return private_unix_socket(Address(Scheme.UNIX), backlog)
    try:
        sock = unix_listening_socket(lost.path, backlog)
    except OSError:
        # A file at the path (a same-user process's, in our folder), or no room for the
        # socket's inode: a fresh folder instead.
        if remade:
            _discard(folder.path, lost.path)
        return private_unix_socket(Address(Scheme.UNIX), backlog)
    try:
        return sock, PrivatePlace.made(lost.path, folder.path)
    except BaseException:
        sock.close()
        if remade:
            _discard(folder.path, lost.path)
        raise


def cannot_listen_again(place: PrivatePlace, lost: str, error: OSError) -> TransportError:
    """Why a listener at ``place`` (``lost``: what became of it) could not listen again."""
    return TransportError(f"cannot listen again on unix:{place.path} ({lost}): {error}")


def _discard(folder: str, socket_path: str) -> None:
    """Remove ``folder``, made just now for the socket at ``socket_path`` (there or not),
    without taking a descriptor: a listener that failed for want of them must still leave
    nothing. What stays (someone's file put there meanwhile) is left: the error that goes on
    says what failed."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    with contextlib.suppress(OSError):
        remove_folder(folder)
