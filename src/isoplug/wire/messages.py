"""The messages of the isoplug wire protocol.

Every message is a frozen, tagged ``msgspec.Struct`` encoded as a msgpack *array* whose first
element is the tag (``array_like=True``): compact, and about twice as fast to encode and decode
as a map. The union :data:`Message` is what a frame carries; one reused typed decoder in
:mod:`isoplug.wire.codec` turns a frame into exactly one of these classes.

Conversation
------------
1. The connecting side sends :class:`Hello` (protocol versions it speaks, session token, role).
2. The listening side answers :class:`Welcome` (the chosen version) or :class:`Reject` (why not)
   and, after a reject, closes.
3. Both sides may then send :class:`Request`, :class:`Event`, :class:`Cancel`,
   :class:`LogBatch` at any time, and :class:`Response` / :class:`ErrorResponse` for requests
   they received. Every request is answered exactly once: a cancelled request is answered with
   an :class:`ErrorResponse` whose code is ``"cancelled"`` (or with its result, if it finished
   before the cancel arrived), so both sides always agree on which requests are open.
4. Either side ends the session with :class:`Goodbye` and then closes its end.

Schema-evolution rules (read before touching a class here)
----------------------------------------------------------
Because messages are positional arrays, a field's *position* is its identity.

- Never reorder, remove or rename-with-a-new-meaning a field; never change a field's type.
- A new field goes at the end of its class and must have a default, so that a peer built
  before it can still be decoded (missing trailing fields take their defaults) and a peer
  built after it ignores nothing it needs.
- Decoders accept extra trailing fields they do not know (``forbid_unknown_fields`` is off),
  so an older peer can read a newer peer's messages as long as it does not need the new fields.
- A new message type gets a new tag; an old peer rejects it as a protocol error, so only send
  it once the negotiated version says the peer understands it.
- Anything that breaks these rules needs a new :data:`PROTOCOL_VERSION`; the handshake
  (:class:`Hello` / :class:`Welcome` / :class:`Reject`) must stay readable by every version,
  forever.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

__all__ = [
    "MAX_PROTOCOL_VERSION",
    "MIN_PROTOCOL_VERSION",
    "PROTOCOL_VERSION",
    "Cancel",
    "ErrorInfo",
    "ErrorResponse",
    "Event",
    "ExceptionData",
    "FrameData",
    "Goodbye",
    "Hello",
    "LogBatch",
    "LogRecordData",
    "Message",
    "Reject",
    "RejectCode",
    "Request",
    "Response",
    "Welcome",
]

#: The protocol version this code speaks best. Bump it when a change breaks the rules above.
PROTOCOL_VERSION = 1
#: The oldest version this code still speaks.
MIN_PROTOCOL_VERSION = 1
MAX_PROTOCOL_VERSION = PROTOCOL_VERSION

#: An encoded msgpack ``nil``: the params or result of a call that carries none.
NIL = msgspec.Raw(b"\xc0")


class _Message(msgspec.Struct, frozen=True, array_like=True, tag_field="t"):
    """Base of every wire message; the tag is each subclass's ``tag=``."""


#: A hello's texts come from a peer that has not proven anything yet and are quoted in the
#: listener's messages: a hello with a longer one (a 5 MB role) is malformed. Tokens are 43
#: characters, runner ids and roles a few dozen.
MAX_HELLO_TEXT = 256
HelloText = Annotated[str, msgspec.Meta(max_length=MAX_HELLO_TEXT)]


class Hello(_Message, frozen=True, tag="hello"):
    """First message of the connecting side: who it is, what it speaks, proof it may connect."""

    min_version: int
    max_version: int
    token: HelloText
    #: What this connection is for: ``"control"`` for requests and events, ``"logs"`` for a
    #: dedicated log connection of the same session.
    role: HelloText = "control"
    #: A human-readable name of the connecting side (a runner id), for messages and logs.
    name: HelloText = ""
    pid: int = 0
    #: The connecting side's isoplug version (``isoplug.__version__``), so that the listener
    #: can say which isoplug each side runs (empty from an isoplug older than this field).
    library_version: HelloText = ""


