"""The bytes of a TOML file the operator or a plugin's author wrote (``plugin.toml``,
``isoplug run --config``), read into a document; when they cannot be, an error that says
what to do about it in the words of someone editing the file, not of a codec or a parser:
which encoding the file is in when it is not UTF-8, the line and column of a byte that is
not UTF-8 (not its offset), and that TOML quotes a key other than ``A-Z a-z 0-9 _ -``."""

from __future__ import annotations

import re
import tomllib
from typing import Any

__all__ = ["MAX_NESTING", "TomlTextError", "nested_past_limit", "parse_toml"]

#: How deep tables and arrays may nest, the document itself being level 0 (``[config]`` is
#: level 1). Settings need a handful of levels; a deeper document is an attack on the parser
#: and on every encoder the configuration goes through on its way to the runner.
MAX_NESTING = 64

#: Byte order marks of the encodings an editor saves "Unicode" text in besides UTF-8
#: (Windows Notepad's "Unicode" is UTF-16 LE, PowerShell 5's ``>`` writes it too). UTF-32's
#: come first: UTF-32 LE's starts with UTF-16 LE's.
_BYTE_ORDER_MARKS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
_SAVE_AS_UTF8 = "save it as UTF-8 (in most editors: Save As, then the encoding UTF-8)"
#: Where tomllib (every Python version isoplug runs on) says its error is.
_WHERE = re.compile(r"\(at line (\d+), column (\d+)\)$")
#: A line's start up to what would be its key: ``[`` or ``[[`` of a header, then the key up
#: to ``=``, ``]`` or a dotted key's ``.``; None where a quote starts the key (it is quoted).
_KEY_AT_START = re.compile(r"\s*(?:\[\[?\s*)?([^\"'=\]\.\s]+)")


class TomlTextError(ValueError):
    """The bytes are not a TOML document; ``str()`` says why and what to change, without
    naming the file (the caller does)."""


def parse_toml(raw: bytes) -> dict[str, Any]:
    """The TOML document in ``raw``: UTF-8, a leading byte order mark allowed (Windows
    Notepad before 2019 writes one; TOML does not, and it says nothing of the text). Raises
    :class:`TomlTextError`."""
    text = _utf8_text(raw)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TomlTextError(f"is not valid TOML: {exc}{_key_hint(text, exc)}") from exc
    except ValueError as exc:  # an integer of more digits than Python converts
        raise TomlTextError(f"is not valid TOML: {exc}") from None
    except RecursionError:
        # tomllib recurses once per nested array or inline table.
        raise TomlTextError(
            f"nests arrays or tables too deeply (the limit is {MAX_NESTING} levels)"
        ) from None


def nested_past_limit(document: dict[str, Any]) -> str | None:
    """The keys (``a.b[0]...``, the first eight) of a table or array of ``document`` nested
    more than :data:`MAX_NESTING` levels deep, if one is; None if none. Iterative: a document
    as deep as the parser could read is checked all the same."""
    pending: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())]
    while pending:
        value, keys = pending.pop()
        if not isinstance(value, dict | list):
            continue
        if len(keys) > MAX_NESTING:
            shown = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys[:8])
            return shown.removeprefix(".") + "..."
        items = value.items() if isinstance(value, dict) else enumerate(value)
        pending.extend((item, (*keys, key)) for key, item in items)
    return None


def _utf8_text(raw: bytes) -> str:
    for mark, encoding in _BYTE_ORDER_MARKS:
        if raw.startswith(mark):
            raise TomlTextError(f"is saved as {encoding}, not UTF-8: {_SAVE_AS_UTF8}")
    if raw.count(0) * 4 >= len(raw) > 0:
        # Text with no byte order mark but a NUL byte beside each ASCII character: no editor
        # writes that in UTF-8, where a NUL is a character of its own.
        raise TomlTextError(
            "is saved as UTF-16 or UTF-32 (a NUL byte beside each character), not UTF-8: "
            + _SAVE_AS_UTF8
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, column = _line_and_column(raw, exc.start)
        raise TomlTextError(
            f"is not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line}, column {column} "
            "is not UTF-8 (the file was saved in another encoding, such as Latin-1 or "
            f"Windows-1252); the file must be UTF-8: {_SAVE_AS_UTF8}"
        ) from None


def _line_and_column(raw: bytes, offset: int) -> tuple[int, int]:
    """Where byte ``offset`` of ``raw`` is, as an editor counts: lines from 1, and
    characters (not bytes) from 1 within the line."""
    line_start = raw.rfind(b"\n", 0, offset) + 1
    before = raw[line_start:offset].decode("utf-8", "replace")
    if raw.startswith(b"\xef\xbb\xbf") and line_start == 0:
        before = before[1:]
    return raw.count(b"\n", 0, offset) + 1, len(before) + 1


def _key_hint(text: str, error: tomllib.TOMLDecodeError) -> str:
    """What to change when the failing line starts with a bare key of characters TOML allows
    only in a quoted key (``clé = 1``, ``[émit]``); else nothing."""
    found = _WHERE.search(str(error))
    if found is None:
        return ""
    lines = text.splitlines()
    number = int(found.group(1))
    if number > len(lines):
        return ""
    line = lines[number - 1]
    found_key = _KEY_AT_START.match(line)
    if found_key is None or found_key.group(1).isascii():
        return ""
    key = found_key.group(1)
    if not key.isprintable():
        return (
            f"; the key {key!r} on line {number} holds invisible characters (shown as "
            "escapes): type the key again"
        )
    header = "[[" if line.lstrip().startswith("[[") else "[" if line.lstrip()[:1] == "[" else ""
    quoted = f'{header}"{key}"{header.replace("[", "]")}' if header else f'"{key}" = ...'
    return (
        f"; the key {key!r} on line {number} holds characters other than A-Z a-z 0-9 _ -, "
        f"which TOML allows only in a quoted key: {quoted}"
    )
