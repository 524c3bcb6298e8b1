"""The isoplug wire protocol, sans-IO: messages, codec, framing and the connection state machine.

Nothing in this package opens a socket, starts a thread, reads a clock or imports asyncio; a
test enforces it. The I/O layers (:mod:`isoplug.transport`, :mod:`isoplug.rpc`, and the log
sender's blocking thread) drive :class:`Connection` with the bytes they move.
"""

from isoplug.wire.codec import decode_message, decode_value, encode_message, encode_value
from isoplug.wire.connection import Connection, ConnectionState, Role
from isoplug.wire.framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, FrameWriter, encode_frame
from isoplug.wire.messages import (
    MAX_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Cancel,
    ErrorInfo,
    ErrorResponse,
    Event,
    ExceptionData,
    FrameData,
    Goodbye,
    Hello,
    LogBatch,
    LogRecordData,
    Message,
    Reject,
    RejectCode,
    Request,
    Response,
    Welcome,
)

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_PROTOCOL_VERSION",
    "MIN_PROTOCOL_VERSION",
    "PROTOCOL_VERSION",
    "Cancel",
    "Connection",
    "ConnectionState",
    "ErrorInfo",
    "ErrorResponse",
    "Event",
    "ExceptionData",
    "FrameData",
    "FrameDecoder",
    "FrameWriter",
    "Goodbye",
    "Hello",
    "LogBatch",
    "LogRecordData",
    "Message",
    "Reject",
    "RejectCode",
    "Request",
    "Response",
    "Role",
    "Welcome",
    "decode_message",
    "decode_value",
    "encode_frame",
    "encode_message",
    "encode_value",
]