class Welcome(_Message, frozen=True, tag="welcome"):
    """The listening side accepts the session at ``version``."""

    version: int
    name: str = ""
    pid: int = 0
    #: For a log connection: the lowest level the listening side handles records at, so that
    #: a sender whose logging nobody configured logs from there (None: not said).
    level: int | None = None


class RejectCode:
    """Why a handshake was refused; the connecting side maps each to an exception."""

    AUTHENTICATION = "authentication"
    VERSION = "version"
    TIMEOUT = "timeout"
    PROTOCOL = "protocol"
    #: The listening side serves all the connections it can (sent before the hello is read).
    BUSY = "busy"


class Reject(_Message, frozen=True, tag="reject"):
    """The listening side refuses the session; it closes the connection right after."""

    code: str
    reason: str
    #: For a :attr:`RejectCode.VERSION` refusal: the protocol versions the listening side
    #: speaks and its isoplug version, so that the refused side words the mismatch from its
    #: own side (0 and empty from an isoplug older than these fields: only ``reason`` then).
    min_version: int = 0
    max_version: int = 0
    library_version: str = ""


class Request(_Message, frozen=True, tag="req"):
    """Call ``method`` on the other side; answered by exactly one Response or ErrorResponse."""

    id: int
    method: str
    #: msgpack-encoded parameters, decoded by the handler with the type it expects.
    params: msgspec.Raw = NIL


class Response(_Message, frozen=True, tag="res"):
    """The successful result of request ``id``."""

    id: int
    result: msgspec.Raw = NIL


class ErrorInfo(msgspec.Struct, frozen=True, array_like=True):
    """What went wrong remotely, in a form that survives the trip between processes."""

    #: One of the codes of :class:`isoplug.errors.RemoteError` and its subclasses.
    code: str
    #: Qualified name of the exception type raised remotely, e.g. ``"builtins.ValueError"``.
    type: str
    message: str
    traceback: str = ""


class ErrorResponse(_Message, frozen=True, tag="err"):
    """Request ``id`` failed; ``error`` says how."""

    id: int
    error: ErrorInfo


class Event(_Message, frozen=True, tag="evt"):
    """A one-way notification; nobody answers it. Events are delivered in the order sent."""

    method: str
    params: msgspec.Raw = NIL


class Cancel(_Message, frozen=True, tag="cancel"):
    """The sender no longer wants the result of its request ``id``."""

    id: int


class Goodbye(_Message, frozen=True, tag="bye"):
    """The sender is ending the session; it sends nothing more and closes its end."""

    reason: str = ""


class FrameData(msgspec.Struct, frozen=True, array_like=True):
    """One frame of a traceback, as Python's ``traceback.FrameSummary`` has it.

    ``end_lineno``, ``colno`` and ``end_colno`` place the instruction that raised (the carets
    Python 3.11+ prints under part of a line); None when unknown.
    """

    filename: str
    lineno: int | None
    name: str
    line: str = ""
    end_lineno: int | None = None
    colno: int | None = None
    end_colno: int | None = None


class ExceptionData(msgspec.Struct, frozen=True, array_like=True):
    """An exception as it was raised in the sender: enough to rebuild an equivalent exception
    object, with a genuine traceback, in the receiver (see :mod:`isoplug.logs.exceptions`).

    ``cause``/``context`` are the chained exceptions (``__cause__`` / ``__context__``),
    ``members`` the exceptions of an ``ExceptionGroup``. Senders bound the depth and size.
    """

    type_name: str
    module: str
    message: str
    frames: list[FrameData] = msgspec.field(default_factory=list)
    notes: list[str] = msgspec.field(default_factory=list)
    cause: ExceptionData | None = None
    context: ExceptionData | None = None
    suppress_context: bool = False
    members: list[ExceptionData] = msgspec.field(default_factory=list)


