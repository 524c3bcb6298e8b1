"""Connecting and listening on unix sockets, TCP and TLS, all through one address syntax.

Unix sockets live in a freshly made private directory (:mod:`isoplug.transport.listening`).
The listener removes the socket and the directory when it closes, each only while it is the one
it made (:mod:`isoplug.transport.private_places`); when a temporary-file cleaner deleted them,
:meth:`Listener.listen_again_if_lost` listens anew, at the same path when it can make it
again (:func:`~isoplug.transport.listening.private_unix_socket_again`), else in a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from isoplug.errors import ConnectError, NoTemporaryFolder, TransportError
from isoplug.log_guard import guarded_logger
from isoplug.loop_closed import end_orphaned_task, outside_any_loop
from isoplug.off_loop import off_loop
from isoplug.transport.address import Address, Scheme, parse_address
from isoplug.transport.listening import (
    cannot_listen_again,
    private_unix_socket,
    private_unix_socket_again,
    tcp_listening_socket,
)
from isoplug.transport.private_places import PrivatePlace
from isoplug.transport.stream import SocketStream, Stream
from isoplug.transport.tls import tls_client_context, tls_handshake_failed, tls_server_context

__all__ = [
    "Listener",
    "connect",
    "listen",
    "secure_accepted",
    "tls_client_context",
    "tls_server_context",
]

_log = guarded_logger("isoplug.transport")

#: How long closing a listener waits for its connection handlers to finish after cancelling them.
_HANDLER_CANCEL_TIMEOUT = 5.0

ConnectionHandler = Callable[[Stream], Awaitable[None]]
#: ``on_tls_failure(error, peer)``: a client's TLS handshake failed (``peer``: its host:port).
TLSFailure = Callable[[TransportError, str], None]


async def _serve_on(
    create: Callable[..., Awaitable[asyncio.Server]],
    sock: socket.socket,
    make_stream: Callable[[], SocketStream],
    **options: Any,
) -> asyncio.Server:
    """A server accepting on the listening ``sock`` (``create``: the loop's
    ``create_unix_server`` or ``create_server``). Raising, cancelled too, it leaves nothing
    open: asyncio's own start yields once, after its server took the socket, and a server
    cancelled there would be nobody's, listening until collected."""
    try:
        server = await create(make_stream, sock=sock, start_serving=False, **options)
    except BaseException:
        sock.close()
        raise
    try:
        await server.start_serving()
    except BaseException:
        server.close()  # stops serving and closes the socket
        raise
    return server


async def connect(
    address: str | Address,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float | None = 10.0,
) -> Stream:
    """Open a stream to ``address``.

    ``tls://`` uses ``ssl_context`` (default: the system trust store). Raises
    :class:`~isoplug.errors.ConnectError` when nothing listens there, the TLS handshake fails or
    ``timeout`` passes.
    """
    parsed = parse_address(address)
    loop = asyncio.get_running_loop()
    description = str(parsed)
    try:
        async with asyncio.timeout(timeout):
            if parsed.scheme is Scheme.UNIX:
                if not parsed.path:
                    raise ConnectError("cannot connect to 'unix:' without a socket path")
                _, stream = await loop.create_unix_connection(
                    lambda: SocketStream(description), parsed.path
                )
            else:
                context = None
                if parsed.scheme is Scheme.TLS:
                    context = ssl_context or ssl.create_default_context()
                stream = await _connect_tcp(parsed, description, context)
    except TimeoutError as exc:
        raise ConnectError(
            f"cannot connect to {description}: no answer within {timeout} s"
        ) from exc
    except (OSError, ValueError) as exc:
        # ValueError: a host name getaddrinfo refuses (NUL, an over-long IDNA label).
        raise ConnectError(f"cannot connect to {description}: {exc}") from exc
    return stream


