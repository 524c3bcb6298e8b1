"""Turning messages into bytes and back: one msgpack encoder, one typed decoder.

The decoder is typed with the :data:`~isoplug.wire.messages.Message` union, so decoding both
parses and validates: a frame either becomes exactly one message class with fields of the
declared types, or :class:`~isoplug.errors.RemoteProtocolError` is raised saying what is wrong.
Both objects hold no state between calls and never release the GIL, so module-level instances
are shared safely by every thread.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any, Final, TypeVar

import msgspec

from isoplug.errors import LocalProtocolError, RemoteProtocolError
from isoplug.wire.messages import Event, Message
from isoplug.wire.sanitize import clean_text
from isoplug.wire.values import encode_more, locate_unencodable

__all__ = ["decode_message", "decode_value", "encode_message", "encode_value", "event_message"]

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder(enc_hook=encode_more)


def _check_encode_into_reserves_its_offset() -> None:
    """Refuse a msgspec whose ``encode_into`` writes at the buffer's end when ``offset`` lies
    past it: msgspec before 0.19.0 did (0.19.0 grows the buffer instead, its PR 753), so a
    frame's message went over the length header reserved before it, and every peer refused
    every frame as malformed. pip keeps such a version only when told to (``--no-deps``, a
    pin of another package), and what the peer then says points nowhere near the cause."""
    probe = bytearray()
    _encoder.encode_into(None, probe, 1)
    if len(probe) != 2:
        raise ImportError(
            f"isoplug needs msgspec >= 0.19.0, but msgspec {msgspec.__version__} is "
            "installed (its encode_into ignores an offset past the buffer's end, which "
            f"corrupts every frame isoplug sends): run {shlex.quote(sys.executable or 'python')} "
            "-m pip install -U 'msgspec>=0.19'"
        )


_check_encode_into_reserves_its_offset()
#: What msgspec raises for bytes it cannot decode: besides ``DecodeError`` (and its subclass
#: ``ValidationError``), invalid UTF-8 in a string surfaces as ``UnicodeDecodeError`` and
#: nesting deeper than the interpreter's recursion limit as ``RecursionError``.
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
#: What msgspec raises for values it cannot encode (``RecursionError``: nested too deeply).
ENCODE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError)
_message_decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)


def encode_message(message: Message) -> bytes:
    """Encode one message (without the frame's length prefix)."""
    return _encoder.encode(message)


#: ``encode_message_into(message, buffer, offset)``: encode ``message`` into ``buffer`` at
#: ``offset``, growing it as needed. The encoder's own method, not a function around it: it
#: runs for every message sent.
encode_message_into: Final = _encoder.encode_into


def decode_message(payload: bytes | memoryview) -> Message:
    """Decode one frame's payload into a message.

    Raises :class:`~isoplug.errors.RemoteProtocolError` when the bytes are not msgpack (which
    includes strings that are not UTF-8 and nesting too deep to decode), not a known message,
    or a known message with fields of the wrong type.
    """
    try:
        return _message_decoder.decode(payload)
    except _DECODE_ERRORS as exc:
        # The decoder's text can quote the peer's bytes (a tag, a key): they are outside text.
        raise RemoteProtocolError(f"malformed message: {clean_text(str(exc), 300)}") from exc


def encode_value(value: Any) -> msgspec.Raw:
    """Encode request params, a result or event data for a ``Raw`` field.

    Raises :class:`~isoplug.errors.LocalProtocolError` for values msgpack cannot carry, so
    that the caller, not the peer, learns about the mistake; its message says which part of
    the value it is (``value.result["points"][2] is a Point``).
    """
    try:
        return msgspec.Raw(_encoder.encode(value))
    except ENCODE_ERRORS as exc:
        raise LocalProtocolError(
            f"cannot send a value of type {type(value).__name__}: "
            f"{locate_unencodable(value, 'value') or exc}"
        ) from exc


def event_message(method: str, params: Any = None) -> Event:
    """The one-way event ``method`` carrying ``params``; raises as :func:`encode_value`."""
    return Event(method=method, params=encode_value(params))


#: A decoder per value type, made at its first use: ``msgspec.msgpack.decode(raw, type=...)``
#: works out what the type needs on every call (twice the decoding time of a small message).
#: The types are the program's own (the handlers' params, the requests' results): few.
_value_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}


def _value_decoder(value_type: Any) -> msgspec.msgpack.Decoder[Any]:
    decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(value_type)
    try:
        return _value_decoders.setdefault(value_type, decoder)
    except TypeError:
        # Unhashable (Annotated with a dict in it, say): made anew at every use, as before.
        return decoder


def decode_value(raw: msgspec.Raw, value_type: type[T] | Any = Any) -> T:
    """Decode a ``Raw`` field, validating it against ``value_type``.

    Raises ``msgspec.ValidationError`` when the value does not fit ``value_type`` and
    ``msgspec.DecodeError`` when the bytes are not msgpack; the caller decides whose fault
    that is.
    """
    try:
        decoder = _value_decoders[value_type]
    except (KeyError, TypeError):
        decoder = _value_decoder(value_type)
    try:
        result: T = decoder.decode(raw)
    except (UnicodeDecodeError, RecursionError) as exc:
        # Keep the promise above: undecodable bytes are always a ``DecodeError``.
        raise msgspec.DecodeError(f"MessagePack data is malformed: {exc}") from exc
    return result
