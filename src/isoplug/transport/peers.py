"""Who is at the other end of a socket, in the words of the kernel and the socket itself.

What a listener may trust about a peer before it reads a byte from it: a unix socket's
``SO_PEERCRED`` (pid, uid, gid), a TCP socket's ``host:port``. Never what the peer claims.
Separate from :mod:`isoplug.transport.stream` because both kinds of listener ask it (the
blocking one of a bare socket, the asyncio one through its stream), and the limits and
admissions above them pass it around without any stream.
"""

from __future__ import annotations

import socket
import struct

__all__ = ["PeerCredentials", "host_port", "peer_address_of", "peer_credentials_of"]


class PeerCredentials:
    """Who is at the other end of a unix socket, as the kernel says (not as the peer claims)."""

    __slots__ = ("family", "gid", "pid", "uid")

    def __init__(self, pid: int, uid: int, gid: int, family: str | None = None) -> None:
        self.pid = pid
        self.uid = uid
        self.gid = gid
        #: The family a listener's kinship placed the peer in as it accepted the connection
        #: (:mod:`isoplug.rpc.gate`), when the peer had just connected: the kernel's word on
        #: it for good, once that process has ended (its pid may name another by then).
        #: None: not asked, or a stranger.
        self.family = family

    def placed_in(self, family: str | None) -> PeerCredentials:
        """These credentials, with the family the listener placed the peer in."""
        return PeerCredentials(self.pid, self.uid, self.gid, family)

    def __repr__(self) -> str:
        return f"PeerCredentials(pid={self.pid}, uid={self.uid}, gid={self.gid})"


def host_port(peername: object) -> str:
    """``host:port`` (``[host]:port`` for IPv6) of an AF_INET/AF_INET6 peer name."""
    if not isinstance(peername, tuple) or len(peername) < 2:
        return ""
    host = str(peername[0])
    return f"[{host}]:{peername[1]}" if ":" in host else f"{host}:{peername[1]}"


def peer_address_of(sock: socket.socket) -> str:
    """``host:port`` of a TCP socket's peer (:attr:`Stream.peer_address`); empty for a unix
    socket, or once the peer reset it."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return ""
    try:
        return host_port(sock.getpeername())
    except OSError:
        return ""


def peer_credentials_of(sock: socket.socket) -> PeerCredentials | None:
    """Who is connected to ``sock``, if it is a unix socket on a system that can tell."""
    if sock.family != socket.AF_UNIX or not hasattr(socket, "SO_PEERCRED"):
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCredentials(pid, uid, gid)
