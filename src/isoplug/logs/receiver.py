"""The receiving end of standalone log forwarding: a replacement for ``QueueListener``.

A :class:`LogReceiver` listens on a private socket (a fresh 0700 directory by default) and
replays the records of every connected sender into this process's ``logging``. Senders are
processes that called :func:`isoplug.logs.forward_logs`; they authenticate with the receiver's
token, which :meth:`LogReceiver.child_env` hands out.

Use it either way::

    async with LogReceiver() as receiver:      # inside an event loop: runs on that loop
        ...

    with LogReceiver() as receiver:            # in a synchronous program: its own threads
        ...

In a synchronous program each sender gets a thread that sleeps in ``recv()``: a record is
replayed the moment it arrives, with no event loop in between (see :meth:`LogReceiver.open`).

Leaving the block waits (up to ``drain_timeout``) for connected senders to finish, replaying
what they still send and what the rings of those that ended give back, then closes
everything. A sender still connected then is cut off: what it had not delivered yet
(received and not replayed, or not arrived) is counted as
:attr:`~isoplug.logs.DropReason.RECEIVER_CLOSED` and reported, and nothing is replayed once
leaving returned. In a synchronous program the replay threads get
:data:`~isoplug.logs.receiver_closing.CLOSE_GRACE` more to hand the record in progress to the
handlers, report and say goodbye (see :mod:`isoplug.logs.receiver_closing`).
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import threading
from typing import Any

from isoplug.arguments import checked_timeout
from isoplug.errors import ConnectionClosed, IsoplugError
from isoplug.log_guard import guarded_logger
from isoplug.logs import own_receivers
from isoplug.logs.limits import ReplayLimits
from isoplug.logs.own_receivers import OpenReceiver
from isoplug.logs.receiver_closing import DEFAULT_DRAIN_TIMEOUT, ReceiverClosing
from isoplug.logs.receiver_connections import MAX_HELLO_CHARS
from isoplug.logs.replay_reports import handled_level
from isoplug.logs.ring_budget import DEFAULT_MAX_RINGS
from isoplug.logs.routing import DEFAULT_LOGGER_BUDGET, checked_prefix
from isoplug.logs.sender_trees import own_family, sender_tree_limit
from isoplug.logs.session import replay_until_closed
from isoplug.logs.settling import LoopSettler
from isoplug.off_loop import off_loop
from isoplug.rpc import Peer, serve
from isoplug.rpc.blocking import (
    DEFAULT_MAX_CONNECTIONS,
    BlockingChannel,
    BlockingServer,
    serve_blocking,
)
from isoplug.rpc.gate import DEFAULT_HELLO_TIMEOUT, DEFAULT_MAX_HANDSHAKES
from isoplug.rpc.handshake import peer_pid_text
from isoplug.rpc.waiting_room import DEFAULT_MAX_WAITING
from isoplug.transport import (
    Address,
    AddressLike,
    Listener,
    Scheme,
    absolute_unix_path,
    parse_listen_address,
)
from isoplug.transport.socket_dirs import remove_stale_socket_dirs
from isoplug.transport.stream import peer_credentials_of
from isoplug.transport.tls import check_server_context
from isoplug.wire.sanitize import clean_text

__all__ = ["ADDRESS_ENV", "NAME_ENV", "TOKEN_ENV", "LogReceiver"]

ADDRESS_ENV = "ISOPLUG_LOG_ADDRESS"
TOKEN_ENV = "ISOPLUG_LOG_TOKEN"
#: The sender name :func:`forward_logs` gives when none is passed (a plugin's child process
#: sends under its runner's, see ``PluginContext.log_child_env``).
NAME_ENV = "ISOPLUG_LOG_NAME"

_log = guarded_logger("isoplug.logs")

#: Standalone forwarding has no rate limit by default: the program trusts its own children.
STANDALONE_LIMITS = ReplayLimits(rate=None)
#: Connections one sender process tree may hold at once (see :class:`LogReceiver`): a pool
#: of workers each forwarding its logs fits, a tree forking without end takes no more than
#: this of the receiver's places.
DEFAULT_MAX_SENDERS_PER_TREE = 64
#: Connections of one tree past its limit that may wait for a place (see :class:`LogReceiver`):
#: a burst of four times its places forked at once; each holds a socket, no thread.
DEFAULT_MAX_WAITING_PER_TREE = 256


#: A wildcard host a receiver listens on, and the address its local children connect to.
_WILDCARD_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def _check_ssl_context(address: Address, context: ssl.SSLContext | None) -> None:
    """Refuse, where the receiver is made, what would fail or mislead only once it runs."""
    if context is None:
        return
    if address.scheme is not Scheme.TLS:
        # Listening in plain text with a context given would send tokens and records in clear.
        example = (
            str(Address(Scheme.TLS, host=address.host, port=address.port))
            if address.scheme is Scheme.TCP
            else "tls://host:port"
        )
        raise ValueError(
            f"an ssl_context was given, but {address} is not a TLS address: it would be "
            f"ignored and everything sent in plain text; use a tls:// address ({example}) on "
            "both sides, or no ssl_context"
        )
    check_server_context(context, str(address))


def _remove_stale_folders() -> None:
    """A receiver killed by SIGKILL could not remove its socket's private folder: what a
    receiver about to make one removes of those whose owner is dead (as a host does)."""
    removed = remove_stale_socket_dirs()
    if removed:
        _log.info("removed %d socket folders of dead isoplug processes", len(removed))


class LogReceiver(ReceiverClosing):
    """Receives forwarded log records and replays them here (see the module docstring).

    ``prefix`` is put in front of every forwarded logger name (``"workers"`` turns a child's
    ``"app.db"`` into ``"workers.app.db"``); empty keeps the names as they are. Each replayed
    record also carries ``sender`` (the name the child gave) and ``sender_pid`` (the child's pid
    as the kernel reports it, on unix sockets).

    ``max_senders`` bounds the senders served at once in a synchronous program (a thread
    each); past it a new sender is refused and told why (:func:`forward_logs` raises; a
    :class:`ForwardingHandler` says so on stderr and counts its records as dropped), and a
    warning here says so once. ``max_senders_per_tree`` bounds the connections of one sender
    process tree, in both modes (a thread each in threads; on an event loop a socket and the
    state its session keeps), so that one tree forking without end cannot take every place
    (nor, on a loop, every file descriptor). The tree is found on unix sockets on Linux, by
    the kernel's word on the pid that connected: the child of this process it is or descends
    from; for a process not below us by its parents (an orphan whose parent exited, re-parented
    to init or a subreaper), the tree its process group or session still names: this
    process's own when it kept our group or session (the child it came from cannot be told
    then), the child's when that child leads the group or session (started with
    ``start_new_session``) and still runs; otherwise its oldest ancestor below init. A
    tree's connections count from their accept, before a byte is read. Past its limit a new
    one waits, unread and with no thread, for a place: the oldest takes the place of the
    tree's next connection to end, and one whose sender ends meanwhile is served at once
    (its records come from the ring its hello passed); a warning here says so once per report
    interval (then a count). At most ``max_waiting_per_tree`` wait per tree, ``max_waiting``
    in all (0: none); past either a new one is refused at once and told why, with a warning
    (see :mod:`isoplug.logs.sender_trees`). Senders over TCP or TLS, whose pid the socket
    cannot give, count for no tree. An orphan that also left its group and session
    (``setsid`` before a double fork, as a daemon does) keeps no trace of its tree, which the
    kernel does not record, and the hello's name and token are the sender's to choose: it
    counts as a tree of its own (see :mod:`isoplug.transport.process_tree`), and only
    ``max_senders`` (in threads) bounds all of them together. ``max_senders`` applies in
    threads only.

    Until it has shown the token, a connection has ``handshake_timeout`` seconds for its
    hello (TLS included) and frames of at most 64 KiB; at most ``max_handshakes`` are in
    their handshake at once, and past it a new one is refused at once, with one warning (see
    :mod:`isoplug.rpc.gate`). Both modes. (A tree's handshakes count among its
    ``max_senders_per_tree``: with the defaults, one tree holds at most half those places.)

    Every host logger made for a sender's logger name stays in ``logging``'s registry for the
    life of the process: ``max_logger_entries`` bounds the entries (loggers and their dotted
    parents) all its senders together may add, over every connection it ever takes (a sender
    that reconnects, or a pool forking without end, gets no fresh allowance); loggers that
    exist already cost nothing, and each also spends the process's bound (all senders: see
    :func:`~isoplug.logs.set_process_logger_budget`). Past either, records on a name with no
    logger yet go on the prefix's logger (the root logger without a prefix), said in one
    warning per report interval, each counted in :attr:`LogMetrics.over_logger_budget`.

    A sender's shared-memory ring (what its crash leaves unsent, read back at its end) is
    kept only up to :data:`~isoplug.logs.ring.MAX_RING_BYTES` (4 MiB, a sender's default and
    largest), only ``max_senders_per_tree`` of one sender tree (open connections and ends
    pending together: a sender that drops its connections while it lives keeps their rings
    until it reconnects or exits, and at most as many such ends, past which its tree's oldest
    is accounted for at once), and only ``max_rings`` of them at once, all senders together
    (0: none kept). Past any of these the sender's records still arrive on its connection,
    but what a crash of it leaves unsent is counted lost, not recovered: a warning names the
    sender, its tree or the biggest holder, and the limit, and
    :attr:`LogMetrics.rings_refused` counts it (see :mod:`isoplug.logs.ring_budget`).
    """

    def __init__(
        self,
        address: AddressLike = "unix:",
        *,
        token: str | None = None,
        prefix: str = "",
        limits: ReplayLimits = STANDALONE_LIMITS,
        ssl_context: ssl.SSLContext | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        max_senders: int = DEFAULT_MAX_CONNECTIONS,
        max_senders_per_tree: int = DEFAULT_MAX_SENDERS_PER_TREE,
        max_waiting_per_tree: int = DEFAULT_MAX_WAITING_PER_TREE,
        max_waiting: int = DEFAULT_MAX_WAITING,
        handshake_timeout: float = DEFAULT_HELLO_TIMEOUT,
        max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
        max_logger_entries: int = DEFAULT_LOGGER_BUDGET,
        max_rings: int = DEFAULT_MAX_RINGS,
    ) -> None:
        # Parsed now: a malformed address is said where the receiver is made; a relative
        # socket path is the working directory's now, as a sender's is, not wherever the
        # program (or a child given the address) is later.
        self._requested_address = absolute_unix_path(parse_listen_address(address))
        _check_ssl_context(self._requested_address, ssl_context)
        self.token = token or secrets.token_urlsafe(32)
        self.prefix = checked_prefix(prefix)
        self.limits = limits
        self._ssl_context = ssl_context
        # Bounded: leaving the block must end, whatever a connected sender does.
        self.drain_timeout = checked_timeout(
            drain_timeout, "drain_timeout", none=False, finite=True
        )
        if max_senders_per_tree < 1:
            raise ValueError(
                f"max_senders_per_tree must be at least 1, not {max_senders_per_tree!r}"
            )
        if max_waiting_per_tree < 0 or max_waiting < 0:
            raise ValueError(
                "max_waiting_per_tree and max_waiting must not be negative (0: a connection "
                f"past its tree's limit is refused at once), not {max_waiting_per_tree!r} "
                f"and {max_waiting!r}"
            )
        self.max_waiting_per_tree = max_waiting_per_tree
        self.max_waiting = max_waiting
        self.max_senders = max_senders
        self.max_senders_per_tree = max_senders_per_tree
        # 0 would refuse every sender before its hello.
        self.handshake_timeout = checked_timeout(
            handshake_timeout, "handshake_timeout", above_zero=True
        )
        self.max_handshakes = max_handshakes
        self._address: Address | None = None
        # Async use: the listener on the caller's loop. Sync use: threads of our own.
        self._listener: Listener | None = None
        self._server: BlockingServer | None = None
        self._init_connections(
            max_logger_entries, max_rings, max_senders_per_tree, max_waiting_per_tree
        )
        # Its waiting room serves one listener: a receiver is opened once.
        self._tree_limit = sender_tree_limit(
            max_senders_per_tree, max_waiting_per_tree, max_waiting, self._refusals, _log.warning
        )
        # Async use: each open connection, with what says its end was accounted for.
        self._open_peers: dict[Peer, asyncio.Future[None]] = {}
        # Sync use: each connection its thread serves (a drain's end asks if its sender left).
        self._open_channels: dict[int, BlockingChannel] = {}
        # Closing once, however often and from wherever it is asked (see close(), aclose()).
        self._close_lock = threading.Lock()
        # Set by the first open() or start() (see _claim_opening).
        self._opened = False
        # While it listens: noted for the senders of this process (isoplug.logs.own_receivers).
        self._noted: OpenReceiver | None = None
        self._open_lock = threading.Lock()
        self._aclosing: asyncio.Future[None] | None = None
        # Started on a loop (start()): the loop its close runs on, whichever method asks.
        self._listening_loop: asyncio.AbstractEventLoop | None = None

    # -- facts for the children --------------------------------------------------------------

    @property
    def address(self) -> str:
        """Where senders connect; available once the receiver runs."""
        if self._address is None:
            raise IsoplugError("the LogReceiver is not running; enter it first")
        return str(self._address)

    def child_env(self) -> dict[str, str]:
        """Environment variables with which :func:`forward_logs` (no arguments) finds us.

        On a wildcard address (``0.0.0.0``, ``::``), which no client can connect to, the
        address is the loopback one of its family (``127.0.0.1``, ``::1``): the children
        given it run on this machine."""
        if self._address is None:
            raise IsoplugError("the LogReceiver is not running; enter it first")
        address = self._address
        loopback = _WILDCARD_LOOPBACK.get(address.host)
        if address.scheme is not Scheme.UNIX and loopback is not None:
            address = Address(address.scheme, host=loopback, port=address.port)
        return {ADDRESS_ENV: str(address), TOKEN_ENV: self.token}

    # -- async use ----------------------------------------------------------------------------

    async def __aenter__(self) -> LogReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start listening on the running event loop. Once only, as :meth:`open`."""
        self._claim_opening()
        try:
            if self._makes_private_folder():
                await off_loop(_remove_stale_folders)
            self._listener = await serve(
                self._requested_address, self.token, self._on_peer, **self._listening()
            )
        except BaseException:
            self._opened = False  # never listened: it may be tried again
            raise
        self._listens_at(self._listener.address)
        self._listening_loop = asyncio.get_running_loop()
        self._settler = LoopSettler(self._listening_loop)

    async def aclose(self) -> None:
        """Wait up to ``drain_timeout`` for senders to finish, then close everything.

        Closes the receiver however it was opened: one opened in threads (:meth:`open`) is
        closed as :meth:`close` does, in a thread of its own, so that this loop goes on
        meanwhile. Idempotent: a second call, or one from another task meanwhile, waits for
        the first to end (cancelling it cancels only its own wait: the close goes on), and
        one after the receiver closed or before it opened does nothing."""
        if self._server is not None:
            # Its threads' close blocks for up to the drain time: not on the caller's loop.
            await off_loop(self.close)
            return
        closing = self._aclosing
        if closing is None:
            if self._listener is None:
                return
            closing = self._aclosing = asyncio.ensure_future(self._aclose(self._listener))
        await asyncio.shield(closing)

    async def _aclose(self, listener: Listener) -> None:
        try:
            await self._drain_and_close(listener)
        finally:
            self._stopped_listening()
            self._listener = None
            self._aclosing = None

    async def _on_peer(self, peer: Peer) -> None:
        hello = peer.remote_hello
        assert hello is not None
        credentials = peer.stream.peer_credentials
        if not self._accepts(hello, peer_pid_text(credentials, peer.stream.peer_address)):
            return
        number, replayer = self._replayer_for(credentials.pid if credentials else None, hello)
        replayer.use_passed_ledger(peer.stream.passed_descriptor)
        peer.on_log_batch(replayer.receive)
        accounted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._open_peers[peer] = accounted
        try:
            await peer.wait_closed()
        finally:
            try:
                # Cut off by aclose() is no crash: only what it had not sent yet is reported.
                await self._ended_connection_async(
                    number, self._closing or isinstance(peer.close_error, ConnectionClosed)
                )
            finally:
                del self._open_peers[peer]
                accounted.set_result(None)

    def _listening(self) -> dict[str, Any]:
        """How either mode listens: its own children get handshake seats of their own, and the
        welcome tells a sender the level records are handled from here (one whose logging
        nobody configured logs from there, see :func:`forward_logs`)."""
        return {
            "name": "log-receiver",
            "ssl_context": self._ssl_context,
            "handshake_timeout": self.handshake_timeout,
            "max_handshakes": self.max_handshakes,
            "client_limit": self._tree_limit,
            "welcome_level": lambda: handled_level(self.prefix),
            "kinship": own_family,
            "takes_descriptors": True,
        }

    # -- sync use (own threads) ---------------------------------------------------------------

    def __enter__(self) -> LogReceiver:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Start listening in threads of our own: one accepts, one per sender replays.

        A sender's thread sleeps in ``recv()`` and replays each record the moment it arrives,
        so no event loop stands between the socket and ``logging``. Back-pressure is the
        socket's: while a thread replays, it does not read, and a flooding sender waits.

        A receiver is opened once, either way (:meth:`open` or :meth:`start`), as a thread is
        started once: opening it again, while it is open or after it closed, raises
        :class:`~isoplug.errors.IsoplugError` (make a new ``LogReceiver`` instead; the closed
        one's :meth:`metrics` stay readable). One whose opening failed may be opened again.
        """
        self._claim_opening()
        try:
            if self._makes_private_folder():
                _remove_stale_folders()
            self._server = serve_blocking(
                self._requested_address,
                self.token,
                self._serve_sender,
                max_connections=self.max_senders,
                **self._listening(),
            )
        except BaseException:
            self._opened = False  # never listened: it may be tried again
            raise
        self._listens_at(self._server.address)

    def close(self) -> None:
        """Wait up to ``drain_timeout`` for senders to finish, replaying what they still send;
        then close everything (see :meth:`aclose`), in at most
        :data:`~isoplug.logs.receiver_closing.CLOSE_GRACE` more. Nothing is replayed once it
        returned: what was not is counted and reported.

        Closes the receiver however it was opened. One started on an event loop
        (:meth:`start`) closes on that loop, this thread waiting for it; called on that loop's
        own thread, where waiting would block the very loop the close needs, or once that
        loop is stopped but not closed, it raises :class:`~isoplug.errors.UsageError` (a
        ``RuntimeError``: ``await receiver.aclose()`` on the loop instead). Once that loop is
        closed (an ``asyncio.run()`` that ended with the receiver open), it closes the receiver
        on a loop of its own, in a thread of its own. Idempotent: a second call, or one
        from another thread meanwhile, waits for the first to end; one after the receiver
        closed or before it opened does nothing."""
        if self._listener is not None and self._listening_loop is not None:
            self._close_on_loop(self._listening_loop)
            return
        with self._close_lock:
            server = self._server
            if server is not None:
                try:
                    self._close_server(server)
                finally:
                    self._stopped_listening()

    def _serve_sender(self, channel: BlockingChannel) -> None:
        hello = channel.connection.peer_hello
        assert hello is not None
        credentials = peer_credentials_of(channel.socket)
        who = peer_pid_text(credentials, channel.peer_address)
        if not self._accepts(hello, who):
            return
        number, replayer = self._replayer_for(credentials.pid if credentials else None, hello)
        self._open_channels[number] = channel
        clean = False
        try:
            clean = replay_until_closed(
                channel, replayer, clean_text(hello.name, MAX_HELLO_CHARS) or "(unnamed)"
            )
        finally:
            try:
                self._ended_connection(number, clean)
            finally:
                del self._open_channels[number]

    def _makes_private_folder(self) -> bool:
        return self._requested_address.scheme is Scheme.UNIX and not self._requested_address.path

    def _listens_at(self, address: Address) -> None:
        self._address = address
        self._noted = own_receivers.opened(address, self.token, self.prefix)

    def _stopped_listening(self) -> None:
        noted, self._noted = self._noted, None
        if noted is not None:
            own_receivers.closed(noted)

    def _claim_opening(self) -> None:
        """Refuse a second opening. Opened again after its close, a receiver listened at a new
        address and silently replayed nothing (its replayers started stopped, its reports
        were closed); reset instead, it would mix two runs' metrics and budgets, so, as
        ``threading.Thread.start()``, it is once only."""
        with self._open_lock:
            if self._opened:
                raise IsoplugError(self._opened_already())
            self._opened = True

    def _opened_already(self) -> str:
        if self._server is not None or self._listener is not None or self._address is None:
            where = f" at {self._address}" if self._address is not None else ""
            return (
                f"this LogReceiver is open already{where}: it listens until it is closed "
                "(the end of its with/async with block); open it once"
            )
        return (
            f"this LogReceiver was opened already (at {self._address}) and is closed: a "
            "LogReceiver is opened once; make a new LogReceiver() to listen again (the "
            "closed one's metrics() stay readable)"
        )

    def __repr__(self) -> str:
        where = str(self._address) if self._address else "not running"
        return f"<LogReceiver {where}>"
