"""The protocol state machine of one connection, free of I/O.

A :class:`Connection` is fed the bytes that arrived and returns the messages they complete; it
is handed messages to send and queues their bytes. It performs the handshake by itself and
checks every message against the connection's state. It never touches a socket, a clock, a
thread or an event loop, so the same code runs under asyncio and on a blocking socket. What
the handshake decides on a hello or a reject (token, admission, versions, the words a refused
side reads) is in :mod:`isoplug.wire.hello_checks`; this module applies it.

Contract for integrators
------------------------
- Client side: after creating the connection, send :meth:`Connection.data_to_send` (the hello).
- After every call to :meth:`~Connection.receive_data`, :meth:`~Connection.receive_eof`,
  :meth:`~Connection.send` or :meth:`~Connection.fail`, and *also after any of them raised*,
  call :meth:`~Connection.data_to_send` and write what it returns: that is how replies to the
  handshake, and the reason for a failure, reach the peer.
- When a method raises :class:`~isoplug.errors.ProtocolError` or
  :class:`~isoplug.errors.HandshakeError`, the connection is in state ``ERROR``: write the
  pending bytes, then close the stream. Nothing else may be done with it.
- When :attr:`~Connection.state` becomes ``CLOSED`` (we or the peer said goodbye), write the
  pending bytes and close the stream.
- Handshake deadlines are the I/O layer's job: when it gives up waiting, it calls
  :meth:`~Connection.fail` with :attr:`RejectCode.TIMEOUT`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from isoplug.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from isoplug.wire.codec import decode_message
from isoplug.wire.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    HANDSHAKE_MAX_FRAME_SIZE,
    FrameDecoder,
    FrameWriter,
)
from isoplug.wire.hello_checks import (
    Admission,
    HelloRefusal,
    TokenLookup,
    judge_hello,
    refusal_error,
)
from isoplug.wire.messages import (
    MAX_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION,
    Cancel,
    ErrorResponse,
    Event,
    Goodbye,
    Hello,
    LogBatch,
    Message,
    Reject,
    RejectCode,
    Request,
    Response,
    Welcome,
)
from isoplug.wire.versions import library_version

__all__ = ["Admission", "Connection", "ConnectionState", "Role", "TokenLookup", "WelcomeLevel"]

#: A server-side source of the level the welcome says (:attr:`Welcome.level`), asked as the
#: session opens; ``None``: not said.
WelcomeLevel = Callable[[], int | None]


class Role(enum.Enum):
    CLIENT = "client"
    """The side that connects and sends the hello."""
    SERVER = "server"
    """The side that listens, checks the hello and answers welcome or reject."""


class ConnectionState(enum.Enum):
    HANDSHAKE = "handshake"
    """Waiting for the hello (server) or the welcome (client)."""
    OPEN = "open"
    """Session established: requests, responses, events flow both ways."""
    CLOSED = "closed"
    """A goodbye was sent or received; nothing more flows."""
    ERROR = "error"
    """The protocol failed; the stream must be closed."""


_APPLICATION_MESSAGES = (Request, Response, ErrorResponse, Event, Cancel, LogBatch)
#: Longest error text (in characters) sent to the peer in a goodbye or reject.
_MAX_REPLY_REASON = 1000
#: Longest close reason kept locally: error texts may quote the peer's bytes at length.
_MAX_CLOSE_REASON = 4000


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Connection:
    """One side of one isoplug connection.

    ``token`` is the session secret: the client presents it, the server compares it in
    constant time. On the server side it may also be a :data:`TokenLookup`, called with the
    hello to find the token expected from that client (``None``: an unknown client, refused
    with :class:`~isoplug.errors.AuthenticationFailed`); ``admit`` (server only) may still
    refuse a client whose token matched, and ``welcome_level`` (server only) gives the level
    the welcome says (:attr:`~isoplug.wire.Welcome.level`). ``connection_role`` (client only)
    says what the connection is for; ``name`` and ``pid`` identify this side in the other
    side's messages.

    Until the handshake completes, a frame from the peer may be at most
    ``handshake_max_frame_size`` bytes (or ``max_frame_size``, if smaller): the hello or the
    welcome is tiny, and an unauthenticated peer must not make us buffer a big one. Once the
    session is open, ``max_frame_size`` applies.
    """

    def __init__(
        self,
        role: Role,
        token: str | TokenLookup,
        *,
        name: str = "",
        pid: int = 0,
        connection_role: str = "control",
        admit: Admission | None = None,
        welcome_level: WelcomeLevel | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        handshake_max_frame_size: int = HANDSHAKE_MAX_FRAME_SIZE,
        min_version: int = MIN_PROTOCOL_VERSION,
        max_version: int = MAX_PROTOCOL_VERSION,
    ) -> None:
        if not min_version <= max_version:
            raise ValueError(f"min_version {min_version} > max_version {max_version}")
        if role is Role.CLIENT and not isinstance(token, str):
            raise TypeError("a client presents a token: it must be a str, not a lookup")
        self.role = role
        self.state = ConnectionState.HANDSHAKE
        # A client needs its token only for the hello queued below: not keeping it shortens
        # the time the secret sits in the memory of a long-lived process.
        self._token = token if role is Role.SERVER else ""
        self._admit = admit
        self._welcome_level = welcome_level
        self._name = name
        self._pid = pid
        self._min_version = min_version
        self._max_version = max_version
        if handshake_max_frame_size < 1:
            raise ValueError(
                f"handshake_max_frame_size must be positive: {handshake_max_frame_size}"
            )
        self._max_frame_size = max_frame_size
        self._frames = FrameDecoder(max_frame_size)  # checks the limit
        self._frames.max_frame_size = min(max_frame_size, handshake_max_frame_size)
        self._out = FrameWriter(max_frame_size)
        #: The negotiated protocol version, once OPEN.
        self.version: int | None = None
        #: The client's hello (server side), once received.
        self.peer_hello: Hello | None = None
        #: The server's welcome (client side), once received.
        self.peer_welcome: Welcome | None = None
        #: Why the connection ended: the goodbye reason or the error text.
        self.close_reason: str | None = None
        self._next_request_id = 1
        self._sent_requests_open: set[int] = set()
        self._received_requests_open: set[int] = set()
        if isinstance(token, str) and role is Role.CLIENT:
            self._out.add(
                Hello(
                    min_version=min_version,
                    max_version=max_version,
                    token=token,
                    role=connection_role,
                    name=name,
                    pid=pid,
                    library_version=library_version(),
                )
            )

    # -- outgoing ---------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Bytes that must be written to the stream now (possibly empty)."""
        return self._out.take()

    def next_request_id(self) -> int:
        """Allocate the id for a request this side is about to send."""
        request_id = self._next_request_id
        self._next_request_id += 1
        return request_id

    def send(self, message: Message) -> None:
        """Queue ``message`` for sending.

        Raises :class:`~isoplug.errors.LocalProtocolError` when the message is not allowed in
        the current state (before the handshake, after a goodbye, a response to a request that
        is not open, a request id reused), or when it cannot be encoded or is too large; in
        the last two cases the connection stays usable.
        """
        if self.state is not ConnectionState.OPEN:
            raise LocalProtocolError(
                f"cannot send {type(message).__name__} on a connection in state "
                f"{self.state.value}" + (f" ({self.close_reason})" if self.close_reason else "")
            )
        # By exact type, not by pattern: a class pattern costs an isinstance check and an
        # attribute lookup per case, on every message.
        kind = type(message)
        if kind is Request:
            request_id = message.id  # type: ignore[union-attr]
            if request_id in self._sent_requests_open:
                raise LocalProtocolError(f"request id {request_id} is already in use")
            self._out.add(message)
            self._sent_requests_open.add(request_id)
        elif kind is Response or kind is ErrorResponse:
            request_id = message.id  # type: ignore[union-attr]
            if request_id not in self._received_requests_open:
                raise LocalProtocolError(f"request {request_id} is not open: cannot answer it")
            self._out.add(message)
            self._received_requests_open.discard(request_id)
        elif kind is Event or kind is Cancel or kind is LogBatch:
            self._out.add(message)
        elif kind is Goodbye:
            self._out.add(message)
            self._close(message.reason or "closed by this side")  # type: ignore[union-attr]
        else:
            raise LocalProtocolError(
                f"{kind.__name__} is a handshake message; it cannot be sent now"
            )

    def fail(self, code: str, reason: str) -> None:
        """Abandon the connection because of something the I/O layer saw (a deadline passed).

        Queues a reject (during the server's handshake) or a goodbye carrying ``reason`` so
        that the peer learns why, and moves to ``ERROR``.
        """
        if self.state in (ConnectionState.ERROR, ConnectionState.CLOSED):
            return
        told = _shorten(reason, _MAX_REPLY_REASON)
        try:
            if self.role is Role.SERVER and self.state is ConnectionState.HANDSHAKE:
                self._out.add(Reject(code=code, reason=told))
            elif self.state is ConnectionState.OPEN:
                self._out.add(Goodbye(reason=told))
        except LocalProtocolError as exc:
            reason += f" (the peer could not be told: {exc})"
        self.state = ConnectionState.ERROR
        self.close_reason = _shorten(reason, _MAX_CLOSE_REASON)

    # -- incoming ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Message]:
        """Feed bytes from the stream; return the application messages they complete.

        Handshake messages are consumed here (see the module docstring for what to do next).
        A :class:`~isoplug.wire.messages.Goodbye` from the peer is returned as the last message
        and moves the connection to ``CLOSED``.

        Raises :class:`~isoplug.errors.RemoteProtocolError` for malformed bytes or a message
        that is wrong for the state, :class:`~isoplug.errors.HandshakeError` when the
        handshake fails; either leaves the connection in ``ERROR``.
        """
        state = self.state
        if state is not ConnectionState.OPEN:
            if state is ConnectionState.ERROR:
                raise LocalProtocolError(f"connection already failed: {self.close_reason}")
            if state is ConnectionState.CLOSED:
                # Bytes after a goodbye are ignored: the peer may not have seen ours yet.
                return []
            return self._receive_during_handshake(data)
        try:
            frames = self._frames.receive_data(data)
        except RemoteProtocolError as exc:
            self._protocol_failure(exc)
            raise
        return self._receive_open(frames)

    def receive_eof(self) -> None:
        """Declare that the peer closed its end.

        Raises :class:`~isoplug.errors.RemoteProtocolError` when the stream ended mid-frame,
        during the handshake, or without a goodbye while open. Afterwards the state is
        ``CLOSED`` (clean) or ``ERROR``.
        """
        if self.state in (ConnectionState.CLOSED, ConnectionState.ERROR):
            return
        try:
            self._frames.receive_eof()
        except RemoteProtocolError as exc:
            self._protocol_failure(exc, reply=False)
            raise
        during = (
            "during the handshake"
            if self.state is ConnectionState.HANDSHAKE
            else "without a goodbye"
        )
        self.state = ConnectionState.ERROR
        self.close_reason = f"peer closed the connection {during}"
        raise RemoteProtocolError(self.close_reason)

    @property
    def open_requests_sent(self) -> frozenset[int]:
        """Ids of requests we sent that have no answer yet."""
        return frozenset(self._sent_requests_open)

    # -- internals --------------------------------------------------------------------------

    def _receive_open(self, frames: list[bytes | memoryview]) -> list[Message]:
        messages: list[Message] = []
        for frame in frames:
            try:
                message = decode_message(frame)
            except RemoteProtocolError as exc:
                self._protocol_failure(exc)
                raise
            # Requests and events dominate traffic: test them first. One type() per message
            # (mypy does not narrow a message through ``kind``: hence the ignores below).
            kind = type(message)
            if kind in _APPLICATION_MESSAGES:
                if kind is Request:
                    request_id = message.id  # type: ignore[union-attr]
                    if request_id in self._received_requests_open:
                        self._violation(f"request id {request_id} reused while still open")
                    self._received_requests_open.add(request_id)
                elif kind is Response or kind is ErrorResponse:
                    request_id = message.id  # type: ignore[union-attr]
                    if request_id not in self._sent_requests_open:
                        self._violation(
                            f"{kind.__name__} for request {request_id}, which is not open"
                        )
                    self._sent_requests_open.discard(request_id)
                messages.append(message)
            elif kind is Goodbye:
                messages.append(message)
                self._close(message.reason or "peer said goodbye")  # type: ignore[union-attr]
                break
            else:
                self._violation(f"unexpected {type(message).__name__} after the handshake")
        return messages

    def _receive_during_handshake(self, data: bytes) -> list[Message]:
        try:
            frame = self._frames.next_frame(data)
        except RemoteProtocolError as exc:
            error = RemoteProtocolError(f"{exc} before the handshake completed")
            self._protocol_failure(error)
            raise error from None
        if frame is None:
            return []
        self._receive_handshake(frame)  # raises unless the session is now open
        # Authenticated (or, for a client, welcomed): the session's own limit applies to
        # whatever followed the handshake in the same bytes, and from now on.
        self._frames.max_frame_size = self._max_frame_size
        try:
            frames = self._frames.receive_data(b"")
        except RemoteProtocolError as exc:
            self._protocol_failure(exc)
            raise
        return self._receive_open(frames)

    def _receive_handshake(self, frame: bytes | memoryview) -> None:
        """Process the handshake frame: the session is open afterwards, or this raised."""
        try:
            message = decode_message(frame)
        except RemoteProtocolError as exc:
            self._protocol_failure(exc)
            raise
        if self.role is Role.SERVER:
            if type(message) is not Hello:
                self._violation(f"expected a hello, got {type(message).__name__}")
            assert isinstance(message, Hello)
            self._check_hello(message)
        else:
            if type(message) is Reject:
                assert isinstance(message, Reject)
                self.state = ConnectionState.ERROR
                error = refusal_error(
                    message, self._min_version, self._max_version, max_reason=_MAX_REPLY_REASON
                )
                self.close_reason = f"rejected by peer: {error}"
                raise error
            if type(message) is not Welcome:
                self._violation(f"expected a welcome, got {type(message).__name__}")
            assert isinstance(message, Welcome)
            if not self._min_version <= message.version <= self._max_version:
                self._violation(
                    f"peer chose protocol version {message.version}, which is outside the "
                    f"range {self._min_version}..{self._max_version} offered"
                )
            self.version = message.version
            self.peer_welcome = message
            self.state = ConnectionState.OPEN

    def _check_hello(self, hello: Hello) -> None:
        self.peer_hello = hello
        verdict = judge_hello(hello, self._token, self._admit, self._min_version, self._max_version)
        if isinstance(verdict, HelloRefusal):
            self._out.add(verdict.reject)
            self.state = ConnectionState.ERROR
            self.close_reason = str(verdict.error)
            raise verdict.error
        self.version = verdict
        level = None if self._welcome_level is None else self._welcome_level()
        self._out.add(Welcome(version=verdict, name=self._name, pid=self._pid, level=level))
        self.state = ConnectionState.OPEN

    def _violation(self, reason: str) -> None:
        exc = RemoteProtocolError(reason)
        self._protocol_failure(exc)
        raise exc

    def _protocol_failure(self, exc: ProtocolError, *, reply: bool = True) -> None:
        if reply:
            # The error text can quote the peer's bytes (an unknown tag, say): shorten it so
            # that the reply stays small and fits in a frame.
            reason = f"protocol error: {exc}"
            reason = _shorten(reason, _MAX_REPLY_REASON)
            reply_failure = self._queue_reply(reason)
        else:
            reply_failure = None
        self.state = ConnectionState.ERROR
        self.close_reason = _shorten(str(exc), _MAX_CLOSE_REASON)
        if reply_failure is not None:
            self.close_reason += f" (the peer could not be told: {reply_failure})"

    def _queue_reply(self, reason: str) -> LocalProtocolError | None:
        """Queue the goodbye/reject that tells the peer why; return why that failed, if it did."""
        try:
            if self.state is ConnectionState.OPEN:
                self._out.add(Goodbye(reason=reason))
            elif self.role is Role.SERVER and self.state is ConnectionState.HANDSHAKE:
                self._out.add(Reject(code=RejectCode.PROTOCOL, reason=reason))
        except LocalProtocolError as exc:
            # A frame limit too small even for a short reason.
            return exc
        return None

    def _close(self, reason: str) -> None:
        self.state = ConnectionState.CLOSED
        self.close_reason = reason