async def _connect_tcp(
    parsed: Address, description: str, context: ssl.SSLContext | None
) -> SocketStream:
    """Connect to each address ``parsed.host`` resolves to in turn, as asyncio would; but
    resolved in a thread of isoplug's, not on the loop's default executor (the application's:
    full of its work, or shut down), so that a numeric address is all asyncio is given."""
    loop = asyncio.get_running_loop()
    resolved = await off_loop(socket.getaddrinfo, parsed.host, parsed.port, type=socket.SOCK_STREAM)
    failures: list[OSError] = []
    for *_, sockaddr in resolved:
        try:
            _, stream = await loop.create_connection(
                lambda: SocketStream(description),
                str(sockaddr[0]),
                int(sockaddr[1]),
                ssl=context,
                server_hostname=parsed.host if context else None,
            )
        except OSError as exc:
            failures.append(exc)
        else:
            return stream
    if len(failures) == 1:
        raise failures[0]
    raise OSError(f"every address failed: {'; '.join(str(exc) for exc in failures)}")


class Listener:
    """A listening socket that hands every accepted connection to a handler task.

    Use ``async with await listen(...) as listener`` or call :meth:`aclose`; closing stops
    accepting, cancels running handlers, closes their streams and removes the unix socket and
    its private directory (see :meth:`listen_again_if_lost` for when they were deleted).
    """

    def __init__(self, address: Address, handler: ConnectionHandler) -> None:
        self.address = address
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        #: Servers that listened where a unix socket was lost (see listen_again_if_lost): no
        #: longer accepting, their connections still this listener's.
        self._retired: list[asyncio.AbstractServer] = []
        self._place: PrivatePlace | None = None
        self._make_stream: Callable[[], SocketStream] | None = None
        self._backlog = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        #: tls: the handshake each connection runs in its handler's task, before the handler
        #: (asyncio's own, run before a task exists, drops a failure where nobody sees it).
        self._tls_context: ssl.SSLContext | None = None
        self._tls_timeout: float | None = None
        self._on_tls_failure: TLSFailure | None = None
        #: False: the handler runs the TLS handshake itself (see listen's tls_by_handler).
        self._tls_here = False
        #: Called once the listener is closed (what its user must say or release then).
        self.on_close: list[Callable[[], None]] = []

    def __str__(self) -> str:
        return str(self.address)

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _accepted(self, stream: SocketStream) -> None:
        if self._closed:
            # Accepted just before aclose() (or its TLS handshake finished after): no handler
            # may start once the listener is closing, or it would run unsupervised.
            assert stream._transport is not None
            stream._transport.abort()
            return
        if self._tls_context is not None:
            # The client's hello must reach TLS, not this stream (SocketStream.secure_as_server).
            assert stream._transport is not None
            stream._transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._run_handler(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Cancelled before its first step (aclose() right after the accept), the task never
        # ran its own close: the connection would stay open, its reading paused for TLS.
        task.add_done_callback(lambda _: stream.abort_if_open())

    async def _run_handler(self, stream: SocketStream) -> None:
        try:
            if self._tls_here and not await self._secured(stream):
                return
            await self._handler(stream)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if outside_any_loop():
                # Ended from outside, its loop closed (isoplug.loop_closed): no bug of the
                # handler's, and its stream cannot be closed on that loop.
                _log.debug("connection handler for %s ended with its loop: %r", self.address, error)
                return
            # A handler bug must not kill the listener or other connections; it must be seen.
            _log.exception("connection handler for %s failed", self.address)
        finally:
            if not outside_any_loop():
                await stream.aclose()

    async def _secured(self, stream: SocketStream) -> bool:
        """Whether ``stream``'s TLS handshake succeeded; a failure is handed to
        ``on_tls_failure`` (else logged at DEBUG: a listener of no server of ours)."""
        assert self._tls_context is not None
        try:
            await secure_accepted(stream, self._tls_context, self._tls_timeout)
        except TransportError as failure:
            if self._on_tls_failure is not None:
                self._on_tls_failure(failure, stream.peer_address)
            else:
                _log.debug("%s: from %s: %s", self.address, stream.peer_address, failure)
            return False
        return True

    async def aclose(self) -> None:
        """Stop listening and release everything. Idempotent. Cancelled, it stops waiting for
        the handlers to end (they are cancelled already) and releases the rest all the same."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()  # the listening socket is closed now
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        try:
            if tasks:
                await asyncio.wait(tasks, timeout=_HANDLER_CANCEL_TIMEOUT)
            servers = [*self._retired, *([] if self._server is None else [self._server])]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_HANDLER_CANCEL_TIMEOUT):
                    for server in servers:
                        await server.wait_closed()
        finally:
            # Past the waits: a close_now() after a cancelled aclose() finds it closed.
            self._remove_files()
            for callback in self.on_close:
                callback()

    def close_now(self) -> None:
        """Stop listening without waiting (its close cannot be awaited: cancelled, the loop
        closed, the process exiting): the socket is closed (on its loop's thread while that
        loop runs), its file and private directory removed, :attr:`on_close` called; the
        handlers are cancelled on their loop, not waited for. Idempotent."""
        if self._closed:
            return
        self._closed = True
        server = self._server
        if server is not None:
            loop = server.get_loop()
            if loop.is_closed():
                server.close()  # a closed selector loop only closes the socket
                for task in list(self._tasks):
                    end_orphaned_task(task)
            elif _running_loop() is loop:
                # Now: the loop may close before a callback's turn comes.
                self._stop_serving()
            else:
                with contextlib.suppress(RuntimeError):  # closed meanwhile: so is the socket
                    loop.call_soon_threadsafe(self._stop_serving)
        self._remove_files()
        for callback in self.on_close:
            callback()

    def _stop_serving(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()

    def _remove_files(self) -> None:
        if self._place is not None:
            self._place.remove()

    async def listen_again_if_lost(self) -> str | None:
        """For a listener on ``unix:`` (in a private folder of its own): when its socket can
        no longer be reached at its path (a temporary-file cleaner deleted its folder, say:
        see :mod:`isoplug.transport.private_places`), listen again with the same handler (at
        the same path where this process can make its folder again now, else in a fresh
        private folder: :func:`~isoplug.transport.listening.private_unix_socket_again`), and
        return what was lost (:attr:`address` is where it listens now).
        None when nothing was, when closed, and on a path the caller gave (theirs to make
        again). Connections accepted before go on, served as before. Raises
        :class:`~isoplug.errors.TransportError` when it cannot listen again (it stays as it
        was then)."""
        place, old = self._place, self._server
        if self._closed or place is None or place.folder is None or old is None:
            return None
        lost = place.lost()
        if lost is None:
            return None
        assert self._make_stream is not None
        try:
            sock, fresh = private_unix_socket_again(place, self._backlog)
        except OSError as exc:
            raise cannot_listen_again(place, lost, exc) from exc
        try:
            server = await _serve_on(
                old.get_loop().create_unix_server, sock, self._make_stream, backlog=self._backlog
            )
        except BaseException as exc:
            fresh.remove()
            if isinstance(exc, OSError):
                raise cannot_listen_again(place, lost, exc) from exc
            raise
        if self._closed or self._place is not place:
            # Closed meanwhile, or another call listened again first: this one is nobody's.
            server.close()
            fresh.remove()
            return None
        self._server, self._place = server, fresh
        self.address = Address(Scheme.UNIX, path=fresh.path)
        old.close()  # stops accepting; the connections it accepted stay open
        self._retired.append(old)
        if fresh.path != place.path:
            # Else the same path, made again: what is there now is the new socket's.
            place.remove(reported=True)
        return lost


async def secure_accepted(stream: Stream, context: ssl.SSLContext, timeout: float | None) -> None:
    """Run the server's side of the TLS handshake on a connection a listener made with
    ``tls_by_handler`` accepted. Raises :class:`~isoplug.errors.TransportError` saying why it
    failed (the likely fix too), or that it took longer than ``timeout``."""
    assert isinstance(stream, SocketStream)
    try:
        await stream.secure_as_server(context, timeout)
    except (OSError, ValueError) as exc:
        raise tls_handshake_failed(exc) from exc


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def listen(
    address: str | Address,
    handler: ConnectionHandler,
    *,
    ssl_context: ssl.SSLContext | None = None,
    backlog: int = 128,
    ssl_handshake_timeout: float | None = None,
    takes_descriptors: bool = False,
    on_tls_failure: TLSFailure | None = None,
    tls_by_handler: bool = False,
) -> Listener:
    """Listen on ``address`` and run ``handler(stream)`` as a task for every connection.

    ``unix:`` without a path makes a private directory for the socket; a given path replaces a
    stale socket file there, never one a live process listens on. ``tcp://host:0`` picks a
    free port; :attr:`Listener.address` tells which. ``tls://`` requires ``ssl_context`` (see
    :func:`tls_server_context`); a client that has not finished its TLS handshake within
    ``ssl_handshake_timeout`` (asyncio's default: 60 s) is dropped before the handler
    starts, and so is one whose handshake fails: ``on_tls_failure(error, peer)`` is told
    (``peer``: its ``host:port``). The host stays as given (a name a certificate names), the
    port is the one bound. With ``tls_by_handler``, the handler is given the connection
    before its TLS handshake, and runs it with :func:`secure_accepted` once it has decided to
    serve it at all (a server that bounds the handshakes in progress takes a place first).
    The stream is closed when the handler returns. With
    ``takes_descriptors``, a stream on a unix socket takes the descriptor its peer passes
    with its first bytes (:attr:`SocketStream.passed_descriptor`). Raises
    :class:`~isoplug.errors.TransportError` when the address cannot be bound;
    :class:`~isoplug.errors.NoTemporaryFolder` when no temporary folder can take the private
    directory of ``unix:``.
    """
    parsed = parse_address(address)
    loop = asyncio.get_running_loop()
    listener = Listener(parsed, handler)

    def make_stream() -> SocketStream:
        # The handler starts once the connection is made (after the TLS handshake, for tls).
        return SocketStream(
            f"peer of {listener.address}", listener._accepted, takes_descriptor=takes_descriptors
        )

    listener._make_stream, listener._backlog = make_stream, backlog
    try:
        if parsed.scheme is Scheme.UNIX:
            sock, listener._place = private_unix_socket(parsed, backlog)
            listener.address = Address(Scheme.UNIX, path=listener._place.path)
            listener._server = await _serve_on(
                loop.create_unix_server, sock, make_stream, backlog=backlog
            )
        else:
            if parsed.scheme is Scheme.TLS and ssl_context is None:
                raise TransportError(f"listening on {parsed} needs an ssl_context")
            if parsed.scheme is Scheme.TLS:
                listener._tls_context = ssl_context
                listener._tls_timeout = ssl_handshake_timeout
                listener._on_tls_failure = on_tls_failure
                listener._tls_here = not tls_by_handler
            # One socket on the first address the name resolves to: given the name, asyncio
            # binds every address, on as many different ports when the port is 0.
            # Resolved in a thread of isoplug's: the loop's default executor is the
            # application's (full of its work, or shut down).
            infos = await off_loop(
                socket.getaddrinfo, parsed.host, parsed.port, type=socket.SOCK_STREAM
            )
            sock = tcp_listening_socket(infos, backlog)
            server = await _serve_on(
                loop.create_server,
                sock,
                make_stream,
                backlog=backlog,
            )
            listener._server = server
            # The host as given, with the port bound: a name a certificate names stays one.
            port = server.sockets[0].getsockname()[1]
            listener.address = Address(parsed.scheme, host=parsed.host, port=port)
    except BaseException as exc:
        # A cancellation too: the listener is nobody's yet, so nobody else would remove it.
        listener._remove_files()
        # No temporary folder for its socket: the system's refusal, said as such, not a
        # failure of this address.
        if isinstance(exc, OSError | ValueError) and not isinstance(exc, NoTemporaryFolder):
            raise TransportError(f"cannot listen on {parsed}: {exc}") from exc
        raise
    return listener