class LogRecordData(msgspec.Struct, frozen=True, array_like=True):
    """One log record as it crosses the wire; filled in by :mod:`isoplug.logs`.

    The runner encodes a plain list in this field order instead of building a Struct, and
    leaves out trailing fields at their defaults. The message is already merged with its
    arguments. ``extra`` holds the record's non-standard attributes (values msgpack cannot
    carry arrive as ``repr``); ``event`` holds a structlog event dict when the record's ``msg``
    was one, and ``event_method`` the structlog method name that produced it.
    """

    name: str
    levelno: int
    levelname: str
    created: float
    pathname: str = ""
    filename: str = ""
    module: str = ""
    lineno: int | None = 0
    func_name: str | None = ""
    thread: int | None = None
    thread_name: str | None = None
    process: int | None = None
    process_name: str | None = None
    #: Per-sender sequence number of records accepted into its buffer; a gap means loss.
    seq: int = 0
    message: str = ""
    task_name: str | None = None
    exc_text: str | None = None
    exc_type: str | None = None
    exc_message: str | None = None
    stack_info: str | None = None
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    event: dict[str, Any] | None = None
    event_method: str | None = None
    #: The record's ``msg`` when it was a format string with arguments (``message`` is the
    #: result): the host's record keeps it as ``msg``, so tools that group by template work.
    template: str | None = None
    #: The record's exception, structured (``exc_text`` is its text as the sender printed it).
    exception: ExceptionData | None = None


class LogBatch(_Message, frozen=True, tag="logs"):
    """Log records from the sender, oldest first, and what it has had to drop.

    ``dropped`` maps a level number to how many records of that level the sender has dropped
    on this connection (running totals, so a lost batch cannot make a drop go unreported; a
    sender that reconnects starts them afresh, carrying over what it could not report before).
    """

    #: A msgpack array of records in the layout of :class:`LogRecordData`. Kept raw so that the
    #: receiver decodes it itself: one malformed record is then rejected on its own instead of
    #: making the whole connection fail.
    records: msgspec.Raw
    dropped: dict[int, int] = msgspec.field(default_factory=dict)
    #: Set once, in the batch a sender sends right after connecting over a unix socket: the
    #: number, in the sender's process, of a file descriptor of its sequence ledger (see
    #: :mod:`isoplug.logs.ledger`), from which the receiver counts what a crash took.
    ledger_fd: int | None = None
    #: Set once, in the first batch of a connection that continues an earlier one (the sender
    #: reconnected after it broke): the highest sequence number the sender had handed to the
    #: earlier connection whole. This connection's records continue after it, so what lies
    #: between is no gap; ``dropped`` then counts what the sender lost meanwhile.
    resumed_after: int | None = None
    #: Set once, by a sender closing under a deadline whose receiver takes records too slowly
    #: to get them all in order: from this batch on, its records come by level (WARNING and
    #: above first, then INFO, then the rest), each level in order, continuing after this
    #: sequence number; there are no gaps to look for until the connection ends.
    reordered_after: int | None = None
    #: Records the sender had accepted and dropped when its close deadline passed, by level
    #: (running totals, as ``dropped``).
    dropped_at_close: dict[int, int] = msgspec.field(default_factory=dict)
    #: Set in the first batch of every connection that announces a ledger: a random number
    #: naming the sender's chain of connections (one per forwarding handler, kept across its
    #: reconnections). A receiver that recovered records from an old connection's ring knows
    #: by it which of the new connection's records it has replayed already.
    chain: int | None = None
    #: Set in the first batch of a connection that announces itself (a ledger, or a resumption):
    #: the sender's queue capacity in bytes (at most
    #: :data:`~isoplug.logs.limits.MAX_QUEUE_BYTES`). It bounds the records the sender can
    #: have in flight, so the receiver knows how large a loss an honest sender can cause: a
    #: wider sequence gap, or a ledger claiming more unsent, is reported as a protocol
    #: violation, not counted as records lost.
    queue_bytes: int | None = None


Message = (
    Hello
    | Welcome
    | Reject
    | Request
    | Response
    | ErrorResponse
    | Event
    | Cancel
    | Goodbye
    | LogBatch
)
