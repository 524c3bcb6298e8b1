"""A sender's extra values made safe to hand to the host's handlers: texts cleaned and capped,
nested dicts and lists walked (their texts and keys cleaned too: a formatter that writes
``ensure_ascii=False`` shows them raw), whatever the wire or the walk cannot take whole shown
as cleaned text. Keys that clean to the same text keep both values (:func:`unique_key`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import msgspec

from isoplug.wire.sanitize import clean_text, shows_as_is

__all__ = ["MAX_NESTING", "clean_value", "text_of", "unique_key"]

#: Nested values deeper than this are shown as text (the sender sends deeper ones so).
MAX_NESTING = 32

_value_encoder = msgspec.msgpack.Encoder()


def clean_value(value: Any, limit: int) -> Any:
    """An extra's ``value`` with its texts cleaned and capped at ``limit`` characters; a value
    whose encoding is larger than ``limit`` bytes becomes its cleaned ``repr``."""
    if isinstance(value, str):
        return clean_text(value, limit)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, bytes):
        return value if len(value) <= limit else value[:limit] + b"...[truncated]"
    try:
        encoded = _value_encoder.encode(value)
    except (TypeError, ValueError, RecursionError, OverflowError):
        return text_of(value, limit)
    if len(encoded) > limit:
        return text_of(value, limit)
    if type(value) is dict or type(value) is list:
        # Bounded by the encoded size: at most ``limit`` bytes of items to walk.
        return _clean_nested(value, 0, limit)
    return value


def _clean_nested(value: list[Any] | dict[Any, Any], depth: int, limit: int) -> Any:
    """A dict or list value with its texts, and its dicts' keys, cleaned as the extras' own
    are. Texts that need no change are kept without a call: most do."""
    if depth >= MAX_NESTING:
        return text_of(value, limit)
    if type(value) is list:
        return [_clean_item(entry, depth, limit) for entry in value]
    mapping: dict[Any, Any] = cast("dict[Any, Any]", value)
    cleaned: dict[Any, Any] = {}
    for key, entry in mapping.items():
        item = _clean_item(entry, depth, limit)
        if type(key) is str and (len(key) > 100 or not shows_as_is(key)):
            cleaned[unique_key(clean_text(key, 100), cleaned)] = item
        elif key in cleaned:
            # An earlier key cleaned to this one's text.
            cleaned[unique_key(key, cleaned)] = item
        else:
            cleaned[key] = item
    return cleaned


def _clean_item(entry: Any, depth: int, limit: int) -> Any:
    kind = type(entry)
    if kind is str:
        if len(entry) > limit or not shows_as_is(entry):
            return clean_text(entry, limit)
    elif kind is dict or kind is list:
        return _clean_nested(entry, depth + 1, limit)
    return entry


def text_of(value: Any, limit: int) -> str:
    """A value the wire or the walk cannot take whole, as cleaned text (a value too deep for
    ``repr`` itself as a note saying so)."""
    try:
        text = repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"
    return clean_text(text, limit)


def unique_key(key: str, taken: Mapping[Any, Any]) -> str:
    """``key``, or ``key#2``, ``key#3``... if ``taken`` has it: two sender keys that clean to
    the same text (``"\\x1b"`` and an escape character, long keys cut to one prefix) keep
    both values."""
    if key not in taken:
        return key
    number = 2
    while f"{key}#{number}" in taken:
        number += 1
    return f"{key}#{number}"
