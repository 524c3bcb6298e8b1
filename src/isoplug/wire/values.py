"""Which part of a value msgpack cannot carry, said as a path a user can find in their code.

msgspec's own error names a type (``Encoding objects of type Point is unsupported``) but not
where the object sits in a result of thousands of parts. :func:`locate_unencodable` walks the
value down the branch that fails, encoding each child on the way (only after encoding the
whole failed, so a value that encodes costs nothing here), and returns
``result["points"][2] is a geometry.Point (Encoding objects of type Point is unsupported)``.

Paths use Python's subscript syntax for mappings and sequences (a set's elements by their
position in iteration order: a set arrives as a list) and ``.name`` for the fields of
dataclasses and msgspec Structs.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from types import MappingProxyType
from typing import Any

import msgspec

from isoplug.errors import FrameTooLarge, UnencodableValue, ValueTooLarge

__all__ = ["describe_type", "encode_more", "locate_unencodable", "unencodable_error"]


def encode_more(value: object) -> object:
    """msgspec's ``enc_hook`` for what isoplug hands out read-only and so must carry too: a
    ``types.MappingProxyType`` (``ctx.config`` without a schema) goes as the mapping it is.
    Called only for types msgspec cannot encode itself: it costs the rest nothing."""
    if isinstance(value, MappingProxyType):
        return dict(value)
    raise TypeError(f"Encoding objects of type {type(value).__name__} is unsupported")


_encoder = msgspec.msgpack.Encoder(enc_hook=encode_more)
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError)
#: A path is followed this many levels down, no further: a path as long as a deep value
#: says no more. Not a limit on what is sent: that is the interpreter's recursion limit
#: (msgspec's encoder and decoder recurse), about 1,000 levels on Python 3.11.
_MAX_DEPTH = 100
#: :func:`_problem`'s word for a value past that recursion limit.
_TOO_DEEP = "nested too deeply"
#: A dict key quoted in a path is cut past this many characters.
_MAX_KEY_CHARS = 60


def unencodable_error(what: str, value_error: Exception, where: str | None) -> Exception | None:
    """The error to raise for sending ``what`` (``"cannot publish 'noted'"``) that failed with
    ``value_error``: an :class:`~isoplug.errors.UnencodableValue` saying ``where`` (the part
    that does not encode, from :func:`locate_unencodable`), a
    :class:`~isoplug.errors.ValueTooLarge` for a value too large for a message; None if
    neither (``value_error`` is another problem)."""
    if where is not None:
        return UnencodableValue(f"{what}: {where}")
    if isinstance(value_error, FrameTooLarge):
        return ValueTooLarge(
            f"{what}: the message would take {value_error.size:,} bytes once encoded, past the "
            f"limit of {value_error.limit:,}: send less, or where to find it",
            value_error.size,
            value_error.limit,
        )
    return None


def describe_type(value: object) -> str:
    """``module.QualifiedName`` of ``value``'s type (just the name for builtins)."""
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def locate_unencodable(value: object, root: str) -> str | None:
    """Say which part of ``value`` (named ``root``, e.g. ``"result"``) cannot be encoded and
    why; None if it all encodes. Meant for a value whose encoding failed."""
    problem = _problem(value)
    if problem is None:
        return None
    return _locate(value, root, problem, set(), 0)


def _problem(value: object) -> str | None:
    try:
        _encoder.encode(value)
    except _ENCODE_ERRORS as exc:
        if isinstance(exc, RecursionError):
            return _TOO_DEEP
        return str(exc)
    return None


def _locate(value: object, path: str, problem: str, ancestors: set[int], depth: int) -> str:
    if depth >= _MAX_DEPTH:
        where = f"{path} (the path stops at {_MAX_DEPTH} levels)"
        if problem == _TOO_DEEP:
            return (
                f"{where} is nested too deeply to be sent: deeper than the interpreter's "
                "recursion limit lets it be encoded (does it contain itself?)"
            )
        return f"{where} holds, deeper down, a value that cannot be sent ({problem})"
    if id(value) in ancestors:
        return f"{path} contains itself"
    ancestors.add(id(value))
    if isinstance(value, dict):
        for key, item in value.items():
            key_problem = _problem(key)
            if key_problem is not None:
                return f"{path} has a key of type {describe_type(key)} ({key_problem})"
            found = _child(item, f"{path}[{_key_text(key)}]", ancestors, depth)
            if found is not None:
                return found
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            found = _child(item, f"{path}[{index}]", ancestors, depth)
            if found is not None:
                return found
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            found = _child(getattr(value, name), f"{path}.{name}", ancestors, depth)
            if found is not None:
                return found
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            found = _child(getattr(value, field.name), f"{path}.{field.name}", ancestors, depth)
            if found is not None:
                return found
    elif isinstance(value, enum.Enum):
        found = _child(value.value, f"{path}.value", ancestors, depth)
        if found is not None:
            return found
    ancestors.discard(id(value))
    if inspect.isawaitable(value):
        # The usual cause: a call of an async function whose result was not awaited.
        problem += "; was an await forgotten?"
    return f"{path} is {_article(describe_type(value))} ({problem})"


def _child(item: object, path: str, ancestors: set[int], depth: int) -> str | None:
    if id(item) in ancestors:
        return f"{path} contains itself"
    problem = _problem(item)
    if problem is None:
        return None
    return _locate(item, path, problem, ancestors, depth + 1)


def _key_text(key: Any) -> str:
    text = repr(key)
    if len(text) > _MAX_KEY_CHARS:
        text = text[:_MAX_KEY_CHARS] + "..."
    return text


def _article(name: str) -> str:
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"
