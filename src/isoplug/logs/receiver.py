"""The receiving end of standalone log forwarding: a replacement for ``QueueListener``.

A :class:`LogReceiver` listens on a private socket (a fresh 0700 directory by default) and
replays the records of every connected sender into this process's ``logging``. Senders are
processes that called :func:`isoplug.logs.forward_logs`; they authenticate with the receiver's
token, which :meth:`LogReceiver.child_env` hands out.

Use it either way::

    async with LogReceiver() as receiver:      # inside an event loop: runs on that loop
        ...

    with LogReceiver() as receiver:            # in a synchronous program: runs its own thread
        ...

Leaving the block waits (up to ``drain_timeout``) for connected senders to finish, replaying
what they still send, then closes everything.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import secrets
import ssl
import threading

from isoplug.errors import ConnectionClosed, IsoplugError
from isoplug.logs.metrics import LogMetrics
from isoplug.logs.replay import LogReplayer, ReplayLimits
from isoplug.rpc import Peer, serve
from isoplug.transport import Address, Listener
from isoplug.wire import Hello

__all__ = ["ADDRESS_ENV", "TOKEN_ENV", "LogReceiver"]

ADDRESS_ENV = "ISOPLUG_LOG_ADDRESS"
TOKEN_ENV = "ISOPLUG_LOG_TOKEN"

_log = logging.getLogger("isoplug.logs")

#: How long leaving the receiver waits for connected senders to send their last records.
DEFAULT_DRAIN_TIMEOUT = 5.0
#: Standalone forwarding has no rate limit by default: the program trusts its own children.
STANDALONE_LIMITS = ReplayLimits(rate=None)


class LogReceiver:
    """Receives forwarded log records and replays them here (see the module docstring).

    ``prefix`` is put in front of every forwarded logger name (``"workers"`` turns a child's
    ``"app.db"`` into ``"workers.app.db"``); empty keeps the names as they are. Each replayed
    record also carries ``sender`` (the name the child gave) and ``sender_pid`` (the child's pid
    as the kernel reports it, on unix sockets).
    """

    def __init__(
        self,
        address: str | Address = "unix:",
        *,
        token: str | None = None,
        prefix: str = "",
        limits: ReplayLimits = STANDALONE_LIMITS,
        ssl_context: ssl.SSLContext | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    ) -> None:
        self._requested_address = address
        self.token = token or secrets.token_urlsafe(32)
        self.prefix = prefix
        self.limits = limits
        self._ssl_context = ssl_context
        self.drain_timeout = drain_timeout
        self._listener: Listener | None = None
        self._replayers: dict[int, tuple[str, LogReplayer]] = {}
        self._open_peers: set[Peer] = set()
        self._next_connection = 0
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    # -- facts for the children --------------------------------------------------------------

    @property
    def address(self) -> str:
        """Where senders connect; available once the receiver runs."""
        if self._listener is None:
            raise IsoplugError("the LogReceiver is not running; enter it first")
        return str(self._listener.address)

    def child_env(self) -> dict[str, str]:
        """Environment variables with which :func:`forward_logs` (no arguments) finds us."""
        return {ADDRESS_ENV: self.address, TOKEN_ENV: self.token}

    def metrics(self) -> dict[str, LogMetrics]:
        """Per-connection metrics (snapshots), keyed ``"<sender name> #<n>"``."""
        return {label: replayer.metrics.snapshot() for label, replayer in self._replayers.values()}

    # -- async use ----------------------------------------------------------------------------

    async def __aenter__(self) -> LogReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start listening on the running event loop."""
        self._listener = await serve(
            self._requested_address,
            self.token,
            self._on_peer,
            name="log-receiver",
            ssl_context=self._ssl_context,
        )

    async def aclose(self) -> None:
        """Wait up to ``drain_timeout`` for senders to finish, then close everything."""
        if self._listener is None:
            return
        peers = list(self._open_peers)
        if peers:
            _, still_open = await asyncio.wait(
                [asyncio.ensure_future(peer.wait_closed()) for peer in peers],
                timeout=self.drain_timeout,
            )
            for waiter in still_open:
                waiter.cancel()
            if still_open:
                _log.warning(
                    "%d log sender(s) still connected after %.1f s; closing them",
                    len(still_open),
                    self.drain_timeout,
                )
        await self._listener.aclose()

    async def _on_peer(self, peer: Peer) -> None:
        hello = peer.remote_hello
        assert hello is not None
        if hello.role != "logs":
            _log.warning(
                "refused a %r connection from %s: this receiver only takes logs",
                hello.role,
                hello.name or "a sender",
            )
            return
        replayer = self._replayer_for(peer, hello)
        peer.on_log_batch(replayer.receive)
        self._open_peers.add(peer)
        try:
            await peer.wait_closed()
        finally:
            self._open_peers.discard(peer)
            replayer.finish(clean=isinstance(peer.close_error, ConnectionClosed))

    def _replayer_for(self, peer: Peer, hello: Hello) -> LogReplayer:
        credentials = peer.stream.peer_credentials
        sender_pid = credentials.pid if credentials is not None else None
        self._next_connection += 1
        label = f"{hello.name or 'sender'} #{self._next_connection}"
        replayer = LogReplayer(
            self.prefix,
            identity={"sender": hello.name, "sender_pid": sender_pid},
            limits=self.limits,
            description=f"log sender {hello.name or '(unnamed)'}",
            sender_pid=sender_pid,
        )
        self._replayers[self._next_connection] = (label, replayer)
        return replayer

    # -- sync use (own thread) ----------------------------------------------------------------

    def __enter__(self) -> LogReceiver:
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(started,), name="isoplug-log-receiver", daemon=True
        )
        self._thread.start()
        started.result()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the receiver thread (after draining senders, see :meth:`aclose`)."""
        loop, stop, thread = self._thread_loop, self._thread_stop, self._thread
        if loop is None or stop is None or thread is None:
            return
        loop.call_soon_threadsafe(stop.set)
        thread.join()
        self._thread = None

    def _thread_main(self, started: concurrent.futures.Future[None]) -> None:
        async def main() -> None:
            self._thread_loop = asyncio.get_running_loop()
            self._thread_stop = asyncio.Event()
            try:
                await self.start()
            except BaseException as exc:
                started.set_exception(exc)
                return
            started.set_result(None)
            await self._thread_stop.wait()
            await self.aclose()

        asyncio.run(main())

    def __repr__(self) -> str:
        where = str(self._listener.address) if self._listener else "not running"
        return f"<LogReceiver {where}>"
